import { resolveProtect } from '../../watchers/backend.js';
import { FEATURES } from '../../protocol/index.js';
import { PolicyLayer } from '../policy-layer.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/**
 * The central layer (docs/policies.md), before anything uses the settings: the policy the last
 * run saved in the state directory goes over the local file, so a restart without the SVM runs
 * what the SVM last set.
 */
export const policyStep: Step<DaemonContext> = {
  name: 'policy',
  run(ctx) {
    const layer = new PolicyLayer(ctx.cfg.state_dir, ctx.local);
    ctx.policy = layer;
    let protect: string[];
    try {
      protect = resolveProtect(ctx.local, ctx.opts.mode);
    } catch {
      protect = ctx.local.protect; // the protection step reports this
    }
    const saved = layer.loadSaved(ctx.local, protect);
    if (saved) ctx.cfg = layer.over(ctx.local, saved);
  },
};

/**
 * Policies from the SVM (feature policy): each one the SVM sends is applied through the daemon's
 * make-before-break reload, or refused with the settings in force kept. A pool's switch to
 * another SVM emits `connected`: that SVM's policy is read then.
 */
export const policyPushStep: Step<DaemonContext> = {
  name: 'policy-push',
  run(ctx) {
    const link = ctx.link!;
    const apply = () => {
      const p = link.policy;
      if (p && link.speaks(FEATURES.policy)) void ctx.daemon.applyPolicy(p);
    };
    link.on('policy', apply);
    link.on('connected', apply);
    apply(); // one may have come before this step
    return () => {
      link.off('policy', apply);
      link.off('connected', apply);
    };
  },
};
