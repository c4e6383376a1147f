/**
 * On-access cost on real file workloads, lightagent vs no agent, measured side by side (A/B
 * alternated) in one run.
 *
 *   sudo node build/bench/onaccess/workloads.js [--reps N] [--quick] [--out FILE]
 *
 * Two ext4 loop mounts made for the run hold identical copies of a tree of real files copied from
 * /usr (>= 20,000 files): `plain` (never marked: the "no agent" variant) and `watched` (the agent
 * protects it with a fanotify mount mark). Only these mounts are ever marked; every process
 * started is stopped by pid; every command has a timeout; the mounts are removed at the end.
 *
 * Workloads: read every file (first pass after the agent starts with an empty cache, then warm),
 * copy the tree, tar it, run 1,000 short processes whose binary lives on the mount.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { waitLine } from './children.js';

const args = parseArgs({ options: { reps: { type: 'string' }, quick: { type: 'boolean', default: false }, out: { type: 'string' }, keep: { type: 'boolean', default: false }, only: { type: 'string' } } }).values;
/** `--only copy,tar`: run just these workloads (read_first always runs: it warms the cache). */
const ONLY = args.only ? new Set(args.only.split(',')) : undefined;
const want = (wl: string) => !ONLY || ONLY.has(wl);
const REPS = Number(args.reps ?? (args.quick ? 3 : 5));
const BASE = '/tmp/la-bench';
const SRC_DIRS = args.quick
  ? ['/usr/include', '/usr/share/doc', '/usr/lib/python3', '/usr/lib/python3.11', '/usr/share/perl', '/usr/lib/node_modules', '/usr/share/locale']
  : ['/usr/include', '/usr/share/doc', '/usr/lib/python3', '/usr/lib/python3.11', '/usr/share/perl', '/usr/lib/node_modules', '/usr/share/locale'];
const CLI = new URL('../../src/cli/lightagent.js', import.meta.url).pathname;
const SVM_CLI = new URL('../../src/cli/lightagent-svm.js', import.meta.url).pathname;
const WL_TIMEOUT_S = 600;

if (process.getuid?.() !== 0) {
  process.stderr.write('bench/onaccess: needs root (fanotify permission events and loop mounts)\n');
  process.exit(2);
}

const started: ChildProcess[] = [];
const mounts: string[] = [];
function cleanup() {
  for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
  for (const m of mounts.reverse()) spawnSync('umount', ['-l', m]);
}
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
process.on('SIGTERM', () => process.exit(143));
const watchdog = setTimeout(() => {
  process.stderr.write('bench/onaccess: total time limit reached\n');
  process.exit(3);
}, 3 * 3600_000);
watchdog.unref();

function sh(cmd: string, cwd: string): { wall: number; rc: number } {
  const t0 = performance.now();
  const r = spawnSync('bash', ['-c', cmd], { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: WL_TIMEOUT_S * 1000 });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) process.stderr.write(`  ! ${cmd} in ${cwd}: rc=${r.status} ${r.stderr?.toString().slice(0, 300)}\n`);
  return { wall, rc: r.status ?? -1 };
}

function makeMount(name: string, sizeMb: number): string {
  const img = path.join(BASE, `${name}.img`);
  const dir = path.join(BASE, name);
  fs.mkdirSync(dir, { recursive: true });
  spawnSync('umount', ['-l', dir]);
  fs.rmSync(img, { force: true });
  execFileSync('truncate', ['-s', `${sizeMb}M`, img]);
  execFileSync('mkfs.ext4', ['-q', '-F', img]);
  execFileSync('mount', ['-o', 'loop', img, dir]);
  mounts.push(dir);
  return dir;
}

function dropCaches() {
  spawnSync('sync');
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}

function rssKb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}
function cpuTicks(pid: number): number {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]);
  } catch {
    return NaN;
  }
}

async function startSvm(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [SVM_CLI, '--listen', '127.0.0.1:0', '--token', 'bench-token', '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  started.push(child);
  const line = await waitLine(child, /\{.*"url".*\}/, 15_000);
  return { child, url: (JSON.parse(line) as { url: string }).url };
}

async function startAgent(url: string, protect: string, stateDir: string): Promise<ChildProcess> {
  fs.rmSync(stateDir, { recursive: true, force: true });
  const child = spawn(process.execPath, [CLI, 'run', '--svm', url, '--token', 'bench-token', '--protect', protect, '--state-dir', stateDir, '--mode', 'fanotify', '--log-file', path.join(BASE, 'agent.log'), '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  started.push(child);
  await waitLine(child, /"event":"started"/, 30_000);
  return child;
}

async function stop(child: ChildProcess) {
  if (child.exitCode !== null) return;
  child.kill('SIGTERM');
  await Promise.race([new Promise((r) => child.once('exit', r)), new Promise((r) => setTimeout(r, 10_000))]);
  if (child.exitCode === null) child.kill('SIGKILL');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main() {
  fs.mkdirSync(BASE, { recursive: true });
  const plain = makeMount('plain', 2048);
  const watched = makeMount('watched', 2048);
  for (const root of [plain, watched]) {
    fs.mkdirSync(path.join(root, 'T/bin'), { recursive: true });
    for (const d of SRC_DIRS) if (fs.existsSync(d)) execFileSync('cp', ['-a', d, path.join(root, 'T', d.replaceAll('/', '_'))]);
    fs.copyFileSync('/bin/true', path.join(root, 'T/bin/true'));
    fs.chmodSync(path.join(root, 'T/bin/true'), 0o755);
  }
  const files = Number(execFileSync('bash', ['-c', `find ${plain}/T -type f | wc -l`]).toString().trim());
  const mb = Number(execFileSync('bash', ['-c', `du -sm ${plain}/T | cut -f1`]).toString().trim());
  process.stderr.write(`tree: ${files} files, ${mb} MB from ${SRC_DIRS.join(' ')}\n`);

  const svm = await startSvm();
  const stateDir = path.join(BASE, 'state');
  const RD = 'find T -type f -print0 | xargs -0 cat > /dev/null';
  const CP = 'cp -a T T2';
  const RM = 'rm -rf T2';
  // Through a pipe: GNU tar skips reading file contents when its output is /dev/null itself.
  const TAR = 'tar cf - T | gzip -1 > /dev/null';
  const EXEC = 'for i in $(seq 1000); do ./T/bin/true; done';
  type Row = { workload: string; variant: 'none' | 'lightagent'; rep: number; wall: number; rc: number };
  const rows: Row[] = [];
  const rec = (workload: string, variant: Row['variant'], rep: number, r: { wall: number; rc: number }) => {
    rows.push({ workload, variant, rep, ...r });
    process.stderr.write(`${workload} ${variant} #${rep}: ${r.wall.toFixed(2)} s rc=${r.rc}\n`);
  };

  // First pass: the agent starts with an empty local cache and a fresh SVM cache each rep.
  let agent: ChildProcess | undefined;
  for (let i = 1; i <= REPS; i++) {
    if (agent) await stop(agent);
    dropCaches();
    rec('read_first', 'none', i, sh(RD, plain));
    agent = await startAgent(svm.url, watched, stateDir);
    dropCaches();
    rec('read_first', 'lightagent', i, sh(RD, watched));
  }
  const idle = { agentRssKb: rssKb(agent!.pid!), svmRssKb: rssKb(svm.child.pid!) };
  const cpu0 = cpuTicks(agent!.pid!);
  for (let i = 1; i <= REPS && want('read_warm'); i++) {
    rec('read_warm', 'none', i, sh(RD, plain));
    rec('read_warm', 'lightagent', i, sh(RD, watched));
  }
  for (let i = 1; i <= REPS && want('copy'); i++) {
    rec('copy', 'none', i, sh(CP, plain));
    sh(RM, plain);
    rec('copy', 'lightagent', i, sh(CP, watched));
    sh(RM, watched);
  }
  for (let i = 1; i <= REPS && want('tar'); i++) {
    rec('tar', 'none', i, sh(TAR, plain));
    rec('tar', 'lightagent', i, sh(TAR, watched));
  }
  for (let i = 1; i <= REPS && want('exec_1000'); i++) {
    rec('exec_1000', 'none', i, sh(EXEC, plain));
    rec('exec_1000', 'lightagent', i, sh(EXEC, watched));
  }
  const load = { agentRssKb: rssKb(agent!.pid!), agentCpuS: (cpuTicks(agent!.pid!) - cpu0) / 100 };
  await stop(agent!);
  await stop(svm.child);

  const summary: Record<string, unknown> = {};
  const lines = ['| workload | no agent: median (min) s | lightagent: median (min) s | ratio of medians |', '|---|---|---|---|'];
  for (const wl of [...new Set(rows.map((r) => r.workload))]) {
    const a = rows.filter((r) => r.workload === wl && r.variant === 'none' && r.rc === 0).map((r) => r.wall);
    const b = rows.filter((r) => r.workload === wl && r.variant === 'lightagent' && r.rc === 0).map((r) => r.wall);
    if (!a.length || !b.length) continue;
    const ratio = median(b) / median(a);
    summary[wl] = { none: { median: median(a), min: Math.min(...a) }, lightagent: { median: median(b), min: Math.min(...b) }, ratio };
    lines.push(`| ${wl} | ${median(a).toFixed(2)} (${Math.min(...a).toFixed(2)}) | ${median(b).toFixed(2)} (${Math.min(...b).toFixed(2)}) | ${ratio.toFixed(2)}x |`);
  }
  const result = {
    machine: { kernel: os.release(), cpus: os.cpus().length, node: process.version },
    tree: { files, mb, from: SRC_DIRS },
    reps: REPS,
    idle,
    load,
    summary,
    rows,
  };
  const outFile = args.out ?? path.join(path.dirname(new URL(import.meta.url).pathname), '../../../bench/results/onaccess.json');
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, JSON.stringify(result, null, 2));
  process.stdout.write(`${lines.join('\n')}\n\nagent RSS idle ${idle.agentRssKb} kB, after load ${load.agentRssKb} kB; agent CPU during warm+copy+tar+exec ${load.agentCpuS.toFixed(1)} s\nwritten: ${outFile}\n`);
  if (!args.keep) for (const root of [plain, watched]) fs.rmSync(path.join(root, 'T2'), { recursive: true, force: true });
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bench/onaccess failed: ${(e as Error).stack}\n`);
    process.exit(1);
  },
);
