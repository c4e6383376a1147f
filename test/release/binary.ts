/**
 * The single executable for tests: built by scripts/release.mjs when missing or older than the
 * sources, and spawned like the compiled CLIs (watchdog, output captured).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { spawnWatched, type Proc } from '../helpers/procs.js';

/** The repository root (tests run from build-NAME/test/release/). */
export const ROOT = path.resolve(new URL('.', import.meta.url).pathname, '../../..');
export const BINARY = process.env.LIGHTAGENT_BINARY ?? path.join(ROOT, 'dist/lightagent-linux-x64');

function newestSource(dir: string): number {
  let newest = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p));
    // .ts sources, and the web console's static files (SEA assets).
    else if (e.name.endsWith('.ts') || p.includes(`${path.sep}console${path.sep}static${path.sep}`))
      newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

/** Build the binary (no .deb) when it is missing or older than src/ or the release script. Returns the build time in ms, 0 if fresh. */
export function ensureBinary(): number {
  if (process.env.LIGHTAGENT_BINARY) return 0;
  const have = fs.existsSync(BINARY) ? fs.statSync(BINARY).mtimeMs : 0;
  const sources = Math.max(newestSource(path.join(ROOT, 'src')), fs.statSync(path.join(ROOT, 'scripts/release.mjs')).mtimeMs);
  if (have > sources) return 0;
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts/release.mjs'), '--no-deb', '--quiet'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 180_000,
  });
  if (r.status !== 0) throw new Error(`npm run release failed (${r.status}): ${r.stdout}${r.stderr}`);
  return performance.now() - t0;
}

/** Spawn the binary (or `argv0` pointing at it) with a watchdog. */
export function spawnBinary(args: string[], opts: { env?: NodeJS.ProcessEnv; watchdogMs?: number; file?: string } = {}): Proc {
  return spawnWatched(opts.file ?? BINARY, args, { watchdogMs: opts.watchdogMs ?? 60_000, ...(opts.env ? { env: opts.env } : {}) });
}

/** Run the binary to completion with a hard timeout. */
export function runBinary(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; file?: string; timeoutMs?: number } = {},
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(opts.file ?? BINARY, args, {
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 30_000,
    killSignal: 'SIGKILL',
    env: { ...process.env, ...opts.env },
  });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
