import { watchdogIntervalMs } from '../../platform/linux/sd-notify.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/**
 * Last: READY=1 once every step before it runs, and the watchdog pings. Its teardown is the
 * first to run at stop, so systemd hears STOPPING=1 before anything is taken down.
 */
export const readyStep: Step<DaemonContext> = {
  name: 'ready',
  run(ctx) {
    const notify = ctx.notify;
    if (!notify) return;
    const { daemon } = ctx;
    // The pings come from the main event loop: if it stalls, systemd sees it (WatchdogSec=).
    const wdMs = watchdogIntervalMs(ctx.opts.service?.env ?? process.env);
    const wdTimer =
      wdMs !== undefined && notify.enabled ? setInterval(() => notify.send('WATCHDOG=1'), Math.max(100, wdMs / 2)) : undefined;
    notify.send(`READY=1\nMAINPID=${process.pid}\nSTATUS=protecting ${daemon.protectedPaths().join(', ')} (mode ${daemon.mode})`);
    return () => {
      clearInterval(wdTimer);
      notify.send('STOPPING=1\nSTATUS=stopping: answering pending opens');
    };
  },
};
