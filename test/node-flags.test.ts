/**
 * The V8 flags of src/node-flags.ts travel with every way a program starts (V8 takes them only at
 * start): the bins' shebangs, the single binary's execArgv, and the SVM says when it lacks them.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { AGENT_NODE_FLAGS, missingNodeFlags, SVM_NODE_FLAGS } from '../src/node-flags.js';
import { spawnWatched, SVM_CLI, waitFor } from './helpers/procs.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const firstLine = (rel: string): string => fs.readFileSync(path.join(ROOT, rel), 'utf8').split('\n', 1)[0]!;

describe('node flags', () => {
  it('the bins start node with them (shebang, `env -S`)', () => {
    assert.equal(firstLine('src/cli/lightagent.ts'), `#!/usr/bin/env -S node ${AGENT_NODE_FLAGS.join(' ')}`);
    assert.equal(firstLine('src/cli/lightagent-svm.ts'), `#!/usr/bin/env -S node ${SVM_NODE_FLAGS.join(' ')}`);
    // tsc keeps the shebang: the file npm links as the bin has it.
    assert.equal(firstLine('build/src/cli/lightagent-svm.js'), firstLine('src/cli/lightagent-svm.ts'));
  });

  it('the single binary is built with them (one execArgv for the agent and the SVM)', () => {
    const m = /^const execArgv = (\[[^\]]*\]);$/m.exec(fs.readFileSync(path.join(ROOT, 'scripts/release.mjs'), 'utf8'));
    assert.ok(m, 'scripts/release.mjs has a one-line `const execArgv = [...]`');
    const list = JSON.parse(m[1]!.replaceAll("'", '"')) as string[];
    assert.deepEqual(list, [...AGENT_NODE_FLAGS]);
    assert.deepEqual(list, [...SVM_NODE_FLAGS]);
  });

  it('missingNodeFlags names what a process was not started with', () => {
    assert.deepEqual(missingNodeFlags(['--a', '--b'], ['--b', '--c']), ['--a']);
    assert.deepEqual(missingNodeFlags(['--a'], ['--a']), []);
  });

  it('an SVM started without them says which, and how to start it; with them it is silent', async () => {
    const args = [SVM_CLI, '--listen', '127.0.0.1:0', '--token', 'node-flags-test-token', '--json'];
    const bare = spawnWatched(process.execPath, args, { watchdogMs: 30_000 });
    const flagged = spawnWatched(process.execPath, [...SVM_NODE_FLAGS, ...args], { watchdogMs: 30_000 });
    try {
      const warn = await waitFor(bare, /"missing":(\[[^\]]*\])/);
      assert.deepEqual(JSON.parse(warn[1]!), [...SVM_NODE_FLAGS]);
      assert.match(bare.output(), /"hint":"start the lightagent-svm bin or the single binary/);
      await waitFor(flagged, /"event":"listening"/);
      await waitFor(bare, /"event":"listening"/);
      // The warning comes before the listening line; stderr and stdout are separate pipes, so
      // give the flagged one's stderr the time the bare one's took.
      await new Promise((r) => setTimeout(r, 200));
      assert.doesNotMatch(flagged.output(), /started without the V8 flags/);
    } finally {
      await Promise.all([bare.stop(), flagged.stop()]);
    }
  });
});
