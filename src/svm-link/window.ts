/**
 * A counting semaphore with FIFO waiters and a per-waiter timeout: the bounded in-flight window.
 * Backpressure is explicit: a caller past the window waits (up to its deadline), it is never dropped.
 */
interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class Window {
  private used = 0;
  private readonly waiters: Waiter[] = [];

  constructor(private limit: number) {}

  get inUse(): number {
    return this.used;
  }
  get waiting(): number {
    return this.waiters.length;
  }

  setLimit(limit: number): void {
    this.limit = Math.max(1, limit);
    this.wake();
  }

  acquire(timeoutMs: number, onTimeout: () => Error): Promise<void> {
    if (this.used < this.limit && this.waiters.length === 0) {
      this.used++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(onTimeout());
        }, timeoutMs),
      };
      this.waiters.push(w);
    });
  }

  release(): void {
    this.used = Math.max(0, this.used - 1);
    this.wake();
  }

  /** Fail every waiter (link closed or refused). */
  drain(err: Error): void {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  private wake(): void {
    while (this.used < this.limit && this.waiters.length > 0) {
      const w = this.waiters.shift()!;
      clearTimeout(w.timer);
      this.used++;
      w.resolve();
    }
  }
}
