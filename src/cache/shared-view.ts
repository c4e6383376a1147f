/**
 * SharedCacheView — a read-only view of a VerdictCache opened with `shared: true`, for another
 * thread (the fanotify gate worker): it answers "is this identity known clean at the current
 * generation?" without a message to the thread that owns the cache.
 *
 * Concurrency: the owner brackets every mutation with a seqlock (control[SEQ] odd while writing,
 * see VerdictCache.writing). A reader takes the sequence before and after its reads and trusts
 * them only if it was even and unchanged: a record rewritten in place during an eviction can
 * otherwise pair an old key with a new verdict. Anything uncertain is a miss, and a miss only
 * means the owner thread decides, as before.
 */
import { CLOCK_SHARED, REC_WORDS, W_ID, W_META, homeSlot, layout } from './entry-store.js';
import type { FileIdentity, XxApi } from './fingerprint.js';

/** Slots of the control Int32Array. */
export const CTL_SEQ = 0;
export const CTL_GEN = 1;
/** Index slots in use now, and which of the two index regions holds them (EntryStore.reserve). */
export const CTL_INDEX_SLOTS = 2;
export const CTL_REGION = 3;
export const CTL_SLOTS = 4;

export interface SharedCacheSpec {
  buffer: SharedArrayBuffer;
  control: SharedArrayBuffer;
  capacity: number;
  /** Index slots at full capacity (the buffer's layout); the slots in use are in control[CTL_INDEX_SLOTS]. */
  maxIndexSlots: number;
  seed: bigint;
}

const VERDICT_CLEAN = 1;
const GEN_MASK = 0x3fff;
const ENTRY_MASK = 0xffffff;
const LE = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export class SharedCacheView {
  private readonly rec: Uint32Array;
  private readonly idRegions: [Uint32Array, Uint32Array];
  private readonly clock: Uint8Array;
  private readonly ctl: Int32Array;
  private readonly idWords = new BigUint64Array(5);
  private readonly idBytes = new Uint8Array(this.idWords.buffer);
  private readonly split = new BigUint64Array(1);
  private readonly halves = new Uint32Array(this.split.buffer);

  constructor(
    private readonly spec: SharedCacheSpec,
    private readonly xx: XxApi,
  ) {
    const l = layout(spec.capacity, spec.maxIndexSlots);
    this.rec = new Uint32Array(spec.buffer, 0, spec.capacity * REC_WORDS);
    this.idRegions = [0, 1].map((r) => new Uint32Array(spec.buffer, l.region(r, W_ID), spec.maxIndexSlots)) as [Uint32Array, Uint32Array];
    this.clock = new Uint8Array(spec.buffer, l.clock, spec.capacity);
    this.ctl = new Int32Array(spec.control);
  }

  /** True only if the cache holds a clean verdict of the current generation for this identity. */
  isKnownClean(st: FileIdentity): boolean {
    const w = this.idWords;
    w[0] = st.dev;
    w[1] = st.ino;
    w[2] = st.size;
    w[3] = st.mtimeNs;
    w[4] = st.ctimeNs;
    this.split[0] = this.xx.h64Raw(this.idBytes, this.spec.seed);
    const hi = this.halves[LE ? 1 : 0]!;
    const lo = this.halves[LE ? 0 : 1]!;
    const seq = Atomics.load(this.ctl, CTL_SEQ);
    if (seq & 1) return false;
    const tag = hi >>> 24;
    const n = Math.min(Atomics.load(this.ctl, CTL_INDEX_SLOTS), this.spec.maxIndexSlots);
    const idIdx = this.idRegions[Atomics.load(this.ctl, CTL_REGION) & 1]!;
    if (n <= 0) return false;
    let i = homeSlot(lo, n);
    let meta = -1;
    let shared = true;
    for (let probes = 0; probes < n; probes++) {
      const v = idIdx[i]!;
      if (v === 0) break;
      if (v >>> 24 === tag) {
        const e = (v & ENTRY_MASK) - 1;
        const b = e * REC_WORDS;
        if (e < this.spec.capacity && this.rec[b + W_ID] === hi && this.rec[b + W_ID + 1] === lo) {
          meta = this.rec[b + W_META]!;
          shared = (this.clock[e]! & CLOCK_SHARED) !== 0;
          break;
        }
      }
      if (++i === n) i = 0;
    }
    const gen = Atomics.load(this.ctl, CTL_GEN);
    if (Atomics.load(this.ctl, CTL_SEQ) !== seq) return false;
    // A content shared with other identities may have a newer verdict on its representative:
    // only the owner thread follows that link.
    return meta >= 0 && !shared && (meta & 3) === VERDICT_CLEAN && ((meta >>> 2) & GEN_MASK) === gen;
  }
}
