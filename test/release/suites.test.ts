/**
 * The release binary passes the same integration tests as the sources: a subset of the compiled
 * suites runs again with LIGHTAGENT_TEST_BINARY set, so test/helpers/procs.ts starts every
 * `lightagent` and `lightagent-svm` through dist/lightagent-linux-x64 instead of `node build/...`.
 * (Any other suite can be run the same way by hand: LIGHTAGENT_TEST_BINARY=... node --test ...)
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { needRoot } from '../helpers/procs.js';
import { BINARY, ensureBinary } from './binary.js';

/** build-NAME/test, where the compiled suites sit next to this one. */
const TEST_DIR = path.resolve(new URL('.', import.meta.url).pathname, '..');
/** on-demand scan CLI; the daemon with fanotify (EPERM, quarantine, cache, reload); process attribution and response (its own worker thread); the README's demo (an SVM and an agent in one process). */
const SUITES = ['cli/scan-cli.test.js', 'agent/daemon.test.js', 'processes/process-response.test.js', 'cli/demo-cli.test.js'];

function runSuites(files: string[], binary = BINARY): Promise<{ status: number | null; out: string }> {
  return new Promise((resolve) => {
    // Without NODE_TEST_CONTEXT: else the child reports to this test runner, not as TAP on stdout.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_TEST_CONTEXT'));
    const child = spawn(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=tap', ...files], {
      env: { ...env, LIGHTAGENT_TEST_BINARY: binary },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), 300_000);
    child.once('close', (status) => {
      clearTimeout(t);
      resolve({ status, out });
    });
  });
}

describe('source integration suites through the release binary', { skip: needRoot() }, () => {
  before(() => {
    ensureBinary();
  });

  it('the suites really start the binary named by LIGHTAGENT_TEST_BINARY (a missing one fails them)', async () => {
    const r = await runSuites([path.join(TEST_DIR, SUITES[0]!)], '/nonexistent/lightagent');
    assert.notEqual(r.status, 0);
    assert.match(r.out, /spawn \/nonexistent\/lightagent ENOENT/);
  });

  it(`${SUITES.join(', ')} pass with every CLI and SVM process being the binary`, async () => {
    const files = SUITES.map((s) => path.join(TEST_DIR, s));
    for (const f of files) assert.ok(fs.existsSync(f), `${f} is compiled`);
    const r = await runSuites(files);
    const count = (k: string) => Number(new RegExp(`^# ${k} (\\d+)$`, 'm').exec(r.out)?.[1] ?? NaN);
    assert.equal(r.status, 0, r.out.slice(-6000));
    assert.ok(count('pass') >= 10, `ran the suites: ${count('pass')} passed`);
    assert.equal(count('fail'), 0);
    assert.equal(count('cancelled'), 0);
    assert.equal(count('skipped'), 0, 'nothing skipped');
  });
});
