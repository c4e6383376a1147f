/**
 * One suite for every InventoryStore (memory, Redis): the store's own promises (rows, rings of at
 * most 100 newest first, removal, keys that cannot collide) and the Inventory over it (connect,
 * state, history, protection events, a stale disconnect that changes nothing, detections, bounds
 * with eviction, silences).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AgentFacts } from '../../src/svm/agent-observer.js';
import { SvmEventBus, type SvmEvent } from '../../src/svm/events.js';
import { Inventory, type InventoryOptions } from '../../src/svm/inventory/inventory.js';
import type { InventoryStore, StoredAgent } from '../../src/svm/inventory/types.js';
import { SvmMetrics } from '../../src/svm/metrics.js';
import { baseState } from './inventory-helpers.js';

export function facts(tenant: string, agentId: string, connId = `c-${agentId}`, heard = () => Date.now()): AgentFacts {
  return { tenant, agentId, host: `h-${agentId}`, os: 'linux', agentVersion: '0.1.0', connId, lastHeard: heard };
}

export function row(tenant: string, agentId: string, over: Partial<StoredAgent> = {}): StoredAgent {
  return {
    tenant,
    agentId,
    host: 'h',
    os: 'linux',
    osRelease: null,
    agentVersion: '0.1.0',
    hypervisor: null,
    svmId: 's1',
    conn: null,
    connected: false,
    firstSeen: 1000,
    lastSeen: 2000,
    silent: false,
    state: 'unknown',
    reasons: [],
    since: null,
    mode: null,
    generation: null,
    cache: null,
    deferred: 0,
    detections: 0,
    detectionsReported: 0,
    policy: null,
    ...over,
  };
}

export function makeInventory(store: InventoryStore, o: Partial<InventoryOptions> = {}) {
  const events = new SvmEventBus();
  const seen: SvmEvent[] = [];
  events.subscribe((e) => seen.push(e));
  const inv = new Inventory({ store, svmId: 's1', sweepMs: 3_600_000, ...o }, events);
  const core = { observers: new Set<never>(), features: [] as string[], events, metrics: new SvmMetrics('builtin') };
  inv.attach(core as never);
  return { inv, events, seen, core };
}

export function runInventoryConformance(name: string, make: () => Promise<InventoryStore>, opts: { skip?: string | undefined } = {}): void {
  describe(`inventory store conformance: ${name}`, { skip: opts.skip }, () => {
    it('keeps rows by (tenant, agentId); keys with odd characters never collide', async () => {
      const s = await make();
      try {
        await s.put(row('a', 'x'));
        await s.put(row('a', 'x/y:z%2F'));
        await s.put(row('a/x', 'y'));
        await s.put(row('b', 'x', { host: '<b>' }));
        assert.equal((await s.list()).length, 4);
        assert.equal((await s.get({ tenant: 'b', agentId: 'x' }))!.host, '<b>');
        assert.equal((await s.get({ tenant: 'a', agentId: 'x/y:z%2F' }))!.agentId, 'x/y:z%2F');
        assert.equal(await s.get({ tenant: 'a', agentId: 'nobody' }), undefined);
        await s.put(row('a', 'x', { state: 'off', reasons: ['protection-off'] }));
        assert.deepEqual((await s.get({ tenant: 'a', agentId: 'x' }))!.reasons, ['protection-off']);
        assert.equal((await s.list()).length, 4);
      } finally {
        await s.close();
      }
    });

    it('rings keep the newest 100, newest first; remove takes the rings too', async () => {
      const s = await make();
      try {
        const k = { tenant: 'a', agentId: 'ring' };
        await s.put(row('a', 'ring'));
        for (let i = 0; i < 130; i++) {
          await s.pushHistory(k, { time: new Date(i * 1000).toISOString(), state: 'degraded', reasons: [`r${i}`] });
          await s.pushDetection(k, {
            time: new Date(i * 1000).toISOString(),
            tenant: 'a',
            agentId: 'ring',
            host: 'h',
            path: `/p/${i}`,
            sha256: null,
            threat: 'T',
            action: 'denied',
            process: null,
          });
        }
        const h = await s.history(k);
        assert.equal(h.length, 100);
        assert.deepEqual(h[0]!.reasons, ['r129']);
        assert.deepEqual(h[99]!.reasons, ['r30']);
        const [d, none] = await s.detections([k, { tenant: 'a', agentId: 'other' }]);
        assert.equal(d!.length, 100);
        assert.equal(d![0]!.path, '/p/129');
        assert.deepEqual(none, []);
        await s.remove([k]);
        assert.equal(await s.get(k), undefined);
        assert.deepEqual(await s.history(k), []);
        assert.deepEqual((await s.detections([k]))[0], []);
      } finally {
        await s.close();
      }
    });

    it('Inventory: connect, state, history, protection events, a stale disconnect changes nothing', async () => {
      const { inv, seen, core } = makeInventory(await make());
      try {
        assert.deepEqual(core.features, ['state-report']);
        const f1 = facts('a', 'ag', 'conn-1');
        inv.connected(f1);
        inv.state(f1, { ...baseState(), state: 'degraded', reasons: ['files-queued'], deferred: 4 });
        await inv.settled();
        let r = (await inv.get({ tenant: 'a', agentId: 'ag' }))!;
        assert.equal(r.connected, true);
        assert.equal(r.conn, 'conn-1');
        assert.equal(r.state, 'degraded');
        assert.equal(r.deferred, 4);
        // The same agent on a second connection (failover, reconnect), then the old one closes late.
        const f2 = facts('a', 'ag', 'conn-2');
        inv.connected(f2);
        inv.disconnected(f1);
        inv.state(f2, baseState());
        await inv.settled();
        r = (await inv.get({ tenant: 'a', agentId: 'ag' }))!;
        assert.equal(r.connected, true, 'the stale disconnect of conn-1 changes nothing');
        assert.equal(r.conn, 'conn-2');
        assert.equal(r.state, 'protected');
        assert.equal((await inv.rows()).length, 1);
        const h = await inv.history({ tenant: 'a', agentId: 'ag' });
        assert.deepEqual(
          h.map((x) => x.state),
          ['protected', 'degraded'],
        );
        const p = seen.filter((e) => e.kind === 'protection');
        assert.deepEqual(
          p.map((e) => e.kind === 'protection' && `${e.previous}->${e.state}`),
          ['unknown->degraded', 'degraded->protected'],
        );
        inv.disconnected(f2);
        await inv.settled();
        r = (await inv.get({ tenant: 'a', agentId: 'ag' }))!;
        assert.equal(r.connected, false);
        assert.equal(r.conn, null);
      } finally {
        await inv.close();
      }
    });

    it('Inventory: detections from core.events land in the agent ring and count', async () => {
      const { inv, events } = makeInventory(await make());
      try {
        inv.connected(facts('a', 'det'));
        await inv.settled();
        for (let i = 0; i < 3; i++)
          events.publish({
            kind: 'detection',
            time: new Date(Date.now() + i).toISOString(),
            tenant: 'a',
            agentId: 'det',
            host: 'h',
            path: `/x/${i}${'y'.repeat(3000)}`,
            threat: 'Eicar',
            action: 'quarantined',
            process: { pid: 1, cmdline: 'c'.repeat(4000) },
          });
        // For an agent the inventory never saw: ignored.
        events.publish({
          kind: 'detection',
          time: new Date().toISOString(),
          tenant: 'a',
          agentId: 'ghost',
          host: 'h',
          path: '/',
          threat: 'T',
          action: 'denied',
        });
        await inv.settled();
        const r = (await inv.get({ tenant: 'a', agentId: 'det' }))!;
        assert.equal(r.detections, 3);
        const d = await inv.detections([r]);
        assert.equal(d.length, 3);
        assert.ok(d[0]!.path.startsWith('/x/2'));
        assert.equal(d[0]!.path.length, 1024, 'paths are cut to 1 KiB');
        assert.equal(d[0]!.process!.cmdline!.length, 1024);
        assert.equal(await inv.get({ tenant: 'a', agentId: 'ghost' }), undefined);
      } finally {
        await inv.close();
      }
    });

    it('Inventory: bounds evict the least recently seen agents not connected, silent first; counted', async () => {
      let t = 1_000_000;
      const { inv } = makeInventory(await make(), { maxAgents: 3, maxAgentsPerTenant: 2, now: () => t, silentAfterMs: 60_000 });
      try {
        const f = (tenant: string, id: string) => facts(tenant, id, `c-${tenant}-${id}`, () => t);
        inv.connected(f('a', 'old'));
        await inv.settled();
        t += 1000;
        inv.connected(f('a', 'newer'));
        await inv.settled();
        inv.disconnected(f('a', 'old'));
        await inv.settled();
        t += 1000;
        inv.disconnected(f('a', 'newer'));
        await inv.settled();
        // Tenant a is at its bound (2): a third agent of a evicts a's least recently seen.
        t += 1000;
        inv.connected(f('a', 'third'));
        await inv.settled();
        assert.deepEqual((await inv.rows()).map((r) => r.agentId).sort(), ['newer', 'third']);
        assert.equal(inv.stats.evictions, 1);
        // Total bound 3: b's first fits, b's second evicts the only row not connected ('newer').
        inv.connected(f('b', 'b1'));
        await inv.settled();
        inv.connected(f('b', 'b2'));
        await inv.settled();
        assert.deepEqual((await inv.rows()).map((r) => `${r.tenant}/${r.agentId}`).sort(), ['a/third', 'b/b1', 'b/b2']);
        assert.equal(inv.stats.evictions, 2);
        // Every row connected: a newcomer is not recorded, counted.
        inv.connected(f('c', 'c1'));
        await inv.settled();
        assert.equal(await inv.get({ tenant: 'c', agentId: 'c1' }), undefined);
        assert.equal(inv.stats.refused, 1);
        assert.equal((await inv.rows()).length, 3);
      } finally {
        await inv.close();
      }
    });

    it('Inventory: a crowd of new agents at once stays within the bounds', async () => {
      const { inv } = makeInventory(await make(), { maxAgents: 20, maxAgentsPerTenant: 15 });
      try {
        for (let i = 0; i < 40; i++) inv.connected(facts(i % 2 ? 'a' : 'b', `crowd-${i}`));
        await inv.settled();
        const rows = await inv.rows();
        assert.equal(rows.length, 20);
        assert.ok(rows.filter((r) => r.tenant === 'a').length <= 15);
        assert.equal(inv.stats.refused, 20);
      } finally {
        await inv.close();
      }
    });

    it('Inventory: silent past silentAfter (one event), back when heard; live agents kept fresh', async () => {
      let t = 5_000_000;
      let heard = t;
      const { inv, seen } = makeInventory(await make(), { now: () => t, silentAfterMs: 60_000 });
      try {
        const gone = facts('a', 'gone', 'c-gone', () => t);
        const live = facts('a', 'live', 'c-live', () => heard);
        inv.connected(gone);
        inv.connected(live);
        await inv.settled();
        inv.disconnected(gone);
        await inv.settled();
        t += 50_000;
        heard = t; // the live agent sent frames
        await inv.sweep();
        await inv.settled();
        t += 20_000; // gone: 70 s silent; live: heard 20 s ago
        await inv.sweep();
        await inv.settled();
        await inv.sweep();
        await inv.settled();
        const silent = seen.filter((e) => e.kind === 'agent-silent');
        assert.deepEqual(
          silent.map((e) => e.kind === 'agent-silent' && e.agentId),
          ['gone'],
        );
        const g = (await inv.get({ tenant: 'a', agentId: 'gone' }))!;
        assert.equal(g.silent, true);
        assert.equal(inv.isSilent(g, t), true);
        const l = (await inv.get({ tenant: 'a', agentId: 'live' }))!;
        assert.equal(inv.isSilent(l, t), false);
        inv.connected(facts('a', 'gone', 'c-gone-2', () => t));
        await inv.settled();
        assert.equal(seen.filter((e) => e.kind === 'agent-back').length, 1);
        assert.equal((await inv.get({ tenant: 'a', agentId: 'gone' }))!.silent, false);
      } finally {
        await inv.close();
      }
    });
  });
}
