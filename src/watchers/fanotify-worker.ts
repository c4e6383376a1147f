/**
 * The fanotify worker thread: owns the fanotify group, reads events off the main thread, answers
 * what needs no verdict at once (the agent's own process, paths outside `protect` or inside
 * `exclude`), posts the rest to the main thread in one batch per read, and answers any
 * permission event the main thread has not answered within the deadline, by policy. A GC pause
 * or a large upload on the main thread therefore never holds an open past the deadline.
 *
 * Who answers: a SharedArrayBuffer holds, per event fd, the sequence number of the pending event
 * on it (0 = none). Whoever swaps it from `seq` to 0 first (main: the verdict; worker: the
 * deadline or stop) writes the response; the other does nothing. Sequence numbers keep a reused
 * fd number from being answered for an older event; an fd number cannot be reused while the main
 * thread still holds it, and it closes it only after its own swap. Event fds posted to the main
 * thread are closed by the main thread; all others here.
 *
 * Blocking: poll() on the fanotify fd and a wake pipe (the main thread owns it and writes a byte to stop),
 * at most 1 s while idle, until the next deadline while events are pending; then back to the
 * event loop for messages. Never a blocking read: the group is FAN_NONBLOCK.
 *
 * Keep this file free of heavy imports: it is loaded in every agent, in its own isolate.
 */
import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import {
  AT_FDCWD,
  FAN_CLOSE_WRITE,
  FAN_EVENT_METADATA_LEN,
  FAN_MARK_ADD,
  FANOTIFY_METADATA_VERSION,
  FAN_MARK_FILESYSTEM,
  FAN_MARK_MOUNT,
  FAN_MARK_REMOVE,
  FAN_NOFD,
  FAN_OPEN_EXEC_PERM,
  FAN_OPEN_PERM,
  FAN_Q_OVERFLOW,
  addIgnoreMark,
  closeFd,
  fanotifyInit,
  fanotifyMark,
  flushInodeMarks,
  makePipe,
  openRaw,
  O_RDONLY,
  O_WRONLY,
  parseEvents,
  pollIn,
  removeIgnoreMark,
  responseRecord,
  type FanEvent,
} from '../platform/linux/fanotify.js';
import { loadXxhash } from '../cache/fingerprint.js';
import { SharedCacheView } from '../cache/shared-view.js';
import { sameIdentity } from '../cache/file-identity.js';
import {
  C,
  COUNTER_SLOTS,
  GROUP_CLOSING_SLOT,
  GROUP_USERS_SLOT,
  hrMs,
  protectedFdPath,
  type PostedEvent,
  type WarmUpConfig,
  type WorkerConfig,
  type WorkerMessage,
} from './fanotify-shared.js';
import { RTT_TRACE, rttMark } from '../trace.js';

const cfg = workerData as WorkerConfig;
const state = new Int32Array(cfg.stateSab);
let counters = new Int32Array(cfg.countersSab);
const port = parentPort!;
const PERM = FAN_OPEN_PERM | (cfg.exec ? FAN_OPEN_EXEC_PERM : 0);
/** The marks this group puts on (and takes off at a handover): one per mount or filesystem. */
const MARK_TYPE = cfg.filesystem ? FAN_MARK_FILESYSTEM : FAN_MARK_MOUNT;
const MARK_MASK = PERM | (cfg.closeWrite ? FAN_CLOSE_WRITE : 0);
/** Ignore marks always cover both permission events: a verdict is about content, not the access. */
const IGNORE = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM;
const IDLE_POLL_MS = 1000;
/**
 * Close-write notifications hold nobody up, so they wait while the gate is busy: they are held
 * here (the event fd and pid; the main thread looks the path up) and posted to the main thread
 * in one batch once no event has come for cfg.closeWriteQuietMs (default 20), or
 * cfg.closeWriteMaxAgeMs (default 3000) after the oldest arrived, or at once when half of
 * closeWriteMaxFds wait (each holds an fd; the other half is for those being scanned and what
 * comes meanwhile). So a burst of file creation (cp -a, tar x, npm ci) is not slowed by the
 * background scans of what it wrote: they run when it pauses. Nothing is lost: an open of a held
 * file is a permission event and is judged then, and the scan that follows is a cache hit. Measured on `cp -a` of a 9,106-file tree: see
 * docs/benchmarks.md.
 */
const heldCloseWrites: Array<{ ev: FanEvent; readAt: number }> = [];
let heldSince = Number.POSITIVE_INFINITY;
let lastEventAt = 0;
/** An empty file changed less than this ago is taken for one being created: not marked at open. */
const FRESH_NS = 3_000_000_000n;
/** The verdict cache, read-only, when the main thread shares it: clean hits are answered here. */
let cacheView: SharedCacheView | undefined;

let fan = -1;
/** Where events are read and responses written: the group, except during the warm-up (a pipe; /dev/null). */
let source = -1;
let answerTo = -1;
const wakeR = cfg.wakeR;
let stopping = false;
/**
 * A handover (a reload: another group already gates the same mounts): the marks go first, so no
 * new event comes here; what this group already holds is judged as always (a verdict, or the
 * policy at the deadline), then the group closes. Closing at once instead would make the kernel
 * allow whatever is still queued here, and an open whose event reached only this group (it began
 * before the new group's mark) would pass unjudged. handoverEnd: when it must end (0: no
 * handover); handoverFrom: when the marks came off.
 */
let handoverEnd = 0;
let handoverFrom = 0;
/** Poll timeout while handing over: the queue is looked at often, so the close is not delayed. */
const HANDOVER_POLL_MS = 10;
/**
 * The least a handover lasts after the marks came off. An open that was already past the mark
 * lookup when they did can still queue its event here a moment later (the kernel frees a mark
 * only after the walks that saw it end): the group stays open and read for that moment.
 */
const HANDOVER_SETTLE_MS = 50;
let seq = 0;
/** Posted permission events in deadline order (the deadline is the same for all, so FIFO). */
const pending: Array<{ fd: number; seq: number; deadline: number }> = [];
const buf = Buffer.alloc(256 * 1024);
const wakeBuf = Buffer.alloc(64);
const pollScratch = Buffer.alloc(16);
const resp = Buffer.alloc(8);

function post(m: WorkerMessage): void {
  port.postMessage(m);
}

function respond(fd: number, allow: boolean): void {
  try {
    fs.writeSync(answerTo, responseRecord(fd, allow, resp));
  } catch {
    /* the group is closing: the kernel allows what is left */
  }
}

async function init(warm: SharedCacheView | undefined): Promise<void> {
  fan = fanotifyInit();
  source = answerTo = fan;
  if (warm && cfg.warmUp) {
    try {
      await warmUp(cfg.warmUp, warm);
    } catch {
      /* an optimization only: the worker starts cold */
    }
  }
  for (const p of cfg.mounts) fanotifyMark(fan, FAN_MARK_ADD | MARK_TYPE, MARK_MASK, AT_FDCWD, p);
}

/** Start a handover: take the marks off, so that only what is already queued remains to judge. */
function beginHandover(): void {
  for (const p of cfg.mounts) {
    try {
      fanotifyMark(fan, FAN_MARK_REMOVE | MARK_TYPE, MARK_MASK, AT_FDCWD, p);
    } catch {
      /* the mount is gone: nothing comes from it */
    }
  }
  handoverFrom = performance.now();
  handoverEnd = handoverFrom + cfg.deadlineMs + 1000;
}

/** A posted permission event the main thread has not answered yet (its state slot still holds its seq). */
function unanswered(): boolean {
  return pending.some((p) => Atomics.load(state, p.fd) === p.seq);
}

/**
 * Replay the loop's turn and the cache-hit path (poll, read, parse, fstat, shared-cache probe,
 * answer, ignore mark, its check, close) `rounds` times, before any mount is marked, on records
 * written into a pipe for opens of our own of a file the main thread recorded clean in a private
 * cache. V8 optimizes these functions after a few thousand calls, and its compiler threads then
 * competed with the opens being answered: measured on this 2-core VM, the first 2,000 hits after
 * a start had a p99 of 0.9-1.7 ms (median 1.0 ms over 5 starts), 0.2-0.4 ms with this warm-up;
 * it adds ~180 ms to the gate's start.
 *
 * Nothing leaks out: events come from the pipe and answers go to /dev/null (the group has no mount
 * mark yet, so no real event waits), the counters are a scratch copy (the rounds that were hits
 * end up in C.warmUpHits), `protect` is empty (an event the private cache misses is answered and
 * closed, never posted), and the file's ignore mark is flushed at the end. A failure leaves the
 * worker cold, as it was without this (C.warmUpHits says how far it got).
 */
async function warmUp(w: WarmUpConfig, view: SharedCacheView): Promise<void> {
  const real = { counters, cacheView, protect: cfg.protect };
  const devNull = openRaw('/dev/null', O_WRONLY);
  if (devNull < 0) return;
  let pipeR: number;
  let pipeW: number;
  try {
    [pipeR, pipeW] = makePipe();
  } catch {
    closeFd(devNull);
    return;
  }
  counters = new Int32Array(new SharedArrayBuffer(COUNTER_SLOTS * 4));
  cacheView = view;
  cfg.protect = [];
  source = pipeR;
  answerTo = devNull;
  try {
    const rec = Buffer.alloc(FAN_EVENT_METADATA_LEN);
    rec.writeUInt32LE(FAN_EVENT_METADATA_LEN, 0);
    rec[4] = FANOTIFY_METADATA_VERSION;
    rec.writeUInt16LE(FAN_EVENT_METADATA_LEN, 6);
    rec.writeBigUInt64LE(BigInt(FAN_OPEN_PERM), 8);
    rec.writeInt32LE(cfg.selfPid === 1 ? 2 : 1, 20); // not ours: ownEvent() must let it through
    for (let i = 0; i < w.rounds && !stopping; i++) {
      const fd = openRaw(w.file, O_RDONLY);
      if (fd < 0) break;
      rec.writeInt32LE(fd, 16);
      if (fs.writeSync(pipeW, rec) !== rec.length) {
        closeFd(fd);
        break;
      }
      step(); // the loop's own turn: poll, read, dispatch, flush, expire
      if (Atomics.load(counters, C.workerHits) !== i + 1) break; // not a hit (the file changed): stop
      await new Promise((r) => setImmediate(r));
    }
    // Nothing can be posted with `protect` empty; should anything be, it is dropped here, not sent.
    for (const p of pending.splice(0)) {
      Atomics.store(state, p.fd, 0);
      closeFd(p.fd);
    }
  } finally {
    const hits = Atomics.load(counters, C.workerHits);
    source = answerTo = fan;
    counters = real.counters;
    cacheView = real.cacheView;
    cfg.protect = real.protect;
    lastEventAt = 0;
    Atomics.store(counters, C.warmUpHits, hits);
    closeFd(devNull);
    closeFd(pipeR);
    closeFd(pipeW);
    flushInodeMarks(fan);
  }
}

/** Close the group once no main-thread call is using it (see GROUP_CLOSING_SLOT). */
function closeGroup(): void {
  if (Atomics.exchange(counters, GROUP_CLOSING_SLOT, 1) === 1) return;
  for (let users = Atomics.load(counters, GROUP_USERS_SLOT); users > 0; users = Atomics.load(counters, GROUP_USERS_SLOT)) {
    Atomics.wait(counters, GROUP_USERS_SLOT, users, 5);
  }
  closeFd(fan); // the kernel allows whatever is still queued for this group
  fan = -1;
  source = answerTo = -1;
}

/** Read (usually once: one read returns every queued event that fits) and dispatch. */
function readEvents(): void {
  const batch: PostedEvent[] = [];
  try {
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(source, buf, 0, buf.length, null);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN' || code === 'EINTR') break;
        throw e;
      }
      if (n <= 0) break;
      dispatch(n, batch);
      // A short read drained the queue: skip the extra read (and its EAGAIN exception) and let
      // poll() say when there is more.
      if (n < buf.length - 64 * FAN_EVENT_METADATA_LEN) break;
    }
  } finally {
    // Permission events go now; close-writes wait (see heldCloseWrites).
    postEvents(batch);
    if (heldCloseWrites.length >= Math.max(1, cfg.closeWriteMaxFds >> 1)) flushCloseWrites();
  }
}

function postEvents(events: PostedEvent[]): void {
  if (events.length === 0) return;
  Atomics.add(counters, C.posted, events.length);
  if (RTT_TRACE) for (const e of events) if (e.kind !== 'close-write') rttMark('w.post', e.path);
  post({ t: 'events', events });
}

/** When the held close-writes are due (Infinity: none held). */
function closeWriteFlushAt(): number {
  return heldCloseWrites.length === 0
    ? Number.POSITIVE_INFINITY
    : Math.min(lastEventAt + cfg.closeWriteQuietMs, heldSince + cfg.closeWriteMaxAgeMs);
}

/**
 * Post every held close-write in one message. Their paths (a readlink each, and the protect and
 * exclude check) are the main thread's business: this thread answers permission events, and a
 * flush in the middle of a burst must not keep the burst's opens waiting behind thousands of them.
 */
function flushCloseWrites(): void {
  const events: PostedEvent[] = [];
  for (const { ev, readAt } of heldCloseWrites.splice(0))
    events.push({ fd: ev.fd, seq: 0, pid: ev.pid, kind: 'close-write', path: '', readAt });
  heldSince = Number.POSITIVE_INFINITY;
  postEvents(events);
}

function fstat(fd: number): fs.BigIntStats | undefined {
  try {
    return fs.fstatSync(fd, { bigint: true });
  } catch {
    return undefined;
  }
}

/**
 * Add an ignore mark, then fstat again: false (mark taken back) if the file changed in between,
 * so a mark never covers content other than what was judged. The kernel drops it at the first
 * modification after that.
 */
function markUnchanged(fd: number, st: fs.BigIntStats): boolean {
  if (!addIgnoreMark(fan, fd, IGNORE)) return true; // no mark (the group is closing): the answer stands
  const after = fstat(fd);
  if (!after || !sameIdentity(after, st)) {
    removeIgnoreMark(fan, fd, IGNORE);
    Atomics.add(counters, C.marksDropped, 1);
    return false;
  }
  Atomics.add(counters, C.ignoreMarks, 1);
  return true;
}

/**
 * A clean verdict of the current generation for exactly this identity, straight from the shared
 * cache: allow, then add the ignore mark, as the main thread would, without the thread hop.
 * The answer goes first: the opener waits for it, not for the mark (two syscalls more). The mark
 * is still checked against the identity that was judged (markUnchanged), so a write that slips
 * in before it takes the mark back; a write after it clears the mark in the kernel. What the
 * opener reads was never gated beyond the open anyway: fanotify judges opens, not reads.
 */
function answeredFromCache(fd: number, st: fs.BigIntStats): boolean {
  if (!cacheView || !st.isFile() || !cacheView.isKnownClean(st)) return false;
  Atomics.add(counters, C.workerHits, 1);
  respond(fd, true);
  markUnchanged(fd, st);
  closeFd(fd);
  return true;
}

function dispatch(n: number, batch: PostedEvent[]): void {
  const readAt = hrMs();
  lastEventAt = performance.now();
  const events = parseEvents(buf, n);
  // Permission events first: a process is blocked on each of them, while a close-write
  // notification holds nobody up. Within each kind the kernel's order is kept.
  for (const ev of events) if (ev.fd !== FAN_NOFD && ev.mask & PERM) permissionEvent(ev, batch, readAt);
  for (const ev of events) {
    if (ev.fd === FAN_NOFD) {
      if (ev.mask & FAN_Q_OVERFLOW) Atomics.add(counters, C.overflow, 1);
    } else if (!(ev.mask & PERM)) closeWriteEvent(ev, readAt);
  }
}

/** The agent itself (any of its threads: the event carries the thread group id). */
function ownEvent(ev: FanEvent, isPerm: boolean): boolean {
  if (ev.pid !== cfg.selfPid) return false;
  // Waiting on ourselves would deadlock the quarantine, a restore, or a reopen by path.
  Atomics.add(counters, C.ownPid, 1);
  if (isPerm) respond(ev.fd, true);
  closeFd(ev.fd);
  return true;
}

/** A permission event's path, or '' with the event answered (allow) and closed if it is outside `protect` or inside `exclude`. */
function protectedPath(ev: FanEvent): string {
  const path = protectedFdPath(ev.fd, cfg.protect, cfg.exclude);
  if (path !== '') return path;
  // Allowed, but never ignore-marked: a mark follows the inode, so a file renamed or hard-linked
  // from here into a protected folder would then open unchecked.
  Atomics.add(counters, C.outside, 1);
  respond(ev.fd, true);
  closeFd(ev.fd);
  return '';
}

function permissionEvent(ev: FanEvent, batch: PostedEvent[], readAt: number): void {
  const kind = ev.mask & FAN_OPEN_EXEC_PERM ? 'exec' : 'open';
  Atomics.add(counters, kind === 'exec' ? C.exec : C.open, 1);
  if (ownEvent(ev, true)) return;
  // What needs no path comes first: the path (a readlink) is only needed to decide whether a
  // file that must be judged lies in a protected folder.
  const st = fstat(ev.fd);
  // A clean verdict is about this inode's content, wherever it lies: answered and marked.
  if (st && answeredFromCache(ev.fd, st)) return;
  if (st?.isFile() && st.size === 0n) {
    // Zero bytes cannot carry a threat. This is mostly a file being created (O_CREAT), whose
    // content is judged at close-write (which also marks it if it stays empty). An empty file
    // older than a few seconds is marked like a clean file, so warm opens of a tree's empty files
    // raise no event either; a new one is not: its writer's first write would drop the mark at
    // once, and the mark, its check and its removal cost three syscalls per file created.
    Atomics.add(counters, C.empty, 1);
    respond(ev.fd, true);
    if (BigInt(Date.now()) * 1_000_000n - st.ctimeNs > FRESH_NS) markUnchanged(ev.fd, st);
    closeFd(ev.fd);
    return;
  }
  const path = protectedPath(ev);
  if (path === '') return;
  if (ev.fd >= state.length) {
    // Beyond the shared table (an fd over 65535): answered here by policy, never left waiting.
    respond(ev.fd, cfg.onDeadline === 'allow');
    Atomics.add(counters, C.deadline, 1);
    closeFd(ev.fd);
    return;
  }
  seq = seq >= 0x7fff_fffe ? 1 : seq + 1;
  Atomics.store(state, ev.fd, seq);
  pending.push({ fd: ev.fd, seq, deadline: performance.now() + cfg.deadlineMs });
  batch.push({ fd: ev.fd, seq, pid: ev.pid, kind, path, readAt });
}

function closeWriteEvent(ev: FanEvent, readAt: number): void {
  Atomics.add(counters, C.closeWrite, 1);
  if (ownEvent(ev, false)) return;
  if (Atomics.load(counters, C.closeWriteFds) >= cfg.closeWriteMaxFds) {
    // Each one holds an fd until its scan ends (the main thread closes it and counts it down):
    // beyond the bound the scan is skipped, never the protection, since the file's next open is
    // a permission event judged then. Keeps a flood of writes from exhausting RLIMIT_NOFILE,
    // which would leave the kernel no fd to give the next permission event.
    closeFd(ev.fd);
    Atomics.add(counters, C.closeWritesDropped, 1);
    return;
  }
  Atomics.add(counters, C.closeWriteFds, 1);
  if (heldCloseWrites.length === 0) heldSince = lastEventAt;
  heldCloseWrites.push({ ev, readAt });
}

/** Answer what the main thread has not answered: past the deadline by policy, or all (stop) with allow. */
function expire(now: number, all: boolean): void {
  while (pending.length > 0 && (all || pending[0]!.deadline <= now)) {
    const p = pending.shift()!;
    if (Atomics.compareExchange(state, p.fd, p.seq, 0) === p.seq) {
      respond(p.fd, all ? true : cfg.onDeadline === 'allow');
      Atomics.add(counters, all ? C.stopAnswers : C.deadline, 1);
    }
  }
}

function drainWakePipe(): void {
  try {
    while (fs.readSync(wakeR, wakeBuf, 0, wakeBuf.length, null) > 0);
  } catch {
    /* drained (EAGAIN) */
  }
}

/** One turn: poll the group and the wake pipe, read and dispatch, flush held close-writes, expire deadlines. */
function step(maxPollMs = IDLE_POLL_MS): boolean {
  const now = performance.now();
  const due = Math.min(pending.length > 0 ? pending[0]!.deadline : Number.POSITIVE_INFINITY, closeWriteFlushAt());
  const timeout = due === Number.POSITIVE_INFINITY ? IDLE_POLL_MS : Math.max(0, Math.ceil(due - now));
  const ready = pollIn([source, wakeR], Math.min(timeout, maxPollMs), pollScratch);
  if (ready.includes(wakeR)) drainWakePipe();
  const readable = ready.includes(source);
  if (readable) readEvents();
  const after = performance.now();
  if (after >= closeWriteFlushAt()) flushCloseWrites();
  expire(after, false);
  return readable;
}

function loop(): void {
  try {
    if (stopping) return shutdown();
    const readable = step(handoverEnd === 0 ? IDLE_POLL_MS : HANDOVER_POLL_MS);
    // Handed over once the queue is empty and every posted event is answered (bounded: by then
    // the deadline has answered any the main thread did not).
    const now = performance.now();
    if (handoverEnd !== 0 && ((!readable && !unanswered() && now - handoverFrom >= HANDOVER_SETTLE_MS) || now >= handoverEnd))
      return shutdown();
  } catch (e) {
    post({ t: 'fatal', message: (e as Error).message });
    return shutdown();
  }
  setImmediate(loop);
}

function shutdown(): void {
  flushCloseWrites(); // the main thread closes their fds (it may skip the scans while stopping)
  expire(0, true);
  closeGroup();
  post({ t: 'stopped' });
  port.close();
}

port.on('message', (m: { t: string; handover?: boolean }) => {
  // Between two turns of loop(), on this thread: the marks come off before the next poll.
  if (m.t === 'stop') {
    if (!m.handover || fan < 0) stopping = true;
    else if (handoverEnd === 0) beginHandover();
  }
});

try {
  const xx = cfg.sharedCache || cfg.warmUp ? await loadXxhash() : undefined;
  if (cfg.sharedCache) cacheView = new SharedCacheView(cfg.sharedCache, xx!);
  await init(cfg.warmUp ? new SharedCacheView(cfg.warmUp.cache, xx!) : undefined);
  post({ t: 'ready', fan });
  setImmediate(loop);
} catch (e) {
  const err = e as Error & { code?: string; hint?: string };
  post({ t: 'init-failed', code: err.code ?? 'LA_ERR_FANOTIFY', message: err.message, hint: err.hint });
  if (fan >= 0) closeGroup();
  port.close();
}
