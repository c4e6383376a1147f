/**
 * A fixed-capacity open-addressing hash table over typed arrays: u64 keys, a fixed number of
 * u32 payload words per slot, linear probing, backward-shift deletion (no tombstones), and CLOCK
 * eviction when full. No per-entry objects: the whole table is a few contiguous arrays, which can
 * live on a SharedArrayBuffer so another thread can read it.
 *
 * Slot layout: keys BigUint64Array[slots] (0 = empty; callers never use key 0), words
 * Uint32Array[slots * width], ref Uint8Array[slots] (CLOCK reference bit, 2 = pinned).
 * Bytes per slot = 8 + 4 * width + 1.
 */
export class U64Table {
  readonly slots: number;
  readonly capacity: number;
  readonly keys: BigUint64Array;
  readonly words: Uint32Array;
  readonly ref: Uint8Array;
  private count = 0;
  private hand = 0;
  evictions = 0;

  /**
   * @param capacity entries it must hold; slots are sized for a load factor of at most 0.8
   * @param width u32 payload words per slot
   */
  constructor(capacity: number, readonly width: number, shared = false) {
    this.capacity = Math.max(16, Math.floor(capacity));
    this.slots = Math.ceil(this.capacity / 0.8);
    const mk = (bytes: number) => (shared ? new SharedArrayBuffer(bytes) : new ArrayBuffer(bytes));
    this.keys = new BigUint64Array(mk(this.slots * 8));
    this.words = new Uint32Array(mk(this.slots * width * 4));
    this.ref = new Uint8Array(mk(this.slots));
  }

  get size(): number {
    return this.count;
  }

  get bytes(): number {
    return this.keys.byteLength + this.words.byteLength + this.ref.byteLength;
  }

  private home(key: bigint): number {
    // Multiply-shift on the low 32 bits (keys are already well-mixed hashes).
    return Number(((key & 0xffff_ffffn) * BigInt(this.slots)) >> 32n);
  }

  /** Slot index holding `key`, or -1. Marks it recently used. */
  find(key: bigint): number {
    let i = this.home(key);
    for (let n = 0; n < this.slots; n++) {
      const k = this.keys[i]!;
      if (k === 0n) return -1;
      if (k === key) {
        if (this.ref[i] === 0) this.ref[i] = 1;
        return i;
      }
      i = i + 1 === this.slots ? 0 : i + 1;
    }
    return -1;
  }

  /** Slot for `key`, inserting (evicting by CLOCK if full) when absent. Payload words of a new slot are zero. */
  upsert(key: bigint, pin = false): number {
    const found = this.find(key);
    if (found >= 0) {
      if (pin) this.ref[found] = 2;
      return found;
    }
    if (this.count >= this.capacity) this.evictOne();
    let i = this.home(key);
    while (this.keys[i] !== 0n) i = i + 1 === this.slots ? 0 : i + 1;
    this.keys[i] = key;
    this.words.fill(0, i * this.width, (i + 1) * this.width);
    this.ref[i] = pin ? 2 : 1;
    this.count++;
    return i;
  }

  setPinned(i: number, pinned: boolean): void {
    this.ref[i] = pinned ? 2 : 1;
  }

  delete(key: bigint): boolean {
    const i = this.find(key);
    if (i < 0) return false;
    this.removeAt(i);
    return true;
  }

  /** Every occupied slot index. */
  *occupied(): Generator<number> {
    for (let i = 0; i < this.slots; i++) if (this.keys[i] !== 0n) yield i;
  }

  clear(): void {
    this.keys.fill(0n);
    this.words.fill(0);
    this.ref.fill(0);
    this.count = 0;
  }

  /** CLOCK: sweep, clearing reference bits, evict the first unreferenced unpinned slot. */
  private evictOne(): void {
    for (let sweep = 0; sweep < this.slots * 3; sweep++) {
      const i = this.hand;
      this.hand = this.hand + 1 === this.slots ? 0 : this.hand + 1;
      if (this.keys[i] === 0n) continue;
      const r = this.ref[i]!;
      if (r === 2 && sweep < this.slots * 2) continue; // pinned (infected) goes last
      if (r === 1) {
        this.ref[i] = 0;
        continue;
      }
      this.removeAt(i);
      this.evictions++;
      return;
    }
  }

  /** Backward-shift deletion keeps every probe chain unbroken without tombstones. */
  private removeAt(i: number): void {
    const w = this.width;
    let hole = i;
    let j = i;
    for (;;) {
      j = j + 1 === this.slots ? 0 : j + 1;
      const k = this.keys[j]!;
      if (k === 0n) break;
      const h = this.home(k);
      // Move j into the hole if its home is not cyclically within (hole, j].
      const inRange = hole <= j ? h > hole && h <= j : h > hole || h <= j;
      if (inRange) continue;
      this.keys[hole] = k;
      this.words.copyWithin(hole * w, j * w, (j + 1) * w);
      this.ref[hole] = this.ref[j]!;
      hole = j;
    }
    this.keys[hole] = 0n;
    this.words.fill(0, hole * w, (hole + 1) * w);
    this.ref[hole] = 0;
    this.count--;
  }
}
