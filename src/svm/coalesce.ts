/**
 * Lookup coalescing: clones that miss the same content at the same moment upload it once.
 *
 * The agent always looks a file up by SHA-256 before it uploads it (src/scan/file-scanner.ts), so
 * a lookup that misses names the agent about to upload that content: its *owner*. A lookup of the
 * same content (same tenant and generation) from another agent meanwhile is *held*: it waits for
 * the verdict of the owner's upload instead of answering `unknown` at once and uploading the same
 * bytes again. The SVM learns an upload's hash only when its last byte is in, so the owner's
 * upload is recognised by its connection and size (`started`), and checked by hash at the end.
 *
 * A hold is released, answering `unknown` so the waiting agent uploads itself, as soon as the
 * owner cannot bring the verdict: its upload is cancelled, dropped (stalled, timed out, over its
 * memory share) or fails, the owner disconnects, or nothing progresses for `progressMs` (no upload
 * started, no chunk). And never later than `holdMs` after the held lookup came while the bytes are
 * still on their way. Once they are all in and the scan runs, a hold waits for that scan (at most
 * `joinMs`), and so does a lookup of content whose scan is already running (`join`): an upload of
 * its own could only join that same scan, so releasing it would cost the bytes and gain nothing
 * (a boot storm of 100 guests on 2 cores, where holds ran out at 500 ms while the engine queue
 * was the wait, sent the SVM 2.68x the tree). A held lookup ends only in a verdict the engine gave
 * for that content, or in `unknown`: never in "clean" without a verdict.
 *
 * Holds are bounded per waiting agent (`perAgent`, below its in-flight window: a window full of
 * held lookups would leave the agent no slot for the uploads that release them), never taken on
 * the owner's own misses, and at most `capacity` misses are remembered.
 */
import type { VerdictMsg } from '../protocol/index.js';

/** A verdict without its envelope (core.ts's VerdictFields). */
type VerdictFields = Omit<VerdictMsg, 't' | 'id'>;

export interface CoalesceOptions {
  /** The longest a lookup is held while the content is still being uploaded (lookup_coalesce); 0 turns coalescing off. */
  holdMs: number;
  /** The longest a lookup waits for a scan of its content that is running (all bytes in); default holdMs. */
  joinMs?: number;
  /** A hold is released when its owner's upload shows no progress for this long. */
  progressMs: number;
  /** Lookups one agent connection may have held at once, and misses it may own; more answer `unknown` at once. */
  perAgent: number;
  /** Misses remembered at once. */
  capacity: number;
}

type Resolve = (v: VerdictFields | undefined) => void;

interface Waiter {
  agent: object;
  timer: NodeJS.Timeout;
  resolve: Resolve;
}

interface Miss {
  key: string;
  sha256: string;
  owner: object;
  size: number;
  /** The owner's upload thought to carry this content. */
  upload: number | undefined;
  waiters: Set<Waiter>;
  progress: NodeJS.Timeout | undefined;
}

export type ReleaseReason = 'dropped' | 'disconnected' | 'no-progress' | 'hold-time';

export class LookupCoalescer {
  private readonly misses = new Map<string, Miss>();
  private readonly byOwner = new Map<object, Set<Miss>>();
  private readonly held = new Map<object, number>();
  /** Held lookups released without a verdict, by why (lightagent_svm_lookups_released_total). */
  readonly released: Record<ReleaseReason, number> = { dropped: 0, disconnected: 0, 'no-progress': 0, 'hold-time': 0 };
  /** Held lookups answered by the owner's verdict. */
  coalesced = 0;

  constructor(readonly o: CoalesceOptions) {}

  private get joinMs(): number {
    return Math.max(this.o.joinMs ?? this.o.holdMs, this.o.holdMs);
  }

  /** Misses remembered now. */
  get size(): number {
    return this.misses.size;
  }

  /** Lookups held now, all agents together. */
  get waiting(): number {
    let n = 0;
    for (const v of this.held.values()) n += v;
    return n;
  }

  /**
   * A lookup of `key` by `agent` missed the cache. Undefined: answer `unknown` now (this agent is
   * the owner and uploads, or it may not wait). Else the verdict the owner's upload brings, or
   * undefined when the hold is released.
   */
  miss(key: string, sha256: string, agent: object, size: number): Promise<VerdictFields | undefined> | undefined {
    if (this.o.holdMs <= 0) return undefined;
    const m = this.misses.get(key);
    if (!m) {
      const own = this.byOwner.get(agent);
      if (this.misses.size >= this.o.capacity || (own?.size ?? 0) >= this.o.perAgent) return undefined;
      const fresh: Miss = { key, sha256, owner: agent, size, upload: undefined, waiters: new Set(), progress: undefined };
      this.misses.set(key, fresh);
      if (own) own.add(fresh);
      else this.byOwner.set(agent, new Set([fresh]));
      this.expectProgress(fresh);
      return undefined;
    }
    if (m.owner === agent) return undefined;
    return this.hold(agent, (resolve) => {
      const w: Waiter = { agent, resolve, timer: setTimeout(() => this.wake(m, w, undefined, 'hold-time'), this.o.holdMs) };
      m.waiters.add(w);
    });
  }

  /**
   * Wait, bounded like a hold, for a scan of the content already running. Undefined at once when
   * `agent` may hold no more lookups.
   */
  join(agent: object, running: Promise<VerdictFields>): Promise<VerdictFields | undefined> | undefined {
    if (this.o.holdMs <= 0) return undefined;
    return this.hold(agent, (resolve) => {
      const timer = setTimeout(() => {
        this.released['hold-time']++;
        resolve(undefined);
      }, this.joinMs);
      running.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        () => {
          clearTimeout(timer);
          resolve(undefined);
        },
      );
    });
  }

  /** `agent` accepted upload `id` of `size` bytes: the owner's upload of a miss of that size. */
  started(agent: object, id: number, size: number): void {
    const own = this.byOwner.get(agent);
    if (!own) return;
    for (const m of own) {
      if (m.upload !== undefined || m.size !== size) continue;
      m.upload = id;
      this.expectProgress(m);
      return;
    }
  }

  /** A chunk of `agent`'s upload `id` arrived. */
  progress(agent: object, id: number): void {
    const m = this.linked(agent, id);
    if (m) this.expectProgress(m);
  }

  /** `agent`'s upload `id` ended without a verdict (cancelled, stalled, timed out, over budget, refused). */
  dropped(agent: object, id: number): void {
    const m = this.linked(agent, id);
    if (m) this.release(m, 'dropped');
  }

  /**
   * `agent`'s upload `id` is complete and hashed. Its own content: the scan about to start settles
   * the miss. Another file of the same size: the miss waits for another upload (still bounded).
   */
  completed(agent: object, id: number, sha256: string): void {
    const m = this.linked(agent, id);
    if (!m) return;
    m.upload = undefined;
    if (m.sha256 !== sha256) return this.expectProgress(m);
    // Its scan settles the miss; should it never (the generation changed meanwhile: another key),
    // the miss is forgotten once no hold could still wait on it.
    clearTimeout(m.progress);
    m.progress = setTimeout(() => this.release(m, 'hold-time'), this.o.holdMs);
  }

  /** The scan of `key` started (or was answered from the cache): its verdict goes to every hold. */
  settle(key: string, verdict: Promise<VerdictFields>): void {
    const m = this.misses.get(key);
    if (!m) return;
    this.forget(m);
    if (m.waiters.size === 0) return;
    // All the bytes are in: each hold now waits for this scan, as a join does.
    for (const w of m.waiters) {
      clearTimeout(w.timer);
      w.timer = setTimeout(() => this.wake(m, w, undefined, 'hold-time'), this.joinMs);
    }
    verdict.then(
      (v) => {
        for (const w of m.waiters) this.wake(m, w, v, undefined);
      },
      () => {
        for (const w of m.waiters) this.wake(m, w, undefined, 'dropped');
      },
    );
  }

  /** `agent` disconnected: the misses it owned can bring no verdict. */
  gone(agent: object): void {
    for (const m of [...(this.byOwner.get(agent) ?? [])]) this.release(m, 'disconnected');
    this.byOwner.delete(agent);
  }

  private hold(agent: object, start: (resolve: Resolve) => void): Promise<VerdictFields | undefined> | undefined {
    const n = this.held.get(agent) ?? 0;
    if (n >= this.o.perAgent) return undefined;
    this.held.set(agent, n + 1);
    return new Promise<VerdictFields | undefined>((resolve) => {
      let done = false;
      start((v) => {
        if (done) return;
        done = true;
        const left = (this.held.get(agent) ?? 1) - 1;
        if (left > 0) this.held.set(agent, left);
        else this.held.delete(agent);
        if (v) this.coalesced++;
        resolve(v);
      });
    });
  }

  private wake(m: Miss, w: Waiter, v: VerdictFields | undefined, why: ReleaseReason | undefined): void {
    if (!m.waiters.delete(w)) return;
    clearTimeout(w.timer);
    if (why) this.released[why]++;
    w.resolve(v);
  }

  private linked(agent: object, id: number): Miss | undefined {
    for (const m of this.byOwner.get(agent) ?? []) if (m.upload === id) return m;
    return undefined;
  }

  private expectProgress(m: Miss): void {
    clearTimeout(m.progress);
    m.progress = setTimeout(() => this.release(m, 'no-progress'), this.o.progressMs);
  }

  /** The owner cannot bring the verdict: every hold answers `unknown` now, and those agents upload. */
  private release(m: Miss, why: ReleaseReason): void {
    this.forget(m);
    for (const w of [...m.waiters]) this.wake(m, w, undefined, why);
  }

  private forget(m: Miss): void {
    clearTimeout(m.progress);
    if (this.misses.get(m.key) === m) this.misses.delete(m.key);
    const own = this.byOwner.get(m.owner);
    own?.delete(m);
    if (own?.size === 0) this.byOwner.delete(m.owner);
  }
}
