/**
 * What every protection backend offers the daemon. The backend is chosen in one place
 * (src/agent/steps/protection.ts): fanotify when it can run, the portable watcher otherwise.
 */
export type ProtectionMode = 'fanotify' | 'watcher' | 'off';

export interface ProtectionBackend {
  readonly mode: ProtectionMode;
  /** Counters for `status` and benchmarks. */
  stats(): Record<string, number>;
  /** Forget every kernel-side "clean" mark (signature generation change). */
  flushCleanMarks(): void;
  /** Stop watching. Always completes; answers whatever is still pending first. */
  stop(): Promise<void>;
}
