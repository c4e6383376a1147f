/**
 * Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"):
 * delay = random(0, min(max, min * 2^attempt)), never below `min`. Many guests losing one SVM at
 * once then spread their reconnects instead of arriving together.
 */
export class Backoff {
  private attempt = 0;
  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    const cap = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    return Math.max(this.minMs, Math.round(this.random() * cap));
  }

  reset(): void {
    this.attempt = 0;
  }
}
