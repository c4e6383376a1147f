/**
 * The seam between the daemon and a protection backend. One file chooses and builds the backend
 * (backend.ts: fanotify when it can run, else the portable watcher); every backend reports to a
 * ProtectionHandler and is driven through ProtectionBackend. test/watchers/backend-conformance.ts
 * runs the same cases against each of them.
 *
 * Backpressure is the backend's: the handler may take as long as it likes, and the backend
 * decides what waits and what is dropped, always counted in stats(), never silently:
 *   - fanotify: the kernel holds each opener until decide() settles or the deadline answers by
 *     policy; close-writes beyond closeWriteMaxFds are not reported (the file is judged at its
 *     next open instead, so the drop costs a delay, not a miss).
 *   - watchers: at most a few written() calls run at once and a path is never reported again
 *     while its report is queued or running (a second write meanwhile is reported once more,
 *     after it); beyond the pending bound new paths are dropped (`dropped`) and the Windows
 *     watcher rescans the root once things are quiet.
 */
import type fs from 'node:fs';
import type { AccessEvent, Decision } from '../scan/on-access.js';

export type { AccessEvent, Decision };

/** What protects the files now. 'off': nothing does (stopped, or the backend died). */
export type ProtectionMode = 'fanotify' | 'watcher' | 'off';

/** The backends backend.ts can build. */
export type BackendKind = 'fanotify' | 'chokidar' | 'windows';

/**
 * A regular file under `protect` (not under `exclude`) was written: created, modified, or moved
 * in. Reported once its writer let go of it: fanotify on close-write, the watchers once it has
 * been quiet for their settle time.
 */
export interface WrittenFile {
  /** Absolute. Under fanotify it may end in " (deleted)": the file is gone, its content is not. */
  path: string;
  /** fanotify: the writer's thread group id. */
  pid?: number | undefined;
  /**
   * fanotify: the event fd and its fstat. Read the content through it (pread), never reopen the
   * path; valid until the promise written() returned settles. The backend closes it.
   */
  fd?: number | undefined;
  stat?: fs.BigIntStats | undefined;
}

/** written()'s answer: `clean` lets fanotify mark the inode so the writer's next open costs no event. */
export interface WrittenResult {
  clean: boolean;
}

/** What a backend reports. The daemon's one implementation is in backend.ts (over OnAccessHandler). */
export interface ProtectionHandler {
  /**
   * An open or execution the kernel holds until it is answered (fanotify only; the watchers
   * cannot block anything and never call it). If this has not settled within the backend's
   * deadline, the backend answers by its policy and the late decision is dropped (counted).
   */
  decide(ev: AccessEvent): Promise<Decision>;
  /**
   * A file was written (see WrittenFile). A synchronous answer is taken synchronously (a burst of
   * copies then costs no promise per file). A rejection is logged by the backend, never fatal;
   * a file that vanished before it was read is the handler's to skip, not an error.
   */
  written(ev: WrittenFile): WrittenResult | Promise<WrittenResult>;
}

export interface ProtectionBackend {
  readonly mode: ProtectionMode;
  /** Counters for `status` and benchmarks. */
  stats(): Record<string, number>;
  /** Forget every kernel-side "clean" mark (signature generation change); a no-op without them. */
  flushCleanMarks(): void;
  /**
   * Give a file whose clean verdict was just seen for the identity `judged` its kernel mark back
   * (the signature refresh), if it still is that identity; absent without kernel marks. True if marked.
   */
  markUnchanged?(file: string, judged: fs.BigIntStats): boolean;
  /**
   * Stop watching. Always completes; answers whatever is still pending first. `handover`: another
   * backend already protects the same paths (a reload swaps backends make-before-break): what
   * this one holds is judged as usual rather than allowed at once (the fanotify gate; others
   * have nothing pending to judge and ignore it).
   */
  stop(handover?: boolean): Promise<void>;
}
