/**
 * A pid lock file beside a journal, so two processes never append to one file at once (the
 * daemon and `lightagent quarantine restore`, or two daemons on one state directory).
 *
 * Node has no flock(2) without a native addon, so this is the classic exclusive pid lock. On
 * Linux it is a symlink whose target is the owner's pid (as Emacs locks files): symlink(2) is
 * atomic and exclusive, and a short target lives in the inode itself, so the lock can be taken on
 * a full disk (a reboot with a full /var must not leave the guest unprotected; a regular pid file
 * failed there with ENOSPC). On Windows, where symlinks need a privilege, it is an O_EXCL file
 * created with `wx` holding the pid. A lock whose pid is dead (a SIGKILLed agent, a power cut)
 * is stale and taken over. On Linux the symlink's target also names the boot (`PID@BOOT_ID`, from
 * /proc/sys/kernel/random/boot_id): a lock from another boot is stale whatever its pid says. That
 * is the case of a VM cloned from a running template or restored from a snapshot, where the old
 * pid may well belong to some other process of the new boot. The residual risks are pid reuse
 * after a crash within one boot (the lock then looks held until that unrelated process exits) and
 * two processes taking over one stale lock in the same instant; both need a crash first and are
 * acceptable for a single agent per host.
 */
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
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

const SYMLINK_LOCKS = process.platform !== 'win32';
const BOOT_ID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let thisBoot: string | undefined | null = null;
/** This boot's id (Linux), or undefined where there is none. */
export function bootId(): string | undefined {
  if (thisBoot === null) {
    try {
      const id = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
      thisBoot = BOOT_ID_RE.test(id) ? id : undefined;
    } catch {
      thisBoot = undefined;
    }
  }
  return thisBoot;
}

/** Who holds a lock: a pid, and on Linux the boot it was taken in. */
export interface LockHolder {
  pid: number;
  boot?: string | undefined;
}

function parseHolder(text: string): LockHolder | undefined {
  const m = /^(\d{1,10})(?:@([0-9a-f-]{36}))?\s*$/.exec(text);
  if (!m) return undefined;
  const pid = Number.parseInt(m[1]!, 10);
  if (!Number.isSafeInteger(pid) || pid <= 0) return undefined;
  return m[2] && BOOT_ID_RE.test(m[2]) ? { pid, boot: m[2] } : { pid };
}

/** A holder that cannot be running: its pid is dead, or it was taken in another boot. */
function stale(h: LockHolder): boolean {
  const boot = bootId();
  if (h.boot && boot && h.boot !== boot) return true;
  return !alive(h.pid);
}

/** The holder's pid from either form of lock (a symlink's target, or a file's content). */
export async function readPid(lockPath: string): Promise<number | undefined> {
  return (await readHolder(lockPath))?.pid;
}

export async function readHolder(lockPath: string): Promise<LockHolder | undefined> {
  let text: string;
  try {
    text = await fs.readlink(lockPath);
  } catch {
    try {
      text = await fs.readFile(lockPath, 'utf8');
    } catch {
      return undefined;
    }
  }
  return parseHolder(text);
}

/** Create the lock exclusively with our pid in it; EEXIST when someone holds it. */
async function createLock(lockPath: string): Promise<void> {
  if (SYMLINK_LOCKS) {
    const boot = bootId();
    await fs.symlink(boot ? `${process.pid}@${boot}` : String(process.pid), lockPath);
    return;
  }
  const fh = await fs.open(lockPath, 'wx', 0o600);
  try {
    await fh.writeFile(`${process.pid}\n`);
  } finally {
    await fh.close();
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
      await createLock(lockPath);
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
    const holder = await readHolder(lockPath);
    const pid = holder?.pid;
    const expired = Date.now() >= deadline;
    if ((holder !== undefined && stale(holder)) || (holder === undefined && expired)) {
      log.warn('taking over a stale lock', {
        lockPath,
        deadPid: pid ?? null,
        ...(holder?.boot && holder.boot !== bootId() ? { fromBoot: holder.boot } : {}),
      });
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
