/**
 * `npm run bench [-- --quick]`: every benchmark in one run, each step in its own process (so one's
 * memory does not colour another's, and a stuck step is killed by its timeout), then one report:
 *
 *   bench/results/latest.json  machine facts, series keyed none / lightagent / clamonacc / floor with raw
 *                              samples, a summary (min, median, ratio of medians to no agent),
 *                              micro numbers and the targets met or missed
 *   bench/results/latest.md    the same as tables
 *   bench/results/latest.svg   grouped bars: ratio per workload per variant (latest.png too when
 *                              rsvg-convert is installed, Debian librsvg2-bin)
 *
 * --quick: < 5 minutes on a 2-core machine (small tree, 3 reps; see bench/onaccess/workloads.ts
 * PROFILES and docs/benchmarks.md). Needs root (fanotify, loop and tmpfs mounts, drop_caches);
 * refuses without it and says why.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { buildSingleExecutable, installCleanup, REPO, machineFacts, needRoot, productNode, round, say, track } from './lib/harness.js';
import { chart, markdown, summarize, targets, type Latest } from './lib/report.js';
import type { BootStormResult } from './fleet/boot-storm.js';
import type { NoisyResult } from './fleet/noisy-neighbour.js';
import type { IdleMemoryResult } from './onaccess/idle-memory.js';
import type { WorkloadsResult } from './onaccess/workloads.js';
import { VARIANTS } from './onaccess/variants.js';

/** The steps, in the order they run (process, cache and gate: full run only). */
const STEPS = [
  'workloads',
  'open-latency',
  'signature-refresh',
  'svm',
  'svm-sizing',
  'idle-memory',
  'process',
  'cache',
  'gate',
  'boot-storm',
  'noisy-neighbour',
] as const;

const USAGE = `usage: sudo npm run bench [-- --quick] [-- --only STEP,STEP] [-- --out DIR]

Every benchmark, each step in its own process, then one report in bench/results/ (latest.json,
latest.md, latest.svg): lightagent against no agent, clamonacc and the floor (a C fanotify
listener), the SVM, the fleet. Needs root. docs/benchmarks.md says what each step measures.

  --quick      < 5 minutes on 2 cores: the small tree, fewer reps (the full run: 1.5-2 hours)
  --only S,S   only these steps: ${STEPS.join(', ')}
  --out DIR    write the report there instead of bench/results`;

function parsedArgs(): { quick: boolean; only?: string; out?: string } {
  try {
    const { values } = parseArgs({
      options: {
        quick: { type: 'boolean', default: false },
        only: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean', default: false },
      },
    });
    if (values.help) {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    }
    const unknown = values.only?.split(',').filter((x) => !(STEPS as readonly string[]).includes(x));
    if (unknown?.length) throw new Error(`--only: no step named ${unknown.join(', ')} (steps: ${STEPS.join(', ')})`);
    return values;
  } catch (e) {
    process.stderr.write(`npm run bench: ${(e as Error).message}\n\n${USAGE}\n`);
    process.exit(2);
  }
}
const args = parsedArgs();
needRoot('npm run bench', 'fanotify permission events, loop and tmpfs mounts and drop_caches for the on-access benchmarks');
installCleanup('npm run bench', (args.quick ? 20 : 300) * 60_000);

const here = path.dirname(new URL(import.meta.url).pathname); // build*/bench
const results = args.out ?? path.join(REPO, 'bench/results');
const parts = path.join(results, 'parts');
fs.mkdirSync(parts, { recursive: true });
const quick = args.quick;
const only = args.only ? new Set(args.only.split(',')) : undefined;
const t0 = performance.now();
const machine = machineFacts();

const IN_PROCESS_STEPS = new Set(['svm', 'cache']);

/** Run one step (a node script of this build) with a timeout; its JSON lands in parts/. */
function step(name: string, script: string, argv: string[], timeoutS: number): Promise<{ ok: boolean; seconds: number; detail?: string }> {
  return new Promise((resolve) => {
    const ts = performance.now();
    say(`== ${name}: ${script} ${argv.join(' ')}`);
    // A step that runs product code in its own process (the SVM of `svm`, the cache of `cache`)
    // runs on the Node that ships; the others start their agents and SVMs on it (productNode()).
    const node = IN_PROCESS_STEPS.has(name) ? productNode().path : process.execPath;
    const child = spawn(node, ['--expose-gc', path.join(here, script), ...argv], { stdio: ['ignore', 'inherit', 'inherit'] });
    track(child, name);
    let timedOut = false;
    const t = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM'); // the step cleans up its own processes and mounts on SIGTERM
      setTimeout(() => child.kill('SIGKILL'), 20_000).unref();
    }, timeoutS * 1000);
    child.once('exit', (code, sig) => {
      clearTimeout(t);
      const seconds = round((performance.now() - ts) / 1000, 1);
      const ok = code === 0;
      const detail = ok ? undefined : timedOut ? `timed out after ${timeoutS} s` : `exit ${code ?? sig}`;
      if (!ok) say(`!! ${name} failed: ${detail}`);
      resolve({ ok, seconds, ...(detail ? { detail } : {}) });
    });
  });
}

/** scripts/release.mjs --no-deb into the results' dist/: the executable's path, or undefined (said why). */
function singleExecutable(): string | undefined {
  const out = path.join(results, 'dist');
  say(`== building the single executable for the idle-memory and noisy-neighbour steps (scripts/release.mjs --no-deb --out ${out})`);
  const r = buildSingleExecutable(out);
  if ('exe' in r) return r.exe;
  say(`!! the single executable did not build: idle-memory tries its own build, the noisy-neighbour SVM runs from the sources. ${r.error}`);
  return undefined;
}

const readPart = <T>(f: string): T | undefined => {
  try {
    return JSON.parse(fs.readFileSync(path.join(parts, f), 'utf8')) as T;
  } catch {
    return undefined;
  }
};
const want = (s: string) => !only || only.has(s);

async function main(): Promise<void> {
  for (const f of fs.readdirSync(parts)) fs.rmSync(path.join(parts, f), { force: true });
  const steps: Latest['steps'] = [];
  const run = async (name: (typeof STEPS)[number], script: string, argv: string[], timeoutS: number) => {
    if (!want(name)) return;
    steps.push({ step: name, ...(await step(name, script, argv, timeoutS)) });
  };
  await run(
    'workloads',
    'onaccess/workloads.js',
    [...(quick ? ['--quick'] : []), '--out', path.join(parts, 'workloads.json')],
    quick ? 600 : 4 * 3600,
  );
  await run(
    'open-latency',
    'onaccess/open-latency.js',
    ['--files', quick ? '1000' : '10000', '--out', path.join(parts, 'open-latency.json')],
    600,
  );
  await run(
    'signature-refresh',
    'onaccess/signature-refresh.js',
    [...(quick ? ['--quick'] : []), '--out', path.join(parts, 'signature-refresh.json')],
    quick ? 900 : 3600,
  );
  await run('svm', 'micro/svm-scale.js', ['--seconds', quick ? '1' : '3', '--out', path.join(parts, 'svm.json')], 600);
  await run(
    'svm-sizing',
    'svm/sizing.js',
    [...(quick ? ['--agents', '0,100,500', '--rate-at', '500', '--seconds', '1'] : []), '--out', path.join(parts, 'svm-sizing.json')],
    900,
  );
  // What ships, built once for the steps that run it (idle-memory's agent, noisy-neighbour's SVM).
  const exe = want('idle-memory') || want('noisy-neighbour') ? singleExecutable() : undefined;
  await run(
    'idle-memory',
    'onaccess/idle-memory.js',
    ['--rounds', quick ? '2' : '3', ...(exe ? ['--binary', exe] : []), '--out', path.join(parts, 'idle-memory.json')],
    900,
  );
  if (!quick) {
    await run('process', 'process/process-bench.js', ['--counts', '1000,10000', '--out', path.join(parts, 'process.json')], 1800);
    await run('cache', 'cache/cache-bench.js', [], 1800);
    await run('gate', 'onaccess/gate-open-latency.js', ['--n', '20000', '--rounds', '3'], 1800);
  }
  await run(
    'boot-storm',
    'fleet/boot-storm.js',
    ['--guests', quick ? '20' : '100', '--files', quick ? '300' : '1000', '--out', path.join(parts, 'boot-storm.json')],
    quick ? 900 : 5400,
  );
  // The SVM as it ships: the single executable runs a bundle whose heap is half of what the
  // compiled sources load (~15 against ~31 MB), and every full collection beside the flood marks
  // all of it (docs/benchmarks.md, "The noisy neighbour on what ships"): `exe`, built above.
  await run(
    'noisy-neighbour',
    'fleet/noisy-neighbour.js',
    [
      ...(exe ? ['--svm-exe', exe] : []),
      '--isolate', // the SVM on a core of its own: its fairness, not three processes sharing 2 cores
      // alone, stall and flood in turn, several times: the machine's slow minutes fall on all three
      '--seconds',
      quick ? '5' : '10',
      '--rounds',
      quick ? '3' : '4',
      '--stallers',
      quick ? '200' : '300',
      '--flooders',
      quick ? '20' : '50',
      '--out',
      path.join(parts, 'noisy-neighbour.json'),
    ],
    600,
  );

  const w = readPart<WorkloadsResult>('workloads.json');
  const series: Latest['series'] = Object.fromEntries(VARIANTS.map((v) => [v, { samples: [] }]));
  for (const s of w?.samples ?? []) series[s.variant]!.samples.push(s);
  const ol = readPart<NonNullable<Latest['micro']['openLatency']>>('open-latency.json');
  const svm = readPart<NonNullable<Latest['micro']['svm']>>('svm.json');
  const notRun = (name: string) => ({
    notRun: steps.find((s) => s.step === name)?.detail ?? (want(name) ? 'no result' : 'not selected (--only)'),
  });
  const latest: Latest = {
    machine,
    profile: quick ? 'quick' : 'full',
    note: 'Measured on a shared 2-core machine that other engineers load at the same time: absolute times vary between runs; the ratios are measured side by side (variants alternated every rep) and are what we report.',
    ...(w ? { tree: w.tree, reps: w.config.reps } : {}),
    variants: w?.variants ?? Object.fromEntries(VARIANTS.map((v) => [v, { notRun: 'workloads step failed' }])),
    series,
    summary: w ? summarize(w) : {},
    micro: {
      openLatency: ol ?? notRun('open-latency'),
      ...(w?.eventsPerWarmOpen ? { eventsPerWarmOpenWorkload: w.eventsPerWarmOpen } : {}),
      ...(w ? { resources: w.resources } : {}),
      ...(w?.agentStatus ? { agentStatus: w.agentStatus } : {}),
      svm: svm ?? notRun('svm'),
      idleMemory: readPart<IdleMemoryResult>('idle-memory.json') ?? notRun('idle-memory'),
      bootStorm: readPart<BootStormResult>('boot-storm.json') ?? notRun('boot-storm'),
      noisyNeighbour: readPart<NoisyResult>('noisy-neighbour.json') ?? notRun('noisy-neighbour'),
      ...(quick
        ? { process: 'not run in --quick (npm run bench runs it: watcher off vs on, 1,000 and 10,000 processes)' }
        : { process: readPart('process.json') ?? notRun('process') }),
      ...(quick
        ? {}
        : { cache: steps.find((s) => s.step === 'cache')?.ok ? 'printed above (stdout of bench/cache/cache-bench.js)' : notRun('cache') }),
      ...(quick
        ? {}
        : {
            gateOpenLatency: steps.find((s) => s.step === 'gate')?.ok
              ? 'printed above (stdout of bench/onaccess/gate-open-latency.js)'
              : notRun('gate'),
          }),
    },
    targets: [],
    steps,
    wallS: 0,
  };
  latest.targets = targets(latest);
  latest.wallS = round((performance.now() - t0) / 1000, 1);
  fs.writeFileSync(path.join(results, 'latest.json'), JSON.stringify(latest, null, 2));
  fs.writeFileSync(path.join(results, 'latest.md'), markdown(latest));
  const svgFile = path.join(results, 'latest.svg');
  fs.writeFileSync(svgFile, chart(latest));
  const png = spawnSync('rsvg-convert', ['-o', path.join(results, 'latest.png'), svgFile], { timeout: 60_000 });
  if (png.error || png.status !== 0)
    say(`no PNG: rsvg-convert ${png.error ? 'is not installed (Debian: librsvg2-bin)' : `failed: ${String(png.stderr)}`}`);
  process.stdout.write(`\n${markdown(latest)}\nwritten: ${path.join(results, 'latest.{json,md,svg}')} in ${latest.wallS} s\n`);
  process.exitCode = steps.every((s) => s.ok) ? 0 : 1;
}

main().then(
  () => process.exit(process.exitCode ?? 0),
  (e: unknown) => {
    process.stderr.write(`npm run bench: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
