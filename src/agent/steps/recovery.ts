import { Backoff } from '../../backoff.js';
import { describeError } from '../../errors.js';
import { logger, type Logger } from '../../log.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** First retry after a failed restart, and the longest wait between two. */
export const RECOVERY_MIN_MS = 1000;
export const RECOVERY_MAX_MS = 60_000;

/**
 * Starts protection again while its backend is stopped: at once, then after 1, 2, 4... s (at
 * most a minute apart) for as long as that fails. The waits have no jitter (`random` is 1):
 * this is a restart inside one guest, with no crowd of clients to spread out.
 */
export class RecoverySupervisor {
  private readonly backoff = new Backoff(RECOVERY_MIN_MS, RECOVERY_MAX_MS, () => 1);
  private retry: NodeJS.Timeout | undefined;
  private attempting = false;
  private stopped = false;

  constructor(
    private readonly restart: () => Promise<void>,
    private readonly restarted: () => void,
    private readonly log: Logger = logger('daemon'),
  ) {}

  /** Protection is off: restart it unless a restart is already running or scheduled. */
  kick(): void {
    if (this.retry || this.attempting || this.stopped) return;
    this.retry = setTimeout(() => this.attempt(), 0);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.retry = undefined;
  }

  private attempt(): void {
    this.retry = undefined;
    if (this.stopped) return;
    this.attempting = true;
    this.restart().then(
      () => {
        this.attempting = false;
        this.backoff.reset();
        this.restarted();
      },
      (e: unknown) => {
        this.attempting = false;
        const delayMs = this.backoff.next();
        this.log.error('could not restart protection; on-access protection stays OFF until it starts', {
          ...describeError(e),
          retryInMs: delayMs,
        });
        if (!this.stopped) this.retry = setTimeout(() => this.attempt(), delayMs);
      },
    );
  }
}

/** The backend stopped on its own (the fanotify worker died: the kernel then intercepts nothing). */
export const recoveryStep: Step<DaemonContext> = {
  name: 'recovery',
  run(ctx) {
    const state = ctx.state!;
    const supervisor = new RecoverySupervisor(
      () => ctx.daemon.recover(),
      () => state.evaluate(),
    );
    state.on('change', (now) => {
      if (now.state === 'off') supervisor.kick();
    });
    if (state.snapshot.state === 'off') supervisor.kick();
    return () => supervisor.stop();
  },
};
