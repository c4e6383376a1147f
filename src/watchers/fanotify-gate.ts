/**
 * FanotifyGate — on-access protection on Linux. The worker thread (fanotify-worker.ts) owns the
 * fanotify group; this side turns posted events into decisions:
 *
 *   fstat(event fd) -> decide() -> [ignore mark if clean] -> response -> [hold] -> close(fd)
 *
 * A clean, cacheable verdict adds a kernel ignore mark on the inode before the response, so the
 * next opens of that unchanged file raise no event at all; the kernel drops the mark at the first
 * modification. If the file changed while it was judged (fstat before != after), the mark is
 * removed again. `flushCleanMarks()` drops every ignore mark (signature generation change).
 */
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { describeError, PlatformError } from '../errors.js';
import { logger } from '../log.js';
import { FAN_MARK_IGNORED_MASK, FAN_MARK_REMOVE, FAN_OPEN_EXEC_PERM, FAN_OPEN_PERM, addIgnoreMark, closeFd, fanotifyMark, flushInodeMarks, responseRecord } from '../platform/linux/fanotify.js';
import { C, COUNTER_SLOTS, STATE_SLOTS, type PostedEvent, type WorkerConfig, type WorkerMessage } from './fanotify-shared.js';
import type { ProtectionBackend } from './protection.js';

export interface GateEvent {
  fd: number;
  pid: number;
  path: string;
  kind: 'open' | 'exec';
  stat: fs.BigIntStats;
}

export interface GateDecision {
  allow: boolean;
  cacheable: boolean;
  /** Keep the event fd open until this settles (a scan still reading through it). */
  hold?: Promise<void>;
}

export interface FanotifyGateOptions {
  /** Paths whose mounts (or filesystems) are marked. */
  mounts: string[];
  /** Mark whole filesystems instead of mounts (FAN_MARK_FILESYSTEM). */
  filesystem?: boolean;
  /** Only these path prefixes are judged; everything else on the marks is allowed at once. */
  protect: string[];
  exclude: string[];
  /** Every permission event is answered within this, by `onDeadline` if no verdict came. */
  deadlineMs: number;
  onDeadline: 'allow' | 'deny';
  closeWrite?: boolean;
  /** Also gate execution (FAN_OPEN_EXEC_PERM, Linux >= 5.0). */
  exec?: boolean;
  decide: (ev: GateEvent) => Promise<GateDecision>;
  /** A protected file was written and closed; the fd is valid until the returned promise settles. */
  onCloseWrite?: (ev: { fd: number; pid: number; path: string; stat: fs.BigIntStats }) => Promise<unknown>;
}

const PERM_MASK = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM;

export class FanotifyGate implements ProtectionBackend {
  readonly mode = 'fanotify' as const;
  private readonly state: Int32Array;
  private readonly counters: Int32Array;
  private fan = -1;
  private wakeW = -1;
  private stopped: Promise<void> | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly log = logger('fanotify');

  private constructor(
    private readonly worker: Worker,
    private readonly o: FanotifyGateOptions,
    stateSab: SharedArrayBuffer,
    countersSab: SharedArrayBuffer,
  ) {
    this.state = new Int32Array(stateSab);
    this.counters = new Int32Array(countersSab);
  }

  static async start(o: FanotifyGateOptions): Promise<FanotifyGate> {
    const stateSab = new SharedArrayBuffer(STATE_SLOTS * 4);
    const countersSab = new SharedArrayBuffer(COUNTER_SLOTS * 4);
    const cfg: WorkerConfig = {
      mounts: o.mounts,
      filesystem: o.filesystem ?? false,
      protect: o.protect,
      exclude: o.exclude,
      deadlineMs: o.deadlineMs,
      onDeadline: o.onDeadline,
      closeWrite: o.closeWrite ?? true,
      exec: o.exec ?? true,
      selfPid: process.pid,
      stateSab,
      countersSab,
    };
    const worker = new Worker(new URL('./fanotify-worker.js', import.meta.url), { workerData: cfg });
    const gate = new FanotifyGate(worker, o, stateSab, countersSab);
    await new Promise<void>((resolve, reject) => {
      const onMsg = (m: WorkerMessage) => {
        if (m.t === 'ready') {
          gate.fan = m.fan;
          gate.wakeW = m.wakeW;
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
      worker.once('exit', (code) => reject(new PlatformError('LA_ERR_FANOTIFY', `the fanotify worker exited (${code}) before it was ready`)));
    });
    worker.on('error', (e) => gate.log.error('fanotify worker failed', { message: e.message }));
    return gate;
  }

  private onMessage(m: WorkerMessage): void {
    if (m.t === 'events') {
      for (const e of m.events) {
        const p = (e.kind === 'close-write' ? this.closeWrite(e) : this.permission(e)).catch((err: unknown) => {
          this.log.error('event handling failed', { path: e.path, ...describeError(err) });
        });
        this.inFlight.add(p);
        void p.finally(() => this.inFlight.delete(p));
      }
    } else if (m.t === 'fatal') {
      this.log.error('fanotify worker stopped on an error; on-access protection is OFF', { message: m.message });
    }
  }

  private async permission(e: PostedEvent): Promise<void> {
    let decision: GateDecision = { allow: this.o.onDeadline === 'allow', cacheable: false };
    try {
      const stat = fs.fstatSync(e.fd, { bigint: true });
      try {
        decision = await this.o.decide({ fd: e.fd, pid: e.pid, path: e.path, kind: e.kind as 'open' | 'exec', stat });
      } catch (err) {
        this.log.error('decision failed; answering by policy', { path: e.path, ...describeError(err) });
      }
      if (decision.allow && decision.cacheable && addIgnoreMark(this.fan, e.fd, PERM_MASK)) {
        Atomics.add(this.counters, C.ignoreMarks, 1);
        // Modified while we judged it: the kernel saw the write before our mark existed.
        const after = fs.fstatSync(e.fd, { bigint: true });
        if (after.mtimeNs !== stat.mtimeNs || after.ctimeNs !== stat.ctimeNs || after.size !== stat.size) {
          fanotifyMark(this.fan, FAN_MARK_REMOVE | FAN_MARK_IGNORED_MASK, PERM_MASK, e.fd, null);
          Atomics.add(this.counters, C.marksDropped, 1);
        }
      }
      this.respond(e, decision.allow);
      if (decision.hold) await decision.hold.catch(() => {});
    } finally {
      this.respond(e, decision.allow); // no-op if already answered (by us or the worker)
      closeFd(e.fd);
    }
  }

  private respond(e: PostedEvent, allow: boolean): void {
    if (Atomics.compareExchange(this.state, e.fd, e.seq, 0) !== e.seq) return;
    try {
      fs.writeSync(this.fan, responseRecord(e.fd, allow));
      Atomics.add(this.counters, allow ? C.allowed : C.denied, 1);
    } catch (err) {
      this.log.error('could not write a fanotify response', describeError(err));
    }
  }

  private async closeWrite(e: PostedEvent): Promise<void> {
    try {
      if (!this.o.onCloseWrite) return;
      const stat = fs.fstatSync(e.fd, { bigint: true });
      if (!stat.isFile()) return;
      await this.o.onCloseWrite({ fd: e.fd, pid: e.pid, path: e.path, stat });
    } finally {
      closeFd(e.fd);
    }
  }

  flushCleanMarks(): void {
    if (this.fan < 0) return;
    try {
      flushInodeMarks(this.fan);
      this.log.info('signature generation changed: kernel clean marks flushed');
    } catch (e) {
      this.log.error('could not flush ignore marks', describeError(e));
    }
  }

  stats(): Record<string, number> {
    const c = this.counters;
    const out: Record<string, number> = {};
    for (const [k, i] of Object.entries(C)) out[k] = Atomics.load(c, i);
    out.inFlight = this.inFlight.size;
    return out;
  }

  /** Answer everything pending (allow), stop the worker, close the group. Always completes. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      const exited = new Promise<void>((r) => this.worker.once('exit', () => r()));
      this.worker.postMessage({ t: 'stop' });
      try {
        fs.writeSync(this.wakeW, Buffer.from([1]));
      } catch {
        /* worker already gone */
      }
      const t = setTimeout(() => void this.worker.terminate(), 3000);
      await exited;
      clearTimeout(t);
      // Decisions still running finish against a closed group (their responses are no-ops).
      await Promise.race([Promise.allSettled([...this.inFlight]), new Promise((r) => setTimeout(r, 3000))]);
    })();
    return this.stopped;
  }
}
