/**
 * The per-install secret that seeds every local fingerprint: 8 random bytes in a 0600 file owned
 * by the agent's user. Whoever knows it could aim xxh64 collisions at the cache, so a file others
 * can read or write is refused, not silently used.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { LightagentError } from '../errors.js';

export class CacheSeedError extends LightagentError {
  constructor(file: string, detail: string) {
    super('LA_ERR_CACHE_SEED', `cache seed ${file}: ${detail}`, `run \`chmod 600 ${file}\` and make it owned by the agent's user, or delete it (a new one is made and the cache starts empty)`);
  }
}

export function loadOrCreateSeed(file: string): bigint {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CacheSeedError(file, (e as Error).message);
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    const seed = crypto.randomBytes(8);
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, seed, { mode: 0o600, flag: 'wx' });
    fs.renameSync(tmp, file);
    return seed.readBigUInt64LE(0);
  }
  try {
    const st = fs.fstatSync(fd);
    if ((st.mode & 0o077) !== 0) throw new CacheSeedError(file, `mode ${(st.mode & 0o777).toString(8)} lets other users read or change it (must be 600)`);
    if (typeof process.getuid === 'function' && st.uid !== process.getuid()) throw new CacheSeedError(file, `owned by uid ${st.uid}, not by this user (${process.getuid()})`);
    const buf = Buffer.alloc(8);
    if (fs.readSync(fd, buf, 0, 8, 0) !== 8) throw new CacheSeedError(file, 'shorter than 8 bytes');
    return buf.readBigUInt64LE(0);
  } finally {
    fs.closeSync(fd);
  }
}
