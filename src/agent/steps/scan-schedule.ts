import { hostInfo } from '../../platform/host-info.js';
import { ScanScheduler } from '../../scan/scan-schedule.js';
import { agentIdentity, readInstanceFacts } from '../identity.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/**
 * The daemon's own scheduler for `scan_schedule` (docs/scans.md). It reads the setting of the
 * moment at every check (at most a minute apart), so a reload or a policy changes it without a
 * restart. Without the setting it does nothing: the shipped systemd timer is the alternative.
 */
export const scanScheduleStep: Step<DaemonContext> = {
  name: 'scan-schedule',
  run(ctx) {
    // The id the SVM link announced (stored by then): the same input after every restart.
    const agentId = agentIdentity(ctx.cfg.state_dir, { ...readInstanceFacts(), hostname: hostInfo().host }).agentId;
    const scheduler = new ScanScheduler({
      stateDir: ctx.cfg.state_dir,
      agentId,
      schedule: () => ctx.cfg.scan_schedule,
      start: () => ctx.scanJobs!.start({ trigger: 'schedule' }).id,
    });
    scheduler.start();
    return () => scheduler.stop();
  },
};
