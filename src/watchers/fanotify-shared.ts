/** Types and shared-memory layout between FanotifyGate (main thread) and its worker. */

export interface WorkerConfig {
  mounts: string[];
  filesystem: boolean;
  protect: string[];
  exclude: string[];
  deadlineMs: number;
  onDeadline: 'allow' | 'deny';
  closeWrite: boolean;
  exec: boolean;
  selfPid: number;
  stateSab: SharedArrayBuffer;
  countersSab: SharedArrayBuffer;
}

export interface PostedEvent {
  fd: number;
  /** Pending-event sequence number in the shared state (0 for close-write notifications). */
  seq: number;
  pid: number;
  kind: 'open' | 'exec' | 'close-write';
  path: string;
}

export type WorkerMessage =
  | { t: 'ready'; fan: number; wakeW: number }
  | { t: 'init-failed'; code: string; message: string; hint?: string | undefined }
  | { t: 'events'; events: PostedEvent[] }
  | { t: 'fatal'; message: string }
  | { t: 'stopped' };

/** Slots in the shared counters (Int32Array). */
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
} as const;
export const COUNTER_SLOTS = 16;
/** Event fds tracked in the shared state table; larger fds are answered by the worker at once. */
export const STATE_SLOTS = 65536;
