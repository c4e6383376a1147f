/**
 * The single executable's private native directory: created by src/sea/unpack.ts, checked again
 * by every thread that loads from it (src/platform/native.ts). No side effects on import.
 */
import fs from 'node:fs';
import { PlatformError } from '../errors.js';

/** The part of node:sea this program uses (reached through getBuiltinModule: Node 20 has no types for all of it). */
export interface SeaApi {
  isSea(): boolean;
  getRawAsset(key: string): ArrayBuffer;
}

/** node:sea when this process is the single executable, else undefined. */
export function seaApi(): SeaApi | undefined {
  try {
    const sea = (process as unknown as { getBuiltinModule?: (id: string) => unknown }).getBuiltinModule?.('node:sea') as SeaApi | undefined;
    return sea?.isSea() ? sea : undefined;
  } catch {
    return undefined;
  }
}

/** True inside the single executable. */
export function isSea(): boolean {
  return seaApi() !== undefined;
}

/** Refuse a directory that anyone but this user could have written into (or that is a link). */
export function checkPrivateDir(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch (e) {
    throw new PlatformError(
      'LA_ERR_NATIVE_LOAD',
      `the native module directory ${dir} cannot be read: ${(e as Error).message}`,
      'start the agent again (it unpacks a new one)',
    );
  }
  const uid = process.getuid?.() ?? st.uid;
  // Windows has no mode bits (ACLs instead; Node reports 0o666): there the directory is one that
  // mkdtemp made in this account's own temp directory (SYSTEM's for the service), never a link.
  const modeOk = process.platform === 'win32' || (st.mode & 0o077) === 0;
  if (!st.isDirectory() || st.uid !== uid || !modeOk) {
    throw new PlatformError(
      'LA_ERR_NATIVE_LOAD',
      `the native module directory ${dir} is not a private directory of this user (owner ${st.uid}, mode ${(st.mode & 0o777).toString(8)})`,
      `remove ${dir} and start the agent again`,
    );
  }
}
