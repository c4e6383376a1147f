/**
 * SvmCore: what every agent session shares — tokens, the engine, the shared verdict cache, the
 * upload memory budget, single flight per content hash, metrics, and the load figure.
 */
import crypto from 'node:crypto';
import { logger } from '../log.js';
import type { VerdictMsg } from '../protocol/index.js';
import type { ScanEngine } from './engines/engine.js';
import { SvmMetrics } from './metrics.js';
import type { AgentSession } from './session.js';
import type { SharedVerdictCache } from './verdict-cache.js';

export interface CoreOptions {
  svmId: string;
  /** Tenant tokens in clear; only their SHA-256 is kept. */
  tokens: ReadonlyArray<{ tenant: string; token: string }>;
  maxFileSize: number;
  maxChunk: number;
  maxInFlight: number;
  uploadTimeoutMs: number;
  helloTimeoutMs: number;
  /** Bytes of upload content held in memory at once, across all agents. */
  uploadMemory: number;
}

type VerdictFields = Omit<VerdictMsg, 't' | 'id'>;

export function hashToken(token: string): string {
  return crypto.createHash('sha256').update(token, 'utf8').digest('hex');
}

export class SvmCore {
  readonly metrics = new SvmMetrics();
  readonly sessions = new Set<AgentSession>();
  private tokenHashes = new Map<string, string>();
  private reserved = 0;
  private readonly inflightScans = new Map<string, Promise<VerdictFields>>();
  private activeScans = 0;
  private readonly log = logger('svm');

  constructor(
    readonly opts: CoreOptions,
    readonly engine: ScanEngine,
    readonly cache: SharedVerdictCache,
  ) {
    this.setTokens(opts.tokens);
    this.metrics.gauge('lightagent_svm_agents_connected', 'Agents connected and past hello.', () => [...this.sessions].filter((s) => s.ready).length);
    this.metrics.gauge('lightagent_svm_upload_bytes_held', 'Upload bytes held in memory now.', () => this.reserved);
    this.metrics.gauge('lightagent_svm_cache_entries', 'Entries in the shared verdict cache.', () => this.cache.stats().entries);
    this.metrics.gauge('lightagent_svm_scans_active', 'Engine scans running now.', () => this.activeScans);
  }

  setTokens(tokens: ReadonlyArray<{ tenant: string; token: string }>): void {
    this.tokenHashes = new Map(tokens.map((t) => [hashToken(t.token), t.tenant]));
  }

  /** The tenant a token belongs to, or undefined. Compared by hash, in constant time per candidate. */
  tenantOf(token: string): string | undefined {
    const h = Buffer.from(hashToken(token), 'hex');
    let found: string | undefined;
    for (const [k, tenant] of this.tokenHashes) {
      if (crypto.timingSafeEqual(h, Buffer.from(k, 'hex'))) found = tenant;
    }
    return found;
  }

  generation(): string {
    return this.engine.generation();
  }

  /** 0..1: engine scans and held upload memory against their capacity. */
  load(): number {
    const byMemory = this.reserved / this.opts.uploadMemory;
    const byScans = this.activeScans / 64;
    return Math.min(1, Math.round(Math.max(byMemory, byScans) * 1000) / 1000);
  }

  reserve(bytes: number): boolean {
    if (this.reserved + bytes > this.opts.uploadMemory) return false;
    this.reserved += bytes;
    return true;
  }

  release(bytes: number): void {
    this.reserved = Math.max(0, this.reserved - bytes);
  }

  async lookup(tenant: string, sha256: string): Promise<VerdictFields> {
    this.metrics.lookups.inc();
    const generation = this.generation();
    const hit = await this.cache.get({ tenant, generation, sha256 }).catch(() => undefined);
    if (!hit) return { verdict: 'unknown', sha256, generation };
    this.metrics.cacheHits.inc();
    return { verdict: hit.verdict, sha256, generation, engine: hit.engine, cached: true, ...(hit.threat ? { threat: hit.threat } : {}) };
  }

  /** Judge uploaded bytes whose SHA-256 we computed. Concurrent scans of one hash share one engine run. */
  async scan(tenant: string, sha256: string, content: Buffer): Promise<VerdictFields> {
    const generation = this.generation();
    const key = { tenant, generation, sha256 };
    const hit = await this.cache.get(key).catch(() => undefined);
    if (hit) {
      this.metrics.cacheHits.inc();
      return { verdict: hit.verdict, sha256, generation, engine: hit.engine, cached: true, ...(hit.threat ? { threat: hit.threat } : {}) };
    }
    const flightKey = `${tenant}\u0000${generation}\u0000${sha256}`;
    const running = this.inflightScans.get(flightKey);
    if (running) {
      this.metrics.cacheHits.inc();
      return { ...(await running), cached: true };
    }
    const p = this.runEngine(tenant, generation, sha256, content);
    this.inflightScans.set(flightKey, p);
    try {
      return await p;
    } finally {
      this.inflightScans.delete(flightKey);
    }
  }

  private async runEngine(tenant: string, generation: string, sha256: string, content: Buffer): Promise<VerdictFields> {
    this.activeScans++;
    const t0 = performance.now();
    try {
      const r = await this.engine.scan(content, { sha256 });
      this.metrics.scans.inc();
      this.metrics.scanSeconds.observe((performance.now() - t0) / 1000);
      const verdict = r.infected ? 'infected' : 'clean';
      if (r.infected) {
        this.metrics.detections.inc();
        this.log.warn('infected content scanned', { tenant, sha256, threat: r.threat, engine: this.engine.name });
      }
      await this.cache.set({ tenant, generation, sha256 }, { verdict, engine: this.engine.name, ...(r.threat ? { threat: r.threat } : {}) }).catch((e: Error) => this.log.warn('verdict cache write failed; continuing without it', { message: e.message }));
      return { verdict, sha256, generation, engine: this.engine.name, ...(r.threat ? { threat: r.threat } : {}) };
    } finally {
      this.activeScans--;
    }
  }

  sessionClosed(s: AgentSession): void {
    this.sessions.delete(s);
  }
}
