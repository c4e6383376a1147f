/**
 * The SIEM export's queue without a receiver: bounds by events and bytes, round-robin by tenant,
 * one tenant's flood costs that tenant's oldest events first, order kept within a tenant, a
 * failed write queued again first; the exporter never waits and counts what it drops.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SiemExporter } from '../../src/svm/siem/exporter.js';
import { TenantQueue } from '../../src/svm/siem/tenant-queue.js';
import { freePort } from '../helpers/server-process.js';

const m = (s: string) => Buffer.from(s);
const drain = (q: TenantQueue) => {
  const out: string[] = [];
  for (let x = q.shift(); x; x = q.shift()) out.push(`${x.tenant}:${x.msg.toString()}`);
  return out;
};

describe('SIEM tenant queue', () => {
  it('takes tenants in turn, keeps each tenant in order, and counts events and bytes', () => {
    const q = new TenantQueue();
    for (const [t, s] of [
      ['a', '1'],
      ['a', '2'],
      ['b', '1'],
      ['a', '3'],
      ['c', '1'],
      ['b', '2'],
    ])
      q.push({ tenant: t!, msg: m(s!) });
    assert.equal(q.size, 6);
    assert.equal(q.bytes, 6);
    assert.deepEqual(drain(q), ['a:1', 'b:1', 'c:1', 'a:2', 'b:2', 'a:3']);
    assert.equal(q.size, 0);
    assert.equal(q.bytes, 0);
  });

  it('drops the oldest event of the tenant holding the most', () => {
    const q = new TenantQueue();
    q.push({ tenant: 'quiet', msg: m('q1') });
    for (let i = 1; i <= 5; i++) q.push({ tenant: 'noisy', msg: m(`n${i}`) });
    assert.equal(q.dropOne()!.msg.toString(), 'n1');
    assert.equal(q.dropOne()!.msg.toString(), 'n2');
    assert.deepEqual(drain(q), ['quiet:q1', 'noisy:n3', 'noisy:n4', 'noisy:n5']);
    assert.equal(q.dropOne(), undefined);
  });

  it('puts failed writes back first, in their order', () => {
    const q = new TenantQueue();
    q.push({ tenant: 'a', msg: m('3') });
    q.unshift([
      { tenant: 'a', msg: m('1') },
      { tenant: 'a', msg: m('2') },
    ]);
    assert.deepEqual(drain(q), ['a:1', 'a:2', 'a:3']);
  });
});

describe('SIEM exporter with no receiver', () => {
  it('queues without waiting, bounds by events and bytes, keeps a quiet tenant through a flood, counts drops and what close() leaves', async () => {
    const port = await freePort(); // nothing listens: connect is refused, the exporter retries
    const e = new SiemExporter({
      name: 'nobody',
      target: { protocol: 'tcp', host: '127.0.0.1', port },
      maxEvents: 10,
      maxBytes: 64 * 1024,
      backoffMs: { min: 50, max: 100 },
    });
    e.start();
    e.enqueue('quiet', m('important'));
    const t0 = performance.now();
    for (let i = 0; i < 10_000; i++) e.enqueue('noisy', m(`flood-${i}`));
    const ms = performance.now() - t0;
    assert.ok(ms < 2000, `10000 enqueues in ${ms.toFixed(0)} ms (about 1 µs each on an idle machine; the bound allows a loaded one)`);
    assert.equal(e.queuedEvents, 10);
    assert.equal(e.dropped, 10_001 - 10);
    assert.equal(e.connected, false);
    e.enqueue('big', Buffer.alloc(40 * 1024));
    e.enqueue('big', Buffer.alloc(40 * 1024));
    assert.ok(e.queuedBytes <= 64 * 1024, `bytes bounded: ${e.queuedBytes}`);
    await new Promise((r) => setTimeout(r, 300)); // a few refused connects
    await e.close(200);
    assert.equal(e.queuedEvents, 0);
    assert.equal(e.sent, 0);
    assert.equal(e.dropped, 10_001 + 2, 'every event is sent or dropped');
    e.enqueue('late', m('after close'));
    assert.equal(e.dropped, 10_004);
  });
});
