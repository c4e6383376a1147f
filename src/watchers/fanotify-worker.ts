/**
 * The fanotify worker thread: owns the fanotify group, reads events off the main thread, answers
 * what needs no verdict at once (the agent's own pid, paths outside `protect` or inside
 * `exclude`), posts the rest to the main thread in batches, and answers any permission event the
 * main thread has not answered within the deadline, by policy. A GC pause or a large upload on
 * the main thread therefore never holds an open past the deadline.
 *
 * Who answers: a SharedArrayBuffer holds, per event fd, the sequence number of the pending event
 * on it (0 = none). Whoever swaps it from `seq` to 0 first (main: the verdict; worker: the
 * deadline or stop) writes the response; the other does nothing. Sequence numbers keep a reused
 * fd number from being answered for an older event. Event fds posted to the main thread are
 * closed by the main thread; the others here.
 *
 * Blocking: poll() on the fanotify fd and a wake pipe, at most 1 s while idle (and until the
 * next deadline while events are pending), then back to the event loop for messages.
 */
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import {
  AT_FDCWD,
  FAN_CLOSE_WRITE,
  FAN_MARK_ADD,
  FAN_MARK_FILESYSTEM,
  FAN_MARK_MOUNT,
  FAN_NOFD,
  FAN_OPEN_EXEC_PERM,
  FAN_OPEN_PERM,
  FAN_Q_OVERFLOW,
  addIgnoreMark,
  closeFd,
  fanotifyInit,
  fanotifyMark,
  makePipe,
  parseEvents,
  pollIn,
  responseRecord,
} from '../platform/linux/fanotify.js';
import { C, type PostedEvent, type WorkerConfig, type WorkerMessage } from './fanotify-shared.js';

const cfg = workerData as WorkerConfig;
const state = new Int32Array(cfg.stateSab);
const counters = new Int32Array(cfg.countersSab);
const port = parentPort!;
const PERM = FAN_OPEN_PERM | (cfg.exec ? FAN_OPEN_EXEC_PERM : 0);

let fan = -1;
let wakeR = -1;
let wakeW = -1;
let stopping = false;
let seq = 0;
const pending: Array<{ fd: number; seq: number; deadline: number }> = [];
const buf = Buffer.alloc(256 * 1024);
const wakeBuf = Buffer.alloc(64);

function post(m: WorkerMessage): void {
  port.postMessage(m);
}

function within(path: string, prefixes: readonly string[]): boolean {
  for (const p of prefixes) if (path === p || path.startsWith(p.endsWith('/') ? p : `${p}/`)) return true;
  return false;
}

function respond(fd: number, allow: boolean): void {
  try {
    fs.writeSync(fan, responseRecord(fd, allow));
  } catch {
    /* the group is closing: the kernel answers for us */
  }
}

function closeQuietly(fd: number): void {
  closeFd(fd);
}

function init(): void {
  fan = fanotifyInit();
  const markType = cfg.filesystem ? FAN_MARK_FILESYSTEM : FAN_MARK_MOUNT;
  const mask = PERM | (cfg.closeWrite ? FAN_CLOSE_WRITE : 0);
  for (const p of cfg.mounts) fanotifyMark(fan, FAN_MARK_ADD | markType, mask, AT_FDCWD, p);
  [wakeR, wakeW] = makePipe();
}

function readEvents(): void {
  const batch: PostedEvent[] = [];
  for (;;) {
    let n: number;
    try {
      n = fs.readSync(fan, buf, 0, buf.length, null);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EAGAIN') break;
      throw e;
    }
    if (n <= 0) break;
    for (const ev of parseEvents(buf, n)) {
      if (ev.fd === FAN_NOFD) {
        if (ev.mask & FAN_Q_OVERFLOW) Atomics.add(counters, C.overflow, 1);
        continue;
      }
      const isPerm = (ev.mask & PERM) !== 0;
      const kind = ev.mask & FAN_OPEN_EXEC_PERM ? 'exec' : ev.mask & FAN_OPEN_PERM ? 'open' : 'close-write';
      Atomics.add(counters, kind === 'exec' ? C.exec : kind === 'open' ? C.open : C.closeWrite, 1);
      if (ev.pid === cfg.selfPid) {
        // Our own opens (quarantine, restore, the SVM on the same host): never wait on ourselves.
        Atomics.add(counters, C.ownPid, 1);
        if (isPerm) respond(ev.fd, true);
        closeQuietly(ev.fd);
        continue;
      }
      let path: string;
      try {
        path = fs.readlinkSync(`/proc/self/fd/${ev.fd}`);
      } catch {
        path = '';
      }
      if (!within(path, cfg.protect) || within(path, cfg.exclude)) {
        Atomics.add(counters, C.outside, 1);
        if (isPerm) {
          if (addIgnoreMark(fan, ev.fd, PERM)) Atomics.add(counters, C.ignoreMarks, 1);
          respond(ev.fd, true);
        }
        closeQuietly(ev.fd);
        continue;
      }
      if (!isPerm) {
        batch.push({ fd: ev.fd, seq: 0, pid: ev.pid, kind: 'close-write', path });
        continue;
      }
      if (ev.fd >= state.length) {
        // Beyond the shared table (an fd over 65535): answered here by policy, never left waiting.
        respond(ev.fd, cfg.onDeadline === 'allow');
        Atomics.add(counters, C.deadline, 1);
        closeQuietly(ev.fd);
        continue;
      }
      seq = seq >= 0x7fff_fffe ? 1 : seq + 1;
      Atomics.store(state, ev.fd, seq);
      pending.push({ fd: ev.fd, seq, deadline: performance.now() + cfg.deadlineMs });
      batch.push({ fd: ev.fd, seq, pid: ev.pid, kind, path });
    }
  }
  if (batch.length > 0) {
    Atomics.add(counters, C.posted, batch.length);
    post({ t: 'events', events: batch });
  }
}

function expire(now: number, all: boolean): void {
  while (pending.length > 0 && (all || pending[0]!.deadline <= now)) {
    const p = pending.shift()!;
    if (Atomics.compareExchange(state, p.fd, p.seq, 0) === p.seq) {
      respond(p.fd, all ? true : cfg.onDeadline === 'allow');
      Atomics.add(counters, all ? C.stopAnswers : C.deadline, 1);
    }
  }
}

function loop(): void {
  try {
    if (stopping) return shutdown();
    const now = performance.now();
    const timeout = pending.length > 0 ? Math.max(0, Math.ceil(pending[0]!.deadline - now)) : 1000;
    const ready = pollIn([fan, wakeR], Math.min(timeout, 1000));
    if (ready.includes(wakeR)) {
      try {
        while (fs.readSync(wakeR, wakeBuf, 0, wakeBuf.length, null) > 0);
      } catch {
        /* drained (EAGAIN) */
      }
    }
    if (ready.includes(fan)) readEvents();
    expire(performance.now(), false);
  } catch (e) {
    post({ t: 'fatal', message: (e as Error).message });
    stopping = true;
  }
  setImmediate(loop);
}

function shutdown(): void {
  expire(0, true);
  closeQuietly(fan); // the kernel allows whatever is still queued for this group
  closeQuietly(wakeR);
  closeQuietly(wakeW);
  post({ t: 'stopped' });
  port.close();
}

port.on('message', (m: { t: string }) => {
  if (m.t === 'stop') stopping = true;
});

try {
  init();
  post({ t: 'ready', fan, wakeW });
  setImmediate(loop);
} catch (e) {
  const err = e as Error & { code?: string; hint?: string };
  post({ t: 'init-failed', code: err.code ?? 'LA_ERR_FANOTIFY', message: err.message, hint: err.hint });
  if (fan >= 0) closeQuietly(fan);
  port.close();
}
