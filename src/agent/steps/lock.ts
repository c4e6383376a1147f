import path from 'node:path';
import { JournalError, ServiceError } from '../../errors.js';
import { acquireLock, readPid } from '../../store/lock-file.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/**
 * One daemon per state directory: a second `lightagent run` stops here, before touching the
 * cache, the journals or the kernel. A lock left by a SIGKILLed daemon is taken over.
 */
export const lockStep: Step<DaemonContext> = {
  name: 'lock',
  async run({ cfg }) {
    const lockPath = path.join(cfg.state_dir, 'agent.lock');
    try {
      return await acquireLock(lockPath, 0);
    } catch (e) {
      if (!(e instanceof JournalError) || e.code !== 'LA_ERR_JOURNAL_LOCKED') throw e;
      const pid = await readPid(lockPath);
      throw new ServiceError(
        'LA_ERR_ALREADY_RUNNING',
        `another lightagent daemon${pid !== undefined ? ` (pid ${pid})` : ''} is running on the state directory ` +
          `${cfg.state_dir} (lock ${lockPath})`,
        'stop it first (systemctl stop lightagent); only one daemon may use a state directory',
      );
    }
  },
};
