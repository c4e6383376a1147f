/**
 * Real processes for integration tests: an SVM and an agent started from the compiled CLIs,
 * scratch tmpfs mounts, and a watchdog on everything so a stuck test never freezes the machine.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SVM_NODE_FLAGS } from '../../src/node-flags.js';

export const CLI = new URL('../../src/cli/lightagent.js', import.meta.url).pathname;
export const SVM_CLI = new URL('../../src/cli/lightagent-svm.js', import.meta.url).pathname;

/** With LIGHTAGENT_TEST_BINARY=dist/lightagent-linux-x64, `node CLI ...` / `node SVM_CLI ...` run the single executable instead. */
function viaBinary(cmd: string, args: string[]): [string, string[]] {
  const bin = process.env.LIGHTAGENT_TEST_BINARY;
  if (!bin || cmd !== process.execPath || (args[0] !== CLI && args[0] !== SVM_CLI)) return [cmd, args];
  return [bin, args[0] === SVM_CLI ? ['svm', ...args.slice(1)] : args.slice(1)];
}

/** `node SVM_CLI ...` runs with the SVM's production V8 flags (src/node-flags.ts), as its shebang gives them. */
function withNodeFlags(cmd: string, args: string[]): [string, string[]] {
  return cmd === process.execPath && args[0] === SVM_CLI ? [cmd, [...SVM_NODE_FLAGS, ...args]] : [cmd, args];
}
// Kept for suites written against the old home of EICAR (test/watchers); new code imports fixtures.js.
export { EICAR } from './fixtures.js';

export const isRoot = process.getuid?.() === 0;
export const inCi = process.env.CI === 'true';

/** Skip reason for tests that need root, or undefined. Under CI=true a missing requirement fails instead. */
export function needRoot(): string | undefined {
  if (isRoot) return undefined;
  if (inCi) throw new Error('CI=true: this integration test needs root (fanotify, mounts) and may not skip');
  process.stderr.write('\n*** SKIPPING: this test needs root (fanotify permission events, tmpfs mounts) ***\n\n');
  return 'needs root';
}

/** The first of `candidates` that exists, else `command -v name`, else undefined. */
export function findBinary(name: string, candidates: readonly string[]): string | undefined {
  for (const c of candidates) if (fs.existsSync(c)) return c;
  const r = spawnSync('sh', ['-c', `command -v ${name}`], { timeout: 5000 });
  const p = r.stdout?.toString().trim();
  return r.status === 0 && p ? p : undefined;
}

/**
 * Skip reason when a Debian package's binary is missing (after a loud note), else undefined.
 * Under CI=true a missing package throws: integration tests may not skip there.
 */
export function needPackage(found: string | undefined, pkg: string, what: string): string | undefined {
  if (found) return undefined;
  if (inCi) throw new Error(`CI=true: this test needs ${pkg} (apt-get install ${pkg}) and may not skip`);
  process.stderr.write(`\n*** SKIPPING: ${pkg} is not installed (apt-get install -y ${pkg}); ${what} did not run ***\n\n`);
  return `${pkg} not installed`;
}

const children = new Set<ChildProcess>();
const mounts = new Set<string>();
const tempDirs = new Set<string>();
process.on('exit', () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  for (const m of mounts) spawnSync('umount', ['-l', m]);
  removeTempDirs();
});

export interface Proc {
  child: ChildProcess;
  pid: number;
  output: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

/** Spawn `node script args`, kill it after `watchdogMs` whatever happens. */
export function spawnNode(script: string, args: string[], opts: { env?: NodeJS.ProcessEnv; watchdogMs?: number } = {}): Proc {
  const [cmd, argv] = withNodeFlags(...viaBinary(process.execPath, [script, ...args]));
  return spawnWatched(cmd, argv, { watchdogMs: 120_000, ...opts });
}

/**
 * Spawn any command with its output collected and a watchdog that SIGKILLs it after
 * `watchdogMs` (default 120 s); killed at exit if still running. stop() sends `signal`, then
 * SIGKILL after 10 s.
 */
export function spawnWatched(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; watchdogMs?: number } = {}): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
  children.add(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const watchdog = setTimeout(() => child.kill('SIGKILL'), opts.watchdogMs ?? 120_000);
  watchdog.unref();
  child.once('exit', () => {
    clearTimeout(watchdog);
    children.delete(child);
  });
  return {
    child,
    pid: child.pid!,
    output: () => out,
    stop: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await new Promise((r) => child.once('exit', r));
      clearTimeout(t);
      return child.exitCode;
    },
  };
}

/** Resolve with the first match of `re` in the process output. */
export function waitFor(p: Proc, re: RegExp, ms = 20_000): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const m = re.exec(p.output());
      if (m) {
        cleanup();
        resolve(m);
      }
    };
    const onExit = (code: number | null) => {
      cleanup();
      reject(new Error(`process exited (${code}) before ${re}; output:\n${p.output().slice(-2000)}`));
    };
    const t = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${ms} ms waiting for ${re}; output:\n${p.output().slice(-2000)}`));
    }, ms);
    const cleanup = () => {
      clearTimeout(t);
      p.child.stdout!.off('data', check);
      p.child.stderr!.off('data', check);
      p.child.off('exit', onExit);
    };
    p.child.stdout!.on('data', check);
    p.child.stderr!.on('data', check);
    p.child.once('exit', onExit);
    check();
  });
}

export async function startSvmProcess(extra: string[] = [], token = 'test-token'): Promise<Proc & { url: string; port: number }> {
  const p = spawnNode(SVM_CLI, ['--listen', '127.0.0.1:0', '--token', token, '--json', ...extra]);
  const m = await waitFor(p, /"url"\s*:\s*"(ws:\/\/[^"]+)"/);
  const url = m[1]!;
  return { ...p, url, port: Number(new URL(url).port) };
}

/** Same port again (restart after a kill). */
export async function restartSvmProcess(port: number, token = 'test-token'): Promise<Proc & { url: string; port: number }> {
  const p = spawnNode(SVM_CLI, ['--listen', `127.0.0.1:${port}`, '--token', token, '--json']);
  const m = await waitFor(p, /"url"\s*:\s*"(ws:\/\/[^"]+)"/);
  return { ...p, url: m[1]!, port };
}

/** A fresh tmpfs mounted on a new temp dir; unmounted at exit even if the test forgets. */
export function scratchMount(prefix = 'la-mnt-', size = '256m'): { dir: string; unmount: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  if (r.status !== 0) throw new Error(`mount tmpfs on ${dir} failed: ${String(r.stderr)}`);
  mounts.add(dir);
  return {
    dir,
    unmount: () => {
      spawnSync('umount', ['-l', dir]);
      mounts.delete(dir);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A new directory under the system's temp dir, removed with everything in it when this test
 * process exits (LIGHTAGENT_KEEP_TEST_DIRS=1 keeps them, for a post-mortem).
 */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tempDirs.add(dir);
  return dir;
}

/**
 * At exit, after the scratch mounts are detached: a directory something is still mounted on or
 * under is left in place and named on stderr (removal never crosses into a mount).
 */
function removeTempDirs(): void {
  if (tempDirs.size === 0 || process.env.LIGHTAGENT_KEEP_TEST_DIRS === '1') return;
  let mountPoints: string[] = [];
  try {
    mountPoints = fs
      .readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((l) => l.split(' ')[4] ?? '')
      .filter((m) => m !== '');
  } catch {
    /* no /proc (not Linux): nothing is mounted by these tests there */
  }
  for (const d of tempDirs) {
    if (mountPoints.some((m) => m === d || m.startsWith(`${d}/`))) {
      process.stderr.write(`test: ${d} left in place: something is still mounted there\n`);
      continue;
    }
    try {
      fs.rmSync(d, { recursive: true, force: true });
      // An agent given `--state-dir d` puts its sockets beside it, in d.run (socketDirFor).
      fs.rmSync(`${d}.run`, { recursive: true, force: true });
    } catch (e) {
      process.stderr.write(`test: could not remove ${d}: ${(e as Error).message}\n`);
    }
  }
}

/** Write zeros to `file` until the filesystem under it is full (ENOSPC); returns the bytes written. */
export function fillDisk(file: string): number {
  const fd = fs.openSync(file, 'w');
  const block = Buffer.alloc(64 * 1024);
  let total = 0;
  try {
    for (;;) total += fs.writeSync(fd, block);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    fs.closeSync(fd);
  }
  return total;
}

/** Run a command with a hard timeout; never hangs the test. */
export function run(
  cmd: string,
  args: string[],
  timeoutMs = 10_000,
): { status: number | null; stdout: string; stderr: string; ms: number } {
  const t0 = performance.now();
  const r = spawnSync(...viaBinary(cmd, args), { timeout: timeoutMs, killSignal: 'SIGKILL' });
  return { status: r.status, stdout: r.stdout?.toString() ?? '', stderr: r.stderr?.toString() ?? '', ms: performance.now() - t0 };
}

export async function eventually<T>(fn: () => T | undefined | false, ms = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
