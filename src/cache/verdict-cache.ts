/**
 * VerdictCache — the guest's local verdict cache.
 *
 *   identity (dev, ino, size, mtime ns, ctime ns) --identity table--> fingerprint (xxh64, seeded)
 *   fingerprint --content table--> SHA-256 + verdict + signature generation + threat
 *
 * An identity hit needs no read at all; a fingerprint hit (a copy of a known file) needs a read
 * and a hash but no SVM. Identities are hashed with the same secret seed, so nobody without the
 * seed can aim a collision at a chosen entry. xxh64 never leaves the guest (see DESIGN.md, trust).
 *
 * Memory: two U64Tables (table.ts). Identity slot = 8 (key) + 8 (fingerprint) + 1 (CLOCK) = 17 B;
 * content slot = 8 (fingerprint) + 32 (SHA-256) + 4 (meta) + 1 = 45 B; slots are sized for a load
 * of at most 0.8. Meta word: bits 0-1 verdict (1 clean, 2 infected), 2-15 generation id, 16-31
 * threat id (small string tables). Infected content entries are pinned: CLOCK evicts them last.
 *
 * Usage (FileScanner does exactly this):
 *   const hit = cache.lookupIdentity(st)            // st from fstat(fd, {bigint: true})
 *   if (hit && !hit.stale) -> done
 *   fp = hash(content); cache.lookupFingerprint(fp) -> if hit: cache.recordIdentity(st, fp)
 *   else ask the SVM -> cache.record(st, fp, sha256, verdict, threat)
 */
import xxhash from 'xxhash-wasm';
import { logger } from '../log.js';
import type { LocalHit, LocalVerdictStore } from '../agent/file-scanner.js';
import { U64Table } from './table.js';
import { loadCacheFile, saveCacheFile } from './persist.js';
import { SingleFlight } from './single-flight.js';

export interface FileIdentity {
  dev: bigint;
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

export interface VerdictCacheOptions {
  /** The secret seed (from seed.ts). */
  seed: bigint;
  /** Entries per table (default 1,000,000). */
  capacity?: number;
  /** Persisted cache file (cache.v1); none = memory only. */
  file?: string | undefined;
  /** Current signature generation. */
  generation?: string;
  /** Allocate the tables on SharedArrayBuffers (for a reader thread). */
  shared?: boolean;
}

type Hasher = Awaited<ReturnType<typeof xxhash>>;
let hasherPromise: Promise<Hasher> | undefined;
const ID_WIDTH = 2;
const CONTENT_WIDTH = 9;
const VERDICT_CLEAN = 1;
const VERDICT_INFECTED = 2;

export class VerdictCache implements LocalVerdictStore {
  readonly identities: U64Table;
  readonly contents: U64Table;
  private gens: string[] = [];
  private genIds = new Map<string, number>();
  private currentGen = 0;
  private threats: string[] = [''];
  private threatIds = new Map<string, number>([['', 0]]);
  private readonly flights = new SingleFlight();
  private readonly idBuf = new BigUint64Array(5);
  private readonly idBytes = new Uint8Array(this.idBuf.buffer);
  private readonly log = logger('cache');
  readonly counters = { identityHits: 0, fingerprintHits: 0, misses: 0, stale: 0 };
  private dirty = false;

  private constructor(
    private readonly xx: Hasher,
    readonly options: VerdictCacheOptions,
  ) {
    const cap = options.capacity ?? 1_000_000;
    this.identities = new U64Table(cap, ID_WIDTH, options.shared);
    this.contents = new U64Table(cap, CONTENT_WIDTH, options.shared);
    this.setGeneration(options.generation ?? '');
  }

  static async open(options: VerdictCacheOptions): Promise<VerdictCache> {
    hasherPromise ??= xxhash();
    const c = new VerdictCache(await hasherPromise, options);
    if (options.file) {
      const t0 = performance.now();
      const n = loadCacheFile(options.file, c);
      if (n > 0) c.log.info('cache loaded', { file: options.file, entries: n, ms: Math.round(performance.now() - t0) });
    }
    return c;
  }

  // ------------------------------------------------------------------ hashing

  /** Seeded xxh64 of the identity: the identity table key (never 0). */
  identityKey(st: FileIdentity): bigint {
    this.idBuf[0] = BigInt.asUintN(64, st.dev);
    this.idBuf[1] = BigInt.asUintN(64, st.ino);
    this.idBuf[2] = BigInt.asUintN(64, st.size);
    this.idBuf[3] = BigInt.asUintN(64, st.mtimeNs);
    this.idBuf[4] = BigInt.asUintN(64, st.ctimeNs);
    return this.xx.h64Raw(this.idBytes, this.options.seed) || 1n;
  }

  /** Seeded xxh64 of content (never 0). */
  fingerprint(content: Uint8Array): bigint {
    return this.xx.h64Raw(content, this.options.seed) || 1n;
  }

  createHasher(): { update(b: Uint8Array): void; digest(): bigint } {
    const h = this.xx.create64(this.options.seed);
    return {
      update: (b) => void h.update(b),
      digest: () => h.digest() || 1n,
    };
  }

  // ------------------------------------------------------------------ generation

  setGeneration(g: string): void {
    let id = this.genIds.get(g);
    if (id === undefined) {
      if (this.gens.length >= 0x3fff) this.compactGenerations();
      id = this.gens.length;
      this.gens.push(g);
      this.genIds.set(g, id);
    }
    if (id !== this.currentGen) this.dirty = true;
    this.currentGen = id;
  }

  get generation(): string {
    return this.gens[this.currentGen] ?? '';
  }

  /** Generation ids are 14 bits: when they run out, forget every clean verdict's generation (all stale). */
  private compactGenerations(): void {
    const c = this.contents;
    for (const i of c.occupied()) {
      const m = c.words[i * CONTENT_WIDTH + 8]!;
      c.words[i * CONTENT_WIDTH + 8] = (m & ~0xfffc) >>> 0; // generation id 0 = the '' generation
    }
    this.gens = [''];
    this.genIds = new Map([['', 0]]);
  }

  // ------------------------------------------------------------------ lookups

  lookupIdentity(st: FileIdentity): LocalHit | undefined {
    const i = this.identities.find(this.identityKey(st));
    if (i < 0) {
      this.counters.misses++;
      return undefined;
    }
    const w = this.identities.words;
    const fp = (BigInt(w[i * ID_WIDTH]!) << 32n) | BigInt(w[i * ID_WIDTH + 1]!);
    const hit = this.contentHit(fp);
    if (!hit) {
      this.counters.misses++;
      return undefined;
    }
    if (hit.stale) this.counters.stale++;
    else this.counters.identityHits++;
    return hit;
  }

  lookupFingerprint(fp: bigint): LocalHit | undefined {
    const hit = this.contentHit(fp);
    if (hit && !hit.stale) this.counters.fingerprintHits++;
    return hit;
  }

  private contentHit(fp: bigint): LocalHit | undefined {
    const c = this.contents;
    const i = c.find(fp);
    if (i < 0) return undefined;
    const base = i * CONTENT_WIDTH;
    const meta = c.words[base + 8]!;
    const v = meta & 3;
    if (v !== VERDICT_CLEAN && v !== VERDICT_INFECTED) return undefined;
    const gen = (meta >>> 2) & 0x3fff;
    const threatId = meta >>> 16;
    const sha = Buffer.from(c.words.buffer, c.words.byteOffset + base * 4, 32).toString('hex');
    return {
      verdict: v === VERDICT_INFECTED ? 'infected' : 'clean',
      ...(v === VERDICT_INFECTED ? { threat: this.threats[threatId] || 'Unknown-Threat' } : {}),
      sha256: sha,
      stale: v === VERDICT_CLEAN && gen !== this.currentGen,
    };
  }

  // ------------------------------------------------------------------ records

  recordIdentity(st: FileIdentity, fp: bigint): void {
    const i = this.identities.upsert(this.identityKey(st));
    const w = this.identities.words;
    w[i * ID_WIDTH] = Number(fp >> 32n);
    w[i * ID_WIDTH + 1] = Number(fp & 0xffff_ffffn);
    this.dirty = true;
  }

  record(st: FileIdentity, fp: bigint, sha256: string, verdict: 'clean' | 'infected', threat?: string): void {
    this.recordContent(fp, sha256, verdict, threat);
    this.recordIdentity(st, fp);
  }

  /** A stale clean verdict confirmed (or changed) by an SVM lookup under the current generation. */
  refreshIdentity(st: FileIdentity, verdict: 'clean' | 'infected', threat?: string): void {
    const i = this.identities.find(this.identityKey(st));
    if (i < 0) return;
    const w = this.identities.words;
    const fp = (BigInt(w[i * ID_WIDTH]!) << 32n) | BigInt(w[i * ID_WIDTH + 1]!);
    const c = this.contents.find(fp);
    if (c < 0) return;
    const sha = Buffer.from(this.contents.words.buffer, this.contents.words.byteOffset + c * CONTENT_WIDTH * 4, 32).toString('hex');
    this.recordContent(fp, sha, verdict, threat);
  }

  recordContent(fp: bigint, sha256: string, verdict: 'clean' | 'infected', threat?: string): void {
    const infected = verdict === 'infected';
    const i = this.contents.upsert(fp, infected);
    this.contents.setPinned(i, infected);
    const base = i * CONTENT_WIDTH;
    const shaBytes = Buffer.from(sha256, 'hex');
    if (shaBytes.length !== 32) throw new RangeError('sha256 must be 64 hex characters');
    new Uint8Array(this.contents.words.buffer, this.contents.words.byteOffset + base * 4, 32).set(shaBytes);
    const threatId = infected ? this.threatId(threat ?? 'Unknown-Threat') : 0;
    this.contents.words[base + 8] = ((infected ? VERDICT_INFECTED : VERDICT_CLEAN) | (this.currentGen << 2) | (threatId << 16)) >>> 0;
    this.dirty = true;
  }

  private threatId(name: string): number {
    let id = this.threatIds.get(name);
    if (id === undefined) {
      if (this.threats.length >= 0xffff) return 0xffff; // table full: later names read back as the last one
      id = this.threats.length;
      this.threats.push(name.slice(0, 256));
      this.threatIds.set(name, id);
    }
    return id;
  }

  singleFlight<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.flights.run(key, fn);
  }

  // ------------------------------------------------------------------ persistence & stats

  /** Write cache.v1 atomically if anything changed. Never throws: a failed save is logged. */
  async save(): Promise<boolean> {
    if (!this.options.file || !this.dirty) return false;
    try {
      const t0 = performance.now();
      await saveCacheFile(this.options.file, this);
      this.dirty = false;
      this.log.debug('cache saved', { file: this.options.file, entries: this.identities.size, ms: Math.round(performance.now() - t0) });
      return true;
    } catch (e) {
      this.log.error('could not save the verdict cache; protection continues, the cache will be rebuilt', { file: this.options.file, message: (e as Error).message });
      return false;
    }
  }

  async close(): Promise<void> {
    await this.save();
  }

  stats(): Record<string, number> {
    const lookups = this.counters.identityHits + this.counters.misses + this.counters.stale;
    return {
      identities: this.identities.size,
      contents: this.contents.size,
      capacity: this.identities.capacity,
      bytes: this.identities.bytes + this.contents.bytes,
      evictions: this.identities.evictions + this.contents.evictions,
      ...this.counters,
      hitRate: lookups ? Math.round((this.counters.identityHits / lookups) * 1000) / 1000 : 0,
    };
  }

  /** For persist.ts. */
  tablesForPersist() {
    return { gens: this.gens, currentGen: this.currentGen, threats: this.threats, seed: this.options.seed, xx: this.xx };
  }

  /** For persist.ts: restore string tables before entries are inserted. */
  restoreTables(gens: string[], threats: string[], currentGenName: string): void {
    this.gens = gens;
    this.genIds = new Map(gens.map((g, i) => [g, i]));
    this.threats = threats.length ? threats : [''];
    this.threatIds = new Map(this.threats.map((t, i) => [t, i]));
    const want = this.options.generation ?? currentGenName;
    this.currentGen = -1;
    this.setGeneration(want);
    this.dirty = false;
  }
}

export { ID_WIDTH, CONTENT_WIDTH };
