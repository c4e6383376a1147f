/**
 * At most `max` notifications per `windowMs`; what comes beyond that is counted and shown as one
 * summary ("N more threats blocked") when a slot frees. A storm of a thousand detections thus
 * gives a handful of popups, and the count in the summary keeps the total true.
 */
export class NotificationLimiter<T> {
  private readonly sent: number[] = [];
  private suppressed = 0;
  private last: T | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly max: number,
    private readonly windowMs: number,
    private readonly send: (item: T) => void,
    private readonly summarize: (count: number, last: T) => void,
    private readonly now: () => number = Date.now,
  ) {
    if (!(max >= 1) || !(windowMs > 0)) throw new RangeError('NotificationLimiter: max >= 1 and windowMs > 0');
  }

  push(item: T): void {
    const t = this.now();
    this.prune(t);
    if (this.suppressed === 0 && this.sent.length < this.max) {
      this.sent.push(t);
      this.send(item);
      return;
    }
    this.suppressed++;
    this.last = item;
    this.timer ??= setTimeout(() => this.flush(), Math.max(1, this.sent[0]! + this.windowMs - t));
    this.timer.unref?.();
  }

  /** Detections not shown one by one (yet). */
  get pending(): number {
    return this.suppressed;
  }

  /** Send the summary now if anything is held (also used at shutdown). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.suppressed === 0) return;
    const n = this.suppressed;
    this.suppressed = 0;
    this.sent.push(this.now());
    this.summarize(n, this.last!);
  }

  stop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private prune(t: number): void {
    while (this.sent.length > 0 && this.sent[0]! <= t - this.windowMs) this.sent.shift();
  }
}
