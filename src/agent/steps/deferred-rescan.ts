import { describeError } from '../../errors.js';
import { logger } from '../../log.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** Files allowed unjudged while no SVM answered are scanned once one does. */
export const deferredRescanStep: Step<DaemonContext> = {
  name: 'deferred-rescan',
  run(ctx) {
    const log = logger('deferred');
    const link = ctx.link!;
    const deferred = ctx.deferred!;
    let running = false;
    const drain = async () => {
      if (running || link.state !== 'connected' || deferred.size === 0) return;
      running = true;
      try {
        const n = await deferred.drain(async (p) => {
          const r = await ctx.handler!.written(p, () => ctx.scanner!.scanPath(p));
          // Keep it queued only if the SVM could not judge it (it is re-added by `written`).
          return r.outcome !== 'error';
        });
        if (n > 0) log.info('scanned files allowed while the SVM was unavailable', { files: n });
      } catch (e) {
        log.error('deferred re-scan failed', describeError(e));
      } finally {
        running = false;
      }
    };
    link.on('connected', () => void drain());
    // A slow safety net for files queued while connected (deadline answers): every 30 s.
    const timer = setInterval(() => void drain(), 30_000);
    timer.unref();
    void drain();
    return () => clearInterval(timer);
  },
};
