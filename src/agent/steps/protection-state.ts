import { ProtectionState } from '../../control/protection-state.js';
import { logger } from '../../log.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** Protected, degraded or off, as the status socket, the tray and recovery see it. */
export const protectionStateStep: Step<DaemonContext> = {
  name: 'protection-state',
  run(ctx) {
    const link = ctx.link!;
    const deferred = ctx.deferred!;
    const state = new ProtectionState(() => ({
      mode: ctx.backend?.mode ?? 'off',
      svmConnected: link.state === 'connected',
      queued: deferred.size,
    }));
    ctx.state = state;
    const log = logger('daemon');
    state.on('change', (now, before) => {
      if (now.state === 'protected') log.info('protection recovered', { from: before.state, was: before.reasons });
      else log.warn('protection degraded', { state: now.state, reasons: now.reasons });
    });
    const recheck = () => state.evaluate();
    link.on('connected', recheck);
    link.on('disconnected', recheck);
    state.start();
    return () => state.stop();
  },
};
