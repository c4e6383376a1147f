/**
 * The `lightagent-svm` command as a real process: the listening line, scanning through it,
 * SIGHUP reload, graceful SIGTERM, and exit 2 with a clear message on config errors.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CloseCode } from '../../src/protocol/index.js';
import { spawnNode, SVM_CLI, tempDir, waitFor } from '../helpers/procs.js';
import { EICAR_BYTES as EICAR } from '../helpers/fixtures.js';
import { rawAgent, upload } from './helpers.js';

const dir = tempDir('la-svmcli-');
const hex = (s: string) => Buffer.from(s).toString('hex');

function runCli(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(process.execPath, [SVM_CLI, ...args], { timeout: 15_000, env: { ...process.env, LIGHTAGENT_SVM_TOKEN: '', ...env } });
  return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

describe('lightagent-svm command', () => {
  it('prints its URL as JSON, scans, reloads signatures on SIGHUP, and stops gracefully on SIGTERM', async () => {
    const sigs = path.join(dir, 'local.ndb');
    fs.writeFileSync(sigs, `Test.Local:0:*:${hex('LOCAL-BAD-THING')}\n`);
    const p = spawnNode(
      SVM_CLI,
      ['--listen', '127.0.0.1:0', '--token', 'cli-test-token', '--signatures', sigs, '--json', '--log-file', path.join(dir, 'svm.log')],
      { watchdogMs: 30_000 },
    );
    try {
      const m = await waitFor(p, /^\{"event":"listening".*\}$/m);
      const line = JSON.parse(m[0]) as { url: string; healthz: string; generation: string };
      assert.match(line.url, /^ws:\/\/127\.0\.0\.1:\d+$/);
      assert.equal((await fetch(line.healthz)).status, 200);
      const a = await rawAgent(line.url, 'cli-test-token');
      assert.equal((await upload(a, 1, Buffer.from('has LOCAL-BAD-THING inside'))).threat, 'Test.Local');
      assert.equal((await upload(a, 2, EICAR)).threat, 'Eicar-Test-Signature');
      fs.writeFileSync(sigs, `Test.Other:0:*:${hex('OTHER-BAD-THING')}\n`);
      p.child.kill('SIGHUP');
      const g = await a.next((msg) => msg.t === 'generation');
      assert.ok(g.t === 'generation' && g.generation !== line.generation);
      await waitFor(p, /"event":"reloaded"/);
      assert.equal((await upload(a, 3, Buffer.from('has OTHER-BAD-THING inside'))).threat, 'Test.Other');
      assert.equal(await p.stop('SIGTERM'), 0);
      assert.equal(await a.closed, CloseCode.SHUTDOWN);
      assert.match(p.output(), /"event":"stopped","signal":"SIGTERM"/);
      assert.match(fs.readFileSync(path.join(dir, 'svm.log'), 'utf8'), /"message":"agent connected"/);
      assert.doesNotMatch(fs.readFileSync(path.join(dir, 'svm.log'), 'utf8'), /cli-test-token/, 'the token is never logged');
    } finally {
      await p.stop('SIGKILL');
    }
  });

  it('keeps serving when nobody reads its output any more (EPIPE at the next line is not a crash)', async () => {
    const child = spawn(
      process.execPath,
      [SVM_CLI, '--listen', '127.0.0.1:0', '--token', 'cli-test-token', '--json', '--log-file', path.join(dir, 'epipe.log')],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const watchdog = setTimeout(() => child.kill('SIGKILL'), 30_000);
    try {
      let buf = '';
      const line = await new Promise<{ healthz: string }>((resolve) =>
        child.stdout.on('data', (d: Buffer) => {
          const m = /^\{"event":"listening".*\}$/m.exec((buf += d.toString()));
          if (m) resolve(JSON.parse(m[0]) as { healthz: string });
        }),
      );
      child.stdout.destroy(); // the reader goes away
      child.stderr.destroy();
      child.kill('SIGHUP'); // its answer is a line on stdout: EPIPE
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual([child.exitCode, child.signalCode], [null, null], 'still running (neither exited nor killed by a signal)');
      assert.equal((await fetch(line.healthz)).status, 200);
      const code = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
      child.kill('SIGTERM');
      assert.equal(await code, 0, 'a graceful stop, its last line lost, not a crash');
    } finally {
      clearTimeout(watchdog);
      child.kill('SIGKILL');
    }
  });

  it('prints one plain line with the URL without --json', async () => {
    const p = spawnNode(SVM_CLI, ['--listen', '127.0.0.1:0', '--log-file', path.join(dir, 'plain.log')], {
      env: { LIGHTAGENT_SVM_TOKEN: 'env-token-123' },
      watchdogMs: 30_000,
    });
    try {
      const m = await waitFor(p, /listening on (ws:\/\/127\.0\.0\.1:\d+)/);
      const a = await rawAgent(m[1]!, 'env-token-123');
      assert.equal((await a.next((msg) => msg.t === 'welcome')).t, 'welcome');
      assert.equal(await p.stop('SIGINT'), 0);
    } finally {
      await p.stop('SIGKILL');
    }
  });

  it('exits 2 with a clear message on config errors', () => {
    const noToken = runCli(['--listen', '127.0.0.1:0']);
    assert.equal(noToken.status, 2);
    assert.match(noToken.stderr, /tokens: at least one tenant token is needed/);
    assert.match(noToken.stderr, /LA_ERR_CONFIG/);
    const open = runCli(['--listen', '0.0.0.0:0', '--token', 'a-long-token']);
    assert.equal(open.status, 2);
    assert.match(open.stderr, /not a loopback address/);
    const missing = runCli(['--listen', '127.0.0.1:0', '--token', 'a-long-token', '--signatures', path.join(dir, 'nope.hdb')]);
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /nope\.hdb: cannot read the file/);
    const badFlag = runCli(['--frobnicate']);
    assert.equal(badFlag.status, 2);
    assert.match(badFlag.stderr, /Usage: lightagent-svm/);
    const cfg = path.join(dir, 'bad.yaml');
    fs.writeFileSync(cfg, 'tokens: [a-long-token]\nmax_in_flight: lots\n');
    const badFile = runCli(['--config', cfg]);
    assert.equal(badFile.status, 2);
    assert.match(
      badFile.stderr,
      new RegExp(`invalid configuration in ${cfg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\n  - max_in_flight: `),
    );
  });

  it('prints help and exits 0', () => {
    const r = runCli(['--help']);
    assert.equal(r.status, 0);
    for (const flag of ['--config', '--listen', '--token', '--signatures', '--log-file', '--json', '--help'])
      assert.ok(r.stdout.includes(flag), flag);
  });
});
