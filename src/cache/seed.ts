/**
 * The per-install secret that seeds every local fingerprint: 8 random bytes in a 0600 file owned
 * by the agent's user. Whoever knows it could aim xxh64 collisions at the cache, so a file others
 * can read or write, or that another user owns, is refused with CacheSeedError, never silently used.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CacheSeedError } from '../errors.js';

export { CacheSeedError };

const SEED_BYTES = 8;

/** Read the seed at `file`, creating it (0600, crypto random) if it does not exist. */
export function loadOrCreateSeed(file: string): bigint {
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CacheSeedError(file, (e as Error).message, { cause: e });
      create(file); // then read back what we, or a process racing us, wrote
      continue;
    }
    try {
      return readChecked(file, fd);
    } finally {
      fs.closeSync(fd);
    }
  }
  throw new CacheSeedError(file, 'could not be created and read back');
}

function readChecked(file: string, fd: number): bigint {
  const st = fs.fstatSync(fd);
  if (!st.isFile()) throw new CacheSeedError(file, 'is not a regular file');
  // Windows: no mode bits (Node reports 666); the state directory's ACL protects it (docs/windows.md)
  if (process.platform !== 'win32' && (st.mode & 0o077) !== 0)
    throw new CacheSeedError(file, `mode ${(st.mode & 0o777).toString(8)} lets other users read or change it (must be 600)`);
  if (typeof process.getuid === 'function' && st.uid !== process.getuid())
    throw new CacheSeedError(file, `owned by uid ${st.uid}, not by this user (${process.getuid()})`);
  const buf = Buffer.alloc(SEED_BYTES);
  if (fs.readSync(fd, buf, 0, SEED_BYTES, 0) !== SEED_BYTES) throw new CacheSeedError(file, `shorter than ${SEED_BYTES} bytes`);
  return buf.readBigUInt64LE(0);
}

/**
 * Write a fresh seed to a private temp file, then link(2) it into place: link fails with EEXIST
 * if another process won the race, so two agents starting at once agree on one seed.
 */
function create(file: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
  try {
    fs.writeSync(fd, crypto.randomBytes(SEED_BYTES));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.linkSync(tmp, file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new CacheSeedError(file, (e as Error).message, { cause: e });
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}
