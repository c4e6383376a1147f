/**
 * Start-up as an ordered list of small named steps (after falco's run_steps). Each step may
 * return a teardown; teardowns run in reverse order, every one of them, whatever failed, each
 * bounded in time so a stuck part cannot keep the daemon from exiting.
 */
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';

export type Teardown = () => Promise<void> | void;

export interface Step<C> {
  name: string;
  run(ctx: C): Promise<Teardown | void> | Teardown | void;
}

export class StepRunner<C> {
  private readonly teardowns: Array<{ name: string; fn: Teardown }> = [];

  constructor(
    private readonly log: Logger,
    private readonly teardownTimeoutMs = 5000,
  ) {}

  /** Run `steps` in order; on the first failure, tear down what started and rethrow. */
  async start(steps: ReadonlyArray<Step<C>>, ctx: C): Promise<void> {
    for (const step of steps) {
      const t0 = performance.now();
      try {
        const td = await step.run(ctx);
        if (td) this.teardowns.push({ name: step.name, fn: td });
        this.log.debug('step done', { step: step.name, ms: Math.round(performance.now() - t0) });
      } catch (err) {
        this.log.error('start-up step failed', { step: step.name, ...describeError(err) });
        await this.stop();
        throw err;
      }
    }
  }

  /** Run every teardown in reverse order. Never throws. */
  async stop(): Promise<void> {
    while (this.teardowns.length > 0) {
      const { name, fn } = this.teardowns.pop()!;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          Promise.resolve().then(fn),
          new Promise((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`teardown of ${name} took longer than ${this.teardownTimeoutMs} ms`)),
              this.teardownTimeoutMs,
            );
          }),
        ]);
      } catch (err) {
        this.log.error('teardown step failed', { step: name, ...describeError(err) });
      } finally {
        clearTimeout(timer);
      }
    }
  }
}
