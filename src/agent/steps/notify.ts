import { describeError, LightagentError } from '../../errors.js';
import { SdNotify } from '../../platform/linux/sd-notify.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/**
 * The sd_notify(3) channel to systemd (Type=notify), first so that every later step and a
 * start-up failure can speak through it. Without $NOTIFY_SOCKET every send is a no-op.
 */
export const notifyStep: Step<DaemonContext> = {
  name: 'sd-notify',
  run(ctx) {
    const service = ctx.opts.service;
    if (!service) return;
    const notify = new SdNotify(service.notifySocket ?? process.env.NOTIFY_SOCKET, (message) =>
      service.report({ event: 'problem', message }),
    );
    ctx.notify = notify;
    return () => notify.close();
  },
};

/** The exit status for a daemon that could not start: 3 another one runs, 2 anything else. */
export function startFailureCode(e: unknown): number {
  return e instanceof LightagentError && e.code === 'LA_ERR_ALREADY_RUNNING' ? 3 : 2;
}

/** Tell systemd why start-up failed (its teardown already closed the channel: a send reopens it). */
export function notifyStartFailure(notify: SdNotify | undefined, e: unknown): void {
  if (!notify) return;
  notify.send(`STATUS=start-up failed: ${describeError(e).message.split('\n')[0]}\nERRNO=${startFailureCode(e)}`);
  notify.close();
}
