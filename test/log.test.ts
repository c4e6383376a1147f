/**
 * Logging (src/log.ts): JSON lines in a file; a `message` in a line's metadata is kept apart from
 * the line's own message (as `error`), where winston alone would have glued the two together.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { describeError, LightagentError } from '../src/errors.js';
import { closeLogging, configureLogging, logger } from '../src/log.js';
import { tempDir } from './helpers/procs.js';

describe('log', () => {
  const dir = tempDir('la-log-');
  const file = path.join(dir, 'agent.log');

  it('writes JSON lines with the component; a metadata message becomes `error`, not part of the message', async () => {
    configureLogging({ file, level: 'debug' });
    try {
      const log = logger('unit', { extra: 1 });
      log.warn(
        'SVM not reachable at start; protecting by policy until it is',
        describeError(new LightagentError('LA_ERR_SVM_UNAVAILABLE', 'no SVM reachable at ws://127.0.0.1:1')),
      );
      log.info('plain', { n: 2 });
      log.error('both', { error: 'first', message: 'second' });
      log.debug('just text');
    } finally {
      await closeLogging();
    }
    const lines = fs
      .readFileSync(file, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 4);
    assert.equal(lines[0]!.message, 'SVM not reachable at start; protecting by policy until it is');
    assert.equal(lines[0]!.error, 'no SVM reachable at ws://127.0.0.1:1');
    assert.equal(lines[0]!.code, 'LA_ERR_SVM_UNAVAILABLE');
    assert.equal(lines[0]!.component, 'unit');
    assert.equal(lines[0]!.extra, 1);
    assert.equal(lines[0]!.level, 'warn');
    assert.equal(lines[1]!.message, 'plain');
    assert.equal(lines[1]!.n, 2);
    assert.equal(lines[1]!.error, undefined);
    assert.equal(lines[2]!.message, 'both');
    assert.equal(lines[2]!.error, 'first');
    assert.equal(lines[2]!.errorMessage, 'second');
    assert.equal(lines[3]!.message, 'just text');
    for (const l of lines) assert.ok(typeof l.timestamp === 'string');
  });
});
