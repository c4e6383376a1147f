import { resolveProtect, startProtection } from '../../watchers/backend.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** The protection backend: fanotify when it can run (or as `--mode` says), else the watcher. */
export const protectionStep: Step<DaemonContext> = {
  name: 'protection',
  async run(ctx) {
    ctx.cfg = { ...ctx.cfg, protect: resolveProtect(ctx.cfg, ctx.opts.mode) };
    // The generation the backend starts under: marks it places while starting are of this one.
    let generation = ctx.cache!.cache.generation;
    ctx.backend = await startProtection(ctx.cfg, ctx.opts.mode, ctx.handler!, ctx.scanner!, ctx.cache!.cache.sharedSpec());
    // New signatures (announced, or found on reconnecting): every kernel clean mark goes. The
    // cache step's listeners ran first, so the cache already counts old verdicts as stale.
    const onGeneration = (g: string) => {
      if (g === generation) return;
      generation = g;
      ctx.backend!.flushCleanMarks();
    };
    ctx.link!.on('connected', (w) => onGeneration(w.generation));
    ctx.link!.on('generation', onGeneration);
    // A change while the backend was starting came before these listeners: the marks go now.
    onGeneration(ctx.cache!.cache.generation);
    // The backend of the moment: a reload or a recovery replaces it.
    return () => ctx.backend!.stop();
  },
};
