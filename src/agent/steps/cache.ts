import type { Step } from '../step-runner.js';
import { openLocalCache } from '../local-cache.js';
import type { DaemonContext } from './context.js';

export const cacheStep: Step<DaemonContext> = {
  name: 'cache',
  async run(ctx) {
    const link = ctx.link!;
    // Shared: the fanotify worker answers clean identity hits from it directly.
    // Until an SVM answers, the persisted generation stands (its clean verdicts stay fresh).
    const cache = await openLocalCache(ctx.cfg, undefined, link.generation, true);
    ctx.cache = cache;
    link.on('connected', (w) => cache.setGeneration(w.generation));
    link.on('generation', (g) => cache.setGeneration(g));
    // The link may have connected while the file was loading, before these listeners were there:
    // its generation, not the file's, is the one in force (else old clean verdicts would pass as fresh).
    if (link.generation !== undefined) cache.setGeneration(link.generation);
    const timer = setInterval(() => void cache.save(), Math.max(1000, ctx.cfg.cache.save_interval));
    timer.unref();
    return async () => {
      clearInterval(timer);
      await cache.close();
    };
  },
};
