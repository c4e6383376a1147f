/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
 * delay = random(0, min(max, min * 2^attempt)), never below `min`. Many guests losing one SVM at
 * once then spread their reconnects instead of arriving together.
 */
export class Backoff {
  private attempt = 0;
  /**
   * `minMs` > 0 (a zero floor would let a failing peer be retried in a tight loop) and
   * `maxMs` >= `minMs`; `random` returns [0, 1) like Math.random (tests inject their own).
   */
  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {
    if (!(Number.isFinite(minMs) && minMs > 0 && Number.isFinite(maxMs) && maxMs >= minMs)) {
      throw new RangeError(`Backoff needs 0 < min <= max (finite), got min ${minMs} ms, max ${maxMs} ms`);
    }
  }

  /** The next delay in ms, in [min, min(max, min * 2^attempts)]. */
  next(): number {
    const cap = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    const r = this.random();
    // A random source out of [0, 1) (or NaN) must not push a delay outside its bounds.
    const u = r >= 0 && r <= 1 ? r : 1;
    return Math.max(this.minMs, Math.round(u * cap));
  }

  /** How many delays next() has given since construction or the last reset(). */
  get attempts(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
  }
}
