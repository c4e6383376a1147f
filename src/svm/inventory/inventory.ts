/**
 * The SVM's inventory of agents: every agent ever seen, per tenant, with its last state. Fed by
 * the sessions (connected, `state` reports of feature state-report, disconnected) and by the
 * `detection` events on core.events; publishes `protection` when an agent's state changes and
 * `agent-silent` / `agent-back` when it was not heard for longer than `silentAfterMs` or is heard
 * again. Rows live in an InventoryStore (memory with a file, or Redis shared by several SVMs).
 *
 * Bounds: at most `maxAgents` rows and `maxAgentsPerTenant` per tenant. A new agent past a bound
 * evicts the least recently seen rows of agents not connected (silent ones first), counted; when
 * every row is of a connected agent, the new one is not recorded (counted, logged once a minute).
 * Strings from agents are cut (paths, command lines: 1 KiB; host: 255 characters).
 *
 * Operations on one agent run in order (a promise chain per row), so a disconnect cannot overtake
 * the connect before it. A store that fails (Redis down) loses that update, logged once per
 * outage; scanning never waits for the inventory.
 */
import { logger } from '../../log.js';
import { FEATURES, type ScanJobReport, type StateReport } from '../../protocol/index.js';
import type { AgentFacts, AgentObserver } from '../agent-observer.js';
import type { DetectionSvmEvent, SvmEventBus } from '../events.js';
import type { SvmMetrics } from '../metrics.js';
import {
  keyOf,
  type AgentKey,
  type AgentStateName,
  type DetectionRecord,
  type HistoryEntry,
  type InventoryStore,
  type StoredAgent,
} from './types.js';

export interface InventoryOptions {
  store: InventoryStore;
  svmId: string;
  /** Not heard for longer than this: silent (default 15 min). */
  silentAfterMs?: number;
  /** Rows in all (default 20,000). */
  maxAgents?: number;
  /** Rows of one tenant (default 10,000). */
  maxAgentsPerTenant?: number;
  /** How often silences are checked (default min(30 s, silentAfterMs / 4), at least 250 ms). */
  sweepMs?: number;
  now?: () => number;
}

export const INVENTORY_DEFAULTS = { silentAfterMs: 15 * 60_000, maxAgents: 20_000, maxAgentsPerTenant: 10_000 } as const;

/** An agent as the admin API shows it (docs/console.md). */
export interface AgentView {
  agentId: string;
  tenant: string;
  host: string;
  os: string;
  osRelease: string | null;
  agentVersion: string;
  hypervisor: string | null;
  connected: boolean;
  svmId: string | null;
  firstSeen: string;
  lastSeen: string;
  silent: boolean;
  state: AgentStateName;
  reasons: string[];
  since: string | null;
  mode: string | null;
  generation: string | null;
  generationCurrent: boolean;
  cache: { entries: number; hitRate: number | null };
  deferred: number;
  detections: number;
  detectionsReported: number;
  policy: { name: string; version: string } | null;
  /** Feature scan-command: the agent's last scan job (docs/scans.md); null before the first. */
  scan: ScanJobReport | null;
}

export interface Counts {
  agents: number;
  protected: number;
  degraded: number;
  off: number;
  silent: number;
}

export const emptyCounts = (): Counts => ({ agents: 0, protected: 0, degraded: 0, off: 0, silent: 0 });

const cut = (s: string, n: number): string => (s.length > n ? s.slice(0, n) : s);
const LIST_CACHE_MS = 1000;

export class Inventory implements AgentObserver {
  readonly store: InventoryStore;
  readonly silentAfterMs: number;
  private readonly maxAgents: number;
  private readonly maxPerTenant: number;
  private readonly now: () => number;
  private readonly chains = new Map<string, Promise<void>>();
  /** This SVM's live connections by connection id (to keep connected agents fresh). */
  private readonly local = new Map<string, AgentFacts>();
  private timer: NodeJS.Timeout | undefined;
  private cached: { at: number; rows: Promise<StoredAgent[]> } | undefined;
  /** Row counts of the last full read, and rows admitted since (admission without a read each time). */
  private tally: { at: number; total: number; byTenant: Map<string, number> } | undefined;
  /** New rows admitted and not yet counted in `tally`; `written`: those whose write has completed. */
  private readonly admitted = new Tally();
  private readonly written = new Tally();
  /** Admissions near a bound run one at a time. */
  private admitLock: Promise<unknown> = Promise.resolve();
  private countsByTenant = new Map<string, Counts>();
  private failing = false;
  private refusedWarnedAt = -Infinity;
  private unsubscribe: (() => void) | undefined;
  private closed = false;
  readonly stats = { evictions: 0, refused: 0, writeFailures: 0 };
  private readonly log = logger('svm-inventory');

  constructor(
    private readonly o: InventoryOptions,
    private readonly events: SvmEventBus,
  ) {
    this.store = o.store;
    this.silentAfterMs = o.silentAfterMs ?? INVENTORY_DEFAULTS.silentAfterMs;
    this.maxAgents = o.maxAgents ?? INVENTORY_DEFAULTS.maxAgents;
    this.maxPerTenant = o.maxAgentsPerTenant ?? INVENTORY_DEFAULTS.maxAgentsPerTenant;
    this.now = o.now ?? Date.now;
  }

  /** Hear the sessions and detections of a core, speak state-report, count in its metrics, check silences. */
  attach(core: { observers: Set<AgentObserver>; features: string[]; events: SvmEventBus; metrics: SvmMetrics }): void {
    core.observers.add(this);
    if (!core.features.includes(FEATURES.stateReport)) core.features.push(FEATURES.stateReport);
    this.unsubscribe = this.events.subscribe((e) => {
      if (e.kind === 'detection') this.detection(e);
    });
    core.metrics.rows(
      'lightagent_svm_inventory_agents',
      'Agents in the inventory by tenant and state (protected, degraded, off, silent: not heard for longer than ' +
        'inventory.silent_after). With a shared Redis every SVM reports the whole fleet.',
      ['tenant', 'state'],
      () => {
        const out: Array<[Record<string, string>, number]> = [];
        for (const [tenant, c] of this.countsByTenant)
          for (const state of ['protected', 'degraded', 'off', 'silent'] as const) out.push([{ tenant, state }, c[state]]);
        return out;
      },
      () => this.rows(),
    );
    core.metrics.counter(
      'lightagent_svm_inventory_evictions_total',
      'Inventory rows of agents not connected removed to admit new agents (inventory.max_agents, max_agents_per_tenant).',
      () => this.stats.evictions,
    );
    core.metrics.counter(
      'lightagent_svm_inventory_refused_total',
      'New agents not recorded in the inventory because every row was of a connected agent.',
      () => this.stats.refused,
    );
    const every = this.o.sweepMs ?? Math.max(250, Math.min(30_000, Math.floor(this.silentAfterMs / 4)));
    this.timer = setInterval(() => void this.sweep(), every);
    this.timer.unref();
    void this.sweep();
  }

  // ---- what sessions report ----

  connected(a: AgentFacts): void {
    this.local.set(a.connId, a);
    this.run(a, async (prev) => {
      const t = this.now();
      if (!prev && !(await this.admit(a))) return undefined;
      const row: StoredAgent = {
        ...(prev ?? fresh(a, t)),
        host: cut(a.host, 255),
        os: cut(a.os, 128),
        agentVersion: cut(a.agentVersion, 128),
        hypervisor: a.hypervisor ? cut(a.hypervisor, 128) : null,
        svmId: this.o.svmId,
        conn: a.connId,
        connected: true,
        lastSeen: t,
        silent: false,
      };
      if (prev?.silent) this.publishSilence('agent-back', row);
      return row;
    });
  }

  state(a: AgentFacts, r: Omit<StateReport, 't'>): void {
    this.run(a, async (prev) => {
      const t = this.now();
      if (!prev && !(await this.admit(a))) return undefined;
      const before = prev ?? { ...fresh(a, t), svmId: this.o.svmId, conn: a.connId, connected: true };
      const since = Number.isFinite(Date.parse(r.since)) ? r.since : null;
      const row: StoredAgent = {
        ...before,
        agentVersion: r.agentVersion,
        os: r.os,
        osRelease: r.osRelease ?? null,
        lastSeen: t,
        silent: false,
        state: r.state,
        reasons: [...r.reasons],
        since,
        mode: r.mode,
        generation: r.generation ?? null,
        cache: { ...r.cache },
        deferred: r.deferred,
        detectionsReported: r.detections,
        policy: r.policy ? { ...r.policy } : null,
        scan: r.scan ? { ...r.scan } : (before.scan ?? null),
      };
      if (before.silent) this.publishSilence('agent-back', row);
      if (before.state !== row.state || before.reasons.join() !== row.reasons.join()) {
        await this.store.pushHistory(row, { time: new Date(t).toISOString(), state: row.state, reasons: row.reasons });
        if (before.state !== row.state && (before.state !== 'unknown' || row.state !== 'protected'))
          this.events.publish({
            kind: 'protection',
            time: since ?? new Date(t).toISOString(),
            tenant: row.tenant,
            agentId: row.agentId,
            host: row.host,
            state: row.state,
            previous: before.state,
            reasons: [...row.reasons],
          });
      }
      return row;
    });
  }

  disconnected(a: AgentFacts): void {
    this.local.delete(a.connId);
    this.run(a, (prev) => {
      // Another connection (this agent failed over, or reconnected) owns the row now.
      if (!prev || prev.conn !== a.connId) return Promise.resolve(undefined);
      return Promise.resolve({ ...prev, connected: false, conn: null, lastSeen: Math.max(prev.lastSeen, a.lastHeard()) });
    });
  }

  private detection(e: DetectionSvmEvent): void {
    this.run(e, async (prev) => {
      if (!prev) return undefined; // a row exists for every agent past hello (or it was refused)
      // The agent's clock, normalized (sorting and the timeline compare these); nonsense: the SVM's.
      const when = Date.parse(e.time);
      const d: DetectionRecord = {
        time: new Date(Number.isFinite(when) ? when : this.now()).toISOString(),
        tenant: e.tenant,
        agentId: e.agentId,
        host: cut(e.host, 255),
        path: cut(e.path, 1024),
        sha256: e.sha256 ?? null,
        threat: cut(e.threat, 256),
        action: e.action,
        process: e.process
          ? {
              pid: e.process.pid,
              ...(e.process.exe !== undefined ? { exe: cut(e.process.exe, 1024) } : {}),
              ...(e.process.cmdline !== undefined ? { cmdline: cut(e.process.cmdline, 1024) } : {}),
              ...(e.process.uid !== undefined ? { uid: e.process.uid } : {}),
            }
          : null,
      };
      await this.store.pushDetection(prev, d);
      return { ...prev, detections: prev.detections + 1, lastSeen: this.now(), silent: false };
    });
  }

  // ---- reading ----

  /** Every row (cached for a second; a local write drops the cache). */
  rows(): Promise<StoredAgent[]> {
    const t = this.now();
    if (!this.cached || t - this.cached.at > LIST_CACHE_MS) {
      // Rows written before the read starts are in it; those admitted later stay pending.
      const inRead = this.written.copy();
      const rows = this.store.list();
      this.cached = { at: t, rows };
      rows.then(
        (r) => {
          this.countsByTenant = countByTenant(r, t, this.silentAfterMs);
          const byTenant = new Map<string, number>();
          for (const x of r) byTenant.set(x.tenant, (byTenant.get(x.tenant) ?? 0) + 1);
          this.tally = { at: t, total: r.length, byTenant };
          this.admitted.subtract(inRead);
          this.written.subtract(inRead);
        },
        () => (this.cached = undefined),
      );
    }
    return this.cached.rows;
  }

  get(key: AgentKey): Promise<StoredAgent | undefined> {
    return this.store.get(key);
  }

  history(key: AgentKey): Promise<HistoryEntry[]> {
    return this.store.history(key);
  }

  /** Detections of these rows, newest first. */
  async detections(rows: readonly AgentKey[]): Promise<DetectionRecord[]> {
    const lists = await this.store.detections(rows);
    return lists.flat().sort((x, y) => (x.time < y.time ? 1 : x.time > y.time ? -1 : 0));
  }

  isSilent(row: StoredAgent, now = this.now()): boolean {
    return now - row.lastSeen > this.silentAfterMs;
  }

  view(row: StoredAgent, currentGeneration: string, now = this.now()): AgentView {
    const c = row.cache;
    const asked = c ? c.hits + c.misses : 0;
    return {
      agentId: row.agentId,
      tenant: row.tenant,
      host: row.host,
      os: row.os,
      osRelease: row.osRelease,
      agentVersion: row.agentVersion,
      hypervisor: row.hypervisor,
      connected: row.connected,
      svmId: row.svmId,
      firstSeen: new Date(row.firstSeen).toISOString(),
      lastSeen: new Date(row.lastSeen).toISOString(),
      silent: this.isSilent(row, now),
      state: row.state,
      reasons: [...row.reasons],
      since: row.since,
      mode: row.mode,
      generation: row.generation,
      generationCurrent: row.generation !== null && row.generation === currentGeneration,
      cache: { entries: c?.entries ?? 0, hitRate: c && asked > 0 ? Math.round((c.hits / asked) * 10_000) / 10_000 : null },
      deferred: row.deferred,
      detections: row.detections,
      detectionsReported: row.detectionsReported,
      policy: row.policy ? { ...row.policy } : null,
      scan: row.scan ? { ...row.scan } : null,
    };
  }

  /** Wait for every pending update (tests, close). */
  async settled(): Promise<void> {
    while (this.chains.size) await Promise.all([...this.chains.values()]);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.timer);
    this.unsubscribe?.();
    await this.settled();
    await this.store.close();
  }

  // ---- silences ----

  /** Flag agents not heard for longer than silentAfterMs (and keep this SVM's live agents fresh). */
  async sweep(): Promise<void> {
    if (this.closed) return;
    let rows: StoredAgent[];
    try {
      this.cached = undefined;
      rows = await this.rows();
      this.ok();
    } catch (e) {
      this.failed(e);
      return;
    }
    const t = this.now();
    for (const row of rows) {
      const live = row.conn ? this.local.get(row.conn) : undefined;
      if (live && row.connected) {
        // Heard on this SVM since: fresh (written at most every silentAfter / 2 per agent).
        const heard = live.lastHeard();
        if (heard > row.lastSeen && t - row.lastSeen > this.silentAfterMs / 2)
          this.run(row, (prev) =>
            Promise.resolve(
              prev && prev.conn === row.conn ? { ...prev, lastSeen: Math.max(prev.lastSeen, heard), silent: false } : undefined,
            ),
          );
        if (heard > row.lastSeen && t - heard <= this.silentAfterMs) continue;
      }
      if (!row.silent && this.isSilent(row, t)) {
        this.run(row, (prev) => {
          if (!prev || prev.silent || !this.isSilent(prev, this.now())) return Promise.resolve(undefined);
          // Not heard for so long and not connected here: whatever SVM had it is gone too.
          const local = prev.conn ? this.local.has(prev.conn) : false;
          const next = { ...prev, silent: true, ...(local ? {} : { connected: false, conn: null }) };
          this.publishSilence('agent-silent', next);
          return Promise.resolve(next);
        });
      }
    }
  }

  private publishSilence(kind: 'agent-silent' | 'agent-back', row: StoredAgent): void {
    this.events.publish({
      kind,
      time: new Date(this.now()).toISOString(),
      tenant: row.tenant,
      agentId: row.agentId,
      host: row.host,
      lastSeen: new Date(row.lastSeen).toISOString(),
    });
  }

  // ---- bounds ----

  /**
   * Room for a new row? Far from the bounds, the counts of the last full read (at most 10 s old)
   * plus the rows admitted since answer at once (a fleet of new agents arriving together costs a
   * read per 10 s, not one per agent). Near a bound, one admission at a time: a fresh read, and
   * the least recently seen agents not connected are evicted. Other SVMs sharing a Redis may
   * overshoot a bound by what they admit in the same moment; the next admission near it evicts.
   */
  private admit(k: AgentKey): Promise<boolean> {
    if (this.fits(k, 10_000)) return Promise.resolve(this.take(k));
    const p = this.admitLock.then(() => this.admitNearBound(k));
    this.admitLock = p.catch(() => {});
    return p;
  }

  private fits(k: AgentKey, maxAgeMs: number): boolean {
    const tl = this.tally;
    if (!tl || this.now() - tl.at >= maxAgeMs) return false;
    const total = tl.total + this.admitted.total;
    const tenant = (tl.byTenant.get(k.tenant) ?? 0) + this.admitted.of(k.tenant);
    return total + 1 <= this.maxAgents && tenant + 1 <= this.maxPerTenant;
  }

  private take(k: AgentKey): true {
    this.admitted.add(k.tenant);
    return true;
  }

  private async admitNearBound(k: AgentKey): Promise<boolean> {
    this.cached = undefined;
    const rows = await this.rows();
    if (this.fits(k, Infinity)) return this.take(k);
    const tl = this.tally!;
    const overTotal = tl.total + this.admitted.total + 1 - this.maxAgents;
    const overTenant = (tl.byTenant.get(k.tenant) ?? 0) + this.admitted.of(k.tenant) + 1 - this.maxPerTenant;
    const tenantRows = rows.filter((r) => r.tenant === k.tenant);
    const pick = (from: StoredAgent[], n: number) =>
      from
        .filter((r) => !r.connected)
        .sort((x, y) => Number(y.silent) - Number(x.silent) || x.lastSeen - y.lastSeen || x.firstSeen - y.firstSeen)
        .slice(0, n);
    const victims = new Map<string, StoredAgent>();
    if (overTenant > 0) for (const r of pick(tenantRows, overTenant)) victims.set(keyOf(r), r);
    if (overTotal - victims.size > 0)
      for (const r of pick(
        rows.filter((x) => !victims.has(keyOf(x))),
        overTotal - victims.size,
      ))
        victims.set(keyOf(r), r);
    const ofTenant = [...victims.values()].filter((r) => r.tenant === k.tenant).length;
    if (ofTenant < overTenant || victims.size < overTotal) {
      this.stats.refused++;
      const t = this.now();
      if (t - this.refusedWarnedAt > 60_000) {
        this.refusedWarnedAt = t;
        this.log.warn('inventory full of connected agents; a new agent is not recorded', {
          tenant: k.tenant,
          agents: rows.length,
          tenantAgents: tenantRows.length,
          maxAgents: this.maxAgents,
          maxAgentsPerTenant: this.maxPerTenant,
        });
      }
      return false;
    }
    await this.store.remove([...victims.values()]);
    this.stats.evictions += victims.size;
    // The removed rows leave the counts of the last read.
    tl.total -= victims.size;
    for (const r of victims.values()) tl.byTenant.set(r.tenant, (tl.byTenant.get(r.tenant) ?? 1) - 1);
    this.cached = undefined;
    return this.take(k);
  }

  // ---- plumbing ----

  /** Run `update` on one agent's row after its earlier updates; write what it returns. */
  private run(k: AgentKey, update: (prev: StoredAgent | undefined) => Promise<StoredAgent | undefined>): void {
    if (this.closed) return;
    const key = keyOf(k);
    const p = (this.chains.get(key) ?? Promise.resolve())
      .then(async () => {
        const prev = await this.store.get(k);
        const next = await update(prev);
        if (next) await this.store.put(next);
        if (next && !prev) this.written.add(next.tenant);
        this.cached = undefined;
        this.ok();
      })
      .catch((e: unknown) => {
        this.stats.writeFailures++;
        this.failed(e);
      });
    this.chains.set(key, p);
    void p.finally(() => {
      if (this.chains.get(key) === p) this.chains.delete(key);
    });
  }

  private failed(e: unknown): void {
    if (this.failing) return;
    this.failing = true;
    this.log.error('inventory store failed; updates are lost until it is back', { store: this.store.kind, message: (e as Error).message });
  }

  private ok(): void {
    if (!this.failing) return;
    this.failing = false;
    this.log.info('inventory store is back', { store: this.store.kind });
  }
}

/** Rows counted by tenant. */
class Tally {
  total = 0;
  private readonly by = new Map<string, number>();
  of(tenant: string): number {
    return this.by.get(tenant) ?? 0;
  }
  add(tenant: string): void {
    this.total++;
    this.by.set(tenant, this.of(tenant) + 1);
  }
  copy(): Tally {
    const c = new Tally();
    c.total = this.total;
    for (const [k, v] of this.by) c.by.set(k, v);
    return c;
  }
  subtract(o: Tally): void {
    this.total = Math.max(0, this.total - o.total);
    for (const [k, v] of o.by) {
      const n = this.of(k) - v;
      if (n > 0) this.by.set(k, n);
      else this.by.delete(k);
    }
  }
}

function fresh(a: AgentKey & { host: string }, t: number): StoredAgent {
  return {
    tenant: a.tenant,
    agentId: a.agentId,
    host: cut(a.host, 255),
    os: 'other',
    osRelease: null,
    agentVersion: '',
    hypervisor: null,
    svmId: null,
    conn: null,
    connected: false,
    firstSeen: t,
    lastSeen: t,
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
  };
}

/** Fleet counts of some rows: silent first, else by state (an agent of unknown state counts only in `agents`). */
export function countRows(rows: readonly StoredAgent[], now: number, silentAfterMs: number): Counts {
  const c = emptyCounts();
  for (const r of rows) add(c, r, now, silentAfterMs);
  return c;
}

function add(c: Counts, r: StoredAgent, now: number, silentAfterMs: number): void {
  c.agents++;
  if (now - r.lastSeen > silentAfterMs) c.silent++;
  else if (r.state !== 'unknown') c[r.state]++;
}

export function countByTenant(rows: readonly StoredAgent[], now: number, silentAfterMs: number): Map<string, Counts> {
  const by = new Map<string, Counts>();
  for (const r of rows) {
    let c = by.get(r.tenant);
    if (!c) by.set(r.tenant, (c = emptyCounts()));
    add(c, r, now, silentAfterMs);
  }
  return by;
}
