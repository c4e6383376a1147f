/**
 * Process storm benchmark: N short processes (/bin/true, forked by one dash loop) with the agent
 * running and its process watcher off, and with the watcher on (kernel connector); plus a
 * baseline with no agent, and two floors with no agent: floor-connector.c, a C subscriber that
 * only recv()s and discards (woken per event, as the agent's worker is), and the same draining
 * every 2 ms (fewer wakeups). Side by side in one run: storm wall time, its ratio to the
 * watcher-off run and to no agent, the agent's CPU during the storm (utime + stime from
 * /proc/PID/stat) and its RSS (peak sampled every 20 ms, VmRSS). The agent protects a scratch
 * tmpfs only (fanotify), with a real SVM.
 *
 *   node build/bench/process/process-bench.js [--counts 1000,10000] [--out FILE]
 * Root only; the floors need a C compiler (skipped with a reason without one).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, scratchMount, spawnNode, spawnWatched, startSvmProcess, waitFor } from '../../test/helpers/procs.js';
import { benchArgs } from '../lib/cli.js';

const isStormChild = process.argv.includes('--storm');
const { values } = isStormChild
  ? { values: {} as { counts?: string; out?: string } }
  : benchArgs(
      {
        name: 'bench/process/process-bench',
        root: true,
        summary: `Process storm: N short processes (/bin/true) with no agent, two C floors of the process events
connector, and the agent with its process watcher off and on: storm wall time and its ratios, the
agent's CPU and RSS. Full run of npm run bench only; docs/processes.md, "Measurements".`,
      },
      {
        counts: {
          type: 'string',
          default: '1000,10000',
          arg: 'N,N',
          number: 'int',
          min: 1,
          list: true,
          help: 'storm sizes, processes; each configuration runs each',
        },
        out: { type: 'string', arg: 'FILE', help: 'write the rows as JSON there too' },
        storm: { type: 'string', arg: 'N', help: '(internal) be the storm: run /bin/true N times and exit' },
      },
    );
if (process.getuid?.() !== 0) {
  process.stderr.write('bench/process/process-bench: needs root (fanotify, process events connector, tmpfs)\n');
  process.exit(2);
}
const counts = (values.counts ?? '1000').split(',').map(Number);
const TICK_S = 0.01; // sysconf(_SC_CLK_TCK) = 100 on Linux

function cpuTicks(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime, stime (fields 14, 15)
}
function rssKiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
  return m ? Number(m[1]) : 0;
}

function storm(n: number): number {
  const t0 = performance.now();
  const r = spawnSync('/bin/sh', ['-c', `i=0; while [ $i -lt ${n} ]; do /bin/true; i=$((i+1)); done`], { timeout: 600_000 });
  if (r.status !== 0) throw new Error(`storm failed: ${String(r.stderr)}`);
  return performance.now() - t0;
}

interface Row {
  config: string;
  processes: number;
  stormMs: number;
  perProcessUs: number;
  ratioToWatcherOff?: number;
  ratioToNoAgent?: number;
  agentCpuMs?: number;
  agentCpuPct?: number;
  agentRssStartMiB?: number;
  agentRssPeakMiB?: number;
  /** Exec events the agent read, and the share of them whose process it still found in /proc (its exe and cmdline are what attribution keeps). */
  execEvents?: number;
  execReadPct?: number;
}

type ProcStats = Record<string, number> | undefined;

async function withAgent(watcher: 'off' | 'connector', fn: (pid: number, procStats: () => ProcStats) => Promise<void>): Promise<void> {
  const svm = await startSvmProcess();
  const mnt = scratchMount('la-pbench-');
  const stateDir = fs.mkdtempSync('/tmp/la-pbench-state-');
  const cfg = path.join(stateDir, 'agent.yaml');
  fs.writeFileSync(cfg, `processes:\n  watcher: ${watcher}\n  table_entries: 32768\n`);
  const agent = spawnNode(
    CLI,
    [
      'run',
      '--config',
      cfg,
      '--svm',
      svm.url,
      '--token',
      'test-token',
      '--protect',
      mnt.dir,
      '--state-dir',
      stateDir,
      '--mode',
      'fanotify',
      '--json',
    ],
    { watchdogMs: 900_000 },
  );
  try {
    await waitFor(agent, /"event":"started"/, 30_000);
    await new Promise((r) => setTimeout(r, 500)); // let start-up settle
    const procStats = (): ProcStats => {
      const r = spawnSync(process.execPath, [CLI, 'status', '--json', '--state-dir', stateDir], { encoding: 'utf8', timeout: 30_000 });
      try {
        return (JSON.parse(r.stdout) as { processes?: Record<string, number> }).processes;
      } catch {
        return undefined;
      }
    };
    await fn(agent.pid, procStats);
  } finally {
    await agent.stop();
    await svm.stop();
    mnt.unmount();
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
}

const FLOOR_SRC = new URL('../../../bench/process/floor-connector.c', import.meta.url).pathname;

/** The connector floor running (compiled into a temporary dir), or why it cannot run here. */
async function withFloor(args: string[], fn: () => Promise<void>): Promise<string | undefined> {
  const dir = fs.mkdtempSync('/tmp/la-pbench-floor-');
  try {
    const bin = path.join(dir, 'floor-connector');
    const cc = spawnSync('cc', ['-O2', '-Wall', '-o', bin, FLOOR_SRC], { encoding: 'utf8', timeout: 120_000 });
    if (cc.status !== 0)
      return `cannot build bench/process/floor-connector.c: ${cc.error?.message ?? cc.stderr.slice(-300)} (Debian: apt-get install gcc)`;
    const floor = spawnWatched(bin, args, { watchdogMs: 900_000 });
    try {
      await waitFor(floor, /ready/, 10_000);
      await fn();
    } finally {
      await floor.stop();
    }
    return undefined;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function measured(config: string, n: number, pid: number | undefined, procStats?: () => ProcStats): Promise<Row> {
  const p0 = procStats?.();
  const c0 = pid ? cpuTicks(pid) : 0;
  const rss0 = pid ? rssKiB(pid) : 0;
  let peak = rss0;
  const sampler = pid ? setInterval(() => (peak = Math.max(peak, rssKiB(pid))), 20) : undefined;
  // The storm runs in a child (spawnSync would block the sampler): a tiny node wrapper.
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    const p = spawnNode(new URL(import.meta.url).pathname, ['--storm', String(n)], { watchdogMs: 600_000 });
    p.child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`storm child exit ${code}: ${p.output()}`))));
  });
  const ms = performance.now() - t0;
  // Give the agent a moment to finish reading the storm's events (counted in its CPU).
  if (pid) await new Promise((r) => setTimeout(r, 300));
  if (sampler) clearInterval(sampler);
  const row: Row = { config, processes: n, stormMs: Math.round(ms), perProcessUs: Math.round((ms * 1000) / n) };
  if (pid) {
    const cpuMs = (cpuTicks(pid) - c0) * TICK_S * 1000;
    row.agentCpuMs = Math.round(cpuMs);
    row.agentCpuPct = Math.round((cpuMs / (ms + 300)) * 1000) / 10;
    row.agentRssStartMiB = Math.round(rss0 / 102.4) / 10;
    row.agentRssPeakMiB = Math.round(peak / 102.4) / 10;
  }
  const p1 = procStats?.();
  if (p0 && p1) {
    const execs = (p1.exec ?? 0) - (p0.exec ?? 0);
    row.execEvents = execs;
    if (execs > 0) row.execReadPct = Math.round((1000 * (execs - ((p1.execGone ?? 0) - (p0.execGone ?? 0)))) / execs) / 10;
  }
  return row;
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  for (const n of counts) rows.push(await measured('no agent', n, undefined));
  const skipped: Record<string, string> = {};
  for (const [config, args] of [
    ['floor: C reader, woken per event', []],
    ['floor: C reader, drains every 2 ms', ['--drain-every-us', '2000']],
  ] as const) {
    const why = await withFloor([...args], async () => {
      for (const n of counts) rows.push(await measured(config, n, undefined));
    });
    if (why) skipped[config] = why;
  }
  await withAgent('off', async (pid) => {
    for (const n of counts) rows.push(await measured('agent, watcher off', n, pid));
  });
  await withAgent('connector', async (pid, procStats) => {
    for (const n of counts) rows.push(await measured('agent, watcher on (connector)', n, pid, procStats));
  });
  for (const r of rows) {
    const off = rows.find((x) => x.config === 'agent, watcher off' && x.processes === r.processes);
    if (off && r.config.startsWith('agent')) r.ratioToWatcherOff = Math.round((r.stormMs / off.stormMs) * 100) / 100;
    const none = rows.find((x) => x.config === 'no agent' && x.processes === r.processes);
    if (none && r !== none) r.ratioToNoAgent = Math.round((r.stormMs / none.stormMs) * 100) / 100;
  }
  process.stdout.write(
    `${'config'.padEnd(36)} ${'procs'.padStart(6)} ${'storm ms'.padStart(9)} ${'us/proc'.padStart(8)} ${'/off'.padStart(6)} ${'/none'.padStart(6)} ${'agent CPU ms'.padStart(12)} ${'CPU %'.padStart(6)} ${'RSS MiB start/peak'.padStart(19)} ${'exec read %'.padStart(11)}\n`,
  );
  for (const r of rows) {
    process.stdout.write(
      `${r.config.padEnd(36)} ${String(r.processes).padStart(6)} ${String(r.stormMs).padStart(9)} ${String(r.perProcessUs).padStart(8)} ${String(r.ratioToWatcherOff ?? '').padStart(6)} ${String(r.ratioToNoAgent ?? '').padStart(6)} ${String(r.agentCpuMs ?? '').padStart(12)} ${String(r.agentCpuPct ?? '').padStart(6)} ${(r.agentRssStartMiB !== undefined ? `${r.agentRssStartMiB}/${r.agentRssPeakMiB}` : '').padStart(19)} ${String(r.execReadPct ?? '').padStart(11)}\n`,
    );
  }
  for (const [k, why] of Object.entries(skipped)) process.stdout.write(`skipped ${k}: ${why}\n`);
  if (values.out) fs.writeFileSync(values.out, JSON.stringify({ time: new Date().toISOString(), rows, skipped }, null, 2));
}

const stormArg = process.argv.indexOf('--storm');
if (stormArg > 0) {
  storm(Number(process.argv[stormArg + 1]));
} else {
  await main();
}
