/**
 * A pid lock file beside a journal, so two processes never append to one file at once (the
 * daemon and `lightagent quarantine restore`, or two daemons on one state directory).
 *
 * Node has no flock(2) without a native addon, so this is the classic O_EXCL pid file: created
 * with `wx`, holding the owner's pid; a lock whose pid is dead (a SIGKILLed agent, a power cut)
 * is stale and taken over. The residual risks are pid reuse after a crash (the lock then looks
 * held until that unrelated process exits) and two processes taking over one stale lock in the
 * same instant; both need a crash first and are acceptable for a single agent per host.
 */
import fs from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { JournalError } from '../errors.js';
import { logger } from '../log.js';

const log = logger('lock-file');

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readPid(lockPath: string): Promise<number | undefined> {
  try {
    const pid = Number.parseInt(await fs.readFile(lockPath, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Take `lockPath`, waiting up to `waitMs` for a live holder to let go. Resolves with the release
 * function. A lock file without a readable pid is treated as stale only after `waitMs` (it may
 * be a holder between create and write).
 */
export async function acquireLock(lockPath: string, waitMs = 0): Promise<() => Promise<void>> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const fh = await fs.open(lockPath, 'wx', 0o600);
      try {
        await fh.writeFile(`${process.pid}\n`);
      } finally {
        await fh.close();
      }
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        await fs.rm(lockPath, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new JournalError('LA_ERR_JOURNAL', lockPath, `cannot create the lock file: ${(e as Error).message}`, undefined, { cause: e });
      }
    }
    const pid = await readPid(lockPath);
    const expired = Date.now() >= deadline;
    if ((pid !== undefined && !alive(pid)) || (pid === undefined && expired)) {
      log.warn('taking over a stale lock', { lockPath, deadPid: pid ?? null });
      await fs.rm(lockPath, { force: true });
      continue;
    }
    if (expired) {
      throw new JournalError(
        'LA_ERR_JOURNAL_LOCKED',
        lockPath,
        `held by process ${pid}${pid === process.pid ? ' (this process: the journal is already open)' : ''}`,
        'another lightagent process uses this state directory; wait for it to finish, or stop it',
      );
    }
    await sleep(Math.min(25, Math.max(1, deadline - Date.now())));
  }
}
