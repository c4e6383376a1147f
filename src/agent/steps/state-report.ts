import os from 'node:os';
import { hostInfo } from '../../platform/host-info.js';
import { FEATURES } from '../../protocol/index.js';
import { AGENT_VERSION } from '../identity.js';
import { StateReporter, boundFigures } from '../state-reporter.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** State reports to the SVM (feature state-report): after each welcome, on change (debounced), and a slow heartbeat. */
export const stateReportStep: Step<DaemonContext> = {
  name: 'state-report',
  run(ctx) {
    const link = ctx.link!;
    const state = ctx.state!;
    const host = hostInfo();
    const release = os.release();
    const reporter = new StateReporter({
      link,
      heartbeatMs: ctx.cfg.state_report_interval,
      figures: () => {
        const p = state.snapshot;
        const c = ctx.cache?.stats() ?? {};
        const policy = ctx.policy?.inForce;
        return boundFigures({
          mode: ctx.backend?.mode ?? 'off',
          state: p.state,
          // A refused policy leaves protection as it was: said as a reason, the state unchanged.
          reasons: ctx.policy?.refused ? [...p.reasons, 'policy-refused'] : p.reasons,
          since: p.since,
          agentVersion: AGENT_VERSION,
          os: host.os,
          osRelease: release,
          ...(link.generation ? { generation: link.generation } : {}),
          cache: {
            entries: c.entries ?? 0,
            hits: (c.identityHits ?? 0) + (c.fingerprintHits ?? 0),
            misses: c.misses ?? 0,
          },
          deferred: ctx.deferred?.size ?? 0,
          detections: ctx.detections?.count ?? 0,
          ...(policy ? { policy } : {}),
          // Feature scan-command: the last job, only to an SVM that listed the feature.
          ...(link.speaks(FEATURES.scanCommand) && ctx.scanReport?.() ? { scan: ctx.scanReport()! } : {}),
        });
      },
    });
    const changed = () => reporter.changed();
    state.on('change', changed);
    // A job's progress: its start and end at once, counters at most every 10 s (state reports stay slow).
    let jobState = '';
    let progressAt = 0;
    const jobChanged = (j: { id: string; state: string }) => {
      const now = Date.now();
      if (`${j.id}:${j.state}` === jobState && now - progressAt < 10_000) return;
      jobState = `${j.id}:${j.state}`;
      progressAt = now;
      changed();
    };
    ctx.scanJobs?.on('change', jobChanged);
    ctx.onScanReport = changed;
    link.on('generation', changed);
    ctx.detections?.on('detection', changed);
    ctx.policy?.on('change', changed);
    reporter.start();
    return () => {
      reporter.stop();
      state.off('change', changed);
      link.off('generation', changed);
      ctx.detections?.off('detection', changed);
      ctx.policy?.off('change', changed);
      ctx.scanJobs?.off('change', jobChanged);
      ctx.onScanReport = undefined;
    };
  },
};
