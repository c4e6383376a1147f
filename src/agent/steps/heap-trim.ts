import { logger } from '../../log.js';
import { HeapTrimmer } from '../../heap-trim.js';
import { mallocTrim } from '../../platform/linux/libc.js';
import { releaseSeaBlobPages } from '../../platform/linux/sea-blob.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** How often the main thread looks, and the share of that second its loop may work and still count as quiet. */
const TICK_MS = 1000;
const QUIET_UTILIZATION = 0.02;

/**
 * The main thread's heap trim (src/heap-trim.ts): once start-up is done and the loop has been
 * quiet, then after each burst of work, once it is over. "Quiet" is the event loop's own
 * utilization (under 2% of a second: an idle agent's timers) with no file judged or scanned in
 * that second; the handler's counters say whether the hot path ran (start-up work alone keeps
 * the first trim a last-resort one). The process connector is read on this thread, so its events
 * are trimmed here too; the gate's worker does not trim (its hit path stays warm).
 */
export const heapTrimStep: Step<DaemonContext> = {
  name: 'heap-trim',
  run(ctx) {
    const log = logger('memory');
    // The single executable's embedded blob was read by start-up and is not read again: its
    // pages go with the first trim (src/platform/linux/sea-blob.ts; nothing outside it).
    let blob: ReturnType<typeof releaseSeaBlobPages> | null = null;
    const trimmer = new HeapTrimmer({
      rss: () => process.memoryUsage.rss(),
      release: () => {
        mallocTrim(); // false, and nothing done, off Linux
        if (blob === null) blob = releaseSeaBlobPages(); // once: undefined when there is nothing to do
      },
    });
    ctx.heapTrim = trimmer.stats;
    let elu = performance.eventLoopUtilization();
    // Warm work: files judged or scanned (the hot path ran); start-up chatter is only busy.
    const judgedNow = () => (ctx.handler ? ctx.handler.counts.decisions + ctx.handler.counts.written : 0);
    let judged = judgedNow();
    const timer = setInterval(() => {
      const now = performance.now();
      const next = performance.eventLoopUtilization();
      const n = judgedNow();
      const warm = n !== judged;
      judged = n;
      if (warm || performance.eventLoopUtilization(next, elu).utilization > QUIET_UTILIZATION) trimmer.busy(now, warm);
      elu = next;
      if (!trimmer.tick(now)) return;
      const s = trimmer.stats;
      log.info('heap trimmed', {
        thread: 'main',
        kind: s.lastKind,
        ms: Math.round(s.lastMs * 10) / 10,
        mallocTrimMs: Math.round(s.releaseMs * 10) / 10,
        heapUsedKb: [Math.round(s.lastBefore / 1024), Math.round(s.lastAfter / 1024)],
        rssKb: [Math.round(s.rssBefore / 1024), Math.round(s.rssAfter / 1024)],
        ...(blob && s.trims === 1 ? { seaBlobKb: Math.round(blob.bytes / 1024), seaBlobAdvice: blob.advice } : {}),
      });
      // The tick that trimmed is not quiet time: the collection itself ran on this loop.
      elu = performance.eventLoopUtilization();
    }, TICK_MS);
    timer.unref();
    return () => clearInterval(timer);
  },
};
