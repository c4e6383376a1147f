/**
 * Added latency per open() through the real agent, and what a second guest uploads, measured in
 * one run on a tmpfs made for the run (FILES distinct small random files):
 *
 *   none         no agent
 *   miss         guest A just started, empty local cache, SVM has never seen the files (upload)
 *   second-guest guest B (its own state dir, install seed and empty cache) after A: the SVM knows
 *                every file, so B only looks hashes up; bytes B uploads come from the SVM's
 *                lightagent_svm_bytes_received_total (should be ~0)
 *   local-hit    guest B restarted with its cache on disk: identity hits answered in the agent
 *                (an event per open, no kernel ignore marks yet)
 *   warm         the same files again: kernel ignore marks, no event should reach the agent
 *   none-again   no agent, after everything (drift check)
 *   floor-event  floor-listener.c --no-marks (variants.ts): a C listener answers every open, no
 *                ignore marks: what an event per open costs on this machine at the least, the
 *                floor under local-hit (skipped, with the reason in the output, without a C compiler)
 *   floor-hit    the same C listener adding an ignore mark on every file it answers, as
 *                lightagent does on a local hit: the exact floor of local-hit (each file is opened
 *                once per pass, so every open is still an event)
 *
 * Each pass opens+closes every file once, timing each open() in a child process; p50/p99/p99.9
 * in microseconds. Events per warm open come from the agent's own counters (SIGUSR2 status).
 * Agents run with the production Node flags (AGENT_NODE_FLAGS).
 *
 *   sudo node build/bench/onaccess/open-latency.js [--files N] [--out FILE] [--only miss,second-guest] [--trace DIR]
 *
 * --only: stop after the listed agent passes (miss and second-guest need each other: the SVM
 * must know the files before B looks them up). --trace DIR: every agent and the SVM record their
 * hop timestamps (src/trace.ts, LIGHTAGENT_RTT_TRACE) under DIR/<pass> and DIR/svm, and the
 * hop-by-hop breakdown of the miss and second-guest passes is printed (rtt-breakdown.ts).
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { benchArgs } from '../lib/cli.js';
import { atCleanup, installCleanup, machineFacts, needRoot, pct, round, shSync, stopChild } from '../lib/harness.js';
import { agentStatus, FloorListener, type AgentStatus, metric, startAgent, startSvm, svmUrls } from './variants.js';
import { breakdownMarkdown } from './rtt-breakdown.js';

export interface OpenLatencyResult {
  machine: ReturnType<typeof machineFacts>;
  files: number;
  rows: Array<{
    variant: string;
    p50: number;
    p99: number;
    p999: number;
    addedP50: number;
    addedP99: number;
    addedP999: number;
    p99Late: number;
    addedP99Late: number;
  }>;
  eventsPerWarmOpen: number;
  warmEvents: number;
  uploadBytes: { firstGuest: number; secondGuest: number; totalBytes: number };
  /** Guest A's on-access counters after its first pass (unavailable/deadline: opens allowed unscanned). */
  firstGuestCounts: Record<string, number>;
  /** A's deferred queue after its restart: left over after `drainMs` (0 = all scanned). */
  firstGuestDeferred: { left: number; drainMs: number };
}

// The timing child: opens each listed file once, prints one latency (ns) per line.
const TIMER = `
const fs = require('fs');
const files = fs.readFileSync(0, 'utf8').split('\\n').filter(Boolean);
const out = new Float64Array(files.length);
for (let i = 0; i < files.length; i++) {
  const t = process.hrtime.bigint();
  const fd = fs.openSync(files[i], 'r');
  fs.closeSync(fd);
  out[i] = Number(process.hrtime.bigint() - t);
}
process.stdout.write(Array.from(out).join('\\n'));
`;

function pass(files: string[]): number[] {
  const r = spawnSync(process.execPath, ['-e', TIMER], {
    input: files.join('\n'),
    maxBuffer: 64 << 20,
    timeout: 300_000,
    killSignal: 'SIGKILL',
  });
  if (r.status !== 0) throw new Error(`timing child failed (${r.status ?? r.signal}): ${String(r.stderr)}`);
  return r.stdout
    .toString()
    .split('\n')
    .map(Number)
    .map((ns) => ns / 1000);
}

async function main(): Promise<void> {
  const args = benchArgs(
    {
      name: 'bench/onaccess/open-latency',
      root: true,
      summary: `Added latency per open() through the real agent on a tmpfs of small distinct files: a first guest
(miss), a second guest (lookups only, and what it uploads), local cache hits, warm (ignore marks)
and the C floor listener. docs/benchmarks.md, "open() latency" and "What runs" (Micro).`,
    },
    {
      files: { type: 'string', arg: 'N', number: 'int', min: 1, help: 'distinct 1-4 KiB files, each opened once per pass (default: 5000)' },
      only: {
        type: 'string',
        arg: 'P,P',
        help: 'only these of local-hit, warm, floor-event, floor-hit (miss and second-guest always run)',
      },
      trace: { type: 'string', arg: 'DIR', help: 'record hop timestamps under DIR and print the hop-by-hop breakdown' },
      out: { type: 'string', arg: 'FILE', help: 'write the result as JSON there too' },
    },
  ).values;
  const only = args.only ? new Set(args.only.split(',')) : undefined;
  const traceDir = args.trace ? path.resolve(args.trace) : undefined;
  /** Trace (src/trace.ts) what starts next under traceDir/<name>. */
  const traceAs = (name: string) => {
    if (!traceDir) return;
    fs.mkdirSync(path.join(traceDir, name), { recursive: true });
    process.env.LIGHTAGENT_RTT_TRACE = path.join(traceDir, name);
  };
  needRoot('bench/onaccess/open-latency', 'fanotify permission events and a tmpfs mount');
  installCleanup('bench/onaccess/open-latency', 20 * 60_000);
  const FILES = Number(args.files ?? 5000);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'la-openlat-'));
  const mnt = path.join(work, 'mnt');
  fs.mkdirSync(mnt);
  atCleanup(() => fs.rmSync(work, { recursive: true, force: true }));
  shSync(`mount -t tmpfs -o size=512m tmpfs '${mnt}'`);
  atCleanup(() => void spawnSync('umount', ['-l', mnt], { timeout: 60_000 }));
  const files: string[] = [];
  let totalBytes = 0;
  for (let i = 0; i < FILES; i++) {
    const f = path.join(mnt, `d${i % 50}`, `f${i}.txt`);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    const size = 1024 + (i % 3000);
    fs.writeFileSync(f, crypto.randomBytes(size));
    totalBytes += size;
    files.push(f);
  }
  traceAs('svm');
  const svm = startSvm(path.join(work, 'svm.log'));
  const { url, metrics } = await svmUrls(svm);
  const received = () => metric(metrics, 'lightagent_svm_bytes_received_total');
  const guest = (name: string, fresh = true) =>
    startAgent({ url, protect: mnt, stateDir: path.join(work, `state-${name}`), logFile: path.join(work, `agent-${name}.log`), fresh });

  const series: Record<string, number[]> = {};
  pass(files); // page cache, dentries, the timing child's own start-up
  series.none = pass(files);
  const r0 = await received();
  traceAs('miss');
  let agent = await guest('a');
  series.miss = pass(files);
  const stateA = path.join(work, 'state-a');
  const statusA = await agentStatus(agent, stateA);
  // Opens A allowed unscanned (SVM busy or rate limited) are in its deferred queue: let A finish
  // them (a restart drains the queue at once; bounded) so that B's uploads show what sharing saves.
  await stopChild(agent);
  traceAs('drain');
  const tq = performance.now();
  agent = await guest('a', false);
  let queued = Number((await agentStatus(agent, stateA)).deferredQueue ?? 0);
  while (queued > 0 && performance.now() - tq < 40_000) {
    await new Promise((r) => setTimeout(r, 500));
    queued = Number((await agentStatus(agent, stateA)).deferredQueue ?? 0);
  }
  const drainMs = Math.round(performance.now() - tq);
  await stopChild(agent);
  const r1 = await received();
  traceAs('second-guest');
  agent = await guest('b');
  series['second-guest'] = pass(files);
  await stopChild(agent); // saves its cache
  const r2 = await received();
  let warmEvents = 0;
  if (!only || only.has('local-hit') || only.has('warm')) {
    traceAs('local-hit');
    agent = await guest('b', false);
    series['local-hit'] = pass(files);
    const stateB = path.join(work, 'state-b');
    const before = await agentStatus(agent, stateB);
    series.warm = pass(files);
    const after = await agentStatus(agent, stateB);
    await stopChild(agent);
    const perm = (s: AgentStatus) => Number(s.backend?.open ?? 0) + Number(s.backend?.exec ?? 0);
    warmEvents = perm(after) - perm(before);
  }
  series['none-again'] = pass(files);
  await stopChild(svm);
  const noFloor = FloorListener.missing();
  if (only && !only.has('floor-event') && !only.has('floor-hit')) {
    /* not asked for */
  } else if (noFloor) process.stderr.write(`open-latency: floor-event and floor-hit not measured: ${noFloor}\n`);
  else {
    for (const marks of [false, true]) {
      const floor = new FloorListener(mnt, path.join(work, 'floor-build'), marks);
      await floor.start();
      try {
        series[marks ? 'floor-hit' : 'floor-event'] = pass(files);
      } finally {
        await floor.stop();
      }
    }
  }

  const base = { p50: pct(series.none!, 0.5), p99: pct(series.none!, 0.99), p999: pct(series.none!, 0.999) };
  const baseLate = pct(series.none!.slice(Math.floor(series.none!.length / 4)), 0.99);
  const rows = Object.entries(series).map(([variant, v]) => {
    const p50 = pct(v, 0.5);
    const p99 = pct(v, 0.99);
    const p999 = pct(v, 0.999);
    // The same pass without its first quarter: an agent's first ~2,000 events after a start had
    // a tail the later ones did not (local-hit p99 over the first 2,000 opens ~1 ms, then 0.14-0.35 ms),
    // until the gate worker's warm-up (fanotify-worker.ts warmUp); this column shows whether it holds.
    const p99Late = pct(v.slice(Math.floor(v.length / 4)), 0.99);
    return {
      variant,
      p50: round(p50, 1),
      p99: round(p99, 1),
      p999: round(p999, 1),
      addedP50: round(p50 - base.p50, 1),
      addedP99: round(p99 - base.p99, 1),
      addedP999: round(p999 - base.p999, 1),
      p99Late: round(p99Late, 1),
      addedP99Late: round(p99Late - baseLate, 1),
    };
  });
  const result: OpenLatencyResult = {
    machine: machineFacts(),
    files: FILES,
    rows,
    eventsPerWarmOpen: round(warmEvents / FILES, 5),
    warmEvents,
    uploadBytes: { firstGuest: r1 - r0, secondGuest: r2 - r1, totalBytes },
    firstGuestCounts: statusA.counts as Record<string, number>,
    firstGuestDeferred: { left: queued, drainMs },
  };
  let md =
    '| variant | p50 us | p99 us | p99.9 us | added p50 | added p99 | added p99.9 | added p99, last 75% of opens |\n|---|---|---|---|---|---|---|---|\n';
  for (const r of rows)
    md += `| ${r.variant} | ${r.p50} | ${r.p99} | ${r.p999} | ${r.addedP50} | ${r.addedP99} | ${r.addedP999} | ${r.addedP99Late} |\n`;
  md += `\nevents per warm open: ${result.eventsPerWarmOpen} (${warmEvents} for ${FILES} opens); uploaded by guest A ${result.uploadBytes.firstGuest} B, by guest B ${result.uploadBytes.secondGuest} B (files: ${totalBytes} B)\nguest A counters after its first pass: ${JSON.stringify(statusA.counts)}; deferred queue after restart: ${queued} left after ${drainMs} ms\n`;
  if (traceDir) md += breakdownMarkdown(traceDir, ['miss', 'second-guest']);
  if (args.out) fs.writeFileSync(args.out, JSON.stringify(result, null, 2));
  process.stdout.write(md);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench/onaccess/open-latency failed: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
