/**
 * FanotifyGate — on-access protection on Linux. The worker thread (fanotify-worker.ts) owns the
 * fanotify group and answers what needs no verdict (the agent's own events, paths outside
 * `protect` or inside `exclude`: allowed, never ignore-marked, since a mark follows the inode
 * into wherever it is renamed or linked; empty files; clean identity hits of the shared cache);
 * this side turns posted events into decisions:
 *
 *   fstat(event fd) -> decide() -> response -> [ignore mark if clean] -> [hold] -> close(fd)
 *
 * A clean, cacheable verdict adds a kernel ignore mark on the inode right after the response (the
 * opener does not wait for it), so the
 * next opens of that unchanged file raise no event at all; the kernel drops the mark at the first
 * modification. If the file changed while it was judged (sameIdentity before/after fails), the
 * mark is removed again. `flushCleanMarks()` drops every ignore mark (signature generation change).
 * A close-write whose background scan ends clean gets the same mark through its event fd (held until
 * the scan settles), checked against the fstat taken before the scan: a file written, scanned and
 * unchanged then opens with no event at all (counted as writtenMarks).
 *
 * Deadlines: the worker answers any permission event this thread has not answered within
 * `deadlineMs`, by `onDeadline`. A decision that arrives later is not written (the event was
 * answered once already) and is counted as `lateDecisions`; if it is clean and cacheable its
 * ignore mark is still added, since this thread holds the event fd until its decision is done.
 */
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { describeError, PlatformError } from '../errors.js';
import { raiseOpenFileLimit } from '../platform/linux/rlimit.js';
import { logger } from '../log.js';
import {
  FAN_OPEN_EXEC_PERM,
  FAN_OPEN_PERM,
  addIgnoreMark,
  closeFd,
  flushInodeMarks,
  makePipe,
  removeIgnoreMark,
  responseRecord,
} from '../platform/linux/fanotify.js';
import {
  C,
  COUNTER_SLOTS,
  GROUP_CLOSING_SLOT,
  GROUP_USERS_SLOT,
  STATE_SLOTS,
  hrMs,
  protectedFdPath,
  type PostedEvent,
  type WarmUpConfig,
  type WorkerConfig,
  type WorkerMessage,
} from './fanotify-shared.js';
import type { AccessEvent, Decision, ProtectionBackend, ProtectionMode, WrittenResult } from './protection.js';
import type { SharedCacheSpec } from '../cache/shared-view.js';
import { VerdictCache } from '../cache/verdict-cache.js';
import { sameIdentity } from '../cache/file-identity.js';
import { RTT_TRACE, rttMark, rttNow } from '../trace.js';

/** A protected file opened for writing was closed (a notification: nothing waits on it). */
export interface CloseWriteEvent {
  /** The event fd: read the content through it (readEventContent), never reopen by path. */
  fd: number;
  /** Thread group id of the writer. */
  pid: number;
  path: string;
  stat: fs.BigIntStats;
}

export interface FanotifyGateOptions {
  /** Paths whose mounts (or filesystems) are marked. */
  mounts: string[];
  /** Mark whole filesystems instead of mounts (FAN_MARK_FILESYSTEM, Linux 4.20). */
  filesystem?: boolean;
  /** Only these path prefixes are judged; everything else on the marks is allowed at once (never ignore-marked). */
  protect: string[];
  /** Path prefixes inside `protect` allowed at once (never ignore-marked). */
  exclude: string[];
  /** Every permission event is answered within this, by `onDeadline` if no verdict came. */
  deadlineMs: number;
  onDeadline: 'allow' | 'deny';
  /** Report FAN_CLOSE_WRITE to `onCloseWrite` (default true). */
  closeWrite?: boolean;
  /**
   * Close-write fds outstanding (waiting in the worker or being scanned) beyond which new
   * close-writes are not scanned, only counted (closeWritesDropped): those files are judged at
   * their next open instead. The worker posts what it holds when half of these wait. Default
   * defaultCloseWriteMaxFds(): each is an fd of this process.
   */
  closeWriteMaxFds?: number;
  /**
   * When the worker posts the close-writes it holds through a burst (fanotify-worker.ts): once no
   * event has come for `quietMs` (default 20), or `maxAgeMs` after the oldest was read (default
   * 3000), or at once when half of closeWriteMaxFds wait. Tuning and tests; the defaults suit
   * the measured workloads (docs/benchmarks.md).
   */
  closeWriteHold?: { quietMs?: number; maxAgeMs?: number };
  /** Also gate execution (FAN_OPEN_EXEC_PERM, Linux >= 5.0; default true). */
  exec?: boolean;
  /** Decision.hold keeps the event fd open until it settles (a scan still reading through it). */
  decide: (ev: AccessEvent) => Promise<Decision>;
  /**
   * A protected file was written and closed. The event fd stays open until the returned promise
   * settles (scan it in the background through the fd), or is closed as soon as this returns
   * if it returns anything else. The gate closes it; the consumer never does.
   * Returns, or resolves to, `{ clean: true }` when the written content was judged clean: the gate
   * then adds the same ignore mark an open would have earned, so the writer's next open raises no
   * event. A synchronous answer is handled synchronously (no promise per file in a burst).
   */
  onCloseWrite?: (ev: CloseWriteEvent) => WrittenResult | Promise<WrittenResult | void> | void;
  /**
   * The local verdict cache, shared read-only with the worker: clean identity hits of the
   * current generation are then answered there, without the hop to this thread.
   */
  sharedCache?: SharedCacheSpec | undefined;
  /**
   * With a shared cache: opens the worker replays through its cache-hit path before it marks the
   * mounts (fanotify-worker.ts warmUp). Default WARM_UP_ROUNDS; 0: none.
   */
  warmUpRounds?: number | undefined;
}

/** Enough calls for V8 to optimize the hit path; ~180 ms of the gate's start (measured: see fanotify-worker.ts warmUp). */
const WARM_UP_ROUNDS = 4000;

/**
 * The worker's warm-up input: a private 16-entry shared cache holding one clean entry for the
 * running executable (present, readable and unchanging on every install), or undefined if it
 * cannot be read (then the worker simply starts cold).
 */
async function warmUpConfig(rounds: number, seed: bigint): Promise<WarmUpConfig | undefined> {
  if (rounds <= 0) return undefined;
  const file = process.execPath;
  try {
    const st = fs.statSync(file, { bigint: true });
    if (!st.isFile()) return undefined;
    const cache = await VerdictCache.open({ seed, capacity: 16, shared: true });
    cache.record(st, 0n, '0'.repeat(64), 'clean');
    const spec = cache.sharedSpec();
    return spec ? { cache: spec, file, rounds } : undefined;
  } catch {
    return undefined;
  }
}

const IGNORE_MASK = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM;
const LATENCY_RING = 4096;
const STOP_GRACE_MS = 3000;
/** Defaults of closeWriteHold (fanotify-worker.ts says why close-writes are held). */
const CLOSE_WRITE_QUIET_MS = 20;
const CLOSE_WRITE_MAX_AGE_MS = 3000;
/** A closeWriteHold value: the default unless a finite number of ms >= 0 was given. */
function holdMs(v: number | undefined, dflt: number): number {
  return v !== undefined && Number.isFinite(v) && v >= 0 ? v : dflt;
}
/** Close-writes handled in one turn of the event loop (~30 us each when the content is known). */
const CLOSE_WRITE_SLICE = 512;

/**
 * Read a file's bytes through an event fd (pread from offset 0: the fd's own offset is not
 * moved), at most `maxBytes`. Never reopen an event's file by path: the open would raise an
 * event of its own (a deadlock if it is not the agent's pid) and races with a swap of the path.
 */
export function readEventContent(fd: number, maxBytes: number): Buffer {
  const chunk = 1 << 20;
  const parts: Buffer[] = [];
  let total = 0;
  while (total < maxBytes) {
    const b = Buffer.allocUnsafe(Math.min(chunk, maxBytes - total));
    const n = fs.readSync(fd, b, 0, b.length, total);
    if (n <= 0) break;
    parts.push(n === b.length ? b : b.subarray(0, n));
    total += n;
  }
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts, total);
}

/** The fd limit the gate asks for (the systemd unit's LimitNOFILE): see defaultCloseWriteMaxFds. */
const WANTED_OPEN_FILES = 65_536;

/**
 * A quarter of the soft RLIMIT_NOFILE, within 256..16,384 (4,096 when it is unknown). The rest
 * of the fds are left to the kernel: it makes one for every event it hands over, and one read
 * of the worker's 256 KiB buffer can hand over ~10,900; a permission event it cannot make an fd
 * for is DENIED (fanotify_user.c), so held close-writes must never use them up. start() first
 * raises the limit to WANTED_OPEN_FILES where it may (root with CAP_SYS_RESOURCE): then 16,384,
 * of which the worker holds up to half through a burst.
 */
export function defaultCloseWriteMaxFds(soft: number | undefined): number {
  if (soft === undefined || !Number.isFinite(soft)) return 4096;
  return Math.min(16_384, Math.max(256, Math.floor(soft / 4)));
}

/** Young generation of the worker's isolate, MiB (see start()). */
const WORKER_YOUNG_GEN_MB = 1;

/** Trace (src/trace.ts): when the worker read each permission event and when this thread got it. */
function traceReceived(events: readonly PostedEvent[]): void {
  const now = rttNow();
  for (const e of events)
    if (e.kind !== 'close-write') {
      rttMark('w.read', e.path, Math.round(e.readAt * 1000));
      rttMark('m.recv', e.path, now);
    }
}

function isClean(r: unknown): boolean {
  return typeof r === 'object' && r !== null && (r as { clean?: unknown }).clean === true;
}

export class FanotifyGate implements ProtectionBackend {
  /**
   * 'off' once the worker is gone (stopped, or died: then the group is closed and nothing is
   * intercepted any more), so `status`, the tray and the protection state say so.
   */
  get mode(): ProtectionMode {
    return this.workerGone || this.failed ? 'off' : 'fanotify';
  }
  private failed = false;
  private readonly state: Int32Array;
  private readonly counters: Int32Array;
  private fan = -1;
  private workerGone = false;
  private stopping = false;
  private stopped: Promise<void> | undefined;
  private readonly exited: Promise<void>;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly latency = new Float64Array(LATENCY_RING);
  private latencyCount = 0;
  private readonly resp = Buffer.alloc(8);
  private readonly log = logger('fanotify');

  private constructor(
    private readonly worker: Worker,
    private readonly o: FanotifyGateOptions,
    private readonly wake: [number, number],
    stateSab: SharedArrayBuffer,
    countersSab: SharedArrayBuffer,
  ) {
    this.state = new Int32Array(stateSab);
    this.counters = new Int32Array(countersSab);
    this.exited = new Promise<void>((r) => worker.once('exit', () => r()));
    worker.once('exit', (code) => this.onWorkerExit(code));
  }

  /** Start the worker, mark the mounts, resolve once events flow. Rejects with a PlatformError (LA_ERR_FANOTIFY_*). */
  static async start(o: FanotifyGateOptions): Promise<FanotifyGate> {
    const stateSab = new SharedArrayBuffer(STATE_SLOTS * 4);
    const countersSab = new SharedArrayBuffer(COUNTER_SLOTS * 4);
    const wake = makePipe();
    const cfg: WorkerConfig = {
      mounts: o.mounts,
      filesystem: o.filesystem ?? false,
      protect: o.protect,
      exclude: o.exclude,
      deadlineMs: o.deadlineMs,
      onDeadline: o.onDeadline,
      closeWrite: o.closeWrite ?? true,
      closeWriteMaxFds: o.closeWriteMaxFds ?? defaultCloseWriteMaxFds(raiseOpenFileLimit(WANTED_OPEN_FILES)?.soft),
      closeWriteQuietMs: holdMs(o.closeWriteHold?.quietMs, CLOSE_WRITE_QUIET_MS),
      closeWriteMaxAgeMs: holdMs(o.closeWriteHold?.maxAgeMs, CLOSE_WRITE_MAX_AGE_MS),
      exec: o.exec ?? true,
      selfPid: process.pid,
      wakeR: wake[0],
      stateSab,
      countersSab,
      sharedCache: o.sharedCache,
      warmUp: o.sharedCache ? await warmUpConfig(o.warmUpRounds ?? WARM_UP_ROUNDS, o.sharedCache.seed) : undefined,
    };
    // The worker allocates little (event records, a few stats): a 1 MiB young generation instead
    // of V8's default 16 MiB semi-spaces keeps its isolate's resident memory small under load.
    const worker = new Worker(new URL('./fanotify-worker.js', import.meta.url), {
      workerData: cfg,
      resourceLimits: { maxYoungGenerationSizeMb: WORKER_YOUNG_GEN_MB },
    });
    const gate = new FanotifyGate(worker, o, wake, stateSab, countersSab);
    await new Promise<void>((resolve, reject) => {
      const onMsg = (m: WorkerMessage) => {
        if (m.t === 'ready') {
          gate.fan = m.fan;
          worker.off('message', onMsg);
          worker.on('message', (x: WorkerMessage) => gate.onMessage(x));
          resolve();
        } else if (m.t === 'init-failed') {
          worker.off('message', onMsg);
          reject(new PlatformError(m.code, m.message, m.hint));
        }
      };
      worker.on('message', onMsg);
      worker.once('error', reject);
      void gate.exited.then(() =>
        reject(
          new PlatformError(
            'LA_ERR_FANOTIFY',
            'the fanotify worker exited before it was ready',
            'see the log above; the agent falls back to the watcher',
          ),
        ),
      );
    });
    worker.on('error', (e) => gate.log.error('fanotify worker failed', { message: e.message }));
    return gate;
  }

  private onMessage(m: WorkerMessage): void {
    if (m.t === 'events') {
      if (RTT_TRACE) traceReceived(m.events);
      this.handle(m.events, 0);
    } else if (m.t === 'fatal') {
      this.failed = true;
      this.log.error('fanotify worker stopped on an error; on-access protection is OFF', { message: m.message });
    }
  }

  /**
   * Handle events[from..]. Permission events go at once (a process waits on each). Close-writes
   * go CLOSE_WRITE_SLICE at a time with the event loop in between: the worker may post thousands
   * held through a burst, and a permission event that needs this thread (a miss) must not wait
   * behind all of them. After stop() began, the rest are closed unscanned (judged at their next open).
   */
  private handle(events: readonly PostedEvent[], from: number): void {
    let budget = CLOSE_WRITE_SLICE;
    for (let i = from; i < events.length; i++) {
      const e = events[i]!;
      if (e.kind === 'close-write') {
        if (this.stopping) {
          this.closeWriteDone(e);
          continue;
        }
        if (budget-- === 0) {
          const rest = new Promise<void>((resolve) =>
            setImmediate(() => {
              try {
                this.handle(events, i);
              } finally {
                resolve();
              }
            }),
          );
          this.inFlight.add(rest);
          void rest.finally(() => this.inFlight.delete(rest));
          return;
        }
      }
      let p: void | Promise<void>;
      try {
        p = e.kind === 'close-write' ? this.closeWrite(e) : this.permission(e);
      } catch (err) {
        this.log.error('event handling failed', { path: e.path, ...describeError(err) });
        continue;
      }
      if (!p) continue; // handled synchronously (a close-write answered from the local cache)
      const q = p.catch((err: unknown) => {
        this.log.error('event handling failed', { path: e.path, ...describeError(err) });
      });
      this.inFlight.add(q);
      void q.finally(() => this.inFlight.delete(q));
    }
  }

  /** The worker is gone. If it died without closing the group (terminate, crash), close it here: the kernel then allows every waiter. */
  private onWorkerExit(code: number): void {
    this.workerGone = true;
    if (this.fan >= 0 && Atomics.exchange(this.counters, GROUP_CLOSING_SLOT, 1) === 0) {
      closeFd(this.fan); // no worker left, and this thread is not inside a call on it
      if (!this.stopping) this.log.error('fanotify worker exited unexpectedly; on-access protection is OFF', { code });
    }
    this.fan = -1;
    closeFd(this.wake[0]);
    closeFd(this.wake[1]);
  }

  /** Run `fn(fan)` unless the group is closing; the worker waits for us before it closes it. */
  private withGroup(fn: (fan: number) => void): boolean {
    const c = this.counters;
    if (this.fan < 0 || Atomics.load(c, GROUP_CLOSING_SLOT) !== 0) return false;
    Atomics.add(c, GROUP_USERS_SLOT, 1);
    try {
      if (Atomics.load(c, GROUP_CLOSING_SLOT) !== 0) return false;
      fn(this.fan);
      return true;
    } finally {
      Atomics.sub(c, GROUP_USERS_SLOT, 1);
      Atomics.notify(c, GROUP_USERS_SLOT);
    }
  }

  private async permission(e: PostedEvent): Promise<void> {
    let decision: Decision = { allow: this.o.onDeadline === 'allow' };
    let answered = false;
    try {
      const stat = fs.fstatSync(e.fd, { bigint: true });
      try {
        decision = await this.o.decide({ fd: e.fd, pid: e.pid, path: e.path, kind: e.kind as 'open' | 'exec', stat });
      } catch (err) {
        this.log.error('decision failed; answering by policy', { path: e.path, ...describeError(err) });
      }
      if (RTT_TRACE) rttMark('m.decided', e.path);
      // The answer first: the opener waits for it, not for the mark (a fanotify_mark and an fstat
      // more), as in the worker's cache hits. The mark is still checked against the identity that
      // was judged (markClean): a write that slips in before it takes it back, a write after it
      // clears it in the kernel; fanotify judges opens, never the reads that follow.
      answered = true;
      this.respond(e, decision.allow, true);
      if (RTT_TRACE) rttMark('m.responded', e.path);
      if (decision.allow && decision.cacheable) this.markClean(e, stat);
      if (RTT_TRACE) rttMark('m.marked', e.path);
      if (decision.hold) await decision.hold.catch(() => {});
    } finally {
      if (!answered) this.respond(e, decision.allow, false);
      closeFd(e.fd);
    }
  }

  /**
   * Ignore mark, then a second fstat: if the file changed while it was judged, the mark goes again.
   * `before` is the fstat taken before the verdict was sought (for a close-write: before its scan
   * read the content), and the mark goes on the inode of the fd the verdict read through. So the
   * mark never stands over content other than what was judged: a write before the mark shows in
   * the second fstat (identity changed: mark removed), a write after it clears it in the kernel.
   * `written`: the verdict was a close-write's scan (counted as writtenMarks when the mark stays).
   */
  private markClean(e: PostedEvent, before: fs.BigIntStats, written = false): void {
    this.withGroup((fan) => {
      if (!addIgnoreMark(fan, e.fd, IGNORE_MASK)) return;
      Atomics.add(this.counters, C.ignoreMarks, 1);
      if (!sameIdentity(fs.fstatSync(e.fd, { bigint: true }), before)) {
        removeIgnoreMark(fan, e.fd, IGNORE_MASK);
        Atomics.add(this.counters, C.marksDropped, 1);
      } else if (written) Atomics.add(this.counters, C.writtenMarks, 1);
    });
  }

  /** Write the response unless the worker answered first (deadline, stop). */
  private respond(e: PostedEvent, allow: boolean, verdict: boolean): void {
    if (Atomics.compareExchange(this.state, e.fd, e.seq, 0) !== e.seq) {
      if (verdict && !this.stopping) Atomics.add(this.counters, C.lateDecisions, 1);
      return;
    }
    try {
      // false: the group is closing, and the kernel allows what it still holds.
      if (!this.withGroup((fan) => fs.writeSync(fan, responseRecord(e.fd, allow, this.resp)))) return;
      Atomics.add(this.counters, allow ? C.allowed : C.denied, 1);
      this.latency[this.latencyCount++ % LATENCY_RING] = hrMs() - e.readAt;
    } catch (err) {
      this.log.error('could not write a fanotify response', { path: e.path, ...describeError(err) });
    }
  }

  /**
   * The consumer's answer, then the mark, then the fd closed. Synchronous when the consumer answers
   * synchronously (a local cache hit): a burst of copies then costs no promise per file.
   */
  private closeWrite(e: PostedEvent): void | Promise<void> {
    let stat: fs.BigIntStats;
    let r: unknown;
    try {
      if (!this.o.onCloseWrite) return this.closeWriteDone(e);
      // The worker posts close-writes without their paths (see flushCloseWrites there).
      e.path = protectedFdPath(e.fd, this.o.protect, this.o.exclude);
      if (e.path === '') {
        Atomics.add(this.counters, C.outside, 1);
        return this.closeWriteDone(e);
      }
      stat = fs.fstatSync(e.fd, { bigint: true });
      if (!stat.isFile()) return this.closeWriteDone(e);
      r = this.o.onCloseWrite({ fd: e.fd, pid: e.pid, path: e.path, stat });
    } catch (err) {
      this.closeWriteDone(e);
      throw err;
    }
    if (r instanceof Promise) {
      return r
        .then((x: unknown) => {
          if (isClean(x) && !this.stopping) this.markClean(e, stat, true);
        })
        .finally(() => this.closeWriteDone(e));
    }
    try {
      if (isClean(r) && !this.stopping) this.markClean(e, stat, true);
    } finally {
      this.closeWriteDone(e);
    }
  }

  private closeWriteDone(e: PostedEvent): void {
    closeFd(e.fd);
    Atomics.sub(this.counters, C.closeWriteFds, 1);
  }

  /**
   * The signature refresh (src/scan/signature-refresh.ts) gives back the ignore mark of a file
   * whose clean verdict it brought up to the new generation: the caller has just seen that verdict
   * for the identity `judged` (an lstat). The mark goes on the inode of an fd opened here (this
   * process's own open is answered at once by the worker), only if that fd's fstat is `judged`,
   * and is taken back unless a second fstat still is: the same rule as markClean, so a mark never
   * stands over content other than what was judged. Never throws; true if the mark stays.
   */
  markUnchanged(file: string, judged: fs.BigIntStats): boolean {
    if (this.stopping) return false;
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch {
      return false;
    }
    let kept = false;
    try {
      const st = fs.fstatSync(fd, { bigint: true });
      if (!st.isFile() || !sameIdentity(st, judged)) return false;
      this.withGroup((fan) => {
        if (!addIgnoreMark(fan, fd, IGNORE_MASK)) return;
        Atomics.add(this.counters, C.ignoreMarks, 1);
        if (sameIdentity(fs.fstatSync(fd, { bigint: true }), judged)) kept = true;
        else {
          removeIgnoreMark(fan, fd, IGNORE_MASK);
          Atomics.add(this.counters, C.marksDropped, 1);
        }
      });
    } catch (e) {
      this.log.warn('could not give an ignore mark back after the signature refresh', { path: file, ...describeError(e) });
    } finally {
      fs.closeSync(fd);
    }
    return kept;
  }

  /** Drop every kernel ignore mark (a new signature generation): every next open is asked again. */
  flushCleanMarks(): void {
    try {
      if (this.withGroup((fan) => flushInodeMarks(fan)))
        this.log.info('kernel ignore marks flushed: every file is checked again at its next open');
    } catch (e) {
      this.log.error('could not flush the kernel ignore marks', describeError(e));
    }
  }

  /**
   * Counters since start: events by kind (open, exec, closeWrite), ownPid and outside (answered
   * at once by the worker), posted (to this thread), allowed/denied (verdicts written here),
   * deadline (answered by the worker by policy), lateDecisions, stopAnswers, ignoreMarks,
   * marksDropped, writtenMarks (of ignoreMarks: kept after a close-write's clean scan), overflow,
   * inFlight; answerP50Us/answerP99Us: from the worker's read to this thread's response, over the
   * last 4096 verdicts.
   */
  stats(): Record<string, number> {
    const c = this.counters;
    const out: Record<string, number> = {};
    for (const [k, i] of Object.entries(C)) out[k] = Atomics.load(c, i);
    out.inFlight = this.inFlight.size;
    const n = Math.min(this.latencyCount, LATENCY_RING);
    if (n > 0) {
      const sorted = this.latency.slice(0, n).sort();
      out.answerP50Us = Math.round(sorted[Math.floor(n * 0.5)]! * 1000);
      out.answerP99Us = Math.round(sorted[Math.min(n - 1, Math.floor(n * 0.99))]! * 1000);
    }
    return out;
  }

  /**
   * The daemon stops: answer every pending permission event with allow, stop the worker, close
   * the group (the kernel allows anything still queued), then wait (at most 3 s) for decisions in
   * progress, so that nothing waits on a gate that is going away.
   *
   * `handover`: another backend already gates these mounts (a reload, make-before-break). The
   * marks come off first and what this group holds is judged as always, a verdict or the policy
   * at the deadline, before the group closes (the worker's beginHandover); the waits are bounded
   * by the deadline plus 3 s.
   *
   * Always completes, also after the worker died; calling it again returns the same promise.
   */
  stop(handover = false): Promise<void> {
    this.stopped ??= (async () => {
      // A handover keeps deciding: the held close-writes are still scanned, marks still placed.
      if (!handover) this.stopping = true;
      const graceMs = handover ? this.o.deadlineMs + STOP_GRACE_MS : STOP_GRACE_MS;
      if (!this.workerGone) {
        this.worker.postMessage({ t: 'stop', handover });
        try {
          fs.writeSync(this.wake[1], Buffer.from([1])); // the pipe is ours: never a reused fd number
        } catch {
          /* full pipe: the worker is awake anyway */
        }
        const t = setTimeout(() => void this.worker.terminate(), graceMs);
        await this.exited;
        clearTimeout(t);
      }
      this.stopping = true;
      await Promise.race([Promise.allSettled([...this.inFlight]), new Promise((r) => setTimeout(r, graceMs).unref())]);
    })();
    return this.stopped;
  }
}
