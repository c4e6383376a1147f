/**
 * Many SVMs with real lightagent-svm processes: kill SVM A (SIGKILL) under 200 lookups and scans
 * in flight: every request is answered through B within its deadline and none is lost; when A
 * comes back on its port, the agent returns to it after the hold-down. `lightagent svm-info`
 * against the same processes.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadAgentConfig } from '../../src/config/agent.js';
import { svmLinkFor } from '../../src/agent/svm-connection.js';
import { SvmPool } from '../../src/svm-link/index.js';
import { EICAR } from '../helpers/fixtures.js';
import { CLI, eventually, type Proc, restartSvmProcess, run, startSvmProcess, tempDir } from '../helpers/procs.js';

type Svm = Proc & { url: string; port: number };

describe('failover between real SVMs', () => {
  let dir: string;
  let a: Svm;
  let b: Svm;
  const stops: Array<() => unknown> = [];
  before(async () => {
    dir = tempDir('la-failover-');
    [a, b] = await Promise.all([startSvmProcess(), startSvmProcess()]);
    stops.push(
      () => a.stop(),
      () => b.stop(),
    );
  });
  after(async () => {
    for (const s of stops.reverse()) await s();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function config(svms: string): string {
    const f = path.join(dir, `agent-${crypto.randomBytes(3).toString('hex')}.yaml`);
    fs.writeFileSync(f, `${svms}\ntoken: test-token\nstate_dir: ${dir}\ndeadline: 5s\n`);
    return f;
  }

  it('kill A under 200 requests in flight: all answered via B within the deadline; A back: the agent returns to it', async () => {
    const cfg = loadAgentConfig({ file: config(`svm:\n  - url: ${a.url}\n    priority: 0\n  - url: ${b.url}\n    priority: 1`), env: {} });
    const pool = svmLinkFor(cfg, { backoffMinMs: 50, backoffMaxMs: 300, holdDownMs: 1500 });
    assert.ok(pool instanceof SvmPool);
    stops.push(() => pool.close());
    await pool.connect();
    await pool.settled(3000);
    assert.equal(pool.url, a.url);
    const switches: string[] = [];
    pool.on('connected', (w) => switches.push(w.svmId));

    const DEADLINE = 5000;
    const files = Array.from({ length: 50 }, () => crypto.randomBytes(256 * 1024));
    const eicar = Buffer.from(EICAR);
    const t0 = performance.now();
    const jobs: Array<Promise<{ kind: string; verdict: string; ms: number }>> = [];
    for (let i = 0; i < 200; i++) {
      const started = performance.now();
      let p;
      if (i === 100) p = pool.scan(eicar.length, (o, l) => eicar.subarray(o, o + l), DEADLINE, 'eicar.com');
      else if (i % 4 === 0) {
        const c = files[i / 4]!;
        p = pool.scan(c.length, (o, l) => c.subarray(o, o + l), DEADLINE);
      } else p = pool.lookup(crypto.randomBytes(32).toString('hex'), 10, DEADLINE);
      jobs.push(
        p.then((v) => ({
          kind: i === 100 ? 'eicar' : i % 4 === 0 ? 'scan' : 'lookup',
          verdict: v.verdict,
          ms: performance.now() - started,
        })),
      );
    }
    // Looked at every turn of the event loop, not every 50 ms: A answers the 150 lookups and 50
    // scans in tens of ms, and a poll that first looks after that never sees them in flight.
    const inFlightOnA = () => pool.status().find((s) => s.url === a.url)?.inFlight ?? 0;
    for (const end = Date.now() + 5000; inFlightOnA() < 8;) {
      if (Date.now() > end) assert.fail(`fewer than 8 requests were ever seen in flight on A (${inFlightOnA()} now)`);
      await new Promise((r) => setImmediate(r));
    }
    a.child.kill('SIGKILL');
    const settled = await Promise.allSettled(jobs);
    const failed = settled.filter((s) => s.status === 'rejected');
    assert.deepEqual(
      failed.map((f) => String((f as PromiseRejectedResult).reason)),
      [],
      'no request lost',
    );
    const done = settled.map((s) => (s as PromiseFulfilledResult<{ kind: string; verdict: string; ms: number }>).value);
    assert.equal(done.length, 200);
    assert.ok(done.filter((d) => d.kind === 'lookup').every((d) => d.verdict === 'unknown'));
    assert.ok(done.filter((d) => d.kind === 'scan').every((d) => d.verdict === 'clean'));
    assert.equal(done.find((d) => d.kind === 'eicar')!.verdict, 'infected');
    const worst = Math.max(...done.map((d) => d.ms));
    assert.ok(worst < DEADLINE, `every answer within the deadline (worst ${Math.round(worst)} ms)`);
    assert.ok((pool as SvmPool).failovers >= 1, `requests were sent again to B (${(pool as SvmPool).failovers})`);
    assert.equal(pool.url, b.url);
    assert.equal(switches.length, 1);
    process.stderr.write(
      `# failover: 200 requests, ${(pool as SvmPool).failovers} re-sent, worst ${Math.round(worst)} ms, all in ${Math.round(performance.now() - t0)} ms\n`,
    );

    // A comes back on its port: the agent returns after the hold-down, and not before.
    a = await restartSvmProcess(a.port);
    const up = await eventually(
      () => (pool.status().find((s) => s.url === a.url)?.state === 'connected' ? performance.now() : undefined),
      5000,
      'A reconnected',
    );
    assert.equal(pool.url, b.url, 'not at once');
    await eventually(() => pool.url === a.url, 5000, 'return to A');
    assert.ok(performance.now() - up >= 1300, 'after the hold-down');
    assert.equal(switches.length, 2);
    assert.equal(pool.welcome?.svmId, switches[1]);
    const v = await pool.lookup(crypto.randomBytes(32).toString('hex'), 1);
    assert.equal(v.verdict, 'unknown');
  });

  it('lightagent svm-info: the SVM in use, generation, load, latency, and the others', async () => {
    const dead = `ws://127.0.0.1:${await closedPort()}`;
    const r = run(
      process.execPath,
      [CLI, 'svm-info', '--json', '--svm', b.url, '--svm', a.url, '--svm', dead, '--token', 'test-token', '--timeout', '2s'],
      20_000,
    );
    assert.equal(r.status, 0, r.stderr);
    const info = JSON.parse(r.stdout) as {
      active: { url: string; generation: string; load: number; latencyMs: { median: number; samples: number } };
      svms: Array<{ url: string; state: string; priority: number; error?: { code: string } }>;
    };
    assert.equal(info.active.url, b.url);
    assert.match(info.active.generation, /\S/);
    assert.equal(typeof info.active.load, 'number');
    assert.equal(info.active.latencyMs.samples, 5);
    assert.ok(info.active.latencyMs.median > 0 && info.active.latencyMs.median < 1000);
    assert.deepEqual(
      info.svms.map((s) => [s.url, s.state === 'connected', s.priority]),
      [
        [b.url, true, 0],
        [a.url, true, 1],
        [dead, false, 2],
      ],
    );
    assert.equal(info.svms[2]!.error?.code, 'LA_ERR_SVM_UNAVAILABLE');

    const text = run(process.execPath, [CLI, 'svm-info', '--svm', dead, '--token', 'test-token', '--timeout', '500ms'], 20_000);
    assert.equal(text.status, 2);
    assert.match(text.stdout, /in use: none/);
    assert.match(text.stdout, /unreachable/);
    const help = run(process.execPath, [CLI, 'svm-info', '--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /Usage: lightagent svm-info/);
  });
});

async function closedPort(): Promise<number> {
  const net = await import('node:net');
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as import('node:net').AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}
