/**
 * The inventory in Redis, for SVMs that share one (`cache: redis://...`): every SVM reads and
 * writes the same rows, so an agent that fails over from SVM A to SVM B stays one row (B's
 * `connected` wins; A's late disconnect names A's connection and changes nothing).
 *
 * Keys under the cache's key prefix: `<prefix>inv:rows` (a hash, field `<tenant>/<agentId>`
 * URI-encoded, value the row as JSON), `<prefix>inv:h:<field>` and `<prefix>inv:d:<field>` (lists,
 * newest first, trimmed to RING). Every value read back is validated; anything else is skipped.
 * Every command is bounded by `timeoutMs`; Redis down makes the calls fail (the inventory logs and
 * drops a write; the API answers 503), never hang.
 */
import { Redis } from 'ioredis';
import { logger } from '../../log.js';
import {
  RING,
  keyOf,
  parseDetection,
  parseHistoryEntry,
  parseStoredAgent,
  type AgentKey,
  type DetectionRecord,
  type HistoryEntry,
  type InventoryStore,
  type StoredAgent,
} from './types.js';

export interface RedisStoreOptions {
  url: string;
  /** Bound on every command (default 1 s). */
  timeoutMs?: number;
  /** The verdict cache's key prefix (default `lightagent:v1:`). */
  keyPrefix?: string;
}

const MAX_ROW_JSON = 64 * 1024;

function parse<T>(raw: string | null, check: (v: unknown) => T | undefined): T | undefined {
  if (raw === null || raw.length > MAX_ROW_JSON) return undefined;
  try {
    return check(JSON.parse(raw));
  } catch {
    return undefined;
  }
}

export class RedisInventoryStore implements InventoryStore {
  readonly kind = 'redis';
  private readonly client: Redis;
  private readonly rows: string;
  private readonly prefix: string;
  private ok = false;
  private closed = false;
  private readonly log = logger('svm-inventory');

  private constructor(o: RedisStoreOptions) {
    this.prefix = `${o.keyPrefix ?? 'lightagent:v1:'}inv:`;
    this.rows = `${this.prefix}rows`;
    const timeout = o.timeoutMs ?? 1000;
    this.client = new Redis(o.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      commandTimeout: timeout,
      connectTimeout: Math.max(1000, timeout),
      maxRetriesPerRequest: 0,
      retryStrategy: (times: number) => (this.closed ? null : Math.min(100 * times, 2000)),
    });
    this.client.on('error', () => (this.ok = false));
    this.client.on('close', () => (this.ok = false));
    this.client.on('ready', () => (this.ok = true));
  }

  /** Connect (bounded); an unreachable Redis is retried in the background. */
  static async connect(o: RedisStoreOptions): Promise<RedisInventoryStore> {
    const s = new RedisInventoryStore(o);
    try {
      await s.client.connect();
    } catch (e) {
      s.log.warn('inventory: redis not reachable yet; retrying in the background', { message: (e as Error).message });
    }
    return s;
  }

  healthy(): boolean {
    return this.ok;
  }

  async get(key: AgentKey): Promise<StoredAgent | undefined> {
    return parse(await this.client.hget(this.rows, keyOf(key)), parseStoredAgent);
  }

  async put(row: StoredAgent): Promise<void> {
    await this.client.hset(this.rows, keyOf(row), JSON.stringify(row));
  }

  async list(): Promise<StoredAgent[]> {
    const all = await this.client.hgetall(this.rows);
    const out: StoredAgent[] = [];
    for (const [field, raw] of Object.entries(all)) {
      const row = parse(raw, parseStoredAgent);
      // A row must sit under its own key (nothing planted under another agent's).
      if (row && keyOf(row) === field) out.push(row);
    }
    return out;
  }

  async remove(keys: readonly AgentKey[]): Promise<void> {
    if (!keys.length) return;
    const m = this.client.multi();
    m.hdel(this.rows, ...keys.map(keyOf));
    m.del(...keys.flatMap((k) => [`${this.prefix}h:${keyOf(k)}`, `${this.prefix}d:${keyOf(k)}`]));
    await m.exec();
  }

  async pushHistory(key: AgentKey, e: HistoryEntry): Promise<void> {
    await this.push(`${this.prefix}h:${keyOf(key)}`, JSON.stringify(e));
  }

  async history(key: AgentKey): Promise<HistoryEntry[]> {
    const raw = await this.client.lrange(`${this.prefix}h:${keyOf(key)}`, 0, RING - 1);
    return raw.map((r) => parse(r, parseHistoryEntry)).filter((x): x is HistoryEntry => x !== undefined);
  }

  async pushDetection(key: AgentKey, d: DetectionRecord): Promise<void> {
    await this.push(`${this.prefix}d:${keyOf(key)}`, JSON.stringify(d));
  }

  async detections(keys: readonly AgentKey[]): Promise<DetectionRecord[][]> {
    if (!keys.length) return [];
    const p = this.client.pipeline();
    for (const k of keys) p.lrange(`${this.prefix}d:${keyOf(k)}`, 0, RING - 1);
    const res = (await p.exec()) ?? [];
    return keys.map((k, i) => {
      const [err, raw] = res[i] ?? [new Error('no reply'), null];
      if (err || !Array.isArray(raw)) return [];
      return (raw as string[])
        .map((r) => parse(r, parseDetection))
        .filter((x): x is DetectionRecord => x !== undefined && x.tenant === k.tenant && x.agentId === k.agentId);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.client.quit();
    } catch {
      this.client.disconnect();
    }
  }

  private async push(list: string, value: string): Promise<void> {
    const m = this.client.multi();
    m.lpush(list, value);
    m.ltrim(list, 0, RING - 1);
    const res = await m.exec();
    const failed = res?.find(([e]) => e);
    if (failed) throw failed[0]!;
  }
}
