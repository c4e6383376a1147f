/**
 * Which part of the single executable runs (src/sea/part.ts). The hand-off itself is exercised
 * by test/release (every command but `run` and the SVM run from the full part there); from the
 * sources there is one whole program and nothing to hand off to.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { invokedAsSvm, needsFullPart } from '../../src/sea/part.js';

describe('single executable: the daemon part and the full part', () => {
  it('outside the release build every invocation stays where it is', () => {
    for (const args of [['run'], ['status'], ['svm', '--help'], [], ['install-helper']]) assert.equal(needsFullPart(args), false);
  });

  it('`lightagent svm ...` is the SVM; `lightagent run` and the other commands are not', () => {
    assert.equal(invokedAsSvm(['svm', '--listen', '127.0.0.1:0']), true);
    assert.equal(invokedAsSvm(['run', '--svm', 'ws://x']), false);
    assert.equal(invokedAsSvm(['scan', 'svm']), false);
  });
});
