import { describeError } from '../../errors.js';
import { logger } from '../../log.js';
import { FEATURES } from '../../protocol/index.js';
import type { Step } from '../step-runner.js';
import { AGENT_FEATURES, svmLinkFor } from '../svm-connection.js';
import type { DaemonContext } from './context.js';

export const svmLinkStep: Step<DaemonContext> = {
  name: 'svm-link',
  run(ctx) {
    // The daemon alone runs scan jobs: only its link adds scan-command (not `lightagent scan`'s).
    const link = svmLinkFor(ctx.cfg, { features: [...AGENT_FEATURES, FEATURES.scanCommand] });
    ctx.link = link;
    // Protection starts whether or not the SVM answers: the policy covers the gap.
    link.connect().catch((e) => logger('daemon').warn('SVM not reachable at start; protecting by policy until it is', describeError(e)));
    return () => link.close();
  },
};
