/**
 * EntryStore — the verdict cache's memory: dense fixed-size records plus two open-addressing
 * indexes over them, all typed arrays carved from ONE ArrayBuffer (or SharedArrayBuffer, so the
 * gate worker's SharedCacheView can read hits without a message round trip). No object per entry.
 * docs/cache.md has the sizes, growth and measurements.
 *
 * Per entry (capacity N; S = ceil(N / MAX_LOAD) index slots, MAX_LOAD = 0.8):
 *
 *   rec    Uint32Array, 13 words = 52 B, stride 13:
 *            [0] identity key hi  [1] identity key lo   (seeded xxh64 of dev,ino,size,mtime,ctime)
 *            [2] fingerprint hi   [3] fingerprint lo    (seeded xxh64 of the content)
 *            [4..11] SHA-256 of the content, raw bytes in file order
 *            [12] meta: bits 0-1 verdict (1 clean, 2 infected), bits 2-15 generation id,
 *                 bits 16-31 threat id
 *   clock  Uint8Array, 1 B: bit 0 referenced (CLOCK), bit 1 pinned (infected), bit 2 shared
 *          (another entry has had the same fingerprint; only those check the representative)
 *   idIdx  Uint32Array, up to S slots, keyed by identity key                     4 B / 0.8 = 5 B
 *   fpIdx  Uint32Array, up to S slots, keyed by fingerprint                      4 B / 0.8 = 5 B
 *          slot = top 8 bits of the key's hi word << 24 | entry + 1 (0 = empty): the tag lets
 *          a probe skip non-matching slots without touching the record (one cache miss saved
 *          per probe; a miss at load 0.8 scans ~13 slots). Hence capacity <= 2^24 - 2.
 *
 *   = 52 + 1 + 5 + 5 = 63 bytes per entry at full capacity (plus the index rounding).
 *
 * The indexes start at INITIAL_INDEX_SLOTS and double into the other of two index regions
 * (reserve()); the buffer is laid out for both at full capacity, but only touched pages are
 * resident, so memory follows the entries held.
 *
 * Every entry has an identity; the fingerprint index points at ONE entry per content (the
 * "representative", the one last judged), so a copy of a known file is found by fingerprint and
 * a new verdict for some content is seen by every identity holding that content (see
 * verdict-cache.ts). Indexes use linear probing from homeSlot() of the low key word and
 * backward-shift deletion, so there are no tombstones.
 *
 * Records never move: an entry index stays valid until that entry is evicted, which is what lets
 * a reader thread follow idIdx -> rec without locks (it re-checks the key after reading the
 * payload, and the owner's seqlock tells it a record was rewritten meanwhile: shared-view.ts).
 *
 * Eviction is CLOCK over the records: the hand clears reference bits and evicts the first
 * unreferenced entry; pinned (infected) entries are passed over for two full sweeps, so they go
 * only when nothing else is left. That costs nothing extra on the hot path.
 */
export const REC_WORDS = 13;
export const W_ID = 0;
export const W_FP = 2;
export const W_SHA = 4;
export const W_META = 12;
export const REC_BYTES = REC_WORDS * 4;
export const MAX_LOAD = 0.8;

/** Meta word limits: 14-bit generation ids, 16-bit threat ids. */
export const MAX_GENERATIONS = 0x4000;
export const MAX_THREATS = 0xffff;

export const CLOCK_REF = 1;
export const CLOCK_PIN = 2;
/** Another entry has (or had) the same fingerprint: an identity hit must check the representative. */
export const CLOCK_SHARED = 4;

const NONE = -1;

/**
 * Home index slot of a key's low word: a Fibonacci multiply (keeps sequential or low-entropy keys
 * from clustering: tests and callers may pass any u64), then multiply-shift onto [0, slots)
 * without a modulo. Shared with SharedCacheView, which probes the same index from another thread.
 */
export function homeSlot(lo: number, slots: number): number {
  return Math.floor(((Math.imul(lo, 0x9e3779b1) >>> 0) * slots) / 4294967296);
}
/** Index slots hold 24 bits of entry + 1 and 8 tag bits of the key. */
const ENTRY_MASK = 0xffffff;
export const MAX_CAPACITY = ENTRY_MASK - 1;

/**
 * Byte layout of a store's buffer: records | region 0 (identity index, fingerprint index) |
 * region 1 (same) | clock. Shared with SharedCacheView.
 */
export function layout(capacity: number, maxIndexSlots: number): { region(r: number, w: number): number; clock: number; total: number } {
  const recBytes = capacity * REC_BYTES;
  const idxBytes = maxIndexSlots * 4;
  const clock = recBytes + 4 * idxBytes;
  return { region: (r, w) => recBytes + (2 * r + (w === W_ID ? 0 : 1)) * idxBytes, clock, total: clock + capacity };
}

export interface EntryStoreOptions {
  /** Allocate on a SharedArrayBuffer (readable from a worker thread). */
  shared?: boolean | undefined;
}

/** Index slots a new store starts with; the indexes double as entries arrive (see reserve()). */
export const INITIAL_INDEX_SLOTS = 4096;

export class EntryStore {
  readonly capacity: number;
  /** Index slots at full capacity: the size each index region is laid out for. */
  readonly maxIndexSlots: number;
  /** Index slots in use now (grows by doubling up to maxIndexSlots). */
  indexSlots: number;
  /** Which of the two index regions is active (0 or 1). */
  region = 0;
  readonly buffer: ArrayBuffer | SharedArrayBuffer;
  readonly rec: Uint32Array;
  readonly clock: Uint8Array;
  /** The active indexes: views of the first `indexSlots` slots of the active region. */
  idIdx: Uint32Array;
  fpIdx: Uint32Array;
  /** Entries 0..used-1 are live (records never move; eviction reuses a slot in place). */
  used = 0;
  hand = 0;
  evictions = 0;
  /** Records ever written (0..recHigh-1): what clear() must zero. Writers that bypass allocate() raise it. */
  recHigh = 0;
  /** Called after the indexes moved to a bigger region (the owner publishes it to readers). */
  onIndexResize: ((slots: number, region: number) => void) | undefined;
  private readonly regions: Array<{ id: Uint32Array; fp: Uint32Array; high: number }>;

  constructor(capacity: number, opts: EntryStoreOptions = {}) {
    this.capacity = Math.min(MAX_CAPACITY, Math.max(16, Math.floor(capacity)));
    this.maxIndexSlots = Math.ceil(this.capacity / MAX_LOAD);
    this.indexSlots = Math.min(this.maxIndexSlots, INITIAL_INDEX_SLOTS);
    const l = layout(this.capacity, this.maxIndexSlots);
    this.buffer = opts.shared ? new SharedArrayBuffer(l.total) : new ArrayBuffer(l.total);
    this.rec = new Uint32Array(this.buffer, 0, this.capacity * REC_WORDS);
    this.regions = [0, 1].map((r) => ({
      id: new Uint32Array(this.buffer, l.region(r, W_ID), this.maxIndexSlots),
      fp: new Uint32Array(this.buffer, l.region(r, W_FP), this.maxIndexSlots),
      high: 0,
    }));
    this.clock = new Uint8Array(this.buffer, l.clock, this.capacity);
    this.idIdx = this.regions[0]!.id.subarray(0, this.indexSlots);
    this.fpIdx = this.regions[0]!.fp.subarray(0, this.indexSlots);
    this.regions[0]!.high = this.indexSlots;
  }

  /**
   * Make room in the indexes for `entries` entries at load <= MAX_LOAD: double them into the
   * other region, rehashed. The address space is laid out for full capacity, but only the slots
   * in use are ever touched, so resident memory follows the entries held, not the capacity.
   */
  reserve(entries: number): void {
    while (entries > this.indexSlots * MAX_LOAD && this.indexSlots < this.maxIndexSlots) {
      const next = Math.min(this.maxIndexSlots, this.indexSlots * 2);
      const to = this.regions[this.region ^ 1]!;
      const id = to.id.subarray(0, next);
      const fp = to.fp.subarray(0, next);
      // The region may still hold the smaller index of two growths ago.
      id.fill(0, 0, Math.min(next, to.high));
      fp.fill(0, 0, Math.min(next, to.high));
      to.high = Math.max(to.high, next);
      this.rehash(this.idIdx, id, W_ID);
      this.rehash(this.fpIdx, fp, W_FP);
      this.region ^= 1;
      this.indexSlots = next;
      this.idIdx = id;
      this.fpIdx = fp;
      this.onIndexResize?.(next, this.region);
    }
  }

  private rehash(from: Uint32Array, to: Uint32Array, w: number): void {
    const n = to.length;
    for (let k = 0; k < from.length; k++) {
      const v = from[k]!;
      if (v === 0) continue;
      let i = homeSlot(this.rec[((v & ENTRY_MASK) - 1) * REC_WORDS + w + 1]!, n);
      while (to[i] !== 0) if (++i === n) i = 0;
      to[i] = v;
    }
  }

  get size(): number {
    return this.used;
  }

  /** Address space of the typed arrays (laid out for full capacity). */
  get bytes(): number {
    return this.buffer.byteLength;
  }

  /** Bytes the store has written to: records and clock of the entries held plus both index regions' touched slots. */
  get residentBytes(): number {
    return this.recHigh * (REC_BYTES + 1) + (this.regions[0]!.high + this.regions[1]!.high) * 8;
  }

  private home(lo: number): number {
    return homeSlot(lo, this.indexSlots);
  }

  /** Entry whose key at word `w` (W_ID or W_FP) is hi:lo, or -1. */
  private find(idx: Uint32Array, w: number, hi: number, lo: number): number {
    const rec = this.rec;
    const n = this.indexSlots;
    const tag = hi >>> 24;
    let i = this.home(lo);
    for (;;) {
      const v = idx[i]!;
      if (v === 0) return NONE;
      if (v >>> 24 === tag) {
        const e = (v & ENTRY_MASK) - 1;
        const b = e * REC_WORDS + w;
        if (rec[b + 1] === lo && rec[b] === hi) return e;
      }
      if (++i === n) i = 0;
    }
  }

  findIdentity(hi: number, lo: number): number {
    return this.find(this.idIdx, W_ID, hi, lo);
  }

  findFingerprint(hi: number, lo: number): number {
    return this.find(this.fpIdx, W_FP, hi, lo);
  }

  /** Index slot value for entry `e`: 8 key bits (so most probes never touch the record) + e + 1. */
  private slotValue(w: number, e: number): number {
    return ((this.rec[e * REC_WORDS + w]! >>> 24) * 0x1000000 + e + 1) >>> 0;
  }

  /** Add entry `e` (key words already written) unless its key is present; returns the entry holding it, or -1 if added. */
  private insert(idx: Uint32Array, w: number, e: number): number {
    const rec = this.rec;
    const n = this.indexSlots;
    const b = e * REC_WORDS + w;
    const hi = rec[b]!;
    const lo = rec[b + 1]!;
    const tag = hi >>> 24;
    let i = this.home(lo);
    for (;;) {
      const v = idx[i]!;
      if (v === 0) break;
      if (v >>> 24 === tag) {
        const o = (v & ENTRY_MASK) - 1;
        if (rec[o * REC_WORDS + w + 1] === lo && rec[o * REC_WORDS + w] === hi) return o;
      }
      if (++i === n) i = 0;
    }
    idx[i] = this.slotValue(w, e);
    return NONE;
  }

  /** Slot of entry `e` in an index, or -1. */
  private slotOf(idx: Uint32Array, w: number, e: number): number {
    const n = this.indexSlots;
    let i = this.home(this.rec[e * REC_WORDS + w + 1]!);
    for (;;) {
      const v = idx[i]!;
      if (v === 0) return NONE;
      if ((v & ENTRY_MASK) === e + 1) return i;
      if (++i === n) i = 0;
    }
  }

  /** Backward-shift deletion: keeps every probe chain unbroken without tombstones. */
  private removeSlot(idx: Uint32Array, w: number, hole: number): void {
    const n = this.indexSlots;
    const rec = this.rec;
    let j = hole;
    for (;;) {
      if (++j === n) j = 0;
      const v = idx[j]!;
      if (v === 0) break;
      const h = this.home(rec[((v & ENTRY_MASK) - 1) * REC_WORDS + w + 1]!);
      // j stays if its home lies cyclically within (hole, j].
      const stays = hole <= j ? h > hole && h <= j : h > hole || h <= j;
      if (stays) continue;
      idx[hole] = v;
      hole = j;
    }
    idx[hole] = 0;
  }

  /** Index entry `e` by identity; if that identity is already indexed, returns its entry instead (e is not added). */
  insertIdentity(e: number): number {
    return this.insert(this.idIdx, W_ID, e);
  }

  /** Make `e` the representative of its fingerprint unless the content already has one. */
  addRepresentative(e: number): void {
    const cur = this.insert(this.fpIdx, W_FP, e);
    if (cur !== NONE && cur !== e) this.markShared(e, cur);
  }

  private markShared(a: number, b: number): void {
    this.clock[a]! |= CLOCK_SHARED;
    this.clock[b]! |= CLOCK_SHARED;
  }

  /** Make `e` the representative of its fingerprint (replacing the previous one, if any). */
  setRepresentative(e: number): void {
    const b = e * REC_WORDS + W_FP;
    const cur = this.findFingerprint(this.rec[b]!, this.rec[b + 1]!);
    if (cur === e) return;
    if (cur === NONE) {
      this.insert(this.fpIdx, W_FP, e);
      return;
    }
    this.fpIdx[this.slotOf(this.fpIdx, W_FP, cur)] = this.slotValue(W_FP, e);
    this.markShared(e, cur);
  }

  /** Drop `e` from the fingerprint index if it represents its content. */
  dropRepresentative(e: number): void {
    const s = this.slotOf(this.fpIdx, W_FP, e);
    if (s !== NONE) this.removeSlot(this.fpIdx, W_FP, s);
  }

  /** A record slot for a new entry: the next unused one, or one freed by CLOCK. Keys are NOT indexed yet. */
  allocate(): number {
    if (this.used < this.capacity) {
      this.reserve(this.used + 1);
      this.recHigh = Math.max(this.recHigh, this.used + 1);
      return this.used++;
    }
    const e = this.victim();
    const s = this.slotOf(this.idIdx, W_ID, e);
    if (s !== NONE) this.removeSlot(this.idIdx, W_ID, s);
    this.dropRepresentative(e);
    this.evictions++;
    return e;
  }

  private victim(): number {
    const n = this.capacity;
    const clock = this.clock;
    for (let sweep = 0; ; sweep++) {
      const e = this.hand;
      this.hand = e + 1 === n ? 0 : e + 1;
      const c = clock[e]!;
      if (c & CLOCK_PIN && sweep < 2 * n) continue;
      if (c & CLOCK_REF) {
        clock[e] = c & ~CLOCK_REF;
        continue;
      }
      return e;
    }
  }

  /**
   * Empty the store. Only what was ever written is zeroed: filling the whole buffer would make
   * every page of it resident (63 MB at a million entries) in an agent that holds a few thousand.
   */
  clear(): void {
    this.rec.fill(0, 0, this.recHigh * REC_WORDS);
    this.clock.fill(0, 0, this.recHigh);
    for (const r of this.regions) {
      r.id.fill(0, 0, r.high);
      r.fp.fill(0, 0, r.high);
    }
    this.used = 0;
    this.hand = 0;
    // The indexes stay at their size (already resident); the region stays active.
  }
}
