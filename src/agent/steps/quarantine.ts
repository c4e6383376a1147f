import { logger } from '../../log.js';
import { DeferredQueue } from '../../store/deferred-queue.js';
import { Quarantine } from '../../store/quarantine.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** The quarantine and the deferred-scan queue: journals that finish what a crash interrupted. */
export const quarantineStep: Step<DaemonContext> = {
  name: 'quarantine',
  async run(ctx) {
    const quarantine = new Quarantine({ stateDir: ctx.cfg.state_dir });
    ctx.quarantine = quarantine;
    const fixed = await quarantine.recover();
    if (fixed.completed + fixed.dropped + fixed.orphans > 0) logger('daemon').warn('finished quarantine moves a crash interrupted', fixed);
    const deferred = await DeferredQueue.open({ file: DeferredQueue.defaultFile(ctx.cfg.state_dir) });
    ctx.deferred = deferred;
    return async () => {
      await deferred.close();
      await quarantine.close();
    };
  },
};
