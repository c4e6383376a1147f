/**
 * Boot storm (issue #23 item 4): N guests start at once against one SVM and each reads its whole
 * tree once. A guest is a `lightagent run` daemon with its own state dir and its own copy of the
 * tree on its own tmpfs (a fanotify mount mark covers a whole mount, so guests never share one;
 * every mount has its own st_dev).
 *
 *   none        no agent: the N readers at once, nothing watches (the ratio's base)
 *   cold        empty caches everywhere: a fresh SVM, fresh state dirs; the first guest to ask
 *               about a file uploads it, the others should be SVM cache hits
 *   sealed      each guest's state dir made by `lightagent seal` for its own mount (against a
 *               separate SVM, stopped before the storm); the storm's SVM is fresh, so every
 *               lookup or byte it sees is one the inherited cache did not answer
 *   none-again  no agent, after everything (drift check)
 *
 * In each variant the N agents start at once (their start-up is the boot), then, once every one
 * is connected to the SVM, N reader processes (one per guest) open+read+close every file of
 * their guest's tree once, all released at the same instant. Per guest: the pass's wall time and
 * each open()'s latency. For the SVM: CPU, peak RSS (VmHWM of a process started for the variant),
 * bytes received, lookups, uploads, cache hits, and RSS per connected agent ((RSS with N agents
 * connected, settled - RSS idle before the first agent) / N).
 *
 * Every agent has a watchdog process (SIGKILL after the step's time limit, even if this process
 * is frozen); agents, SVMs, readers and mounts are cleaned up on exit, SIGTERM and failure.
 *
 *   sudo node build/bench/fleet/boot-storm.js [--guests 20] [--files 300] [--variants cold,sealed] [--out FILE]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  atCleanup,
  cpuNs,
  installCleanup,
  machineFacts,
  median,
  needRoot,
  pct,
  round,
  rssKb,
  say,
  settle,
  shSync,
  stopChild,
  track,
  productNode,
} from '../lib/harness.js';
import { benchArgs } from '../lib/cli.js';
import { agentStatus, eicarCheck, metric, metricIn, metricsText, startAgent, startSvm, svmUrls, TOKEN } from '../onaccess/variants.js';

const CLI = new URL('../../src/cli/lightagent.js', import.meta.url).pathname;

export interface PassStats {
  /** Per guest wall of the pass, ms: median and worst (max). */
  wallMs: { median: number; worst: number };
  /** open() latency over every open of every guest, us. */
  openUs: { p50: number; p99: number };
  /** Readers that began after the common start instant (ms late, max): the storm's spread. */
  maxStartLagMs: number;
}

export interface StormVariant extends PassStats {
  variant: 'cold' | 'sealed';
  /** Every guest's first-pass wall, ms. */
  walls: number[];
  /** Guest wall / median no-agent wall: median and worst guest. */
  ratio: { median: number; worst: number };
  addedOpenUs: { p50: number; p99: number };
  agentStartMs: { median: number; max: number };
  svm: {
    cpuS: number;
    cpuSPass: number;
    peakRssMb: number;
    /** After every agent left (settled); idleRssBeforeMb: before the first came (start-up garbage included). */
    idleRssMb: number;
    idleRssBeforeMb: number;
    connectedRssMb: number;
    rssPerAgentKb: number;
    bytesReceived: number;
    lookups: number;
    uploads: number;
    cacheHits: number;
    scans: number;
    /** Held lookups released without a verdict during the pass, by reason (each made its agent upload). */
    released?: Record<string, number>;
  };
  agents: { rssMbMedian: number; counts: Record<string, number> };
  eicar: string;
  seal?: { seconds: number; cacheEntriesMedian: number; uploadedBytes: number };
}

export interface BootStormResult {
  machine: ReturnType<typeof machineFacts>;
  guests: number;
  filesPerGuest: number;
  treeBytes: number;
  /** The no-agent passes pooled (before cold, before sealed, after both). */
  none: PassStats;
  /** Median guest wall of each no-agent pass, ms, in order: the drift. */
  nonePasses: number[];
  variants: StormVariant[];
}

// One reader per guest: waits for the common start instant (GO_AT, epoch ms), then opens, reads
// and closes every listed file once; prints {wallMs, lagMs, lat: [us per open]}.
const READER = `
const fs = require('fs');
const files = fs.readFileSync(0, 'utf8').split('\\n').filter(Boolean);
const go = Number(process.env.GO_AT);
const buf = Buffer.allocUnsafe(1 << 16);
function run() {
  const lagMs = Math.max(0, Date.now() - go);
  const lat = new Array(files.length);
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < files.length; i++) {
    const t = process.hrtime.bigint();
    const fd = fs.openSync(files[i], 'r');
    lat[i] = Number(process.hrtime.bigint() - t) / 1000;
    while (fs.readSync(fd, buf, 0, buf.length, null) > 0);
    fs.closeSync(fd);
  }
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  process.stdout.write(JSON.stringify({ wallMs, lagMs, lat }));
}
const wait = go - Date.now();
if (wait > 0) setTimeout(run, wait); else run();
`;

interface Guest {
  i: number;
  mnt: string;
  files: string[];
}

interface ReaderOut {
  wallMs: number;
  lagMs: number;
  lat: number[];
}

function reader(files: string[], goAt: number, timeoutMs: number): Promise<ReaderOut> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, ['-e', READER], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, GO_AT: String(goAt) } });
    track(c, 'reader');
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.once('close', (code, sig) => {
      // 'close': stdout read to its end ('exit' can come first)
      clearTimeout(t);
      if (code !== 0) reject(new Error(`reader exited ${code ?? sig}: ${err.slice(-500)}`));
      else resolve(JSON.parse(out) as ReaderOut);
    });
    c.stdin.end(files.join('\n'));
  });
}

/** All guests' readers released at the same instant (after every reader process is up). */
async function stormPass(guests: Guest[], timeoutMs: number): Promise<{ stats: PassStats; walls: number[]; lat: number[] }> {
  const goAt = Date.now() + Math.max(2000, guests.length * 250); // time for N Node processes to start on this machine
  const outs = await Promise.all(guests.map((g) => reader(g.files, goAt, timeoutMs)));
  const walls = outs.map((o) => o.wallMs);
  const lat = outs.flatMap((o) => o.lat);
  return {
    walls,
    lat,
    stats: {
      wallMs: { median: round(median(walls), 1), worst: round(Math.max(...walls), 1) },
      openUs: { p50: round(pct(lat, 0.5), 1), p99: round(pct(lat, 0.99), 1) },
      maxStartLagMs: Math.round(Math.max(...outs.map((o) => o.lagMs))),
    },
  };
}

/** The SVM's counters of one /metrics read, and its held lookups released by reason. */
async function svmMetrics(url: string): Promise<{ counts: Record<string, number>; released: Record<string, number> }> {
  const names = {
    bytesReceived: 'lightagent_svm_bytes_received_total',
    lookups: 'lightagent_svm_lookups_total',
    uploads: 'lightagent_svm_uploads_total',
    cacheHits: 'lightagent_svm_cache_hits_total',
    scans: 'lightagent_svm_scans_total',
    connected: 'lightagent_svm_agents_connected',
  };
  const text = await metricsText(url);
  const released: Record<string, number> = {};
  for (const m of text.matchAll(/^lightagent_svm_lookups_released_total\{reason="([a-z-]+)"\} ([0-9.e+]+)$/gm))
    released[m[1]!] = Number(m[2]);
  return { counts: Object.fromEntries(Object.entries(names).map(([k, n]) => [k, metricIn(text, n)])), released };
}

/**
 * The least VmRSS of `pid` over 20 readings 100 ms apart: the SVM's RSS swings by a few MB with
 * its garbage collections, as much as 20 connections add; the low point is its live memory.
 */
async function minRss(pid: number): Promise<number> {
  let min = Infinity;
  for (let i = 0; i < 20; i++) {
    min = Math.min(min, rssKb(pid));
    await new Promise((r) => setTimeout(r, 100));
  }
  return min;
}

/** Run `fn` over `items` with at most `limit` at once. */
async function pool<T, R>(items: T[], limit: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) {
        const k = next++;
        out[k] = await fn(items[k]!);
      }
    }),
  );
  return out;
}

/** `lightagent seal` for one guest: its own config (state dir, its mount), against `url`. */
function sealGuest(work: string, g: Guest, url: string, timeoutMs: number): Promise<{ cacheEntries: number; uploadedBytes: number }> {
  const stateDir = path.join(work, `state-sealed-${g.i}`);
  fs.rmSync(stateDir, { recursive: true, force: true });
  const cfg = path.join(work, `seal-${g.i}.yaml`);
  fs.writeFileSync(cfg, `state_dir: ${stateDir}\nprotect:\n  - ${g.mnt}\nlog:\n  file: ${path.join(work, `seal-${g.i}.log`)}\n`);
  return new Promise((resolve, reject) => {
    const c = spawn(productNode().path, [CLI, 'seal', '--config', cfg, '--svm', url, '--token', TOKEN, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    track(c, 'seal');
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.once('close', (code, sig) => {
      // 'close': stdout read to its end ('exit' can come first)
      clearTimeout(t);
      if (code !== 0) return reject(new Error(`seal of guest ${g.i} exited ${code ?? sig}: ${err.slice(-500)} ${out.slice(-500)}`));
      const s = JSON.parse(out) as { sealed: boolean; cacheEntries?: number; scan?: { uploadedBytes: number } };
      if (!s.sealed) return reject(new Error(`guest ${g.i} not sealed: ${out.slice(0, 500)}`));
      resolve({ cacheEntries: s.cacheEntries ?? 0, uploadedBytes: s.scan?.uploadedBytes ?? 0 });
    });
  });
}

async function variant(name: 'cold' | 'sealed', work: string, guests: Guest[], limitMs: number): Promise<StormVariant> {
  let seal: StormVariant['seal'];
  if (name === 'sealed') {
    // The templates are sealed against their own SVM; the storm's SVM below starts empty.
    const ts = performance.now();
    const sealSvm = startSvm(path.join(work, 'svm-seal.log'));
    try {
      const { url } = await svmUrls(sealSvm);
      const r = await pool(guests, 4, (g) => sealGuest(work, g, url, 300_000));
      seal = {
        seconds: round((performance.now() - ts) / 1000, 1),
        cacheEntriesMedian: median(r.map((x) => x.cacheEntries)),
        uploadedBytes: r.reduce((s, x) => s + x.uploadedBytes, 0),
      };
    } finally {
      await stopChild(sealSvm);
    }
    say(`boot-storm: sealed ${guests.length} templates in ${seal.seconds} s (cache entries per guest ${seal.cacheEntriesMedian})`);
  }
  const svm = startSvm(path.join(work, `svm-${name}.log`));
  const agents: Array<{ child: ChildProcess; stateDir: string }> = [];
  try {
    const { url, metrics } = await svmUrls(svm);
    const svmPid = svm.pid!;
    await settle([svmPid], 5000);
    const idleRss = await minRss(svmPid);
    const cpu0 = cpuNs(svmPid);
    const t0 = performance.now();
    const startMs: number[] = [];
    await Promise.all(
      guests.map(async (g) => {
        const stateDir = path.join(work, `state-${name}-${g.i}`);
        const a = await startAgent({
          url,
          protect: g.mnt,
          stateDir,
          logFile: path.join(work, `agent-${name}-${g.i}.log`),
          fresh: name === 'cold',
          startTimeoutMs: 60_000 + guests.length * 1000,
          watchdogMs: limitMs,
        });
        a.stdout!.resume(); // never let a full pipe block it
        agents.push({ child: a, stateDir });
        startMs.push(performance.now() - t0);
      }),
    );
    for (let i = 0; ; i++) {
      const c = await metric(metrics, 'lightagent_svm_agents_connected');
      if (c >= guests.length) break;
      if (i > 600) throw new Error(`only ${c} of ${guests.length} agents connected to the SVM after 60 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await settle([svmPid], 10_000);
    const before = await svmMetrics(metrics);
    const cpu1 = cpuNs(svmPid);
    say(`boot-storm ${name}: ${guests.length} agents started (median ${round(median(startMs) / 1000, 1)} s), connected; first pass`);
    const pass = await stormPass(guests, limitMs);
    const cpu2 = cpuNs(svmPid);
    await settle([svmPid], 10_000); // verdicts of opens allowed unscanned, if any, arrive late
    const after = await svmMetrics(metrics);
    const cpu3 = cpuNs(svmPid);
    const counts: Record<string, number> = {};
    const agentRss = agents.map((a) => rssKb(a.child.pid!));
    // Sum of the agents' on-access counters (SIGUSR2 status), a few at a time.
    const statuses = await pool(agents, 8, (a) => agentStatus(a.child, a.stateDir).catch(() => undefined));
    for (const s of statuses)
      for (const [k, v] of Object.entries(s?.counts ?? {})) if (typeof v === 'number') counts[k] = (counts[k] ?? 0) + v;
    // RSS per connected agent: with the N agents connected (settled, after the pass) minus after
    // they all left (settled): both after the SVM's start-up garbage is gone, which the RSS
    // before the first agent still held (read first: RSS with N connected came out below it).
    await settle([svmPid], 5000);
    const connectedRss = await minRss(svmPid);
    const eicar = await eicarCheck({
      name: 'lightagent',
      root: guests[0]!.mnt,
      start: async () => {},
      stop: async () => {},
      pids: () => [],
    });
    await Promise.all(agents.map((a) => stopChild(a.child)));
    // The canary stays unless the agent quarantined it before it stopped: the next variant's seal
    // of this tree would then find it and (rightly) refuse. Removed by a child process, as it was
    // written (this process opens nothing on the guests' mounts).
    spawnSync('rm', ['-rf', path.join(guests[0]!.mnt, 'canary')], { timeout: 30_000 });
    await settle([svmPid], 5000);
    const leftRss = await minRss(svmPid);
    const d = (k: string) => after.counts[k]! - before.counts[k]!;
    return {
      variant: name,
      walls: pass.walls.map((w) => round(w, 1)),
      ...pass.stats,
      ratio: { median: NaN, worst: NaN }, // filled in by main() against every no-agent pass
      addedOpenUs: { p50: NaN, p99: NaN },
      agentStartMs: { median: Math.round(median(startMs)), max: Math.round(Math.max(...startMs)) },
      svm: {
        cpuS: round((cpu3 - cpu0) / 1e9, 2),
        cpuSPass: round((cpu2 - cpu1) / 1e9, 2),
        peakRssMb: round(rssKb(svmPid, 'VmHWM') / 1024, 1),
        idleRssMb: round(leftRss / 1024, 1),
        idleRssBeforeMb: round(idleRss / 1024, 1),
        connectedRssMb: round(connectedRss / 1024, 1),
        rssPerAgentKb: Math.round((connectedRss - leftRss) / guests.length),
        // Counted from before the pass (the agents' hello and start-up are not requests).
        bytesReceived: d('bytesReceived'),
        lookups: d('lookups'),
        uploads: d('uploads'),
        cacheHits: d('cacheHits'),
        scans: d('scans'),
        released: Object.fromEntries(Object.entries(after.released).map(([k, v]) => [k, v - (before.released[k] ?? 0)])),
      },
      agents: { rssMbMedian: round(median(agentRss) / 1024, 1), counts },
      eicar: eicar.blocked ? 'blocked' : `NOT blocked: ${eicar.detail}`,
      ...(seal ? { seal } : {}),
    };
  } finally {
    await Promise.all(agents.map((a) => stopChild(a.child)));
    await stopChild(svm);
  }
}

function table(r: BootStormResult): string {
  let md = `${r.guests} guests, ${r.filesPerGuest} files each (${r.treeBytes} bytes per tree, every file distinct), one tmpfs per guest.\n\n`;
  md += `no agent (passes pooled): guest wall median ${r.none.wallMs.median} ms (worst ${r.none.wallMs.worst}); open p50 ${r.none.openUs.p50} us, p99 ${r.none.openUs.p99} us; median guest wall of each no-agent pass (before cold, before sealed, after): ${r.nonePasses.join(', ')} ms\n\n`;
  md +=
    '| variant | first pass / no agent, median guest | worst guest | open added p50 us | added p99 us | agent start s (median / max) | SVM CPU s (pass / all) | SVM peak RSS MB | SVM RSS per agent KB | bytes received | lookups | uploads | cache hits | EICAR |\n';
  md += '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n';
  for (const v of r.variants)
    md += `| ${v.variant} | ${v.ratio.median} | ${v.ratio.worst} | ${v.addedOpenUs.p50} | ${v.addedOpenUs.p99} | ${round(v.agentStartMs.median / 1000, 1)} / ${round(v.agentStartMs.max / 1000, 1)} | ${v.svm.cpuSPass} / ${v.svm.cpuS} | ${v.svm.peakRssMb} | ${v.svm.rssPerAgentKb} | ${v.svm.bytesReceived} | ${v.svm.lookups} | ${v.svm.uploads} | ${v.svm.cacheHits} | ${v.eicar} |\n`;
  return md;
}

async function main(): Promise<void> {
  const { values: args, usageError } = benchArgs(
    {
      name: 'bench/fleet/boot-storm',
      root: true,
      summary: `Boot storm: N guests (lightagent daemons, each on its own tmpfs copy of one tree) start at once
against one SVM and read their tree once: guest wall time against no agent, added open() latency,
the SVM's CPU, RSS and traffic. docs/benchmarks.md, "Fleet: boot storm and noisy neighbour".`,
    },
    {
      guests: {
        type: 'string',
        arg: 'N',
        number: 'int',
        min: 1,
        help: 'guests, each an agent with its own tmpfs and state dir (default: 20)',
      },
      files: { type: 'string', arg: 'N', number: 'int', min: 1, help: "distinct 1-8 KiB files in each guest's tree (default: 300)" },
      variants: { type: 'string', arg: 'V,V', help: 'cold: empty caches; sealed: state dirs from lightagent seal (default: cold,sealed)' },
      out: { type: 'string', arg: 'FILE', help: 'write the result as JSON there too' },
    },
  );
  const chosen = (args.variants ?? 'cold,sealed').split(',');
  for (const v of chosen) if (v !== 'cold' && v !== 'sealed') usageError(`--variants: unknown variant ${v} (cold, sealed)`);
  needRoot('bench/fleet/boot-storm', 'fanotify permission events and a tmpfs mount per guest');
  const N = Number(args.guests ?? 20);
  const FILES = Number(args.files ?? 300);
  const limitMs = (15 + N / 2) * 60_000;
  installCleanup('bench/fleet/boot-storm', limitMs);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'la-bootstorm-'));
  atCleanup(() => fs.rmSync(work, { recursive: true, force: true }));
  // The tree: FILES distinct random files of 1-8 KiB, the same in every guest (a clone's copy).
  const tree: Array<{ rel: string; data: Buffer }> = [];
  for (let k = 0; k < FILES; k++) tree.push({ rel: `d${k % 20}/f${k}.bin`, data: crypto.randomBytes(1024 + ((k * 7919) % 7168)) });
  const treeBytes = tree.reduce((s, f) => s + f.data.length, 0);
  const guests: Guest[] = [];
  for (let i = 0; i < N; i++) {
    const mnt = path.join(work, `g${i}`);
    fs.mkdirSync(mnt);
    shSync(`mount -t tmpfs -o size=${Math.ceil(treeBytes / 2 ** 20) + 16}m tmpfs '${mnt}'`);
    atCleanup(() => void spawnSync('umount', ['-l', mnt], { timeout: 60_000 }));
    for (const f of tree) {
      fs.mkdirSync(path.join(mnt, path.dirname(f.rel)), { recursive: true });
      fs.writeFileSync(path.join(mnt, f.rel), f.data);
    }
    guests.push({ i, mnt, files: tree.map((f) => path.join(mnt, f.rel)) });
  }
  say(`boot-storm: ${N} guests x ${FILES} files (${treeBytes} bytes per tree) on ${N} tmpfs mounts`);
  await stormPass(guests, limitMs); // page cache, dentries, the readers' own start-up
  // No-agent passes before each variant and after the last: their walls and opens pooled are the
  // base (this machine is shared: one pass alone swings several-fold).
  const noneRuns = [await stormPass(guests, limitMs)];
  const pooled = () => {
    const walls = noneRuns.flatMap((r) => r.walls);
    const lat = noneRuns.flatMap((r) => r.lat);
    return {
      walls,
      stats: {
        wallMs: { median: round(median(walls), 1), worst: round(Math.max(...walls), 1) },
        openUs: { p50: round(pct(lat, 0.5), 1), p99: round(pct(lat, 0.99), 1) },
        maxStartLagMs: Math.max(...noneRuns.map((r) => r.stats.maxStartLagMs)),
      },
    };
  };
  const variants: StormVariant[] = [];
  for (const name of (['cold', 'sealed'] as const).filter((v) => chosen.includes(v))) {
    if (variants.length > 0) noneRuns.push(await stormPass(guests, limitMs));
    const v = await variant(name, work, guests, limitMs);
    variants.push(v);
    say(`boot-storm ${name}: ${JSON.stringify(v)}`);
  }
  noneRuns.push(await stormPass(guests, limitMs));
  const base = pooled();
  for (const v of variants) {
    v.ratio = {
      median: round(median(v.walls.map((w) => w / median(base.walls))), 3),
      worst: round(Math.max(...v.walls) / median(base.walls), 3),
    };
    v.addedOpenUs = { p50: round(v.openUs.p50 - base.stats.openUs.p50, 1), p99: round(v.openUs.p99 - base.stats.openUs.p99, 1) };
  }
  const result: BootStormResult = {
    machine: machineFacts(),
    guests: N,
    filesPerGuest: FILES,
    treeBytes,
    none: base.stats,
    nonePasses: noneRuns.map((r) => r.stats.wallMs.median),
    variants,
  };
  if (args.out) fs.writeFileSync(args.out, JSON.stringify(result, null, 2));
  process.stdout.write(table(result));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench/fleet/boot-storm failed: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
