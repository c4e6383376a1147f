/** Types and shared-memory layout between FanotifyGate (main thread) and its worker. */
import fs from 'node:fs';
import type { SharedCacheSpec } from '../cache/shared-view.js';

export interface WorkerConfig {
  mounts: string[];
  filesystem: boolean;
  protect: string[];
  exclude: string[];
  deadlineMs: number;
  onDeadline: 'allow' | 'deny';
  closeWrite: boolean;
  /** Close-write fds outstanding (held here or being scanned) beyond which new ones are dropped. */
  closeWriteMaxFds: number;
  /** Held close-writes are posted once no event has come for this long (ms)... */
  closeWriteQuietMs: number;
  /** ...or this long after the oldest of them was read (ms), or at half of closeWriteMaxFds. */
  closeWriteMaxAgeMs: number;
  exec: boolean;
  selfPid: number;
  /** Read end of the wake pipe; the main thread owns (and closes) both ends. */
  wakeR: number;
  stateSab: SharedArrayBuffer;
  /** The verdict cache shared read-only with the worker (optional). */
  sharedCache?: SharedCacheSpec | undefined;
  countersSab: SharedArrayBuffer;
  /** The hit path run before the mounts are marked (fanotify-worker.ts warmUp); none: not run. */
  warmUp?: WarmUpConfig | undefined;
}

/** A private cache holding one clean entry for `file`, whose opens the warm-up replays. */
export interface WarmUpConfig {
  cache: SharedCacheSpec;
  file: string;
  rounds: number;
}

export interface PostedEvent {
  fd: number;
  /** Pending-event sequence number in the shared state (0 for close-write notifications). */
  seq: number;
  pid: number;
  kind: 'open' | 'exec' | 'close-write';
  /** '' for a close-write: the main thread reads its path when it takes it (FanotifyGate.closeWrite). */
  path: string;
  /** hrMs() in the worker when the event was read: process-wide monotonic, comparable across threads. */
  readAt: number;
}

export type WorkerMessage =
  | { t: 'ready'; fan: number }
  | { t: 'init-failed'; code: string; message: string; hint?: string | undefined }
  | { t: 'events'; events: PostedEvent[] }
  | { t: 'fatal'; message: string }
  | { t: 'stopped' };

/** Slots in the shared counters (Int32Array), reported by FanotifyGate.stats() under these names. */
export const C = {
  open: 0,
  exec: 1,
  closeWrite: 2,
  ownPid: 3,
  outside: 4,
  posted: 5,
  deadline: 6,
  stopAnswers: 7,
  overflow: 8,
  ignoreMarks: 9,
  allowed: 10,
  denied: 11,
  marksDropped: 12,
  lateDecisions: 13,
  /** Permission events on empty regular files, allowed by the worker (files being created). */
  empty: 16,
  /** Clean identity hits answered by the worker from the shared verdict cache. */
  workerHits: 17,
  /** A gauge, not a counter: close-write event fds open now (held by the worker or being scanned). */
  closeWriteFds: 18,
  /** Close-writes not scanned because closeWriteMaxFds were outstanding (judged at their next open). */
  closeWritesDropped: 19,
  /** Start-up: replays of the hit path before the mounts were marked (fanotify-worker.ts warmUp); never counted in the others. */
  warmUpHits: 20,
  /**
   * Ignore marks placed when a written file's background scan ended clean (its close-write), kept
   * because its identity was unchanged since the scan began (also counted in ignoreMarks).
   */
  writtenMarks: 21,
} as const;
/**
 * Not counters: the group fd's life. CLOSING is set (once) by whoever closes the group; USERS
 * counts main-thread calls on the fd in progress. The closer sets CLOSING, waits for USERS to
 * drop to 0, then closes: so the main thread never writes a response into a reused fd number.
 */
export const GROUP_CLOSING_SLOT = 14;
export const GROUP_USERS_SLOT = 15;
export const COUNTER_SLOTS = 22;
/** Event fds tracked in the shared state table; larger fds are answered by the worker at once. */
export const STATE_SLOTS = 65536;

/** CLOCK_MONOTONIC in ms (process.hrtime is process-wide, unlike performance.now, which has a per-thread origin). */
export function hrMs(): number {
  const [s, ns] = process.hrtime();
  return s * 1e3 + ns / 1e6;
}

/** Whether `path` is one of `prefixes` or below one (prefixes are absolute, without a trailing '/'). */
function within(path: string, prefixes: readonly string[]): boolean {
  for (const p of prefixes) if (path === p || path.startsWith(p.endsWith('/') ? p : `${p}/`)) return true;
  return false;
}

/**
 * An event fd's path now (readlink of /proc/self/fd/N) if it lies in `protect` and not in
 * `exclude`, else ''. A path deeper than PATH_MAX (reachable with relative paths) comes back as a
 * name for the fd: such a file is judged through its fd, never let through unseen.
 */
export function protectedFdPath(fd: number, protect: readonly string[], exclude: readonly string[]): string {
  let path: string;
  try {
    path = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENAMETOOLONG') return `/proc/self/fd/${fd} (path longer than PATH_MAX)`;
    return ''; // cannot happen for a live fd; treated as outside
  }
  return within(path, protect) && !within(path, exclude) ? path : '';
}
