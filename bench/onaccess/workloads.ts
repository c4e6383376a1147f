/**
 * On-access cost on real file workloads: no agent, lightagent, ClamAV's clamonacc and the floor
 * (a minimal C fanotify listener, see variants.ts), measured side by side in one run, variants
 * alternated (A/B/C/D, then B/C/D/A, ...) every rep.
 *
 *   sudo node build/bench/onaccess/workloads.js [--quick] [--reps N] [--first-reps N] [--only read_warm,copy]
 *        [--variants none,lightagent,clamonacc,floor] [--out FILE] [--dir DIR] [--no-wait]
 *
 * Each variant gets its own ext4 loop mount under DIR (default /tmp/la-bench; another DIR lets
 * two runs share a machine) so marks never overlap, holding a
 * byte-identical copy of:
 *   T/       a tree of real files copied from the system (PROFILES below say which)
 *   T.tgz    that tree as tar + gzip -1 (for `extract`)
 *   PY/      a copy of Python's standard library (/usr/lib/python3.11, for `compileall`)
 *   npm/     a small project whose dependencies are tarballs packed from this repository's
 *            node_modules (file: deps + overrides), its lock file and a warm npm cache: `npm ci
 *            --offline` never touches the network
 *   bin/true a copy of /bin/true (for the 1,000 short processes)
 * Workloads (each with a timeout; each timed run is followed by an untimed wait until the
 * variant's processes are idle, so background scanning never spills into another variant's run):
 *   read_first  find | xargs cat of T, page cache dropped, variant restarted with empty caches
 *               (lightagent: new agent state dir and a new SVM, so every file is uploaded)
 *   read_warm   the same again (caches warm)
 *   copy        cp -a T T2 (T2 removed untimed)
 *   tar_gzip    tar cf - T | gzip -1 > /dev/null
 *   extract     tar xzf T.tgz into a new dir (removed untimed)
 *   copy_then_read, extract_then_read
 *               written, then read: `cp -a T T2` (or the extract into X) untimed, then the wait a
 *               user gives the machine after unpacking (below), then only the read of every file
 *               just written is timed (find | xargs cat). The wait: `sync -f` of the mount, then
 *               until the variant's processes are idle (settle), and for lightagent also until its
 *               gate holds no close-write (status backend.closeWriteFds and inFlight both 0: every
 *               background scan of what was written has ended, and a clean file has its kernel
 *               ignore mark), bounded by WRITTEN_WAIT_MS. The wait is recorded per sample, and
 *               lightagent's permission events during the timed read too. --no-wait: no wait
 *               (read at once, while the background scans of the write still run; writtenWaitMs
 *               0; lightagent restarted fresh before the write, so its content is new), and lightagent's decisions during the read from its link's window counters
 *               (readWindow: foreground requests, their window wait, background ones, scans raised).
 *   exec        N runs of bin/true from the mount (1,000 in the full run)
 *   npm_ci      npm ci --offline --ignore-scripts in npm/ (node_modules removed untimed before)
 *   compileall  /usr/bin/python3 -m compileall -q -f PY (quick: -l, top level only)
 * A protecting variant must block EICAR (a `cat` of it fails) before it is timed; one that does
 * not is reported as broken and not timed. Only these mounts are ever marked; every process
 * started is stopped by pid; the mounts are removed at the end, also on SIGINT/SIGTERM/errors.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  atCleanup,
  CLK_TCK,
  cpuNs,
  dropCaches,
  ext4Mount,
  installCleanup,
  machineFacts,
  needRoot,
  round,
  rssKb,
  say,
  settle,
  shSync,
  sumRssKb,
  sumTicks,
  timed,
  type Timed,
} from '../lib/harness.js';
import { benchArgs } from '../lib/cli.js';
import {
  ClamOnAcc,
  eicarCheck,
  FloorListener,
  LightAgent,
  NoAgent,
  VARIANTS,
  type AgentStatus,
  type Variant,
  type VariantName,
} from './variants.js';

interface Profile {
  /** System directories copied into T. */
  tree: string[];
  reps: number;
  execs: number;
  /** compileall only the top level of PY (-l). */
  compileTopOnly: boolean;
  /** npm packages (and their dependencies) from node_modules that the project depends on. */
  npmRoots: string[];
  timeoutS: number;
}

export const PROFILES: Record<'full' | 'quick', Profile> = {
  // 21,045 files, 413 MB on Debian 12 (measured): >= 20,000 real files.
  full: {
    tree: ['/usr/include', '/usr/share/doc', '/usr/lib/python3', '/usr/lib/python3.11', '/usr/share/perl', '/usr/lib/node_modules'],
    reps: 5,
    execs: 1000,
    compileTopOnly: false,
    npmRoots: ['winston', 'chokidar', 'zod', 'yaml', 'ws', 'commander', 'fast-check'],
    timeoutS: 900,
  },
  // clamonacc costs ~8 ms per file opened here and lightagent's first pass ~7 ms per file
  // (measured), so the 20,000-file tree takes minutes per pass and variant: the quick run uses a
  // small tree (598 files, 9 MB of Python modules) and 300 processes to stay under 5 minutes.
  quick: {
    tree: ['/usr/lib/python3/dist-packages/pygments'],
    reps: 3,
    execs: 300,
    compileTopOnly: true,
    npmRoots: ['yaml', 'ws', 'commander'],
    timeoutS: 240,
  },
};

export const WORKLOADS = [
  'read_first',
  'read_warm',
  'copy',
  'tar_gzip',
  'extract',
  'copy_then_read',
  'extract_then_read',
  'exec',
  'npm_ci',
  'compileall',
] as const;
export type Workload = (typeof WORKLOADS)[number];

export interface Sample {
  workload: Workload;
  variant: VariantName;
  rep: number;
  wall: number;
  rc: number;
  err?: string;
  /** CPU seconds of the variant's own processes during the run and the settle after it. */
  scannerCpuS: number;
  /** ms the variant's processes needed after the run to go idle (background scans). */
  settleMs: number;
  /**
   * lightagent: opens answered without a verdict so far (SVM busy, rate limited, deadline: allowed
   * and queued), files in the deferred queue after the run, and how long the queue took to drain
   * (waited for, untimed, so that the next run does not pay for it).
   */
  agent?: { unavailable: number; deadline: number; queued: number; drainMs: number };
  /** *_then_read: ms waited between the untimed write and the timed read (-1: the bound ran out). */
  writtenWaitMs?: number;
  /** *_then_read under lightagent: permission events (open + exec) the kernel raised during the timed read. */
  readEvents?: number;
  /**
   * *_then_read under lightagent, from status before and after the timed read: the link's
   * foreground requests (decisions) and their window wait, background requests, background scans
   * raised by an open, and the gate's answer times after the read.
   */
  readWindow?: {
    fgRequests: number;
    fgAtOnce: number;
    fgWaitMsTotal: number;
    bgRequests: number;
    raised: number;
    answerP50Us: number;
    answerP99Us: number;
  };
}

export interface WorkloadsResult {
  machine: ReturnType<typeof machineFacts>;
  profile: string;
  config: Profile;
  tree: { files: number; mb: number; from: string[]; pyFiles: number; npmPackages: number };
  variants: Record<VariantName, { broken?: string; eicar?: string; note?: string }>;
  samples: Sample[];
  resources: Record<string, unknown>;
  eventsPerWarmOpen?: { events: number; opens: number; perOpen: number };
  agentStatus?: Record<string, unknown>;
  wallS: number;
}

let BASE = '/tmp/la-bench';

/** Permission events the agent's gate has seen (open + exec). */
/** The link's window counters between two statuses (see Sample.readWindow). */
function windowDelta(a: AgentStatus, b: AgentStatus): Sample['readWindow'] {
  const wa = a.svm?.window;
  const wb = b.svm?.window;
  if (!wa || !wb) return undefined;
  return {
    fgRequests: wb.foreground.admitted - wa.foreground.admitted,
    fgAtOnce: wb.foreground.atOnce - wa.foreground.atOnce,
    fgWaitMsTotal: Math.round((wb.foreground.waitedMsTotal - wa.foreground.waitedMsTotal) * 10) / 10,
    bgRequests: wb.background.admitted - wa.background.admitted,
    raised: wb.raised - wa.raised,
    answerP50Us: Number(b.backend?.answerP50Us ?? 0),
    answerP99Us: Number(b.backend?.answerP99Us ?? 0),
  };
}

const permEvents = (s: AgentStatus) => Number(s.backend?.open ?? 0) + Number(s.backend?.exec ?? 0);

/**
 * After an untimed write: the time a user gives the machine before reading what was just written.
 * Every variant: its processes idle (settle). lightagent: also its gate holding no close-write
 * (backend.closeWriteFds 0: every background scan of the written files has ended and closed its
 * fd, clean ones marked; inFlight 0: no decision or scan running), then idle again. ms waited, or
 * -1 if WRITTEN_WAIT_MS ran out first (the timed read then pays for what was left).
 */
async function writtenSettled(v: Variant): Promise<number> {
  const t0 = performance.now();
  await settle(v.pids(), WRITTEN_WAIT_MS);
  if (v instanceof LightAgent) {
    for (;;) {
      const b = (await v.status()).backend ?? {};
      if (Number(b.closeWriteFds ?? 0) === 0 && Number(b.inFlight ?? 0) === 0) break;
      if (performance.now() - t0 > WRITTEN_WAIT_MS) return -1;
      await new Promise((r) => setTimeout(r, 100));
    }
    await settle(v.pids(), WRITTEN_WAIT_MS);
  }
  return Math.round(performance.now() - t0);
}
const NM = new URL('../../../node_modules', import.meta.url).pathname;

/** The staging copy everything is cloned from: T, T.tgz, PY, npm, bin. */
function stage(dir: string, p: Profile): WorkloadsResult['tree'] {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.join(dir, 'T'), { recursive: true });
  for (const d of p.tree) if (fs.existsSync(d)) shSync(`cp -a '${d}' 'T/${d.replaceAll('/', '_')}'`, { cwd: dir });
  shSync('tar cf - T | gzip -1 > T.tgz', { cwd: dir });
  shSync('cp -a /usr/lib/python3.11 PY && find PY -name __pycache__ -prune -exec rm -rf {} +', { cwd: dir });
  fs.mkdirSync(path.join(dir, 'bin'));
  fs.copyFileSync('/bin/true', path.join(dir, 'bin/true'));
  fs.chmodSync(path.join(dir, 'bin/true'), 0o755);
  // npm project: every package of the closure packed as a tarball, each a file: dependency, and an
  // override per package so nested ranges resolve to those tarballs too (no registry needed).
  const npm = path.join(dir, 'npm');
  fs.mkdirSync(path.join(npm, 'pkgs'), { recursive: true });
  const seen = new Map<string, string>();
  const queue = [...p.npmRoots];
  while (queue.length) {
    const n = queue.shift()!;
    if (seen.has(n)) continue;
    const pj = JSON.parse(fs.readFileSync(path.join(NM, n, 'package.json'), 'utf8')) as {
      version: string;
      dependencies?: Record<string, string>;
    };
    seen.set(n, pj.version);
    queue.push(...Object.keys(pj.dependencies ?? {}));
  }
  const deps: Record<string, string> = {};
  for (const [n, v] of seen) {
    const f = `${n.replace('/', '-').replace('@', '')}-${v}.tgz`;
    execFileSync(
      'tar',
      ['czf', path.join(npm, 'pkgs', f), '-C', path.join(NM, n), '--exclude', './node_modules', '--transform', 's,^\\.,package,', '.'],
      { timeout: 120_000 },
    );
    deps[n] = `file:pkgs/${f}`;
  }
  const overrides = Object.fromEntries(Object.keys(deps).map((n) => [n, `$${n}`]));
  fs.writeFileSync(
    path.join(npm, 'package.json'),
    JSON.stringify({ name: 'bench-npm-project', version: '1.0.0', private: true, dependencies: deps, overrides }, null, 2),
  );
  shSync(`${NPM_CI.replace('npm ci', 'npm install')} && rm -rf node_modules`, { cwd: npm, timeoutS: 300 });
  fs.mkdirSync(path.join(dir, 'canary'));
  const files = Number(shSync('find T -type f | wc -l', { cwd: dir }).trim());
  const mb = Number(shSync('du -sm T | cut -f1', { cwd: dir }).trim());
  const pyFiles = Number(shSync("find PY -name '*.py' | wc -l", { cwd: dir }).trim());
  return { files, mb, from: p.tree, pyFiles, npmPackages: seen.size };
}

const NPM_CI = 'npm ci --offline --ignore-scripts --no-audit --no-fund --no-update-notifier --loglevel=error --cache ../npm-cache';
const readAll = (dir: string) => `find ${dir} -type f -print0 | xargs -0 cat > /dev/null`;
const RD = readAll('T');
/** *_then_read: the most the bench waits after the write for the variant to be done with it. */
const WRITTEN_WAIT_MS = 60_000;

/** `written`: pre writes files and cmd reads them; the bench waits in between (writtenSettled). */
function command(w: Workload, p: Profile): { pre?: string; cmd: string; post?: string; written?: boolean } {
  switch (w) {
    case 'read_first':
    case 'read_warm':
      return { cmd: RD };
    case 'copy':
      return { pre: 'rm -rf T2', cmd: 'cp -a T T2', post: 'rm -rf T2' };
    case 'tar_gzip':
      // Through a pipe: GNU tar skips reading file contents when its output is /dev/null itself.
      return { cmd: 'tar cf - T | gzip -1 > /dev/null' };
    case 'extract':
      return { pre: 'rm -rf X', cmd: 'mkdir X && tar xzf T.tgz -C X', post: 'rm -rf X' };
    case 'copy_then_read':
      return { pre: 'rm -rf T2 && cp -a T T2 && sync -f .', cmd: readAll('T2'), post: 'rm -rf T2', written: true };
    case 'extract_then_read':
      return { pre: 'rm -rf X && mkdir X && tar xzf T.tgz -C X && sync -f .', cmd: readAll('X'), post: 'rm -rf X', written: true };
    case 'exec':
      return { cmd: `for i in $(seq ${p.execs}); do ./bin/true; done` };
    case 'npm_ci':
      return { pre: 'rm -rf npm/node_modules', cmd: `cd npm && ${NPM_CI}` };
    case 'compileall':
      return { cmd: `/usr/bin/python3 -m compileall -q -f ${p.compileTopOnly ? '-l ' : ''}PY` };
  }
}

async function main(): Promise<void> {
  const parsed = benchArgs(
    {
      name: 'bench/onaccess/workloads',
      root: true,
      summary: `On-access cost on real file workloads (read, copy, tar, extract, written then read, exec, npm ci,
compileall): no agent, lightagent, clamonacc and the floor, each on its own ext4 loop mount,
alternated every rep. The workloads step of npm run bench; docs/benchmarks.md, "What runs".`,
    },
    {
      quick: {
        type: 'boolean',
        default: false,
        help: `the quick profile: a small tree, ${PROFILES.quick.reps} reps instead of ${PROFILES.full.reps}, ${PROFILES.quick.execs} processes instead of ${PROFILES.full.execs}`,
      },
      reps: { type: 'string', arg: 'N', number: 'int', min: 1, help: "reps of each workload (default: the profile's)" },
      'first-reps': {
        type: 'string',
        arg: 'N',
        number: 'int',
        min: 1,
        help: 'reps of read_first, each a restart with empty caches (default: --reps)',
      },
      only: {
        type: 'string',
        arg: 'W,W',
        help: `only these workloads, and read_first, which starts the variants: ${WORKLOADS.filter((w) => w !== 'read_first').join(', ')}`,
      },
      variants: { type: 'string', arg: 'V,V', help: `only these variants: ${VARIANTS.join(', ')}` },
      out: { type: 'string', arg: 'FILE', help: 'write the result as JSON there (default: DIR/workloads.json)' },
      dir: { type: 'string', arg: 'DIR', help: `where the loop mounts go, so that two runs can share a machine (default: ${BASE})` },
      'no-wait': {
        type: 'boolean',
        default: false,
        help: '*_then_read: read at once after the write, while its background scans still run (lightagent restarted fresh before each write)',
      },
    },
  );
  const args = parsed.values;
  // A misspelt name would otherwise stage the tree and mount everything, then run nothing on it.
  const unknown = (list: string | undefined, known: readonly string[]) => list?.split(',').filter((x) => !known.includes(x)) ?? [];
  const badWorkloads = unknown(args.only, WORKLOADS);
  if (badWorkloads.length) parsed.usageError(`--only: no workload named ${badWorkloads.join(', ')} (workloads: ${WORKLOADS.join(', ')})`);
  const badVariants = unknown(args.variants, VARIANTS);
  if (badVariants.length) parsed.usageError(`--variants: no variant named ${badVariants.join(', ')} (variants: ${VARIANTS.join(', ')})`);
  if (args.dir) BASE = path.resolve(args.dir);
  needRoot('bench/onaccess/workloads', 'fanotify permission events, loop mounts, dropping the page cache');
  const t0 = performance.now();
  const profileName = args.quick ? 'quick' : 'full';
  const p: Profile = { ...PROFILES[profileName] };
  if (args.reps) p.reps = Number(args.reps);
  const limitMs = (args.quick ? 15 : 240) * 60_000;
  installCleanup('bench/onaccess/workloads', limitMs);
  const only = args.only ? new Set(args.only.split(',')) : undefined;
  // read_first always runs: it (re)starts the variants.
  const workloads = WORKLOADS.filter((w) => w === 'read_first' || !only || only.has(w));
  const wanted = (args.variants?.split(',') ?? [...VARIANTS]) as VariantName[];

  fs.mkdirSync(BASE, { recursive: true });
  for (const f of ['agent.log', 'agent.log.svm']) fs.rmSync(path.join(BASE, f), { force: true });
  say(`staging the tree (${profileName}: ${p.tree.join(' ')})`);
  const stageDir = path.join(BASE, 'stage');
  const tree = stage(stageDir, p);
  atCleanup(() => fs.rmSync(stageDir, { recursive: true, force: true }));
  say(`tree: ${tree.files} files, ${tree.mb} MB; PY ${tree.pyFiles} .py files; npm project of ${tree.npmPackages} packages`);
  const sizeMb = Math.max(1024, Math.ceil(tree.mb * 4 + 800));

  const status = Object.fromEntries(VARIANTS.map((v) => [v, {}])) as WorkloadsResult['variants'];
  const variants: Variant[] = [];
  for (const name of wanted) {
    const root = path.join(BASE, name);
    ext4Mount(path.join(BASE, `${name}.img`), root, sizeMb);
    shSync(`cp -a '${stageDir}/.' '${root}/'`, { timeoutS: 900 });
    if (name === 'none') variants.push(new NoAgent(root));
    if (name === 'lightagent')
      variants.push(new LightAgent(root, path.join(BASE, 'agent-state'), path.join(BASE, 'agent.log'), limitMs + 60_000));
    if (name === 'clamonacc') {
      const missing = ClamOnAcc.installed();
      if (missing) status.clamonacc.broken = `not run: ${missing}`;
      else variants.push(new ClamOnAcc(root, path.join(BASE, 'clamav')));
    }
    if (name === 'floor') {
      const missing = FloorListener.missing();
      if (missing) status.floor.broken = `not run: ${missing}`;
      else variants.push(new FloorListener(root, path.join(BASE, 'floor-build')));
    }
  }
  atCleanup(() => fs.rmSync(path.join(BASE, 'agent-state'), { recursive: true, force: true }));
  atCleanup(() => fs.rmSync(path.join(BASE, 'floor-build'), { recursive: true, force: true }));
  const samples: Sample[] = [];
  const active = () => variants.filter((v) => !status[v.name].broken);
  const order = (rep: number) => {
    const vs = active();
    const k = (rep - 1) % Math.max(1, vs.length);
    return [...vs.slice(k), ...vs.slice(0, k)];
  };
  const resources: Record<string, { idleAfterStartRssKb?: number[]; idleAfterStartAnonKb?: number[]; [field: string]: unknown }> = {};
  const peakKb: Record<string, number> = {};

  const runOne = async (v: Variant, w: Workload, rep: number) => {
    const c = command(w, p);
    // --no-wait: the content written must be new to the agent (as in the report of a read at once
    // after an extract): a fresh agent and SVM, untimed, so every close-write is an upload.
    if (args['no-wait'] && c.written && v instanceof LightAgent) await v.start();
    if (c.pre) {
      const pre = await timed(c.pre, v.root, p.timeoutS);
      if (c.written && pre.rc !== 0) {
        // Nothing to read: a failed sample (not in the medians), and the run goes on.
        const err = `the untimed write failed: ${(pre.err || `exit ${pre.rc}`).slice(0, 200)}`;
        samples.push({ workload: w, variant: v.name, rep, wall: 0, rc: pre.rc || 1, err, scannerCpuS: 0, settleMs: 0 });
        say(`${w} ${v.name} #${rep}: ERR ${err}`);
        if (c.post) await timed(c.post, v.root, p.timeoutS);
        return;
      }
    }
    const writtenWaitMs = c.written ? (args['no-wait'] ? 0 : await writtenSettled(v)) : undefined;
    const st0 = c.written && v instanceof LightAgent ? await v.status() : undefined;
    const before = st0 ? permEvents(st0) : undefined;
    const pids = v.pids();
    const cpu0 = sumTicks(pids);
    const sampler = setInterval(() => (peakKb[v.name] = Math.max(peakKb[v.name] ?? 0, sumRssKb(pids))), 100);
    let r: Timed;
    try {
      r = await timed(c.cmd, v.root, p.timeoutS);
    } finally {
      clearInterval(sampler);
    }
    const settleMs = await settle(pids);
    let agent: Sample['agent'];
    let readEvents: number | undefined;
    let readWindow: Sample['readWindow'];
    if (v instanceof LightAgent) {
      const st = await v.status();
      if (before !== undefined) readEvents = permEvents(st) - before;
      if (st0) readWindow = windowDelta(st0, st);
      const queued = Number(st.deferredQueue ?? 0);
      const td = performance.now();
      let left = queued;
      // The agent drains its queue every 30 s (and on reconnect): wait for it, bounded.
      while (left > 0 && performance.now() - td < 120_000) {
        await new Promise((r) => setTimeout(r, 1000));
        left = Number((await v.status()).deferredQueue ?? 0);
      }
      if (queued) await settle(pids);
      agent = {
        unavailable: Number(st.counts?.unavailable ?? 0),
        deadline: Number(st.counts?.deadline ?? 0),
        queued,
        drainMs: left ? -1 : Math.round(performance.now() - td),
      };
    }
    const scannerCpuS = round((sumTicks(pids) - cpu0) / CLK_TCK);
    if (c.post) await timed(c.post, v.root, p.timeoutS);
    const s: Sample = {
      workload: w,
      variant: v.name,
      rep,
      wall: round(r.wall, 3),
      rc: r.rc,
      scannerCpuS,
      settleMs,
      ...(agent ? { agent } : {}),
      ...(writtenWaitMs !== undefined ? { writtenWaitMs } : {}),
      ...(readEvents !== undefined ? { readEvents } : {}),
      ...(readWindow ? { readWindow } : {}),
    };
    if (r.rc !== 0) s.err = r.err || `exit ${r.rc}${r.rc === 124 ? ` (timeout ${p.timeoutS} s)` : ''}`;
    samples.push(s);
    say(
      `${w} ${v.name} #${rep}: ${r.wall.toFixed(2)} s rc=${r.rc}${writtenWaitMs !== undefined ? ` (after a ${writtenWaitMs} ms wait${readEvents !== undefined ? `; ${readEvents} permission events in the timed read` : ''})` : ''} scanner CPU ${scannerCpuS} s, settle ${settleMs} ms${agent ? `; agent: ${agent.unavailable} opens without verdict so far, ${agent.queued} queued${agent.queued ? `, drained in ${agent.drainMs} ms` : ''}` : ''}${s.err ? ` ERR ${s.err.slice(0, 200)}` : ''}`,
    );
  };

  // read_first: every rep restarts each variant with empty caches and a dropped page cache.
  const firstReps = Number(args['first-reps'] ?? p.reps);
  for (let rep = 1; rep <= firstReps; rep++) {
    for (const v of order(rep)) {
      await v.stop();
      dropCaches();
      await v.start();
      if (rep === 1) {
        const e = await eicarCheck(v);
        status[v.name].eicar = e.detail;
        if (v.name !== 'none' && !e.blocked) {
          status[v.name].broken = `does not block EICAR: ${e.detail}`;
          say(`${v.name} is BROKEN (not timed): ${e.detail}`);
          await v.stop();
          continue;
        }
        if (v.name === 'none' && e.blocked) throw new Error(`EICAR check without any scanner failed: ${e.detail}`);
        await settle(v.pids());
        resources[v.name] = {
          idleAfterStartRssKb: v.pids().map((pid) => rssKb(pid)),
          idleAfterStartAnonKb: v.pids().map((pid) => rssKb(pid, 'RssAnon')),
        };
        dropCaches();
      }
      await runOne(v, 'read_first', rep);
    }
  }
  // Every other workload with the variants running and warm. read_first dropped the page cache
  // before each start: one untimed pass over each tree first, so that no variant's first warm
  // rep reads from disk.
  for (const v of active()) {
    await timed(RD, v.root, p.timeoutS);
    await settle(v.pids());
  }
  const la = active().find((v): v is LightAgent => v.name === 'lightagent');
  let events: WorkloadsResult['eventsPerWarmOpen'];
  for (const w of workloads.filter((x) => x !== 'read_first')) {
    for (let rep = 1; rep <= p.reps; rep++) {
      for (const v of order(rep)) {
        const last = w === 'read_warm' && rep === p.reps && v === la;
        const before = last ? await la!.status() : undefined;
        await runOne(v, w, rep);
        if (last) {
          const after = await la!.status();
          const n = permEvents(after) - permEvents(before!);
          events = { events: n, opens: tree.files, perOpen: round(n / tree.files, 5) };
        }
      }
    }
  }

  // Idle: all quiet, then CPU over a window and RSS, per process.
  for (const v of active()) await settle(v.pids());
  const windowS = args.quick ? 5 : 30;
  // Exact CPU time (schedstat ns), not clock ticks: one 10 ms tick is 0.2% of a 5 s window.
  const idle0 = Object.fromEntries(active().flatMap((v) => v.pids().map((pid) => [pid, cpuNs(pid)])));
  await new Promise((r) => setTimeout(r, windowS * 1000));
  for (const v of active()) {
    if (v.name === 'none') continue;
    const names = v instanceof LightAgent ? ['agent', 'svm'] : v instanceof FloorListener ? ['listener'] : ['clamd', 'clamonacc'];
    const per: Record<string, unknown> = {};
    v.pids().forEach((pid, i) => {
      per[names[i]!] = {
        idleCpuPct: round((((cpuNs(pid) - idle0[pid]!) / 1e9) * 100) / windowS, 2),
        rssKbAfterLoad: rssKb(pid),
        idleRssKbAfterStart: resources[v.name]?.idleAfterStartRssKb?.[i],
        idleAnonKbAfterStart: resources[v.name]?.idleAfterStartAnonKb?.[i],
      };
    });
    resources[v.name] = {
      ...per,
      peakRssKbUnderLoad: peakKb[v.name],
      idleWindowS: windowS,
      cpuSUnderLoad: round(samples.filter((s) => s.variant === v.name).reduce((a, s) => a + s.scannerCpuS, 0)),
    };
  }
  const agentStatus = la ? await la.status() : undefined;
  for (const v of variants) await v.stop();
  if (status.clamonacc && !status.clamonacc.broken && wanted.includes('clamonacc'))
    status.clamonacc.note = 'OnAccessIncludePath + OnAccessPrevention, --fdpass, OnAccessMaxFileSize 5M (files over 5 MB are not scanned)';

  const result: WorkloadsResult = {
    machine: machineFacts(),
    profile: profileName,
    config: p,
    tree,
    variants: status,
    samples,
    resources,
    ...(events ? { eventsPerWarmOpen: events } : {}),
    ...(agentStatus ? { agentStatus: { cache: agentStatus.cache, counts: agentStatus.counts, backend: agentStatus.backend } } : {}),
    wallS: round((performance.now() - t0) / 1000, 1),
  };
  const out = args.out ?? path.join(BASE, 'workloads.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(result, null, 2));
  say(`workloads done in ${result.wallS} s; written ${out}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench/onaccess/workloads failed: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
