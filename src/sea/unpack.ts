/**
 * Unpack the single executable's native assets (koffi's .node, worker-thread bundles) into a new
 * private directory: `lightagent-<pid>-XXXXXX` (mkdtemp: mode 0700, unpredictable name) under
 * /run when root, else $XDG_RUNTIME_DIR, else systemd's $STATE_DIRECTORY, else the temp
 * directory; the first that is not mounted noexec and accepts it (Debian's initramfs mounts /run
 * noexec: koffi.node cannot be mapped from there, seen under systemd in the QEMU guest).
 * The directory is removed at exit; directories left by processes that died without exiting
 * (SIGKILL) are removed at the next start. Nothing happens when running from source.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { PlatformError } from '../errors.js';
import { DIR_PREFIX, KOFFI_ASSET, META_ROOT_GLOBAL, SEA_DIR_ENV, WORKERS_MANIFEST } from '../platform/native-assets.js';
import { checkPrivateDir, seaApi, type SeaApi } from '../platform/private-dir.js';

/** Candidate parents for the private directory, most private first. */
export function candidateBases(env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.()): string[] {
  const bases: string[] = [];
  if (uid === 0) bases.push('/run');
  const xdg = env.XDG_RUNTIME_DIR;
  if (xdg && path.isAbsolute(xdg)) bases.push(xdg);
  // Set by systemd for StateDirectory= (the unit's /var/lib/lightagent): on a disk, rarely noexec.
  const state = env.STATE_DIRECTORY?.split(':')[0];
  if (state && path.isAbsolute(state)) bases.push(state);
  bases.push(os.tmpdir());
  return [...new Set(bases)];
}

/** mountinfo(5) escapes space, tab, newline and backslash in paths as \ooo. */
const unescapeMount = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

function readMountinfo(): string {
  try {
    return fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return ''; // not Linux, or no /proc: nothing known, nothing skipped
  }
}

/** True when `dir` lies on a mount with the noexec option (the innermost, latest mount covering it). */
export function onNoexecMount(dir: string, mountinfo = readMountinfo()): boolean {
  let best: string | undefined;
  let noexec = false;
  for (const line of mountinfo.split('\n')) {
    const f = line.split(' ');
    if (f.length < 6) continue;
    const mp = unescapeMount(f[4]!);
    const covers = mp === '/' || dir === mp || dir.startsWith(`${mp}/`);
    if (covers && (best === undefined || mp.length >= best.length)) {
      best = mp;
      noexec = f[5]!.split(',').includes('noexec');
    }
  }
  return noexec;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove private directories of this user whose process is gone. Best effort, never throws. */
export function removeStale(base: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(base);
  } catch {
    return;
  }
  const uid = process.getuid?.();
  for (const name of names) {
    const m = /^lightagent-(\d{1,10})-[A-Za-z0-9]{6}$/.exec(name);
    if (!m || Number(m[1]) === process.pid || alive(Number(m[1]))) continue;
    const dir = path.join(base, name);
    try {
      const st = fs.lstatSync(dir);
      if (st.isDirectory() && st.uid === uid) fs.rmSync(dir, { recursive: true, force: true });
    } catch {
      // another start removed it, or it is not ours: leave it
    }
  }
}

/** Builds without a manifest carry this one worker at the directory's top, found through LEGACY_META_URL_GLOBAL. */
const LEGACY_WORKER = 'fanotify-worker.js';
const LEGACY_META_URL_GLOBAL = '__LIGHTAGENT_META_URL';

/** The worker bundles listed by the build: relative paths under src/, nothing else. */
function workerAssets(sea: SeaApi): string[] {
  let raw: ArrayBuffer;
  try {
    raw = sea.getRawAsset(WORKERS_MANIFEST);
  } catch {
    return [LEGACY_WORKER]; // a build without the manifest (scripts/release-windows.mjs today)
  }
  const list = JSON.parse(Buffer.from(raw).toString('utf8').slice(0, 65536)) as unknown;
  if (
    !Array.isArray(list) ||
    !list.every((n) => typeof n === 'string' && /^src\/[A-Za-z0-9_/.-]{1,200}\.js$/.test(n) && !n.split('/').includes('..'))
  ) {
    throw new Error(`the executable's ${WORKERS_MANIFEST} is damaged`);
  }
  return list as string[];
}

/** Unpack (once per process) and return the directory; undefined when not the single executable. */
export function unpackAssets(): string | undefined {
  const sea = seaApi();
  if (!sea) return undefined;
  const existing = process.env[SEA_DIR_ENV];
  if (existing && (globalThis as Record<string, unknown>)[META_ROOT_GLOBAL]) return existing;
  delete process.env[SEA_DIR_ENV]; // inherited from a parent: never trusted
  const problems: string[] = [];
  for (const base of candidateBases()) {
    let real = base;
    try {
      real = fs.realpathSync(base);
    } catch {
      // missing: mkdtemp says so below
    }
    if (onNoexecMount(real)) {
      problems.push(`${base}: mounted noexec`);
      continue;
    }
    let dir: string;
    try {
      dir = fs.mkdtempSync(path.join(base, `${DIR_PREFIX}${process.pid}-`));
    } catch (e) {
      problems.push(`${base}: ${(e as Error).message}`);
      continue;
    }
    try {
      checkPrivateDir(dir);
      for (const name of [KOFFI_ASSET, ...workerAssets(sea)]) {
        fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true, mode: 0o700 });
        fs.writeFileSync(path.join(dir, name), new Uint8Array(sea.getRawAsset(name)), { mode: 0o500, flag: 'wx' });
      }
      // The worker bundles are ES modules whatever package.json sits above the directory.
      fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}\n', { mode: 0o400, flag: 'wx' });
    } catch (e) {
      fs.rmSync(dir, { recursive: true, force: true });
      problems.push(`${dir}: ${(e as Error).message}`);
      continue;
    }
    process.once('exit', () => {
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch {
        // Windows: the loaded koffi.node cannot be deleted while mapped; the next start removes it (removeStale)
      }
    });
    removeStale(base);
    process.env[SEA_DIR_ENV] = dir;
    (globalThis as Record<string, unknown>)[META_ROOT_GLOBAL] = `${pathToFileURL(dir).href}/`;
    (globalThis as Record<string, unknown>)[LEGACY_META_URL_GLOBAL] = pathToFileURL(path.join(dir, 'main.js')).href;
    return dir;
  }
  throw new PlatformError(
    'LA_ERR_NATIVE_LOAD',
    `cannot unpack the native module: ${problems.join('; ')}`,
    'set TMPDIR to a writable directory on a filesystem mounted without noexec',
  );
}
