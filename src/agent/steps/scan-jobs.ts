import { ScanJobRunner } from '../../scan/scan-jobs.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/**
 * Scan jobs (on demand, on schedule, asked by the SVM) through the daemon's own scanner and
 * handler of the moment: the same verdict cache, quarantine, detections and deferred queue as
 * a written file, every SVM request in the link's background class.
 */
export const scanJobsStep: Step<DaemonContext> = {
  name: 'scan-jobs',
  run(ctx) {
    const runner = new ScanJobRunner({
      roots: () => ctx.daemon.protectedPaths(),
      walkOptions: () => {
        const ex = ctx.handler!.exclusions;
        return { exclude: ex.prefixes, excludeFile: ex.noPaths ? undefined : (p: string) => ex.path(p) !== undefined };
      },
      scan: (e) => ctx.handler!.written(e.path, () => ctx.scanner!.scanPath(e.path, e.stat, 'background')),
    });
    ctx.scanJobs = runner;
    return () => runner.stop();
  },
};
