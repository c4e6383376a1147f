/**
 * The clamav engine against a real clamd (test/helpers/clamd.ts: offline EICAR database, temp
 * socket, StreamMaxLength 4M): the engine conformance suite, StreamMaxLength, per-scan timeout
 * (clamd stopped with SIGSTOP), clamd restarts, generations and RELOAD, TCP, and the SVM serving
 * agents with it (/healthz 503 while clamd is down).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { LightagentError } from '../../../src/errors.js';
import { ClamavEngine, generationFromVersion, parseClamdAddress } from '../../../src/svm/engines/clamav.js';
import { EngineError, EngineLimitError } from '../../../src/svm/engines/engine.js';
import { loadSvmConfig } from '../../../src/svm/config.js';
import { SVM_CLI, eventually, spawnNode, waitFor } from '../../helpers/procs.js';
import { needClamd, startClamd, type Clamd } from '../../helpers/clamd.js';
import { TOKEN, rawAgent, startTestSvm, upload } from '../helpers.js';
import { EICAR_BYTES as EICAR, noise } from '../../helpers/fixtures.js';
import { runEngineConformance } from './conformance.js';

const skip = needClamd();
let shared: Promise<Clamd> | undefined;
const clamd = (): Promise<Clamd> => (shared ??= startClamd({ streamMaxLength: '4M' }));
after(async () => {
  if (shared) await (await shared).stop();
});

runEngineConformance('clamav', async () => ClamavEngine.create({ address: (await clamd()).socket }), { skip });

describe('clamav engine: parsing', () => {
  it('takes the generation from the database version and date of VERSION', () => {
    assert.equal(generationFromVersion('ClamAV 1.4.6/27461/Mon Nov 25 08:24:02 2024'), 'clamav-27461-20241125082402');
    assert.equal(generationFromVersion('ClamAV 1.0.7/26000/Thu Jan  4 09:10:00 2024\n'), 'clamav-26000-20240104091000');
    assert.equal(generationFromVersion('ClamAV 1.4.6'), undefined, 'custom databases only: no database part');
    assert.equal(generationFromVersion('garbage'), undefined);
  });

  it('accepts socket paths and TCP addresses, refuses anything else clearly', () => {
    assert.deepEqual(parseClamdAddress('/run/clamav/clamd.ctl'), { path: '/run/clamav/clamd.ctl' });
    assert.deepEqual(parseClamdAddress('unix:/tmp/c.sock'), { path: '/tmp/c.sock' });
    assert.deepEqual(parseClamdAddress('tcp://127.0.0.1:3310'), { host: '127.0.0.1', port: 3310 });
    assert.deepEqual(parseClamdAddress('[::1]:3310'), { host: '::1', port: 3310 });
    assert.throws(
      () => parseClamdAddress('clamd'),
      (e: unknown) => e instanceof EngineError && /neither a socket path nor HOST:PORT/.test(e.message),
    );
  });

  it('config: engine clamav with a clamd address string or mapping', () => {
    const a = loadSvmConfig({ env: {}, flags: { tokens: ['a-long-token'], engine: 'clamav', 'clamd.address': '/tmp/x.sock' } });
    assert.equal(a.engine, 'clamav');
    assert.deepEqual(a.clamd, { address: '/tmp/x.sock', pool: 8, timeout: 30_000 });
    const b = loadSvmConfig({ env: {}, flags: { tokens: ['a-long-token'] } });
    assert.equal(b.clamd.address, '/run/clamav/clamd.ctl');
  });
});

describe('clamav engine against clamd', { skip }, () => {
  let c: Clamd;
  before(async () => {
    c = await clamd();
  });

  it('refuses content over StreamMaxLength with LA_ERR_ENGINE_LIMIT, then fails fast without sending; smaller content still scans', async () => {
    const e = await ClamavEngine.create({ address: c.socket, poolSize: 2 });
    try {
      const big = noise(5 << 20, 40);
      await assert.rejects(e.scan(big), (err: unknown) => err instanceof EngineLimitError && err.code === 'LA_ERR_ENGINE_LIMIT');
      const bigger = noise(6 << 20, 41);
      const t0 = performance.now();
      await assert.rejects(e.scan(bigger), EngineLimitError);
      assert.ok(performance.now() - t0 < 50, 'known limit: refused without a round trip');
      assert.equal((await e.scan(Buffer.concat([noise(1 << 20, 42), EICAR]))).infected, true);
      assert.equal(e.healthy(), true, 'a file over the limit is not an engine failure');
    } finally {
      await e.close();
    }
  });

  it('a configured stream_max_length refuses larger content before sending it', async () => {
    const e = await ClamavEngine.create({ address: c.socket, streamMaxLength: 1000 });
    try {
      await assert.rejects(e.scan(noise(1001, 1)), EngineLimitError);
      assert.equal((await e.scan(noise(1000, 1))).infected, false);
    } finally {
      await e.close();
    }
  });

  it('times out a scan clamd does not answer (stopped), reports unhealthy, and recovers when it answers', async () => {
    const e = await ClamavEngine.create({ address: c.socket, timeoutMs: 400, versionIntervalMs: 200 });
    try {
      assert.equal((await e.scan(EICAR)).infected, true);
      c.pause();
      const t0 = performance.now();
      await assert.rejects(
        e.scan(Buffer.from('while clamd sleeps')),
        (err: unknown) => err instanceof EngineError && /did not answer a scan/.test(err.message),
      );
      const took = performance.now() - t0;
      assert.ok(took >= 350 && took < 2000, `timed out after ${took} ms`);
      assert.equal(e.healthy(), false);
      c.resume();
      assert.equal((await e.scan(EICAR)).infected, true);
      assert.equal(e.healthy(), true);
    } finally {
      c.resume();
      await e.close();
    }
  });

  it('reconnects when clamd restarts; while it is down scans fail fast and health is false', async () => {
    const e = await ClamavEngine.create({ address: c.socket, poolSize: 3, versionIntervalMs: 200 });
    try {
      // Fill the pool with sessions, then kill clamd under them.
      const rs = await Promise.all([1, 2, 3].map((i) => e.scan(Buffer.concat([Buffer.from(`f${i}`), EICAR]))));
      assert.ok(rs.every((r) => r.infected));
      await c.kill();
      const t0 = performance.now();
      await assert.rejects(e.scan(EICAR), (err: unknown) => err instanceof LightagentError && err.code === 'LA_ERR_ENGINE');
      assert.ok(performance.now() - t0 < 3000);
      assert.equal(e.healthy(), false);
      await c.start();
      await eventually(() => e.healthy(), 5000, 'health back after clamd restarted');
      const again = await Promise.all([1, 2, 3, 4, 5].map((i) => e.scan(i % 2 ? EICAR : Buffer.from(`clean ${i}`))));
      assert.deepEqual(
        again.map((r) => r.infected),
        [true, false, true, false, true],
      );
    } finally {
      await e.close();
    }
  });

  it('custom databases: generation from the database files; RELOAD picks up a new signature and a new generation', async () => {
    const e = await ClamavEngine.create({ address: c.socket, databaseDir: c.dbDir });
    try {
      const g1 = e.generation();
      assert.match(g1, /^clamav-custom-[0-9a-f]{16}$/);
      assert.equal((await e.scan(Buffer.from('contains NEW-LOCAL-THREAT here'))).infected, false);
      c.writeDb('local.ndb', `Test.NewLocal:0:*:${Buffer.from('NEW-LOCAL-THREAT').toString('hex')}`);
      const r = await e.reload();
      assert.notEqual(r.generation, g1);
      assert.equal(e.generation(), r.generation);
      // clamd reloads asynchronously: a scan just after RELOAD may still see the old database.
      let found = (await e.scan(Buffer.from('contains NEW-LOCAL-THREAT here'))).infected;
      for (let i = 0; i < 100 && !found; i++) {
        await new Promise((res) => setTimeout(res, 100));
        found = (await e.scan(Buffer.from('contains NEW-LOCAL-THREAT here'))).infected;
      }
      assert.equal(found, true, 'the new signature is in force after RELOAD');
    } finally {
      await e.close();
    }
  });

  it('custom databases: the periodic look takes changed files only when the next look still sees them', async () => {
    // A long interval: only the looks this test makes.
    const e = await ClamavEngine.create({ address: c.socket, databaseDir: c.dbDir, versionIntervalMs: 600_000 });
    try {
      const g1 = e.generation();
      c.writeDb('later.ndb', `Test.Later:0:*:${Buffer.from('LATER-LOCAL-THREAT').toString('hex')}`);
      await e.refresh(true);
      assert.equal(e.generation(), g1, 'first look: clamd may not have reloaded yet, the generation waits');
      await e.refresh(true);
      assert.notEqual(e.generation(), g1, 'second look: taken');
      const g2 = e.generation();
      fs.rmSync(`${c.dbDir}/later.ndb`);
      await e.refresh(false);
      assert.notEqual(e.generation(), g2, 'an explicit refresh (reload) takes it at once');
    } finally {
      await e.close();
    }
  });

  it('works over TCP too', async () => {
    const t = await startClamd({ tcp: true });
    try {
      const e = await ClamavEngine.create({ address: `tcp://${t.tcpAddress}` });
      assert.equal((await e.scan(EICAR)).infected, true);
      assert.equal((await e.scan(Buffer.from('clean over tcp'))).infected, false);
      await e.close();
    } finally {
      await t.stop();
    }
  });

  it('an unreachable clamd: created unhealthy, scans fail with LA_ERR_ENGINE naming the socket', async () => {
    const e = await ClamavEngine.create({ address: `${c.dir}/no-such.sock` });
    try {
      assert.equal(e.healthy(), false);
      await assert.rejects(e.scan(EICAR), (err: unknown) => err instanceof EngineError && err.message.includes('no-such.sock'));
    } finally {
      await e.close();
    }
  });

  it('the SVM serves agents with it: verdicts name clamav, an over-limit upload is an error verdict (not cached), /healthz turns 503 while clamd is down', async () => {
    const engine = await ClamavEngine.create({ address: c.socket, versionIntervalMs: 200 });
    const s = await startTestSvm({ engine });
    try {
      const a = await rawAgent(s.url);
      const w = await a.next((m) => m.t === 'welcome');
      assert.ok(w.t === 'welcome' && w.generation === engine.generation());
      const v = await upload(a, 1, Buffer.concat([noise(300_000, 5), EICAR]));
      assert.equal(v.verdict, 'infected');
      assert.equal(v.engine, 'clamav');
      assert.match(v.threat ?? '', /eicar/i);
      const big = await upload(a, 2, noise(5 << 20, 6));
      assert.equal(big.verdict, 'error');
      assert.equal(big.code, 'LA_ERR_ENGINE_LIMIT');
      assert.equal(s.core.cache.stats().entries, 1, 'only the real verdict was cached');
      assert.equal((await fetch(`${s.httpUrl}/healthz`)).status, 200);
      await c.kill();
      await eventually(() => !engine.healthy(), 5000, 'engine unhealthy');
      const h = await fetch(`${s.httpUrl}/healthz`);
      assert.equal(h.status, 503);
      assert.equal(((await h.json()) as { engineHealthy: boolean }).engineHealthy, false);
      const down = await upload(a, 3, Buffer.from('while clamd is down'));
      assert.equal(down.verdict, 'error');
      assert.equal(down.code, 'LA_ERR_ENGINE');
      await c.start();
      await eventually(() => engine.healthy(), 5000, 'engine healthy again');
      assert.equal((await upload(a, 4, Buffer.from('after the restart'))).verdict, 'clean');
      a.ws.close();
    } finally {
      await s.close();
    }
  });

  it('lightagent-svm --engine clamav --clamd SOCKET', async () => {
    const p = spawnNode(
      SVM_CLI,
      ['--listen', '127.0.0.1:0', '--token', TOKEN, '--json', '--log-level', 'error', '--engine', 'clamav', '--clamd', c.socket],
      { watchdogMs: 30_000 },
    );
    try {
      const m = await waitFor(p, /^\{"event":"listening".*\}$/m);
      const line = JSON.parse(m[0]) as { url: string; engine: string; engineHealthy: boolean; clamd: string; generation: string };
      assert.equal(line.engine, 'clamav');
      assert.equal(line.engineHealthy, true);
      assert.equal(line.clamd, c.socket);
      assert.match(line.generation, /^clamav-/);
      const a = await rawAgent(line.url);
      const v = await upload(a, 1, EICAR);
      assert.equal(v.engine, 'clamav');
      assert.equal(v.verdict, 'infected');
      a.ws.close();
      assert.equal(await p.stop('SIGTERM'), 0);
    } finally {
      await p.stop('SIGKILL');
    }
  });
});
