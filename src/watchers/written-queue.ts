/**
 * The watchers' side of the backpressure contract in protection.ts: written() runs at most
 * `concurrency` at a time, a path is reported at most once while queued, and a path written again
 * while its report runs is reported once more after it (the running scan may have read the old
 * content). Beyond `maxQueued` new paths are refused (the caller counts and recovers them).
 */
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ProtectionHandler } from './protection.js';

export class WrittenQueue {
  private readonly queued = new Set<string>();
  private readonly running = new Set<string>();
  private readonly again = new Set<string>();
  private active = 0;
  private closed = false;
  private idleWaiters: Array<() => void> = [];
  reported = 0;
  failed = 0;

  constructor(
    private readonly handler: ProtectionHandler,
    private readonly log: Logger,
    private readonly concurrency = 8,
    private readonly maxQueued = 100_000,
  ) {}

  get size(): number {
    return this.queued.size + this.again.size;
  }

  /** false: refused (the queue is full); the path was not queued. */
  push(path: string): boolean {
    if (this.closed) return true;
    if (this.queued.has(path) || this.again.has(path)) return true;
    if (this.size >= this.maxQueued) return false;
    if (this.running.has(path)) this.again.add(path);
    else this.queued.add(path);
    this.pump();
    return true;
  }

  private pump(): void {
    while (!this.closed && this.active < this.concurrency) {
      const next = this.takeNext();
      if (next === undefined) break;
      this.run(next);
    }
    if (this.active === 0 && this.size === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private takeNext(): string | undefined {
    for (const p of this.queued) {
      if (this.running.has(p)) continue;
      this.queued.delete(p);
      return p;
    }
    return undefined;
  }

  private run(path: string): void {
    this.active++;
    this.running.add(path);
    this.reported++;
    let r: unknown;
    try {
      r = this.handler.written({ path });
    } catch (e) {
      r = Promise.reject(e);
    }
    void Promise.resolve(r)
      .catch((e: unknown) => {
        this.failed++;
        this.log.error('scan after write failed', { file: path, ...describeError(e) });
      })
      .finally(() => {
        this.active--;
        this.running.delete(path);
        if (this.again.delete(path)) this.queued.add(path);
        this.pump();
      });
  }

  /** Drop what is queued; resolves once the reports already running have settled, or after `maxWaitMs`. */
  close(maxWaitMs = 3000): Promise<void> {
    this.closed = true;
    this.queued.clear();
    this.again.clear();
    if (this.active === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(resolve, maxWaitMs);
      this.idleWaiters.push(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}
