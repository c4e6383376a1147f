/**
 * SvmPool against scripted SVMs: choice by priority then load, failover of requests in flight
 * within their deadline, return to a preferred SVM only after it stayed up (no flapping),
 * generation events when switching, and the states when every SVM is down or refuses us.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { AuthError, SvmUnavailableError } from '../../src/errors.js';
import { SvmPool, type SvmPoolOptions } from '../../src/svm-link/index.js';
import { eventually } from '../helpers/procs.js';
import { fakeSvm, type FakeSvm } from '../helpers/fake-svm.js';

const SHA = 'b'.repeat(64);
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

function pool(svms: Array<{ svm: FakeSvm; priority: number }>, extra: Partial<SvmPoolOptions> = {}): SvmPool {
  const p = new SvmPool({
    svms: svms.map((s) => ({ url: s.svm.url, priority: s.priority })),
    token: 'good',
    agentId: 'agent-pool-1',
    host: 'h',
    os: 'linux',
    agentVersion: '0',
    deadlineMs: 2000,
    backoffMinMs: 20,
    backoffMaxMs: 80,
    connectTimeoutMs: 2000,
    holdDownMs: 400,
    ...extra,
  });
  cleanups.push(() => p.close());
  return p;
}

// Eight in flight: a test holding answers fills an SVM's window with a handful of requests.
const POOL_LIMITS = { maxChunk: 1 << 16, maxInFlight: 8 };

async function svms(...specs: Array<{ id: string; generation?: string; load?: number }>): Promise<FakeSvm[]> {
  const out = await Promise.all(specs.map((s) => fakeSvm({ ...s, limits: POOL_LIMITS })));
  for (const s of out) cleanups.push(() => s.close());
  return out;
}

describe('SvmPool', () => {
  it('uses the best priority even when a worse one reports less load', async () => {
    const [a, b] = await svms({ id: 'a', load: 0.9 }, { id: 'b', load: 0 });
    const p = pool([
      { svm: b!, priority: 1 },
      { svm: a!, priority: 0 },
    ]);
    await p.connect();
    await p.settled(1000);
    assert.equal(p.url, a!.url);
    assert.equal(p.welcome?.svmId, 'a');
    const v = await Promise.all(Array.from({ length: 20 }, () => p.lookup(SHA, 1)));
    assert.ok(v.every((x) => x.engine === 'a'));
    assert.equal(b!.received, 0);
    assert.deepEqual(
      p.status().map((s) => [s.url, s.active, s.state]),
      [
        [a!.url, true, 'connected'],
        [b!.url, false, 'connected'],
      ],
    );
  });

  it('within one priority picks the lowest load, and moves for load only after the hold-down and by a margin', async () => {
    const [a, b] = await svms({ id: 'a', load: 0.8 }, { id: 'b', load: 0.1 });
    const p = pool([
      { svm: a!, priority: 5 },
      { svm: b!, priority: 5 },
    ]);
    await p.connect();
    await eventually(() => p.url === b!.url, 2000, 'the less loaded SVM');
    const switches: string[] = [];
    p.on('connected', (w) => switches.push(w.svmId));
    // A small difference is no reason to move.
    a!.setLoad(0.05);
    b!.setLoad(0.15);
    await new Promise((r) => setTimeout(r, 600));
    assert.deepEqual(switches, []);
    // A large one is, but not before the hold-down on the active SVM has passed.
    const t0 = performance.now();
    b!.setLoad(0.9);
    await eventually(() => switches.length === 1, 3000, 'a move for load');
    assert.deepEqual(switches, ['a']);
    assert.equal(p.url, a!.url);
    assert.ok(performance.now() - t0 < 2000);
    assert.equal(p.load, 0.05);
  });

  it('answers every request in flight on a dying SVM through the next one, within the deadline, under the new generation', async () => {
    const [a, b] = await svms({ id: 'a', generation: 'gA' }, { id: 'b', generation: 'gB' });
    const p = pool(
      [
        { svm: a!, priority: 0 },
        { svm: b!, priority: 1 },
      ],
      { deadlineMs: 3000 },
    );
    await p.connect();
    await p.settled(1000);
    assert.equal(p.generation, 'gA');
    const events: string[] = [];
    p.on('connected', (w) => events.push(`connected ${w.svmId} ${w.generation}`));
    p.on('disconnected', () => events.push('disconnected'));
    a!.hold = true; // lookups and uploads reach A and wait there
    const t0 = performance.now();
    const content = Buffer.alloc(200_000, 7);
    const requests = Array.from({ length: 200 }, (_, i) =>
      (i % 4 === 0 ? p.scan(content.length, (off, len) => content.subarray(off, off + len), 3000) : p.lookup(SHA, i)).then((v) => ({
        v,
        ms: performance.now() - t0,
      })),
    );
    await eventually(() => a!.received >= 8, 3000, 'requests in flight on A');
    await a!.kill();
    const done = await Promise.all(requests);
    assert.equal(done.length, 200);
    assert.ok(
      done.every((d) => d.v.engine === 'b'),
      'every request answered by B',
    );
    assert.ok(done.every((d) => d.v.generation === 'gB'));
    assert.ok(Math.max(...done.map((d) => d.ms)) < 3000, 'within the deadline');
    assert.equal(a!.answered, 0);
    assert.ok(p.failovers >= 8, `requests in flight on A were sent again (${p.failovers})`);
    assert.deepEqual(events, ['connected b gB']);
    assert.equal(p.generation, 'gB');
    assert.equal(p.state, 'connected');
  });

  it('returns to the preferred SVM only after it stayed up for the hold-down, and not when it flaps', async () => {
    const [a, b] = await svms({ id: 'a', generation: 'gA' }, { id: 'b', generation: 'gB' });
    const p = pool(
      [
        { svm: a!, priority: 0 },
        { svm: b!, priority: 1 },
      ],
      { holdDownMs: 700 },
    );
    await p.connect();
    await p.settled(1000);
    const events: string[] = [];
    p.on('connected', (w) => events.push(w.svmId));
    await a!.kill();
    await eventually(() => p.url === b!.url, 2000, 'failover to B');
    // A comes back for less than the hold-down, then dies again: no move.
    await a!.revive();
    await eventually(() => p.status().find((s) => s.url === a!.url)?.state === 'connected', 3000, 'A reconnected');
    await new Promise((r) => setTimeout(r, 200));
    await a!.kill();
    await new Promise((r) => setTimeout(r, 800));
    assert.deepEqual(events, ['b'], 'no flap back to A');
    // A comes back and stays: the pool returns after the hold-down.
    await a!.revive();
    const up = await eventually(
      () => (p.status().find((s) => s.url === a!.url)?.state === 'connected' ? performance.now() : undefined),
      3000,
      'A reconnected',
    );
    await eventually(() => p.url === a!.url, 3000, 'return to A');
    const waited = performance.now() - up;
    assert.ok(waited >= 600, `waited the hold-down (${Math.round(waited)} ms)`);
    assert.deepEqual(events, ['b', 'a']);
    assert.equal(p.generation, 'gA');
    const v = await p.lookup(SHA, 1);
    assert.equal(v.engine, 'a');
  });

  it('forwards generation and load reports of the active SVM only', async () => {
    const [a, b] = await svms({ id: 'a', generation: 'g1' }, { id: 'b', generation: 'g1' });
    const p = pool([
      { svm: a!, priority: 0 },
      { svm: b!, priority: 1 },
    ]);
    await p.connect();
    await p.settled(1000);
    const gens: string[] = [];
    const loads: number[] = [];
    p.on('generation', (g) => gens.push(g));
    p.on('load', (l) => loads.push(l));
    b!.setGeneration('g9');
    b!.setLoad(0.5);
    a!.setGeneration('g2');
    a!.setLoad(0.25);
    await eventually(() => gens.length === 1 && loads.length === 1, 2000, 'reports');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(gens, ['g2']);
    assert.deepEqual(loads, [0.25]);
    assert.equal(p.generation, 'g2');
  });

  it('with every SVM down: disconnected, requests fail fast with SvmUnavailableError, then recovers', async () => {
    const [a, b] = await svms({ id: 'a' }, { id: 'b' });
    const p = pool([
      { svm: a!, priority: 0 },
      { svm: b!, priority: 1 },
    ]);
    await p.connect();
    await p.settled(1000);
    let disconnected = 0;
    p.on('disconnected', () => disconnected++);
    await a!.kill();
    await b!.kill();
    await eventually(() => p.state === 'disconnected', 2000, 'disconnected');
    assert.equal(disconnected, 1);
    const t0 = performance.now();
    await assert.rejects(p.lookup(SHA, 1, 300), SvmUnavailableError);
    const ms = performance.now() - t0;
    assert.ok(ms >= 250 && ms < 1000, `failed at its deadline (${Math.round(ms)} ms)`);
    await b!.revive();
    const v = await p.lookup(SHA, 1, 2000);
    assert.equal(v.engine, 'b');
  });

  it('is refused only when every SVM refuses this agent', async () => {
    const [a, b] = await svms({ id: 'a' }, { id: 'b' });
    const p = pool(
      [
        { svm: a!, priority: 0 },
        { svm: b!, priority: 1 },
      ],
      { token: 'bad' },
    );
    let refused = 0;
    p.on('refused', () => refused++);
    await assert.rejects(p.connect(), AuthError);
    assert.equal(p.state, 'refused');
    assert.equal(refused, 1);
    await assert.rejects(p.lookup(SHA, 1), AuthError);
  });

  it('a closed pool fails its waiting requests and connects no more', async () => {
    const [a] = await svms({ id: 'a' });
    const p = pool([{ svm: a!, priority: 0 }]);
    await p.connect();
    a!.hold = true;
    const pending = p.lookup(SHA, 1, 5000);
    await eventually(() => a!.received === 1, 2000, 'request on the wire');
    p.close();
    await assert.rejects(pending, SvmUnavailableError);
    assert.equal(p.state, 'closed');
  });

  it('carries the priority: a foreground lookup goes ahead of 40 queued background lookups on the active SVM', async () => {
    const [a] = await Promise.all([fakeSvm({ id: 'a', limits: POOL_LIMITS, answerDelayMs: 20 })]);
    cleanups.push(() => a!.close());
    const p = pool([{ svm: a!, priority: 0 }], { deadlineMs: 30_000 });
    await p.connect();
    let bgDone = 0;
    const bg = Array.from({ length: 40 }, () => p.lookup(SHA, 1, 30_000, 'background').then(() => bgDone++));
    await new Promise((r) => setTimeout(r, 5));
    await p.lookup(SHA, 1, 30_000, 'foreground');
    assert.ok(bgDone <= 12, `${bgDone} background lookups were answered before the foreground one`);
    assert.equal(p.windowStats.foreground.atOnce, 1);
    await Promise.all(bg);
    assert.equal(p.windowStats.background.admitted, 40);
  });
});
