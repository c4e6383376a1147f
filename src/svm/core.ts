/**
 * SvmCore: what every agent session shares — tenant tokens, the engine, the shared verdict cache,
 * the upload memory budget, single flight per content hash, metrics, and the load figure.
 *
 * Trust (DESIGN.md, "Trust and the caches"): only `scan` writes the cache, with what
 * the engine found over bytes whose SHA-256 the SVM computed itself. `lookup` only reads.
 */
import { logger } from '../log.js';
import type { VerdictMsg } from '../protocol/index.js';
import type { AgentObserver } from './agent-observer.js';
import type { ScanEngine } from './engines/engine.js';
import { SvmEventBus } from './events.js';
import { LookupCoalescer } from './coalesce.js';
import { FairScheduler } from './fairness.js';
import { TenantReadGate } from './read-gate.js';
import { SvmMetrics } from './metrics.js';
import { PolicyBook } from './policies.js';
import type { ReportTarget } from './reports.js';
import { SignatureAge, type SignatureStatus } from './signature-age.js';
import { TokenStore, type TenantToken } from './tokens.js';
import { UploadBudget } from './uploads.js';
import type { CachedVerdict, SharedVerdictCache, VerdictKey } from './verdict-cache.js';

export interface CoreOptions {
  svmId: string;
  /** Tenant tokens in clear; only their SHA-256 is kept. */
  tokens: readonly TenantToken[];
  maxFileSize: number;
  maxChunk: number;
  maxInFlight: number;
  uploadTimeoutMs: number;
  helloTimeoutMs: number;
  /** Bytes of upload content held in memory at once, across all agents. */
  uploadMemory: number;
  /** Upload bytes one agent connection may hold (default: max(maxFileSize, uploadMemory / 8)). */
  uploadMemoryPerAgent?: number | undefined;
  /** Upload bytes one tenant's agents may hold together (default: uploadMemory / 2 with several tenants, else all of it). */
  uploadMemoryPerTenant?: number | undefined;
  /** Uploads one agent may have receiving at once; more are answered LA_ERR_BUSY. */
  uploadsPerAgent: number;
  /** An upload with no chunk for this long is dropped (LA_ERR_UPLOAD_TIMEOUT). */
  uploadStallMs: number;
  /** The longest a lookup of content another agent is uploading waits for that upload's verdict (0: never; coalesce.ts). */
  coalesceMs?: number | undefined;
  /** Bytes of one tenant's frames handled per event-loop turn while other tenants are active (read-gate.ts; 0: off). */
  fairReadBytes?: number | undefined;
  /** Per agent: requests (lookups + scans) per second, and the burst allowed above it. */
  rateLimit: { perSecond: number; burst: number };
  /** Engine scans running at once, all agents together. */
  scanConcurrency: number;
  /** Per agent: engine scans waiting for a slot; more are refused with LA_ERR_RATE_LIMITED. */
  agentQueue: number;
  /** Signatures older than this are stale (/healthz degraded, event `signatures-stale`); default 7 days. */
  maxSignatureAgeMs?: number | undefined;
}

/** Default max_signature_age: 7 days. */
export const DEFAULT_MAX_SIGNATURE_AGE_MS = 7 * 24 * 3600 * 1000;

/** A verdict without its envelope: what lookup and scan produce. */
export type VerdictFields = Omit<VerdictMsg, 't' | 'id'>;

/** Default lookup_coalesce: the longest a lookup waits for another agent's upload of the same content. */
export const DEFAULT_COALESCE_MS = 500;
/** A held lookup is released when the upload it waits for shows no progress for this long. */
const COALESCE_PROGRESS_MS = 200;

/** Default fair_read_bytes: one tenant's frames handled per event-loop turn while others are active. */
export const DEFAULT_FAIR_READ_BYTES = 256 * 1024;

/** Engine scans running at once that count as full load (the load figure agents balance on). */
const SCAN_CAPACITY = 64;

export class SvmCore {
  readonly metrics: SvmMetrics;
  readonly tokens: TokenStore;
  readonly budget: UploadBudget;
  /** Sessions past hello and not closed: counted, sent load and generation reports. */
  readonly agents = new Set<ReportTarget>();
  /** Connections past hello by tenant and agent id: two live ones with one id are two clones. */
  private readonly agentIds = new Map<string, number>();
  private readonly inflight = new Map<string, Promise<VerdictFields>>();
  /** Lookups that missed recently, whose agents are about to upload them: see lookup(). */
  readonly coalescer: LookupCoalescer;
  /** Read back-pressure by tenant: one tenant's frames cannot fill every turn of the event loop. */
  readonly readGate: TenantReadGate;
  readonly scheduler: FairScheduler;
  /** Detections, agent state changes, policies, signatures: for the inventory, SIEM export and console. */
  readonly events = new SvmEventBus();
  /** Features of lightagent/1 this SVM speaks, sent in `welcome` (see FEATURES in protocol/messages.ts). */
  readonly features: string[] = [];
  /** Signature reloads by outcome (SIGHUP, a watched file changed): lightagent_svm_signature_reloads_total. */
  readonly signatureReloads = { ok: 0, failed: 0 };
  readonly signatureAge: SignatureAge;
  private watched: { generation: string; stale: boolean } | undefined;
  /** Central agent settings per tenant and group (feature policy); replaced whole on a config reload. */
  policies = new PolicyBook();
  /** Hear agents connect, report their state and go (the inventory). */
  readonly observers = new Set<AgentObserver>();
  private activeScans = 0;
  private inflightHits = 0;
  private readonly log = logger('svm');

  constructor(
    readonly opts: CoreOptions,
    readonly engine: ScanEngine,
    readonly cache: SharedVerdictCache,
  ) {
    this.tokens = new TokenStore(opts.tokens);
    this.budget = new UploadBudget(uploadLimits(opts));
    const holdMs = opts.coalesceMs ?? DEFAULT_COALESCE_MS;
    this.coalescer = new LookupCoalescer({
      holdMs,
      // Waiting for a running scan of the content: as long as an upload of it may take (its own
      // upload would join that scan anyway).
      joinMs: opts.uploadTimeoutMs,
      progressMs: Math.min(holdMs, COALESCE_PROGRESS_MS),
      perAgent: Math.max(1, Math.floor(opts.maxInFlight / 4)),
      capacity: 100_000,
    });
    this.readGate = new TenantReadGate({ bytesPerTurn: opts.fairReadBytes ?? DEFAULT_FAIR_READ_BYTES, resumePerTurn: 2, activeMs: 1000 });
    this.metrics = new SvmMetrics(engine.name);
    this.scheduler = new FairScheduler(opts.scanConcurrency, opts.agentQueue);
    const m = this.metrics;
    m.gauge(
      'lightagent_svm_scan_queue_depth',
      'Engine scans waiting for a slot (scan_concurrency), all agents together.',
      () => this.scheduler.depth,
    );
    m.gauge('lightagent_svm_agents_connected', 'Agents connected and past hello.', () => this.agents.size);
    m.gauge('lightagent_svm_upload_bytes_held', 'Upload bytes held in memory now.', () => this.budget.used);
    m.gauge(
      'lightagent_svm_upload_bytes_budget',
      'Upload bytes that may be held in memory at once (upload_memory).',
      () => this.budget.capacity,
    );
    m.gauge('lightagent_svm_scans_active', 'Engine scans running now.', () => this.activeScans);
    m.gauge('lightagent_svm_load', 'Load reported to agents, 0..1.', () => this.load());
    m.gauge('lightagent_svm_cache_entries', 'Entries in the shared verdict cache.', () => this.cache.stats().entries);
    m.labelled('lightagent_svm_agents_by_tenant', 'Agents connected and past hello, by tenant.', 'gauge', 'tenant', () => {
      const by: Record<string, number> = {};
      for (const a of this.agents) by[a.tenantName] = (by[a.tenantName] ?? 0) + 1;
      return by;
    });
    m.labelled(
      'lightagent_svm_cache_hits_by_tier_total',
      'Requests answered without an engine run, by where the verdict came from: memory (this SVM), redis (shared with ' +
        'other SVMs), inflight (a scan of the same content already running).',
      'counter',
      'tier',
      () => ({ ...(this.cache.tierHits?.() ?? {}), inflight: this.inflightHits }),
    );
    m.gauge('lightagent_svm_engine_healthy', 'Can the engine scan now (1) or not (0).', () => (this.engine.healthy() ? 1 : 0));
    m.gauge('lightagent_svm_cache_healthy', 'Is the shared verdict cache reachable (1) or is the SVM on its memory tier only (0).', () =>
      this.cache.healthy() ? 1 : 0,
    );
    const age = (this.signatureAge = new SignatureAge(engine));
    m.labelled(
      'lightagent_svm_signature_age_seconds',
      "Seconds since the signatures in force were made, by engine: clamd's database date from VERSION (or the newest " +
        "file in clamd.database_dir), the newest YARA rule file's or builtin signature file's mtime. No series when the " +
        'engine does not say (builtin with its EICAR set only, clamd with custom databases and no database_dir).',
      'gauge',
      'engine',
      () => {
        const s = age.seconds();
        return s === undefined ? {} : { [engine.name]: s };
      },
    );
    m.gauge('lightagent_svm_signatures_stale', 'Are the signatures in force older than max_signature_age (1) or not (0).', () =>
      this.signatures().stale ? 1 : 0,
    );
    m.labelled(
      'lightagent_svm_signature_reloads_total',
      'Signature reloads (SIGHUP, or a watched builtin/YARA file changed) by result: ok, or failed (the previous ' +
        'signatures stay in force).',
      'counter',
      'result',
      () => this.signatureReloads,
    );
    m.counter(
      'lightagent_svm_cache_evictions_total',
      'Entries evicted from the shared verdict cache to stay within cache.entries.',
      () => this.cache.stats().evictions,
    );
    m.counter(
      'lightagent_svm_cache_uncached_total',
      'Verdicts the memory cache did not store: a key that is not a SHA-256, or a new engine or threat name past ' +
        'the 65,536 it holds at once (those files are scanned again when asked).',
      () => this.cache.stats().uncached ?? 0,
    );
    m.counter(
      'lightagent_svm_lookups_coalesced_total',
      "Lookups of content another agent was uploading, answered by that upload's verdict (lookup_coalesce).",
      () => this.coalescer.coalesced,
    );
    m.labelled(
      'lightagent_svm_lookups_released_total',
      'Held lookups answered unknown (their agent uploads), by why: dropped (the upload was cancelled, dropped or failed), ' +
        'disconnected (its agent left), no-progress, hold-time (lookup_coalesce ran out).',
      'counter',
      'reason',
      () => ({ ...this.coalescer.released }),
    );
    m.counter(
      'lightagent_svm_reads_paused_total',
      'Connections paused because their tenant passed fair_read_bytes in one turn of the event loop while another tenant ' +
        'was active (4 x fair_read_bytes while it was alone).',
      () => this.readGate.pauses,
    );
  }

  /** Count a connection under its agent id; returns how many others already use that id. */
  claimAgentId(tenant: string, agentId: string): number {
    const key = `${tenant}\u0000${agentId}`;
    const others = this.agentIds.get(key) ?? 0;
    this.agentIds.set(key, others + 1);
    if (others > 0) this.metrics.duplicateAgentIds.inc();
    return others;
  }

  releaseAgentId(tenant: string, agentId: string): void {
    const key = `${tenant}\u0000${agentId}`;
    const n = (this.agentIds.get(key) ?? 1) - 1;
    if (n > 0) this.agentIds.set(key, n);
    else this.agentIds.delete(key);
  }

  /** Tell every observer; one that throws is logged and skipped. */
  observe<K extends keyof AgentObserver>(what: K, ...args: Parameters<AgentObserver[K]>): void {
    for (const o of this.observers) {
      try {
        (o[what] as (...a: Parameters<AgentObserver[K]>) => void)(...args);
      } catch (e) {
        this.log.error('an agent observer failed', { what, message: (e as Error).message });
      }
    }
  }

  generation(): string {
    return this.engine.generation();
  }

  /** The freshness of the signatures in force, now. */
  signatures(now = Date.now()): SignatureStatus {
    const t = this.signatureAge.time();
    const maxMs = this.opts.maxSignatureAgeMs ?? DEFAULT_MAX_SIGNATURE_AGE_MS;
    const ageSeconds = t.at === undefined ? null : Math.max(0, Math.round((now - t.at) / 1000));
    return {
      generation: this.generation(),
      ageSeconds,
      ...(t.at !== undefined ? { madeAt: new Date(t.at).toISOString() } : {}),
      source: t.source,
      stale: ageSeconds !== null && ageSeconds * 1000 > maxMs,
      maxAgeSeconds: Math.round(maxMs / 1000),
    };
  }

  /**
   * Publish `signatures` when the generation changed since the last call, and `signatures-stale`
   * when the age crossed max_signature_age (either way: `ageSeconds` says which). Called on a timer
   * by the server and after each reload; the first call only takes note.
   */
  checkSignatures(now = Date.now()): void {
    const st = this.signatures(now);
    const before = this.watched;
    this.watched = { generation: st.generation, stale: st.stale };
    if (!before) {
      if (st.stale) this.publishStale(st, now);
      return;
    }
    const time = new Date(now).toISOString();
    if (before.generation !== st.generation) {
      this.log.info('signature generation changed', { generation: st.generation, previous: before.generation, ageSeconds: st.ageSeconds });
      this.events.publish({
        kind: 'signatures',
        time,
        engine: this.engine.name,
        generation: st.generation,
        previous: before.generation,
        ...(st.ageSeconds !== null ? { ageSeconds: st.ageSeconds } : {}),
      });
    }
    if (before.stale !== st.stale) this.publishStale(st, now);
  }

  private publishStale(st: SignatureStatus, now: number): void {
    if (st.stale)
      this.log.warn('signatures are older than max_signature_age', {
        generation: st.generation,
        ageSeconds: st.ageSeconds,
        maxAgeSeconds: st.maxAgeSeconds,
      });
    else this.log.info('signatures are fresh again', { generation: st.generation, ageSeconds: st.ageSeconds });
    this.events.publish({
      kind: 'signatures-stale',
      time: new Date(now).toISOString(),
      engine: this.engine.name,
      generation: st.generation,
      stale: st.stale,
      maxAgeSeconds: st.maxAgeSeconds,
      ...(st.ageSeconds !== null ? { ageSeconds: st.ageSeconds } : {}),
    });
  }

  /** 0..1: the larger of engine scans (running and queued) against SCAN_CAPACITY and held upload memory against the budget. */
  load(): number {
    const byMemory = this.budget.used / this.budget.capacity;
    const byScans = (this.activeScans + this.scheduler.depth) / SCAN_CAPACITY;
    return Math.min(1, Math.round(Math.max(byMemory, byScans) * 100) / 100);
  }

  /** Engine scans running or waiting now (reported to agents as `queue`). */
  queue(): number {
    return this.activeScans + this.scheduler.depth;
  }

  /**
   * The shared cache's verdict for `sha256`, or `unknown`. A miss of content another agent is
   * uploading or the engine is scanning waits, bounded, for that verdict (coalesce.ts), so a farm
   * of clones that miss one file at the same moment uploads it once; released without a verdict,
   * it answers `unknown` and its agent uploads. Keys are per tenant: one tenant never waits on
   * another. `agent` is the asking connection, `size` the size it announced.
   */
  async lookup(tenant: string, sha256: string, agent: object = this, size = 0): Promise<VerdictFields> {
    this.metrics.lookups.inc();
    const generation = this.generation();
    const hit = await this.cacheGet({ tenant, generation, sha256 });
    if (hit) {
      this.metrics.cacheHits.inc();
      return fromCache(hit, sha256, generation);
    }
    const key = `${tenant}\u0000${generation}\u0000${sha256}`;
    const running = this.inflight.get(key);
    const waited = await (running ? this.coalescer.join(agent, running) : this.coalescer.miss(key, sha256, agent, size));
    if (waited) {
      this.metrics.cacheHits.inc();
      this.inflightHits++;
      return { ...waited, cached: true };
    }
    return { verdict: 'unknown', sha256, generation };
  }

  /**
   * Judge uploaded bytes whose SHA-256 the SVM computed. Another agent may have sent the same
   * content already (cache hit, no engine run); concurrent scans of one hash share one run.
   */
  async scan(tenant: string, sha256: string, content: Buffer, agent: object = this): Promise<VerdictFields> {
    const generation = this.generation();
    const key: VerdictKey = { tenant, generation, sha256 };
    const flightKey = `${tenant}\u0000${generation}\u0000${sha256}`;
    const hit = await this.cacheGet(key);
    if (hit) {
      this.metrics.cacheHits.inc();
      const v = fromCache(hit, sha256, generation);
      this.coalescer.settle(flightKey, Promise.resolve(v));
      return v;
    }
    const running = this.inflight.get(flightKey);
    if (running) {
      this.metrics.cacheHits.inc();
      this.inflightHits++;
      this.coalescer.settle(flightKey, running);
      return { ...(await running), cached: true };
    }
    const p = this.scheduler.run(tenant, agent, () => this.runEngine(key, content));
    this.inflight.set(flightKey, p);
    this.coalescer.settle(flightKey, p);
    try {
      return await p;
    } finally {
      this.inflight.delete(flightKey);
    }
  }

  /** A cache that fails (Redis down) is a miss, never a failed request. */
  private async cacheGet(key: VerdictKey): Promise<CachedVerdict | undefined> {
    try {
      return await this.cache.get(key);
    } catch (e) {
      this.log.warn('verdict cache read failed; treating it as a miss', { cache: this.cache.kind, message: (e as Error).message });
      return undefined;
    }
  }

  private async runEngine(key: VerdictKey, content: Buffer): Promise<VerdictFields> {
    this.activeScans++;
    const t0 = performance.now();
    try {
      const r = await this.engine.scan(content, { sha256: key.sha256 });
      this.metrics.scans.inc();
      this.metrics.bytesScanned.inc(content.length);
      this.metrics.scanSeconds.observe((performance.now() - t0) / 1000);
      const verdict = r.infected ? 'infected' : 'clean';
      const threat = r.infected ? (r.threat ?? 'Unnamed-Threat') : undefined;
      if (threat) {
        this.metrics.detections.inc();
        this.log.warn('infected content scanned', {
          tenant: key.tenant,
          sha256: key.sha256,
          size: content.length,
          threat,
          engine: this.engine.name,
        });
      }
      const cached: CachedVerdict = { verdict, engine: this.engine.name, ...(threat ? { threat } : {}) };
      try {
        await this.cache.set(key, cached);
      } catch (e) {
        this.log.warn('verdict cache write failed; continuing without it', { cache: this.cache.kind, message: (e as Error).message });
      }
      return { verdict, sha256: key.sha256, generation: key.generation, engine: this.engine.name, ...(threat ? { threat } : {}) };
    } finally {
      this.activeScans--;
    }
  }
}

/** The upload memory bounds, defaults filled in (docs/svm.md, "Fairness"). */
export function uploadLimits(
  o: Pick<CoreOptions, 'uploadMemory' | 'uploadMemoryPerAgent' | 'uploadMemoryPerTenant' | 'maxFileSize' | 'tokens'>,
): { capacity: number; perTenant: number; perAgent: number } {
  const tenants = new Set(o.tokens.map((t) => t.tenant)).size;
  const perTenant = Math.min(
    o.uploadMemory,
    o.uploadMemoryPerTenant ?? (tenants > 1 ? Math.max(o.maxFileSize, Math.floor(o.uploadMemory / 2)) : o.uploadMemory),
  );
  const perAgent = Math.min(perTenant, o.uploadMemoryPerAgent ?? Math.max(o.maxFileSize, Math.floor(o.uploadMemory / 8)));
  return { capacity: o.uploadMemory, perTenant, perAgent };
}

function fromCache(hit: CachedVerdict, sha256: string, generation: string): VerdictFields {
  return { verdict: hit.verdict, sha256, generation, engine: hit.engine, cached: true, ...(hit.threat ? { threat: hit.threat } : {}) };
}
