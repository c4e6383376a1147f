import { describeError } from '../../errors.js';
import { logger } from '../../log.js';
import { FEATURES, type ScanJobReport, type ScanNow } from '../../protocol/index.js';
import { ScanJobRunner, type ScanJobStatus } from '../../scan/scan-jobs.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** A job as the state report carries it (feature scan-command). */
export function jobReport(j: ScanJobStatus): ScanJobReport {
  const { seen, scanned, skipped, infected, errors } = j.counters;
  return {
    id: j.id,
    trigger: j.trigger,
    state: j.state,
    startedAt: j.startedAt,
    ...(j.finishedAt ? { finishedAt: j.finishedAt } : {}),
    seen,
    scanned,
    skipped,
    infected,
    errors,
    ...(j.error ? { code: j.error.code.slice(0, 64) } : {}),
  };
}

/**
 * Scan jobs (on demand, on schedule, asked by the SVM) through the daemon's own scanner and
 * handler of the moment: the same verdict cache, quarantine, detections and deferred queue as
 * a written file, every SVM request in the link's background class. An SVM's `scan-now`
 * (feature scan-command) starts one with its id; a refusal (busy, a path outside `protect`) is
 * what the next state report carries instead.
 */
export const scanJobsStep: Step<DaemonContext> = {
  name: 'scan-jobs',
  run(ctx) {
    const log = logger('scan-jobs');
    const runner = new ScanJobRunner({
      roots: () => ctx.daemon.protectedPaths(),
      walkOptions: () => {
        const ex = ctx.handler!.exclusions;
        return { exclude: ex.prefixes, excludeFile: ex.noPaths ? undefined : (p: string) => ex.path(p) !== undefined };
      },
      scan: (e) => ctx.handler!.written(e.path, () => ctx.scanner!.scanPath(e.path, e.stat, 'background')),
    });
    ctx.scanJobs = runner;
    let report: ScanJobReport | undefined;
    ctx.scanReport = () => report;
    runner.on('change', (j) => (report = jobReport(j)));
    const link = ctx.link!;
    const onScanNow = (c: ScanNow) => {
      try {
        runner.start({ trigger: 'svm', id: c.id, paths: c.paths, reason: c.reason });
      } catch (e) {
        const d = describeError(e);
        log.warn('scan command from the SVM refused', { id: c.id, paths: c.paths, reason: c.reason, ...d });
        const now = new Date().toISOString();
        report = {
          id: c.id,
          trigger: 'svm',
          state: 'refused',
          startedAt: now,
          finishedAt: now,
          seen: 0,
          scanned: 0,
          skipped: 0,
          infected: 0,
          errors: 0,
          code: d.code.slice(0, 64),
        };
        ctx.onScanReport?.();
      }
    };
    link.on('scan-now', onScanNow);
    log.debug('scan jobs ready', { feature: FEATURES.scanCommand });
    return async () => {
      link.off('scan-now', onScanNow);
      await runner.stop();
    };
  },
};
