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
    const timer = setInterval(() => void cache.save(), Math.max(1000, ctx.cfg.cache.save_interval));
    timer.unref();
    return async () => {
      clearInterval(timer);
      await cache.close();
    };
  },
};
