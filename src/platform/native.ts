/**
 * koffi, the one native module, loaded the same way by every thread in both kinds of run:
 *
 * - from source (`node build/src/...`): the npm package, resolved from node_modules;
 * - inside the single executable (src/sea/main.ts): koffi's .node is an SEA asset that the entry
 *   point wrote into a private 0700 directory before anything else ran; this module loads it
 *   from there with process.dlopen (worker threads inherit the directory through
 *   LIGHTAGENT_SEA_DIR, which is honoured only inside the executable and only for a directory
 *   owned by this user with no group/other access).
 *
 * koffi's own index is never bundled into the executable: it looks for the .node next to
 * node_modules and would fail there.
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import type KoffiModule from 'koffi';
import { PlatformError } from '../errors.js';
import { KOFFI_ASSET, SEA_DIR_ENV } from './native-assets.js';
import { checkPrivateDir, isSea } from './private-dir.js';

export type Koffi = typeof KoffiModule;

function loadSeaKoffi(): Koffi {
  const dir = process.env[SEA_DIR_ENV];
  if (!dir || !path.isAbsolute(dir)) {
    throw new PlatformError(
      'LA_ERR_NATIVE_LOAD',
      `${SEA_DIR_ENV} is not set: the executable's entry point did not unpack its native module`,
      'run the lightagent executable itself, not a copy of its bundle',
    );
  }
  checkPrivateDir(dir);
  const file = path.join(dir, KOFFI_ASSET);
  const mod = { exports: {} as Record<string, unknown> };
  try {
    process.dlopen(mod, file);
  } catch (e) {
    throw new PlatformError(
      'LA_ERR_NATIVE_LOAD',
      `loading ${file} failed: ${(e as Error).message}`,
      'the directory must be on a filesystem mounted without noexec; set TMPDIR to one',
    );
  }
  return mod.exports as unknown as Koffi;
}

function loadKoffi(): Koffi {
  if (isSea()) return loadSeaKoffi();
  return createRequire(import.meta.url)('koffi') as Koffi;
}

const koffi: Koffi = loadKoffi();
export default koffi;
