import path from 'node:path';
import { JournalError, ServiceError } from '../../errors.js';
import { acquireLock, readPid } from '../../store/lock-file.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/**
 * Take the daemon's lock on `stateDir` (`agent.lock`). Held by a live process: LA_ERR_ALREADY_RUNNING
 * naming its pid, with `hint` saying what to do. A lock left by a dead process, or from another
 * boot, is taken over. Used by the daemon and by `lightagent seal`.
 */
export async function lockStateDir(
  stateDir: string,
  hint = 'stop it first (systemctl stop lightagent); only one daemon may use a state directory',
): Promise<() => Promise<void>> {
  const lockPath = path.join(stateDir, 'agent.lock');
  try {
    return await acquireLock(lockPath, 0);
  } catch (e) {
    if (!(e instanceof JournalError) || e.code !== 'LA_ERR_JOURNAL_LOCKED') throw e;
    const pid = await readPid(lockPath);
    throw new ServiceError(
      'LA_ERR_ALREADY_RUNNING',
      `another lightagent daemon${pid !== undefined ? ` (pid ${pid})` : ''} is running on the state directory ${stateDir} ` +
        `(lock ${lockPath})`,
      hint,
    );
  }
}

/**
 * One daemon per state directory: a second `lightagent run` stops here, before touching the
 * cache, the journals or the kernel.
 */
export const lockStep: Step<DaemonContext> = {
  name: 'lock',
  run: ({ cfg }) => lockStateDir(cfg.state_dir),
};
