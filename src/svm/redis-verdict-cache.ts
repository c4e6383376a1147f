/**
 * The shared verdict cache in Redis (or Valkey), so several SVMs — on one host or many — share
 * verdicts: content scanned through SVM A is a cache hit on SVM B, with no bytes sent to B.
 *
 * Two tiers: a bounded memory LRU in this process (tier `memory`, `entries` of them), then Redis
 * (tier `redis`). A verdict is written to both; a Redis hit is copied into memory.
 *
 * Keys: `<prefix><tenant>:<generation>:<sha256>` with tenant and generation URI-encoded (no `:`
 * inside them, so no two keys collide), value a small JSON object, expiry `ttlMs` (PX). A new
 * signature generation simply stops reading the old keys; they expire.
 *
 * Redis down, slow or answering nonsense never blocks or fails a scan: every command is bounded by
 * `timeoutMs` (ioredis commandTimeout), commands are refused at once while disconnected (no offline
 * queue), the failure is logged once per outage ("using the memory cache only"), and the memory
 * tier goes on answering. ioredis reconnects in the background (backoff up to 2 s); the recovery is
 * logged too. `healthy()` is false meanwhile (/healthz: degraded).
 *
 * Trust: whoever can write this Redis can plant verdicts for every SVM that reads it. Use Redis
 * ACLs or a password (`redis://user:pass@host:6379`), TLS (`rediss://`), and a Redis reachable only
 * by the SVMs. Values read back are validated (shape and sizes); anything else is a miss.
 */
import { Redis } from 'ioredis';
import { logger } from '../log.js';
import { MemoryVerdictCache } from './memory-verdict-cache.js';
import { redactUrl, type CachedVerdict, type SharedVerdictCache, type VerdictKey } from './verdict-cache.js';

export interface RedisCacheOptions {
  /** redis://[user:pass@]host:port[/db] or rediss:// (TLS). */
  url: string;
  /** Entries of the memory tier in front of Redis. */
  entries: number;
  /** Expiry of a verdict in Redis (default 7 days). */
  ttlMs?: number;
  /** Bound on every Redis command (default 250 ms). */
  timeoutMs?: number;
  /** Key prefix (default `lightagent:v1:`), to share a Redis with other applications. */
  keyPrefix?: string;
}

export const REDIS_CACHE_DEFAULTS = { ttlMs: 7 * 24 * 3600 * 1000, timeoutMs: 250, keyPrefix: 'lightagent:v1:' } as const;

const MAX_VALUE = 1024;
/** After a failed command, Redis is left alone this long (the memory tier answers). */
const RETRY_AFTER_FAILURE_MS = 1000;

/** Validate a value read from Redis; undefined for anything unexpected. */
export function parseCachedVerdict(raw: string | null): CachedVerdict | undefined {
  if (raw === null || raw.length > MAX_VALUE) return undefined;
  try {
    const o = JSON.parse(raw) as Record<string, unknown>;
    if (typeof o !== 'object' || o === null) return undefined;
    const verdict = o.v === 'i' ? 'infected' : o.v === 'c' ? 'clean' : undefined;
    if (!verdict || typeof o.e !== 'string' || o.e.length === 0 || o.e.length > 64) return undefined;
    if (verdict === 'infected') {
      if (typeof o.t !== 'string' || o.t.length === 0 || o.t.length > 256) return undefined;
      return { verdict, threat: o.t, engine: o.e };
    }
    return { verdict, engine: o.e };
  } catch {
    return undefined;
  }
}

export class RedisVerdictCache implements SharedVerdictCache {
  readonly kind = 'redis';
  private readonly memory: MemoryVerdictCache;
  private readonly client: Redis;
  private readonly ttlMs: number;
  private readonly prefix: string;
  private readonly where: string;
  private readonly hits = { memory: 0, redis: 0 };
  private failures = 0;
  /** Logged the current outage already? */
  private down = false;
  private closed = false;
  private skipUntil = 0;
  private readonly log = logger('svm-cache-redis');

  private constructor(o: RedisCacheOptions) {
    if (!/^rediss?:\/\//.test(o.url)) throw new RangeError(`${redactUrl(o.url)} is not a redis:// or rediss:// URL`);
    this.memory = new MemoryVerdictCache(o.entries);
    this.ttlMs = o.ttlMs ?? REDIS_CACHE_DEFAULTS.ttlMs;
    this.prefix = o.keyPrefix ?? REDIS_CACHE_DEFAULTS.keyPrefix;
    this.where = redactUrl(o.url);
    const timeout = o.timeoutMs ?? REDIS_CACHE_DEFAULTS.timeoutMs;
    this.client = new Redis(o.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      commandTimeout: timeout,
      connectTimeout: Math.max(1000, timeout),
      maxRetriesPerRequest: 0,
      enableAutoPipelining: true,
      retryStrategy: (times: number) => (this.closed ? null : Math.min(100 * times, 2000)),
    });
    this.client.on('error', (e: Error) => this.failed(e));
    this.client.on('ready', () => {
      this.skipUntil = 0;
      this.succeeded();
    });
    this.client.on('close', () => {
      if (!this.closed) this.failed(new Error('connection closed'));
    });
  }

  /** Connect (bounded). An unreachable Redis is not fatal: the memory tier answers until it is back. */
  static async connect(o: RedisCacheOptions): Promise<RedisVerdictCache> {
    const c = new RedisVerdictCache(o);
    try {
      await c.client.connect();
      c.log.info('redis verdict cache connected', { redis: c.where, ttlMs: c.ttlMs });
    } catch (e) {
      c.failed(e as Error);
    }
    return c;
  }

  async get(key: VerdictKey): Promise<CachedVerdict | undefined> {
    const local = await this.memory.get(key);
    if (local) {
      this.hits.memory++;
      return local;
    }
    if (!this.usable()) return undefined;
    let raw: string | null;
    try {
      raw = await this.client.get(this.redisKey(key));
      this.succeeded();
    } catch (e) {
      this.failed(e as Error);
      return undefined;
    }
    const v = parseCachedVerdict(raw);
    if (raw !== null && !v) this.log.warn('ignoring a malformed value in redis', { redis: this.where, key: this.redisKey(key) });
    if (!v) return undefined;
    this.hits.redis++;
    await this.memory.set(key, v);
    return v;
  }

  async set(key: VerdictKey, v: CachedVerdict): Promise<void> {
    await this.memory.set(key, v);
    if (!this.usable()) return;
    const value = JSON.stringify({ v: v.verdict === 'infected' ? 'i' : 'c', e: v.engine, ...(v.threat ? { t: v.threat } : {}) });
    try {
      await this.client.set(this.redisKey(key), value, 'PX', this.ttlMs);
      this.succeeded();
    } catch (e) {
      this.failed(e as Error);
    }
  }

  healthy(): boolean {
    return this.client.status === 'ready';
  }

  /** Entries and evictions of the memory tier (Redis bounds itself: TTL and maxmemory). */
  stats(): { entries: number; evictions: number; uncached?: number } {
    return this.memory.stats();
  }

  /** Hits per tier since start. */
  tierHits(): Readonly<Record<string, number>> {
    return { ...this.hits };
  }

  /** Redis commands that failed (timeouts, refused while down). */
  get redisFailures(): number {
    return this.failures;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let t: NodeJS.Timeout | undefined;
    try {
      if (this.client.status === 'ready') await Promise.race([this.client.quit(), new Promise((r) => (t = setTimeout(r, 1000)))]);
    } catch {
      // closing anyway
    } finally {
      clearTimeout(t);
      this.client.disconnect();
      await this.memory.close();
    }
  }

  /** Ready, and not inside the pause after a failed command (a stuck Redis costs one timeout per second, not one per scan). */
  private usable(): boolean {
    return !this.closed && this.client.status === 'ready' && Date.now() >= this.skipUntil;
  }

  private succeeded(): void {
    if (!this.down) return;
    this.down = false;
    this.log.info('redis answers again; sharing verdicts', { redis: this.where });
  }

  private redisKey(k: VerdictKey): string {
    return `${this.prefix}${encodeURIComponent(k.tenant)}:${encodeURIComponent(k.generation)}:${encodeURIComponent(k.sha256)}`;
  }

  private failed(e: Error): void {
    this.failures++;
    this.skipUntil = Date.now() + RETRY_AFTER_FAILURE_MS;
    if (this.closed || this.down) return;
    this.down = true;
    this.log.warn('redis verdict cache unreachable or failing; using the memory cache only until it is back', {
      redis: this.where,
      message: e.message,
    });
  }
}
