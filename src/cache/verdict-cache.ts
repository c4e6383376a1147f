/**
 * VerdictCache — the guest's local verdict cache (docs/cache.md).
 *
 *   identity (dev, ino, size, mtime ns, ctime ns) -> fingerprint (seeded xxh64 of the content)
 *   fingerprint -> verdict (clean | infected + threat) + signature generation + SHA-256
 *
 * An identity hit needs no read at all; a fingerprint hit (a copy of a known file) needs a read
 * and a hash but no SVM. The SHA-256 is kept so a stale clean verdict (older generation) is
 * re-checked by an SVM lookup without reading or uploading the file.
 *
 * A hit is a CacheHit: { verdict, threat?, sha256, stale }. `stale` marks a clean verdict of an
 * older signature generation; infected verdicts never go stale.
 *
 * Usage (the on-demand scanner and the fanotify gate do exactly this):
 *   const st = fs.fstatSync(fd, { bigint: true });
 *   const hit = cache.lookupIdentity(st);
 *   if (hit && !hit.stale) return hit;                              // no read, no SVM
 *   if (hit) { v = await svm.lookup(hit.sha256); cache.refreshIdentity(st, v.verdict, v.threat); }
 *   const { fingerprint: fp, sha256 } = cache.hashFd(fd);
 *   const known = cache.lookupFingerprint(fp);
 *   if (known && !known.stale) { cache.recordIdentity(st, fp); return known; }   // no SVM
 *   v = await cache.singleFlight(sha256, () => svm.lookupOrUpload(...));
 *   cache.record(st, fp, sha256, v.verdict, v.threat);
 *
 * Memory: one EntryStore (entry-store.ts): 63 bytes per entry at capacity, typed arrays only,
 * optionally on a SharedArrayBuffer so a gate worker can answer identity hits itself.
 * Each identity holds its own copy of the verdict; the fingerprint index points at the entry
 * judged last for that content, and an identity hit adopts that newer verdict, so a detection
 * in one copy is seen by every copy at once.
 */
import { logger } from '../log.js';
import {
  CLOCK_PIN,
  CLOCK_REF,
  CLOCK_SHARED,
  EntryStore,
  MAX_GENERATIONS,
  MAX_THREATS,
  REC_WORDS,
  W_FP,
  W_ID,
  W_META,
  W_SHA,
} from './entry-store.js';
import { Hit, type CacheHit, type Verdict } from './hit.js';
import { hashFd, loadXxhash, type FileDigest, type FileIdentity, type StreamingHasher, type XxApi } from './fingerprint.js';
import { loadCacheFile, writeCacheFile, type PersistSource } from './persist.js';
import { CTL_GEN, CTL_INDEX_SLOTS, CTL_REGION, CTL_SEQ, CTL_SLOTS, type SharedCacheSpec } from './shared-view.js';
import { SingleFlight } from './single-flight.js';
import { StringTable } from './string-table.js';

export type { FileDigest, FileIdentity, StreamingHasher } from './fingerprint.js';
export type { CacheHit, CacheHitJson, Verdict } from './hit.js';

export interface VerdictCacheOptions {
  /** The secret per-install seed (seed.ts loadOrCreateSeed). */
  seed: bigint;
  /** Entries (files) kept; default 1,000,000 (63 MB). */
  capacity?: number | undefined;
  /** Persisted cache file (cache.v1); none = memory only. */
  file?: string | undefined;
  /** Current signature generation; default: the one saved in the file, else ''. */
  generation?: string | undefined;
  /** Allocate the tables on a SharedArrayBuffer (for a reader thread). */
  shared?: boolean | undefined;
  /** `save()` answers false after this long (the write finishes in the background). Default 5000. */
  saveDeadlineMs?: number | undefined;
}

const VERDICT_CLEAN = 1;
const VERDICT_INFECTED = 2;
const GEN_MASK = MAX_GENERATIONS - 1;
const UNKNOWN_THREAT = 'Unknown-Threat';
const SHA_RE = /^[0-9a-f]{64}$/i;
/** Word order of a u64 seen as two u32 (cache.v1 is written only on little-endian hosts). */
const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
const HI = LE ? 1 : 0;
const LO = LE ? 0 : 1;

export class VerdictCache {
  readonly store: EntryStore;
  private readonly gens = new StringTable(MAX_GENERATIONS);
  private readonly threats = new StringTable(MAX_THREATS);
  private currentGen = 0;
  /** Bumped when generation ids are renumbered, so a save running across it is abandoned. */
  private genEpoch = 0;
  private readonly flights = new SingleFlight();
  private readonly idWords = new BigUint64Array(5);
  private readonly idBytes = new Uint8Array(this.idWords.buffer);
  /** u64 -> two u32 through memory: no BigInt shifts (they allocate) on the hot path. */
  private readonly split = new BigUint64Array(1);
  private readonly halves = new Uint32Array(this.split.buffer);
  private readonly scratch = new Uint32Array(REC_WORDS);
  private readonly scratchBytes = Buffer.from(this.scratch.buffer);
  private kHi = 0;
  private kLo = 0;
  private dirty = false;
  private writeChain: Promise<unknown> = Promise.resolve();
  private readonly log = logger('cache');
  readonly counters = { identityHits: 0, fingerprintHits: 0, misses: 0, stale: 0, saves: 0, saveFailures: 0 };

  /** Seqlock + current generation for readers on other threads (shared caches only). */
  private readonly control: Int32Array | undefined;

  private constructor(
    private readonly xx: XxApi,
    readonly options: VerdictCacheOptions,
  ) {
    this.store = new EntryStore(options.capacity ?? 1_000_000, { shared: options.shared });
    if (options.shared) {
      const ctl = new Int32Array(new SharedArrayBuffer(CTL_SLOTS * 4));
      this.control = ctl;
      // Growth happens inside writing() (a mutation), so readers see the new size under the seqlock.
      const publish = (slots: number, region: number) => {
        Atomics.store(ctl, CTL_INDEX_SLOTS, slots);
        Atomics.store(ctl, CTL_REGION, region);
      };
      publish(this.store.indexSlots, this.store.region);
      this.store.onIndexResize = publish;
    }
    this.setGeneration(options.generation ?? '');
    this.dirty = false;
  }

  /** Load the persisted file if there is one (an unusable one is set aside with a warning: the cache starts empty). */
  static async open(options: VerdictCacheOptions): Promise<VerdictCache> {
    const c = new VerdictCache(await loadXxhash(), options);
    if (options.file) {
      const t0 = performance.now();
      const saved = c.writing(() => loadCacheFile(options.file!, c.persistSource()));
      if (saved) {
        c.gens.reset(saved.generations);
        c.threats.reset(saved.threats);
        c.currentGen = -1;
        c.setGeneration(options.generation ?? saved.generations[saved.currentGeneration] ?? '');
        c.dirty = false;
        c.log.info('verdict cache loaded', { file: options.file, entries: c.size, ms: Math.round(performance.now() - t0) });
      }
    }
    return c;
  }

  get size(): number {
    return this.store.used;
  }

  get capacity(): number {
    return this.store.capacity;
  }

  // ------------------------------------------------------------------ hashing

  /** Seeded xxh64 of content. */
  fingerprint(content: Uint8Array): bigint {
    return this.xx.h64Raw(content, this.options.seed);
  }

  /** Streaming seeded xxh64: update(bytes) as often as needed, then digest(). */
  createHasher(): StreamingHasher {
    const h = this.xx.create64(this.options.seed);
    return { update: (b) => void h.update(b), digest: () => h.digest() };
  }

  /** Fingerprint + SHA-256 of a file through its fd, in one pass with one reused 1 MiB buffer. */
  hashFd(fd: number, maxBytes?: number): FileDigest {
    return hashFd(fd, this.createHasher(), maxBytes);
  }

  /**
   * Run a mutation under the seqlock: the sequence is odd while it runs, so a SharedCacheView
   * reading at the same time sees the change and treats its read as a miss.
   */
  private writing<T>(fn: () => T): T {
    const ctl = this.control;
    if (!ctl) return fn();
    Atomics.add(ctl, CTL_SEQ, 1);
    try {
      return fn();
    } finally {
      Atomics.add(ctl, CTL_SEQ, 1);
    }
  }

  /** What a SharedCacheView on another thread needs; undefined unless opened with `shared: true`. */
  sharedSpec(): SharedCacheSpec | undefined {
    const s = this.store;
    if (!this.control || !(s.buffer instanceof SharedArrayBuffer)) return undefined;
    return {
      buffer: s.buffer,
      control: this.control.buffer as SharedArrayBuffer,
      capacity: s.capacity,
      maxIndexSlots: s.maxIndexSlots,
      seed: this.options.seed,
    };
  }

  /** Seeded xxh64 of the identity, split into kHi:kLo (no BigInt in the probes that follow). */
  private keyOf(st: FileIdentity): void {
    const w = this.idWords; // a BigUint64Array store wraps modulo 2^64
    w[0] = st.dev;
    w[1] = st.ino;
    w[2] = st.size;
    w[3] = st.mtimeNs;
    w[4] = st.ctimeNs;
    this.split[0] = this.xx.h64Raw(this.idBytes, this.options.seed);
    this.kHi = this.halves[HI]!;
    this.kLo = this.halves[LO]!;
  }

  // ------------------------------------------------------------------ generation

  /** The engines' signature generation changed: clean verdicts of older ones turn stale. */
  setGeneration(g: string): void {
    this.writing(() => {
      let id = this.gens.id(g);
      if (id === undefined) {
        this.compactGenerations();
        id = this.gens.id(g)!;
      }
      if (id !== this.currentGen) this.dirty = true;
      this.currentGen = id;
      if (this.control) Atomics.store(this.control, CTL_GEN, this.currentGen);
    });
  }

  get generation(): string {
    return this.gens.name(this.currentGen) ?? '';
  }

  /** 14-bit generation ids ran out: keep '' and the current one; every other entry becomes '' (stale). */
  private compactGenerations(): void {
    const cur = this.generation;
    const { rec, used } = this.store;
    for (let e = 0; e < used; e++) {
      const b = e * REC_WORDS + W_META;
      const m = rec[b]!;
      const keep = ((m >>> 2) & GEN_MASK) === this.currentGen && cur !== '';
      rec[b] = ((m & ~(GEN_MASK << 2)) | ((keep ? 1 : 0) << 2)) >>> 0;
    }
    this.gens.reset(cur === '' ? [''] : ['', cur]);
    this.currentGen = cur === '' ? 0 : 1;
    this.genEpoch++;
    this.dirty = true;
  }

  // ------------------------------------------------------------------ lookups

  /** The verdict for this exact file (dev, ino, size, mtime, ctime): no read needed. */
  lookupIdentity(st: FileIdentity): CacheHit | undefined {
    this.keyOf(st);
    const s = this.store;
    const e = s.findIdentity(this.kHi, this.kLo);
    if (e < 0) {
      this.counters.misses++;
      return undefined;
    }
    const c = s.clock[e]!;
    s.clock[e] = c | CLOCK_REF;
    if (c & CLOCK_SHARED) {
      const b = e * REC_WORDS + W_FP;
      const r = s.findFingerprint(s.rec[b]!, s.rec[b + 1]!);
      if (r >= 0 && r !== e) this.writing(() => this.adopt(e, r));
    }
    const hit = this.hitOf(e);
    if (hit.stale) this.counters.stale++;
    else this.counters.identityHits++;
    return hit;
  }

  /** The verdict for this content (a copy of a known file), by its seeded xxh64. */
  lookupFingerprint(fp: bigint): CacheHit | undefined {
    const s = this.store;
    this.split[0] = fp;
    const r = s.findFingerprint(this.halves[HI]!, this.halves[LO]!);
    if (r < 0) return undefined;
    s.clock[r]! |= CLOCK_REF;
    const hit = this.hitOf(r);
    if (!hit.stale) this.counters.fingerprintHits++;
    return hit;
  }

  /** Entry `e` takes the verdict of `r`, the entry judged last for the same content. */
  private adopt(e: number, r: number): void {
    const rec = this.store.rec;
    const eb = e * REC_WORDS;
    const rb = r * REC_WORDS;
    if (rec[eb + W_META] === rec[rb + W_META] && rec[eb + W_SHA] === rec[rb + W_SHA]) return;
    rec.copyWithin(eb + W_SHA, rb + W_SHA, rb + W_META + 1);
    this.store.clock[e] = (this.store.clock[e]! & ~CLOCK_PIN) | (this.store.clock[r]! & CLOCK_PIN);
    this.dirty = true;
  }

  private hitOf(e: number): CacheHit {
    const rec = this.store.rec;
    const b = e * REC_WORDS;
    const meta = rec[b + W_META]!;
    const infected = (meta & 3) === VERDICT_INFECTED;
    return new Hit(
      infected ? 'infected' : 'clean',
      infected ? this.threats.name(meta >>> 16) || UNKNOWN_THREAT : undefined,
      !infected && ((meta >>> 2) & GEN_MASK) !== this.currentGen,
      rec[b + 4]!,
      rec[b + 5]!,
      rec[b + 6]!,
      rec[b + 7]!,
      rec[b + 8]!,
      rec[b + 9]!,
      rec[b + 10]!,
      rec[b + 11]!,
    );
  }

  // ------------------------------------------------------------------ records

  /** A verdict from the SVM (or the engine) for this file and its content. */
  record(st: FileIdentity, fp: bigint, sha256: string, verdict: Verdict, threat?: string): void {
    if (!SHA_RE.test(sha256)) throw new RangeError('sha256 must be 64 hex characters');
    this.writing(() => this.recordLocked(st, fp, sha256, verdict, threat));
  }

  private recordLocked(st: FileIdentity, fp: bigint, sha256: string, verdict: Verdict, threat?: string): void {
    const w = this.scratch;
    this.scratchBytes.write(sha256, W_SHA * 4, 32, 'hex');
    w[W_META] = this.meta(verdict, threat);
    this.put(st, fp, true);
  }

  /**
   * A copy of known content: this identity now maps to `fp`, with the verdict already known for it.
   * Returns false (and records nothing) if `fp` is not in the cache.
   */
  recordIdentity(st: FileIdentity, fp: bigint): boolean {
    return this.writing(() => this.recordIdentityLocked(st, fp));
  }

  private recordIdentityLocked(st: FileIdentity, fp: bigint): boolean {
    const s = this.store;
    this.split[0] = fp;
    const r = s.findFingerprint(this.halves[HI]!, this.halves[LO]!);
    if (r < 0) return false;
    // Copy before allocating: the allocation may evict r itself.
    this.scratch.set(s.rec.subarray(r * REC_WORDS + W_SHA, r * REC_WORDS + W_META + 1), W_SHA);
    this.put(st, fp, false);
    return true;
  }

  /** A stale identity hit re-judged by the SVM (by SHA-256) under the current generation. */
  refreshIdentity(st: FileIdentity, verdict: Verdict, threat?: string): void {
    this.writing(() => this.refreshIdentityLocked(st, verdict, threat));
  }

  private refreshIdentityLocked(st: FileIdentity, verdict: Verdict, threat?: string): void {
    this.keyOf(st);
    const s = this.store;
    const e = s.findIdentity(this.kHi, this.kLo);
    if (e < 0) return;
    s.rec[e * REC_WORDS + W_META] = this.meta(verdict, threat);
    s.clock[e] = (s.clock[e]! & CLOCK_SHARED) | CLOCK_REF | (verdict === 'infected' ? CLOCK_PIN : 0);
    s.setRepresentative(e);
    this.dirty = true;
  }

  private meta(verdict: Verdict, threat: string | undefined): number {
    const infected = verdict === 'infected';
    const threatId = infected ? (this.threats.id((threat || UNKNOWN_THREAT).slice(0, 256)) ?? 0) : 0;
    return ((infected ? VERDICT_INFECTED : VERDICT_CLEAN) | (this.currentGen << 2) | (threatId << 16)) >>> 0;
  }

  /** Write scratch[W_SHA..W_META] under identity `st` and fingerprint `fp`. */
  private put(st: FileIdentity, fp: bigint, representative: boolean): void {
    const s = this.store;
    const rec = s.rec;
    this.split[0] = fp;
    const fHi = this.halves[HI]!;
    const fLo = this.halves[LO]!;
    this.keyOf(st);
    let e = s.findIdentity(this.kHi, this.kLo);
    const fresh = e < 0;
    if (fresh) e = s.allocate();
    const b = e * REC_WORDS;
    if (!fresh && (rec[b + W_FP] !== fHi || rec[b + W_FP + 1] !== fLo)) s.dropRepresentative(e);
    // Payload first, indexes last: a reader thread never finds a half-written entry by key.
    rec[b + W_ID] = this.kHi;
    rec[b + W_ID + 1] = this.kLo;
    rec[b + W_FP] = fHi;
    rec[b + W_FP + 1] = fLo;
    rec.set(this.scratch.subarray(W_SHA, W_META + 1), b + W_SHA);
    s.clock[e] = (fresh ? 0 : s.clock[e]! & CLOCK_SHARED) | CLOCK_REF | ((rec[b + W_META]! & 3) === VERDICT_INFECTED ? CLOCK_PIN : 0);
    if (fresh) s.insertIdentity(e);
    if (representative) s.setRepresentative(e);
    else s.addRepresentative(e);
    this.dirty = true;
  }

  // ------------------------------------------------------------------ signature refresh

  /** Is record `e` a clean verdict of another generation than the current one? */
  private staleCleanAt(e: number): boolean {
    const m = this.store.rec[e * REC_WORDS + W_META]!;
    return (m & 3) === VERDICT_CLEAN && ((m >>> 2) & GEN_MASK) !== this.currentGen;
  }

  private shaAt(e: number): string {
    const rec = this.store.rec;
    return Buffer.from(rec.buffer, rec.byteOffset + (e * REC_WORDS + W_SHA) * 4, 32).toString('hex');
  }

  /** Clean verdicts of an older generation held now: what a signature refresh has to bring up to date. */
  countStaleClean(): number {
    let n = 0;
    for (let e = 0; e < this.store.used; e++) if (this.staleCleanAt(e)) n++;
    return n;
  }

  /**
   * Stale clean entries from record `from` on, grouped by SHA-256, until `maxHashes` distinct
   * hashes are taken; `next` is where to go on (`done` at the end). An entry index stays valid
   * until the entry is evicted: `promote` checks it again.
   */
  staleClean(from: number, maxHashes: number): { hashes: Map<string, number[]>; next: number; done: boolean } {
    const hashes = new Map<string, number[]>();
    const used = this.store.used;
    let e = Math.max(0, from);
    for (; e < used; e++) {
      if (!this.staleCleanAt(e)) continue;
      const sha = this.shaAt(e);
      const list = hashes.get(sha);
      if (list) list.push(e);
      else if (hashes.size >= maxHashes) break;
      else hashes.set(sha, [e]);
    }
    return { hashes, next: e, done: e >= used };
  }

  /**
   * Entry `e`, if it still holds `sha256` as a stale clean verdict, takes the SVM's verdict for
   * that content under `generation`, which must be the current one. False when anything moved
   * meanwhile (entry evicted or re-judged, generation changed). No file is read: the entry's
   * identity key (dev, ino, size, mtime ns, ctime ns) is what binds it to the content, exactly as
   * for the stale identity hit an open re-checks by lookup today; a file changed since has another
   * identity and never hits this entry.
   */
  promote(e: number, sha256: string, generation: string, verdict: Verdict, threat?: string): boolean {
    if (generation !== this.generation || e < 0 || e >= this.store.used) return false;
    if (!this.staleCleanAt(e) || this.shaAt(e) !== sha256) return false;
    this.writing(() => {
      const s = this.store;
      s.rec[e * REC_WORDS + W_META] = this.meta(verdict, threat);
      s.clock[e] = (s.clock[e]! & CLOCK_SHARED) | (verdict === 'infected' ? CLOCK_PIN : 0);
      s.setRepresentative(e);
    });
    this.dirty = true;
    return true;
  }

  /**
   * The verdict an open of this identity would get, without counting a lookup or touching the
   * CLOCK (the refresh walk looks at every file). A copy whose content was judged again under
   * another identity answers with that newer verdict, as lookupIdentity would adopt it.
   */
  peekIdentity(st: FileIdentity): CacheHit | undefined {
    this.keyOf(st);
    const s = this.store;
    const e = s.findIdentity(this.kHi, this.kLo);
    if (e < 0) return undefined;
    if (s.clock[e]! & CLOCK_SHARED) {
      const b = e * REC_WORDS + W_FP;
      const r = s.findFingerprint(s.rec[b]!, s.rec[b + 1]!);
      if (r >= 0 && r !== e) return this.hitOf(r);
    }
    return this.hitOf(e);
  }

  /** Concurrent asks for one key (a SHA-256) share one run of `fn`. */
  singleFlight<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.flights.run(key, fn);
  }

  // ------------------------------------------------------------------ persistence & stats

  /**
   * Write cache.v1 atomically if anything changed. Never throws: a failed save is logged and
   * answered false. Saves are serialized; past `saveDeadlineMs` this answers false while the
   * write finishes in the background (the next save waits for it).
   */
  save(): Promise<boolean> {
    const file = this.options.file;
    if (!file || !this.dirty) return Promise.resolve(false);
    const write = this.writeChain.then(() => this.writeNow(file));
    this.writeChain = write;
    const deadline = this.options.saveDeadlineMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => {
        this.log.warn('saving the verdict cache is taking long; it continues in the background', { file, deadlineMs: deadline });
        resolve(false);
      }, deadline);
      timer.unref();
    });
    return Promise.race([write, late]).finally(() => clearTimeout(timer));
  }

  private async writeNow(file: string): Promise<boolean> {
    if (!this.dirty) return false;
    const t0 = performance.now();
    this.dirty = false;
    try {
      await writeCacheFile(file, this.persistSource());
      this.counters.saves++;
      this.log.debug('verdict cache saved', { file, entries: this.size, ms: Math.round(performance.now() - t0) });
      return true;
    } catch (e) {
      this.dirty = true;
      this.counters.saveFailures++;
      this.log.warn('could not save the verdict cache; protection continues, the next save retries', {
        file,
        code: (e as { code?: string }).code,
        message: (e as Error).message,
      });
      return false;
    }
  }

  /** Save (waiting for the write to end, whatever the deadline). */
  async close(): Promise<void> {
    await this.save();
    await this.writeChain;
  }

  stats(): Record<string, number> {
    const c = this.counters;
    const lookups = c.identityHits + c.misses + c.stale;
    return {
      entries: this.size,
      capacity: this.capacity,
      bytes: this.store.bytes,
      residentBytes: this.store.residentBytes,
      indexSlots: this.store.indexSlots,
      evictions: this.store.evictions,
      ...c,
      hitRate: lookups ? Math.round((c.identityHits / lookups) * 1000) / 1000 : 0,
    };
  }

  private persistSource(): PersistSource {
    return {
      store: this.store,
      seedCheck: this.xx.h64Raw(SEED_CHECK, this.options.seed),
      generations: () => this.gens.all(),
      currentGeneration: () => this.currentGen,
      threats: () => this.threats.all(),
      epoch: () => this.genEpoch,
      normalize: (e) => {
        const b = e * REC_WORDS + W_FP;
        const r = this.store.findFingerprint(this.store.rec[b]!, this.store.rec[b + 1]!);
        if (r >= 0 && r !== e) this.writing(() => this.adopt(e, r));
      },
    };
  }
}

/** The file records xxh64(SEED_CHECK, seed): a file written under another seed is refused, the seed not revealed. */
const SEED_CHECK = new TextEncoder().encode('lightagent cache seed check v1');
