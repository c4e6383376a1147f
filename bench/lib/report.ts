/**
 * From the parts a run wrote to bench/results/latest.json's shape (series keyed none /
 * lightagent / clamonacc / floor with raw samples and a summary), latest.md (ratios to no agent, micro
 * numbers, targets met or missed) and the chart.
 */
import type { OpenLatencyResult } from '../onaccess/open-latency.js';
import type { Sample, WorkloadsResult } from '../onaccess/workloads.js';
import type { SvmScaleRow } from '../micro/svm-scale.js';
import type { IdleMemoryResult } from '../onaccess/idle-memory.js';
import type { BootStormResult } from '../fleet/boot-storm.js';
import type { NoisyResult } from '../fleet/noisy-neighbour.js';
import { ratioChartSvg } from './chart.js';
import { median, round, type MachineFacts } from './harness.js';
import { VARIANTS } from '../onaccess/variants.js';

export const VARIANT_COLORS: Record<string, string> = { lightagent: '#2b6cb0', clamonacc: '#dd6b20', floor: '#718096' };
/** The variants that protect, in report order; `floor` is the minimal C listener (variants.ts). */
export const SCANNERS = VARIANTS.filter((v) => v !== 'none');

export interface Stat {
  n: number;
  failed: number;
  min: number;
  median: number;
  /** median / median of `none` (same workload) */
  ratio?: number;
  ratioMin?: number;
  scannerCpuS?: number;
}

export interface Latest {
  machine: MachineFacts;
  profile: string;
  note: string;
  tree?: WorkloadsResult['tree'];
  reps?: number;
  variants: Record<string, { broken?: string; eicar?: string; note?: string; notRun?: string }>;
  series: Record<string, { samples: Sample[] }>;
  summary: Record<string, Record<string, Stat>>;
  micro: {
    openLatency?: OpenLatencyResult | { notRun: string };
    eventsPerWarmOpenWorkload?: WorkloadsResult['eventsPerWarmOpen'];
    resources?: Record<string, unknown>;
    agentStatus?: Record<string, unknown>;
    svm?: { seconds: number; engine: string; rows: SvmScaleRow[] } | { notRun: string };
    idleMemory?: IdleMemoryResult | { notRun: string };
    bootStorm?: BootStormResult | { notRun: string };
    noisyNeighbour?: NoisyResult | { notRun: string };
    process?: unknown;
    cache?: unknown;
    gateOpenLatency?: unknown;
  };
  targets: Array<{ what: string; target: string; measured: string; met: boolean | null }>;
  steps: Array<{ step: string; ok: boolean; seconds: number; detail?: string }>;
  wallS: number;
}

/** micro.resources[variant] as workloads.ts writes it: one ProcessResources per process name, then totals. */
interface VariantResources {
  idleWindowS?: number;
  cpuSUnderLoad?: number;
  peakRssKbUnderLoad?: number;
  [processName: string]: unknown;
}

interface ProcessResources {
  idleCpuPct?: number;
  rssKbAfterLoad?: number;
  idleRssKbAfterStart?: number;
  idleAnonKbAfterStart?: number;
}

export function summarize(w: WorkloadsResult): Latest['summary'] {
  const out: Latest['summary'] = {};
  const workloads = [...new Set(w.samples.map((s) => s.workload))];
  for (const wl of workloads) {
    out[wl] = {};
    for (const v of VARIANTS) {
      const all = w.samples.filter((s) => s.workload === wl && s.variant === v);
      if (!all.length) continue;
      const ok = all.filter((s) => s.rc === 0).map((s) => s.wall);
      out[wl]![v] = {
        n: ok.length,
        failed: all.length - ok.length,
        min: round(Math.min(...ok), 3),
        median: round(median(ok), 3),
        scannerCpuS: round(median(all.map((s) => s.scannerCpuS))),
      };
    }
    const none = out[wl]!.none;
    for (const v of SCANNERS) {
      const s = out[wl]![v];
      if (s && none && s.n && none.n) {
        s.ratio = round(s.median / none.median, 3);
        s.ratioMin = round(s.min / none.min, 3);
      }
    }
  }
  return out;
}

const f2 = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? 'n/a' : n.toFixed(2));
const mb = (kb: unknown) => (typeof kb === 'number' && Number.isFinite(kb) ? `${(kb / 1024).toFixed(1)} MB` : 'n/a');

/** Targets of issue 5 and DESIGN.md's frugality budget, against what this run measured. */
export function targets(l: Latest): Latest['targets'] {
  const t: Latest['targets'] = [];
  const ratio = (wl: string) => l.summary[wl]?.lightagent?.ratio;
  const add = (what: string, target: string, v: number | undefined, limit: number, unit = 'x') =>
    t.push({
      what,
      target,
      measured:
        v === undefined || !Number.isFinite(v)
          ? 'not measured'
          : unit === 'x'
            ? `${v.toFixed(2)}x (${v >= 1 ? '+' : ''}${((v - 1) * 100).toFixed(0)}%)`
            : `${v} ${unit}`,
      met: v === undefined || !Number.isFinite(v) ? null : v <= limit,
    });
  add('second read pass (read_warm)', '<= +5% (1.05x)', ratio('read_warm'), 1.05);
  add('copy the tree', '<= +30% (1.30x)', ratio('copy'), 1.3);
  const floorCopy = l.summary.copy?.floor?.ratio;
  if (floorCopy !== undefined)
    t.push({
      what: 'copy the tree: the floor (minimal C listener) on the same run',
      target: 'reference',
      measured: `${floorCopy.toFixed(2)}x; lightagent / floor = ${(ratio('copy')! / floorCopy).toFixed(2)}`,
      met: null,
    });
  add('1,000 short processes (exec)', '<= +20% (1.20x)', ratio('exec'), 1.2);
  // Issue #22 item 2: files written, scanned in the background, then read: no event, no cost.
  for (const wl of ['copy_then_read', 'extract_then_read'])
    if (l.summary[wl]) add(`${wl}: the timed read of every file written just before`, '<= +10% (1.10x)', ratio(wl), 1.1);
  const ol = l.micro.openLatency && 'rows' in l.micro.openLatency ? l.micro.openLatency : undefined;
  const hit = ol?.rows.find((r) => r.variant === 'local-hit');
  add('added open() latency, cache hit (agent answers), p50', '<= 60 us', hit?.addedP50, 60, 'us');
  add('added open() latency, cache hit (agent answers), p99', '<= 500 us', hit?.addedP99, 500, 'us');
  add(
    "added open() latency, cache hit, p99 over the last 75% of the opens (after the agent's first events)",
    '<= 500 us',
    hit?.addedP99Late,
    500,
    'us',
  );
  const floorEv = ol?.rows.find((r) => r.variant === 'floor-hit') ?? ol?.rows.find((r) => r.variant === 'floor-event');
  if (floorEv)
    t.push({
      what: `added open() latency, an event per open answered by the floor (minimal C listener, ${floorEv.variant}), same run`,
      target: 'reference',
      measured: `p50 ${floorEv.addedP50} us, p99 ${floorEv.addedP99} us`,
      met: null,
    });
  const warm = ol?.rows.find((r) => r.variant === 'warm');
  add('added open() latency, warm (kernel ignore mark), p50', '<= 60 us', warm?.addedP50, 60, 'us');
  add('events per warm open', '0', ol?.eventsPerWarmOpen, 0, 'events');
  const res = l.micro.resources?.lightagent as VariantResources | undefined;
  const agentRes = res?.agent as ProcessResources | undefined;
  const idleRss = agentRes?.idleRssKbAfterStart;
  add(
    "agent idle RSS (after start; the workloads' agent: compiled sources on this Node)",
    '<= 60 MB',
    idleRss === undefined ? undefined : round(idleRss / 1024, 1),
    60,
    'MB',
  );
  const im = l.micro.idleMemory && 'rows' in l.micro.idleMemory ? l.micro.idleMemory.rows : undefined;
  const bin = im?.find((r) => r.variant === 'binary');
  add(
    'agent idle RSS, the single executable that ships (Node 24 inside; median, cold page cache)',
    '<= 60 MB',
    bin ? round(bin.rssKb / 1024, 1) : undefined,
    60,
    'MB',
  );
  add(
    'agent idle RSS, the single executable that ships (issue #22 item 5; same measurement)',
    '<= 85 MB',
    bin ? round(bin.rssKb / 1024, 1) : undefined,
    85,
    'MB',
  );
  const aw = l.micro.idleMemory && 'rows' in l.micro.idleMemory ? l.micro.idleMemory.afterWork : undefined;
  add(
    `agent RSS after work, the single executable: ${aw?.files ?? 'N'} new files written and read twice, then ${aw?.afterS ?? 'S'} s idle (median)`,
    '<= 130 MB',
    aw ? round(aw.afterKb / 1024, 1) : undefined,
    130,
    'MB',
  );
  const noConnector = im?.find((r) => r.variant === 'binary-proc-poll');
  if (noConnector)
    t.push({
      what: 'idle RSS of the same executable with the process events connector off (processes.watcher: proc-poll), same run',
      target: 'reference',
      measured: `${round(noConnector.rssKb / 1024, 1)} MB`,
      met: null,
    });
  for (const [variant, what] of [
    ['node24-worker', "idle RSS of Node 24 with one idle worker thread and no agent code (the agent's thread shape), same run"],
    ['node24-workers', "idle RSS of Node 24 with two idle worker threads and no agent code (issue #22's reference), same run"],
  ] as const) {
    const shape = im?.find((r) => r.variant === variant);
    if (shape) t.push({ what, target: 'reference', measured: `${round(shape.rssKb / 1024, 1)} MB`, met: null });
  }
  const idleCpu = agentRes?.idleCpuPct;
  add('agent idle CPU', '~0 (<= 0.5%)', idleCpu, 0.5, '%');
  const up = ol?.uploadBytes;
  add(
    'bytes uploaded by a second guest with the same files',
    '~0 (<= 1% of the files)',
    up ? up.secondGuest : undefined,
    up ? up.totalBytes / 100 : 0,
    'B',
  );
  // Every N's run repeats the same throughput phase (4 busy agents): their median, not the first
  // run alone (the one that also pays the JIT's warm-up).
  const svmRows = l.micro.svm && 'rows' in l.micro.svm ? l.micro.svm.rows : [];
  const upload = svmRows.length > 0 ? round(median(svmRows.map((r) => r.uploadMBps)), 1) : undefined;
  t.push({
    what: `cold scan throughput to the SVM (loopback, builtin engine; every upload a cache miss; median of ${svmRows.length} runs)`,
    target: 'hundreds of MB/s',
    measured: upload !== undefined ? `${upload} MB/s` : 'not measured',
    met: upload !== undefined ? upload >= 200 : null,
  });
  const bs = l.micro.bootStorm && 'variants' in l.micro.bootStorm ? l.micro.bootStorm : undefined;
  const cold = bs?.variants.find((v) => v.variant === 'cold');
  const sealed = bs?.variants.find((v) => v.variant === 'sealed');
  if (bs && cold)
    t.push({
      what: `boot storm, cold: bytes the SVM received from ${bs.guests} guests with the same tree (the farm uploads each unique file once)`,
      target: `<= the tree's ${bs.treeBytes} B`,
      measured: `${cold.svm.bytesReceived} B (${(cold.svm.bytesReceived / bs.treeBytes).toFixed(2)}x the tree; ${cold.svm.uploads} uploads for ${bs.filesPerGuest} files)`,
      met: cold.svm.bytesReceived <= bs.treeBytes,
    });
  if (bs && sealed)
    t.push({
      what: `boot storm, sealed template: SVM requests for the template's files (${bs.guests} clones)`,
      target: '0 lookups, 0 bytes',
      measured: `${sealed.svm.lookups} lookups, ${sealed.svm.bytesReceived} B`,
      met: sealed.svm.lookups === 0 && sealed.svm.bytesReceived === 0,
    });
  const nn = l.micro.noisyNeighbour && 'phases' in l.micro.noisyNeighbour ? l.micro.noisyNeighbour : undefined;
  for (const p of nn?.phases ?? [])
    if (p.ratio) {
      add(`noisy neighbour (${p.phase}): quiet tenant's upload verdict p99 beside it / alone`, '<= 2x', p.ratio.uploadP99, 2);
      add(`noisy neighbour (${p.phase}): quiet tenant's lookup verdict p99 beside it / alone`, '<= 2x', p.ratio.lookupP99, 2);
    }
  return t;
}

export function markdown(l: Latest): string {
  const L: string[] = [];
  const m = l.machine;
  L.push(`# lightagent benchmark (${l.profile})`, '');
  L.push(
    `${m.date}: Linux ${m.kernel}, ${m.cpus} CPUs (${m.cpuModel}), ${Math.round(m.memMb / 1024)} GB RAM, bench on Node ${m.node}, agent and SVM on Node ${m.productNode ?? m.node}; load average at start ${m.loadavgAtStart.join(' ')}.`,
  );
  L.push('', `> ${l.note}`, '');
  if (l.tree)
    L.push(
      `Tree: ${l.tree.files} files, ${l.tree.mb} MB copied from ${l.tree.from.join(', ')}; Python stdlib copy with ${l.tree.pyFiles} .py files; npm project of ${l.tree.npmPackages} packages from local tarballs. ${l.reps} repetitions, variants alternated each rep.`,
      '',
    );
  L.push('## Variants', '');
  for (const [v, s] of Object.entries(l.variants))
    L.push(
      `- **${v}**: ${s.broken ? `BROKEN, not timed: ${s.broken}` : s.notRun ? `not run: ${s.notRun}` : 'ok'}${s.eicar ? `; EICAR check: ${s.eicar}` : ''}${s.note ? `; ${s.note}` : ''}`,
    );
  L.push('', '## Workloads: ratio of medians to no agent (lower is better, 1.00 = no cost)', '');
  L.push(
    'floor = a minimal C fanotify listener with the same marks and ignore marks (bench/onaccess/floor-listener.c): what the kernel and this machine charge any permission-event scanner.',
    '',
  );
  L.push(
    '| workload | no agent median (min) s | lightagent median (min) s | **lightagent ratio** | clamonacc median (min) s | **clamonacc ratio** | floor median (min) s | **floor ratio** | scanner CPU s per run (la / clam / floor) |',
  );
  L.push('|---|---|---|---|---|---|---|---|---|');
  for (const [wl, s] of Object.entries(l.summary)) {
    const c = (v: string) => (s[v] ? `${f2(s[v]!.median)} (${f2(s[v]!.min)})${s[v]!.failed ? `, ${s[v]!.failed} failed` : ''}` : 'n/a');
    L.push(
      `| ${wl} | ${c('none')} | ${c('lightagent')} | **${f2(s.lightagent?.ratio)}** | ${c('clamonacc')} | **${f2(s.clamonacc?.ratio)}** | ${c('floor')} | **${f2(s.floor?.ratio)}** | ${f2(s.lightagent?.scannerCpuS)} / ${f2(s.clamonacc?.scannerCpuS)} / ${f2(s.floor?.scannerCpuS)} |`,
    );
  }
  L.push('', '![ratios](latest.svg)', '');
  L.push('## Targets (issue 5, DESIGN.md frugality budget)', '', '| what | target | measured | met |', '|---|---|---|---|');
  for (const t of l.targets) L.push(`| ${t.what} | ${t.target} | ${t.measured} | ${t.met === null ? 'n/a' : t.met ? 'yes' : '**no**'} |`);
  const ol = l.micro.openLatency;
  L.push('', '## open() latency (one open+close per file, microseconds)', '');
  if (ol && 'rows' in ol) {
    L.push(
      `${ol.files} distinct 1-4 KiB files on a tmpfs. miss = empty caches everywhere (upload); second-guest = another agent (own state dir) after the first, the SVM knows every file (lookup only); local-hit = the agent's own cache answers (an event per open); warm = kernel ignore marks (no event); floor-event / floor-hit = a minimal C listener answers every open without / with adding ignore marks (bench/onaccess/floor-listener.c): the least an event per open costs here.`,
      '',
    );
    L.push(
      '| variant | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | added p99, last 75% of opens |',
      '|---|---|---|---|---|---|---|---|',
    );
    for (const r of ol.rows)
      L.push(
        `| ${r.variant} | ${r.p50} | ${r.p99} | ${r.p999} | ${r.addedP50} | ${r.addedP99} | ${r.addedP999} | ${r.addedP99Late ?? 'n/a'} |`,
      );
    L.push(
      '',
      `Events per warm open: ${ol.eventsPerWarmOpen} (${ol.warmEvents} for ${ol.files} opens). Bytes uploaded: first guest ${ol.uploadBytes.firstGuest}, second guest ${ol.uploadBytes.secondGuest} (of ${ol.uploadBytes.totalBytes} in the files). First guest's counters after its pass: ${JSON.stringify(ol.firstGuestCounts)}; its deferred queue after a restart: ${ol.firstGuestDeferred.left} left after ${ol.firstGuestDeferred.drainMs} ms.`,
    );
  } else L.push(`not run: ${(ol as { notRun: string } | undefined)?.notRun ?? 'skipped'}`);
  const firsts = (l.series.lightagent?.samples ?? []).filter((s) => s.workload === 'read_first' && s.agent);
  if (firsts.length)
    L.push(
      '',
      `lightagent read_first, per rep: opens answered without a verdict (SVM busy or rate limited: allowed, queued, scanned later) ${firsts.map((s) => s.agent!.unavailable).join(', ')} of ${l.tree?.files ?? '?'} files; queue drained after the run in ${firsts.map((s) => (s.agent!.queued ? `${s.agent!.drainMs} ms` : '-')).join(', ')} (untimed).`,
    );
  const thenRead = (l.series.lightagent?.samples ?? []).filter((s) => s.readEvents !== undefined);
  for (const wl of [...new Set(thenRead.map((s) => s.workload))]) {
    const ss = thenRead.filter((s) => s.workload === wl);
    L.push(
      '',
      `lightagent ${wl}, per rep: permission events during the timed read ${ss.map((s) => s.readEvents).join(', ')} (of ${l.tree?.files ?? '?'} files); waited after the untimed write ${ss.map((s) => (s.writtenWaitMs === -1 ? 'bound reached' : `${s.writtenWaitMs} ms`)).join(', ')} (until idle and no close-write held; bench/onaccess/workloads.ts).`,
    );
  }
  const ev = l.micro.eventsPerWarmOpenWorkload;
  if (ev)
    L.push('', `Workload tree, last read_warm rep: ${ev.events} permission events for ${ev.opens} file opens (${ev.perOpen} per open).`);
  L.push('', '## Resources', '');
  const r = l.micro.resources ?? {};
  L.push(
    '| process | RSS idle after start (anonymous) | RSS after the workloads | idle CPU | CPU s over all timed runs (variant total) | peak RSS under load (variant total) |',
    '|---|---|---|---|---|---|',
  );
  for (const v of SCANNERS) {
    const x = r[v] as VariantResources | undefined;
    if (!x) continue;
    for (const [p, row] of Object.entries(x)) {
      if (typeof row !== 'object' || row === null || Array.isArray(row)) continue;
      const y = row as ProcessResources;
      L.push(
        `| ${v}: ${p} | ${mb(y.idleRssKbAfterStart)} (${mb(y.idleAnonKbAfterStart)}) | ${mb(y.rssKbAfterLoad)} | ${f2(y.idleCpuPct)}% over ${x.idleWindowS} s | ${f2(x.cpuSUnderLoad)} | ${mb(x.peakRssKbUnderLoad)} |`,
      );
    }
  }
  const im = l.micro.idleMemory;
  L.push('', '## Idle memory of what ships (bench/onaccess/idle-memory)', '');
  if (im && 'rows' in im) {
    L.push(
      `Medians of ${im.rounds} starts each, variants alternated, page cache dropped before each start, read after ${im.idleS} s idle. anon = the process's own memory; file = pages of the executable and libraries (shared, clean, reclaimable).`,
      '',
    );
    L.push('| variant | VmRSS MB | anon MB | file MB | what |', '|---|---|---|---|---|');
    for (const x of im.rows) L.push(`| ${x.variant} | ${mb(x.rssKb)} | ${mb(x.anonKb)} | ${mb(x.fileKb)} | ${x.what} |`);
    if (im.afterWork) {
      const a = im.afterWork;
      L.push(
        '',
        `After work (the executable; ${a.files} new 1-4 KiB files written and read twice in its tree, each an upload; ${im.rounds} starts): VmRSS right after the work ${mb(a.workKb)}, ${a.afterS} s later ${mb(a.afterKb)} (medians; per start idle / right after / later: ${a.samples.map((x) => `${mb(x.idleKb)} / ${mb(x.workKb)} / ${mb(x.afterKb)}`).join(', ')}).`,
      );
    }
    for (const [k, why] of Object.entries(im.skipped)) L.push('', `skipped ${k}: ${why}`);
  } else L.push(`not run: ${(im as { notRun: string } | undefined)?.notRun ?? 'skipped'}`);
  const svm = l.micro.svm;
  L.push('', '## SVM on loopback (builtin engine)', '');
  if (svm && 'rows' in svm) {
    L.push(
      `${svm.seconds} s per phase. Upload MB/s and lookups/s: 4 busy agents (every upload a distinct 1 MiB file). Latency: N quiet agents each uploading a distinct 16 KiB file every 50 ms.`,
      '',
    );
    L.push('| N agents | upload MB/s | lookups/s | verdict p50 ms | verdict p99 ms | verdicts/s |', '|---|---|---|---|---|---|');
    for (const x of svm.rows)
      L.push(`| ${x.agents} | ${x.uploadMBps} | ${x.lookupsPerSec} | ${x.p50ms} | ${x.p99ms} | ${x.verdictsPerSec} |`);
  } else L.push(`not run: ${(svm as { notRun: string } | undefined)?.notRun ?? 'skipped'}`);
  const bs = l.micro.bootStorm;
  L.push('', '## Boot storm (bench/fleet/boot-storm)', '');
  if (bs && 'variants' in bs) {
    L.push(
      `${bs.guests} guests start at once against one SVM, each an agent with its own state dir and its own copy of the tree (${bs.filesPerGuest} distinct files, ${bs.treeBytes} B) on its own tmpfs, then every guest reads its tree once, all released together. Ratio: a guest's first-pass wall / the median guest wall of the no-agent passes (${bs.nonePasses.join(', ')} ms; pooled median ${bs.none.wallMs.median} ms). Open latency over every open of every guest, added over the no-agent passes (p50 ${bs.none.openUs.p50} us, p99 ${bs.none.openUs.p99} us).`,
      '',
      '| variant | first pass / no agent: median guest | worst guest | open added p50 us | added p99 us | agent start s median / max | SVM CPU s pass / all | SVM peak RSS MB | SVM RSS per connected agent KB | bytes received | lookups | uploads | cache hits | EICAR |',
      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const v of bs.variants)
      L.push(
        `| ${v.variant} | ${f2(v.ratio.median)} | ${f2(v.ratio.worst)} | ${v.addedOpenUs.p50} | ${v.addedOpenUs.p99} | ${round(v.agentStartMs.median / 1000, 1)} / ${round(v.agentStartMs.max / 1000, 1)} | ${v.svm.cpuSPass} / ${v.svm.cpuS} | ${v.svm.peakRssMb} | ${v.svm.rssPerAgentKb} (connected ${v.svm.connectedRssMb} MB, after they left ${v.svm.idleRssMb} MB) | ${v.svm.bytesReceived} | ${v.svm.lookups} | ${v.svm.uploads} | ${v.svm.cacheHits} | ${v.eicar} |`,
      );
  } else L.push(`not run: ${(bs as { notRun: string } | undefined)?.notRun ?? 'skipped'}`);
  const nn = l.micro.noisyNeighbour;
  L.push('', '## Noisy neighbour (bench/fleet/noisy-neighbour)', '');
  if (nn && 'phases' in nn) {
    L.push(
      `One SVM (shipped defaults), two tenants. Tenant B's quiet agent uploads a distinct 16 KiB file then looks up a known hash, every 20 ms, ${nn.seconds} s per phase${(nn.rounds ?? 1) > 1 ? `; alone, stall and flood ran in turn ${nn.rounds} times (then alone once more), each row pooling its slots` : ''}. stall: ${nn.stallers} agents of tenant A each keep 16 uploads open (announce 8 MiB, send 64 KiB, then nothing; a new one whenever one ends). flood: ${nn.flooders} agents of tenant A each keep 16 distinct 256 KiB uploads in flight. ${nn.isolated ? `Isolated (--isolate): the SVM pinned to a core of its own, the hostile process on the other at nice 10, the quiet client beside it ${nn.quietSched === 'SCHED_FIFO 10' ? 'under SCHED_FIFO, woken at once (as on a vCPU of its own)' : `at ${nn.quietSched ?? 'nice -10'} (its wake-ups wait for the hostile process: docs/benchmarks.md, "The quiet client's own core")`}.` : 'Not isolated: SVM, noise and quiet client share every core.'} The SVM ran as ${nn.svmRunAs?.endsWith('lightagent-linux-x64') ? 'the single executable (what ships)' : `\`${nn.svmRunAs ?? 'the sources'}\``}. SVM CPU ${nn.svm.cpuS} s, peak RSS ${nn.svm.peakRssMb} MB, busy refusals ${nn.svm.busyTotal}.`,
      '',
      "| phase | upload p50 ms | upload p99 ms | upload max ms | first upload of each slot (an idle agent's first request) ms | lookup p50 ms | lookup p99 ms | ratio to alone: upload p50 / p99 | lookup p50 / p99 | quiet errors | noise verdicts |",
      '|---|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const p of nn.phases)
      L.push(
        `| ${p.phase} | ${p.upload.p50ms} | ${p.upload.p99ms} | ${p.upload.maxMs ?? ''} | ${p.firstUploadMs?.join(', ') ?? ''} | ${p.lookup.p50ms} | ${p.lookup.p99ms} | ${p.ratio ? `${p.ratio.uploadP50} / ${p.ratio.uploadP99}` : ''} | ${p.ratio ? `${p.ratio.lookupP50} / ${p.ratio.lookupP99}` : ''} | ${JSON.stringify(p.upload.errors)} | ${p.noise ? JSON.stringify(p.noise) : ''} |`,
      );
    if (nn.perRound && nn.perRound.length > 1) {
      L.push(
        '',
        'Each round on its own (the spread the pooled rows smooth):',
        '',
        '| round | upload p99 ms: alone / stall / flood | ratio: stall / flood |',
        '|---|---|---|',
      );
      for (const r of nn.perRound)
        L.push(
          `| ${r.round} | ${r.uploadP99ms.alone} / ${r.uploadP99ms.stall} / ${r.uploadP99ms.flood} | ${r.ratio.stall} / ${r.ratio.flood} |`,
        );
    }
  } else L.push(`not run: ${(nn as { notRun: string } | undefined)?.notRun ?? 'skipped'}`);
  for (const [k, label] of [
    ['process', 'Process storm (bench/process)'],
    ['cache', 'Local verdict cache (bench/cache)'],
    ['gateOpenLatency', 'Gate open latency with openbench (bench/onaccess/gate-open-latency)'],
  ] as const) {
    const x = l.micro[k];
    if (x === undefined) continue;
    const rows =
      k === 'process' && typeof x === 'object' && x !== null && Array.isArray((x as { rows?: unknown }).rows)
        ? (x as { rows: Array<Record<string, number | string | undefined>> }).rows
        : undefined;
    if (rows) {
      // One table: the floors (no agent, a C subscriber) beside the agent with its watcher off and on.
      L.push(
        '',
        `## ${label}`,
        '',
        '| config | processes | storm ms | us per process | ratio to watcher off | ratio to no agent | agent CPU ms | agent RSS MiB start/peak |',
        '|---|---|---|---|---|---|---|---|',
      );
      const v = (y: number | string | undefined) => (y === undefined ? '' : String(y));
      for (const r of rows)
        L.push(
          `| ${v(r.config)} | ${v(r.processes)} | ${v(r.stormMs)} | ${v(r.perProcessUs)} | ${v(r.ratioToWatcherOff)} | ${v(r.ratioToNoAgent)} | ${v(r.agentCpuMs)} | ${r.agentRssStartMiB === undefined ? '' : `${r.agentRssStartMiB} / ${r.agentRssPeakMiB}`} |`,
        );
      for (const [c, why] of Object.entries((x as { skipped?: Record<string, string> }).skipped ?? {})) L.push('', `skipped ${c}: ${why}`);
      continue;
    }
    L.push('', `## ${label}`, '', typeof x === 'string' ? x : '```\n' + JSON.stringify(x, null, 1).slice(0, 3000) + '\n```');
  }
  L.push('', '## Steps', '', '| step | ok | s | detail |', '|---|---|---|---|');
  for (const s of l.steps)
    L.push(`| ${s.step} | ${s.ok ? 'yes' : '**no**'} | ${s.seconds} | ${(s.detail ?? '').replace(/\|/g, '/').slice(0, 200)} |`);
  L.push('', `Whole run: ${l.wallS} s.`, '');
  return L.join('\n');
}

export function chart(l: Latest): string {
  const cats = Object.keys(l.summary);
  return ratioChartSvg({
    title: `On-access cost per workload vs no agent (${l.profile} run)`,
    subtitle: `${l.tree ? `${l.tree.files} files, ${l.tree.mb} MB; ` : ''}${l.reps} reps, medians; Linux ${l.machine.kernel}, ${l.machine.cpus} CPUs, agent on Node ${(l.machine.productNode ?? l.machine.node).split(' ')[0]}; ${l.machine.date.slice(0, 10)}; shared machine`,
    categories: cats,
    series: SCANNERS.map((v) => ({ name: v, color: VARIANT_COLORS[v]!, values: cats.map((c) => l.summary[c]?.[v]?.ratio) })),
  });
}
