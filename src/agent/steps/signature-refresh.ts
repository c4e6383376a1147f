import { SignatureRefresh } from '../../scan/signature-refresh.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/**
 * After a new signature generation (announced, or found on reconnecting to an SVM), bring the
 * cache's clean verdicts up to date in the background (src/scan/signature-refresh.ts). Runs after
 * the cache step (the cache already counts old verdicts as stale) and the protection step (the
 * kernel marks are already flushed when a run starts and gives them back).
 */
export const signatureRefreshStep: Step<DaemonContext> = {
  name: 'signature-refresh',
  run(ctx) {
    const link = ctx.link!;
    const cache = ctx.cache!.cache;
    // The scanner, handler and backend of the moment: a reload or a recovery replaces them.
    const refresh = new SignatureRefresh({
      cache,
      link,
      scan: (p, st) => ctx.scanner!.scanPath(p, st, 'background'),
      judge: (p, scan) => ctx.handler!.written(p, scan),
      roots: () => ctx.daemon.protectedPaths(),
      exclude: () => [...ctx.handler!.exclusions.prefixes, ctx.cfg.state_dir],
      excludeFile: () => {
        const ex = ctx.handler!.exclusions;
        return (p) => ex.path(p) !== undefined;
      },
      mark: (p, st) => ctx.backend?.markUnchanged?.(p, st) ?? false,
    });
    ctx.refresh = refresh;
    // Once per generation: a reconnect to the same signatures does not walk again after a run
    // that ended (or is still going); one that failed or was cancelled is tried again.
    const onGeneration = (g: string) => {
      const st = refresh.status();
      if (st.generation === g && (st.state === 'running' || st.state === 'done')) return;
      void refresh.start();
    };
    const onConnected = (w: { generation: string }) => onGeneration(w.generation);
    link.on('generation', onGeneration);
    link.on('connected', onConnected);
    // A cache saved under an older generation than the SVM's, with the link already up.
    if (link.state === 'connected' && link.generation !== undefined) void refresh.start();
    return async () => {
      link.off('generation', onGeneration);
      link.off('connected', onConnected);
      await refresh.stop();
    };
  },
};
