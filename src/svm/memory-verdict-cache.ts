/**
 * The SVM's in-memory verdict cache (`cache: memory`, and the memory tier in front of Redis): a
 * bounded LRU of tenant + signature generation + SHA-256 -> verdict, held in typed arrays.
 *
 * Why not a JS `Map` (what it was until 2026-12-06): the SVM runs for months with its cache full
 * (default 1,000,000 entries), and a Map of string keys and verdict objects puts ~260 B per entry
 * on V8's heap (248 MiB at 1M), which every full collection must mark: 0.3 s at 1M on this
 * machine, on the one thread that answers every tenant (bench/micro/verdict-cache.ts; docs/svm.md,
 * "Shared verdict cache"). Here the entries live in ArrayBuffers, which the collector never
 * walks: ~61 B per entry (the 8 words of SHA-256, six u32 fields, the verdict byte, the bucket
 * heads), and a full collection costs about the same with 1M entries as with none (6 ms). The
 * pages of the arrays are touched as entries fill them, so an SVM with few entries stays small.
 *
 * Layout, per entry slot i (0 <= i < capacity): the SHA-256 as 8 u32 words, a scope id (tenant +
 * generation, interned), the verdict, the engine's and the threat's name ids (interned, 0 = no
 * threat), LRU links (prev/next) and the hash chain link. Links and bucket heads hold index + 1,
 * so 0 means none and zero-filled (untouched) pages are valid. Interned names and scopes are
 * reference-counted and freed with their last entry: a generation that is no longer asked for
 * leaves nothing behind once its entries are evicted.
 *
 * A key whose SHA-256 is not 64 lowercase hex characters (the protocol sends nothing else) is
 * never stored: get misses, set does nothing. At most MAX_NAMES distinct engine and threat names
 * are held at once; a verdict with a new name past that is not stored (counted in `uncached`).
 */
import crypto from 'node:crypto';
import { type CachedVerdict, type SharedVerdictCache, type VerdictKey } from './verdict-cache.js';

/** Distinct engine + threat names held at once (a verdict with one more is not cached). */
export const MAX_NAMES = 65_536;

const CLEAN = 1;
const INFECTED = 2;

/** Interned strings with reference counts; ids start at 1 and are reused once freed. */
class Interned {
  private readonly ids = new Map<string, number>();
  private readonly names: Array<string | undefined> = [undefined];
  private readonly refs: number[] = [0];
  private readonly free: number[] = [];

  constructor(private readonly max: number) {}

  /** The id of `s` if held. */
  find(s: string): number | undefined {
    return this.ids.get(s);
  }

  /** Take a reference to `s` (interning it); undefined when `max` names are held and `s` is not one. */
  take(s: string): number | undefined {
    let id = this.ids.get(s);
    if (id === undefined) {
      if (this.ids.size >= this.max) return undefined;
      id = this.free.pop() ?? this.names.length;
      this.names[id] = s;
      this.refs[id] = 0;
      this.ids.set(s, id);
    }
    this.refs[id]!++;
    return id;
  }

  release(id: number): void {
    if (id === 0) return;
    if (--this.refs[id]! === 0) {
      this.ids.delete(this.names[id]!);
      this.names[id] = undefined;
      this.free.push(id);
    }
  }

  name(id: number): string {
    return this.names[id]!;
  }

  clear(): void {
    this.ids.clear();
    this.names.length = 1;
    this.refs.length = 1;
    this.free.length = 0;
  }
}

/** Tenant and generation as one string; the length prefix keeps "a" + "b\0c" apart from "a\0b" + "c". */
function scopeName(key: VerdictKey): string {
  return `${key.tenant.length}:${key.tenant}\u0000${key.generation}`;
}

/** 64 lowercase hex characters into 8 big-endian u32 words of `out` at `at`; false if it is not that. */
function parseSha(hex: string, out: Uint32Array, at: number): boolean {
  if (typeof hex !== 'string' || hex.length !== 64) return false;
  for (let w = 0; w < 8; w++) {
    let v = 0;
    for (let j = 0; j < 8; j++) {
      const c = hex.charCodeAt(w * 8 + j);
      const d = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : -1;
      if (d < 0) return false;
      v = (v << 4) | d;
    }
    out[at + w] = v >>> 0;
  }
  return true;
}

export class MemoryVerdictCache implements SharedVerdictCache {
  readonly kind = 'memory';
  private readonly sha: Uint32Array;
  private readonly scope: Uint32Array;
  private readonly engine: Uint32Array;
  private readonly threat: Uint32Array;
  private readonly verdict: Uint8Array;
  /** LRU links and hash chain, each index + 1 (0: none). */
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private readonly chain: Int32Array;
  /** Bucket heads, index + 1. */
  private readonly buckets: Int32Array;
  private readonly mask: number;
  private readonly seed = crypto.randomBytes(4).readUInt32LE(0);
  /** Most and least recently used, index + 1. */
  private head = 0;
  private tail = 0;
  /** Slots ever used (they fill 0..used-1; then freed ones, then the LRU's tail is reused). */
  private used = 0;
  /** Slots emptied other than by eviction, linked through `next` (index + 1). */
  private freeHead = 0;
  private count = 0;
  private readonly scopes: Interned;
  private readonly names: Interned;
  /** The key being looked up, parsed (no allocation per call). */
  private readonly probe = new Uint32Array(8);
  private evictions = 0;
  private hits = 0;
  private uncached = 0;

  /** `maxNames`: distinct engine and threat names held at once (default MAX_NAMES; tests lower it). */
  constructor(
    private readonly capacity: number,
    o: { maxNames?: number } = {},
  ) {
    if (!(capacity >= 1) || !Number.isInteger(capacity) || capacity > 100_000_000)
      throw new RangeError('capacity must be an integer from 1 to 100,000,000');
    this.sha = new Uint32Array(capacity * 8);
    this.scope = new Uint32Array(capacity);
    this.engine = new Uint32Array(capacity);
    this.threat = new Uint32Array(capacity);
    this.verdict = new Uint8Array(capacity);
    this.prev = new Int32Array(capacity);
    this.next = new Int32Array(capacity);
    this.chain = new Int32Array(capacity);
    let n = 1;
    while (n < capacity) n *= 2;
    this.buckets = new Int32Array(n);
    this.mask = n - 1;
    // Every entry holds one scope: there can never be more scopes than slots.
    this.scopes = new Interned(capacity);
    this.names = new Interned(o.maxNames ?? MAX_NAMES);
  }

  async get(key: VerdictKey): Promise<CachedVerdict | undefined> {
    return this.getNow(key);
  }

  /** `get`, synchronously (the cache never waits). */
  getNow(key: VerdictKey): CachedVerdict | undefined {
    const i = this.find(key);
    if (i < 0) return undefined;
    this.hits++;
    this.touch(i);
    const engine = this.names.name(this.engine[i]!);
    return this.verdict[i] === INFECTED
      ? { verdict: 'infected', engine, threat: this.names.name(this.threat[i]!) }
      : { verdict: 'clean', engine };
  }

  async set(key: VerdictKey, v: CachedVerdict): Promise<void> {
    this.setNow(key, v);
  }

  /** `set`, synchronously. */
  setNow(key: VerdictKey, v: CachedVerdict): void {
    const infected = v.verdict === 'infected';
    const existing = this.find(key);
    // The names first: if they cannot be held, nothing changes (an old verdict of the key goes).
    const engine = this.names.take(v.engine);
    const threat = infected ? this.names.take(v.threat ?? '') : 0;
    if (engine === undefined || threat === undefined) {
      if (engine !== undefined) this.names.release(engine);
      if (threat) this.names.release(threat);
      if (existing >= 0) this.release(existing);
      this.uncached++;
      return;
    }
    if (existing >= 0) {
      this.names.release(this.engine[existing]!);
      this.names.release(this.threat[existing]!);
      this.fill(existing, engine, threat, infected);
      this.touch(existing);
      return;
    }
    if (!parseSha(key.sha256, this.probe, 0)) {
      this.names.release(engine);
      this.names.release(threat);
      this.uncached++;
      return;
    }
    let i: number;
    if (this.freeHead !== 0) {
      i = this.freeHead - 1;
      this.freeHead = this.next[i]!;
      this.next[i] = 0;
    } else if (this.used < this.capacity) i = this.used++;
    else {
      i = this.tail - 1; // full: the least recently used goes
      this.remove(i);
      this.evictions++;
    }
    const scope = this.scopes.take(scopeName(key))!;
    this.sha.set(this.probe, i * 8);
    this.scope[i] = scope;
    this.fill(i, engine, threat, infected);
    const b = this.bucketOf(this.probe, scope);
    this.chain[i] = this.buckets[b]!;
    this.buckets[b] = i + 1;
    this.linkFront(i);
    this.count++;
  }

  /** Bytes of the typed arrays that hold the entries (address space; resident once they are full). */
  arrayBytes(): number {
    return [this.sha, this.scope, this.engine, this.threat, this.verdict, this.prev, this.next, this.chain, this.buckets].reduce(
      (n, a) => n + a.byteLength,
      0,
    );
  }

  tierHits(): Readonly<Record<string, number>> {
    return { memory: this.hits };
  }

  healthy(): boolean {
    return true;
  }

  /** Entries held and evicted; `uncached`: verdicts not stored (a key that is not a SHA-256, or a name past MAX_NAMES). */
  stats(): { entries: number; evictions: number; uncached?: number } {
    return this.uncached > 0
      ? { entries: this.count, evictions: this.evictions, uncached: this.uncached }
      : { entries: this.count, evictions: this.evictions };
  }

  async close(): Promise<void> {
    this.buckets.fill(0);
    this.head = this.tail = this.used = this.count = this.freeHead = 0;
    this.scopes.clear();
    this.names.clear();
  }

  private fill(i: number, engine: number, threat: number, infected: boolean): void {
    this.engine[i] = engine;
    this.threat[i] = threat;
    this.verdict[i] = infected ? INFECTED : CLEAN;
  }

  private bucketOf(w: Uint32Array, scope: number): number {
    // All eight words and a per-process seed: keys that share a prefix (padded test keys, or
    // content searched for colliding prefixes) still spread over the buckets.
    let h = this.seed ^ scope;
    for (let j = 0; j < 8; j++) {
      h = Math.imul(h ^ w[j]!, 0x9e3779b1);
      h ^= h >>> 15;
    }
    return (h >>> 0) & this.mask;
  }

  /** The slot of `key`, or -1. */
  private find(key: VerdictKey): number {
    const scope = this.scopes.find(scopeName(key));
    if (scope === undefined || !parseSha(key.sha256, this.probe, 0)) return -1;
    const p = this.probe;
    const sha = this.sha;
    for (let s = this.buckets[this.bucketOf(p, scope)]!; s !== 0; s = this.chain[s - 1]!) {
      const i = s - 1;
      const o = i * 8;
      if (
        this.scope[i] === scope &&
        sha[o] === p[0] &&
        sha[o + 1] === p[1] &&
        sha[o + 2] === p[2] &&
        sha[o + 3] === p[3] &&
        sha[o + 4] === p[4] &&
        sha[o + 5] === p[5] &&
        sha[o + 6] === p[6] &&
        sha[o + 7] === p[7]
      )
        return i;
    }
    return -1;
  }

  /** Take slot i out of its hash chain and the LRU list, and release its names and scope. */
  private remove(i: number): void {
    const o = i * 8;
    const words = this.sha.subarray(o, o + 8);
    const b = this.bucketOf(words, this.scope[i]!);
    if (this.buckets[b] === i + 1) this.buckets[b] = this.chain[i]!;
    else
      for (let s = this.buckets[b]!; s !== 0; s = this.chain[s - 1]!)
        if (this.chain[s - 1] === i + 1) {
          this.chain[s - 1] = this.chain[i]!;
          break;
        }
    this.unlink(i);
    this.names.release(this.engine[i]!);
    this.names.release(this.threat[i]!);
    this.scopes.release(this.scope[i]!);
    this.count--;
  }

  /** Remove slot i and keep it for the next new entry. */
  private release(i: number): void {
    this.remove(i);
    this.next[i] = this.freeHead;
    this.freeHead = i + 1;
  }

  private touch(i: number): void {
    if (this.head === i + 1) return;
    this.unlink(i);
    this.linkFront(i);
  }

  private unlink(i: number): void {
    const p = this.prev[i]!;
    const n = this.next[i]!;
    if (p !== 0) this.next[p - 1] = n;
    else if (this.head === i + 1) this.head = n;
    if (n !== 0) this.prev[n - 1] = p;
    else if (this.tail === i + 1) this.tail = p;
    this.prev[i] = this.next[i] = 0;
  }

  private linkFront(i: number): void {
    this.prev[i] = 0;
    this.next[i] = this.head;
    if (this.head !== 0) this.prev[this.head - 1] = i + 1;
    this.head = i + 1;
    if (this.tail === 0) this.tail = i + 1;
  }
}
