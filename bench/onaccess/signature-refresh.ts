/**
 * The signature refresh, measured (issue #22 item 4; docs/benchmarks.md "Signature refresh"):
 *
 *   sudo node build/bench/onaccess/signature-refresh.js [--quick] [--reps N] [--out FILE]
 *
 * Two ext4 loop mounts holding the same workload tree (bench/onaccess/workloads.ts PROFILES): the
 * agents protect one, the other is the baseline ("none"), and every timed read of the protected
 * tree is paired with one of the other, taken right before it, so that the machine's load (shared,
 * 2 cores) weighs on both sides of each ratio alike:
 *   1. one untimed pass over the baseline tree;
 *   2. an SVM (builtin engine, a signature file) and agent A; one pass judges every file; A is
 *      restarted (its cache saved) and its state dir copied for guest B (a clone: same files,
 *      same identities); one untimed pass gives A its ignore marks again, then `reps` paired reads
 *      (warm, before the change);
 *   3. a new generation (a line appended to the signature file, SIGHUP to the SVM); A refreshes:
 *      its duration, A's CPU (all threads, schedstat), bytes uploaded (SVM and A's own count);
 *   4. once done, `reps` paired reads: the warm read after the change, its ratio to the baseline
 *      read just before it (median of each side), and the permission events they raised;
 *   5. A stopped, guest B started on its copy of the state dir (a second guest after the same
 *      change): its refresh duration, CPU and bytes (expected 0).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  cpuNs,
  ext4Mount,
  installCleanup,
  machineFacts,
  median,
  needRoot,
  round,
  say,
  shSync,
  stopChild,
  SVM_NODE_FLAGS,
  timed,
  track,
  productNode,
} from '../lib/harness.js';
import { benchArgs } from '../lib/cli.js';
import { PROFILES } from './workloads.js';
import { agentStatus, metric, startAgent, svmUrls, TOKEN, type AgentStatus } from './variants.js';

const SVM_CLI = new URL('../../src/cli/lightagent-svm.js', import.meta.url).pathname;
const BASE = '/tmp/la-bench-refresh';

interface RefreshFigures {
  state?: string;
  total?: number;
  promoted?: number;
  unknown?: number;
  uploaded?: number;
  bytes?: number;
  marks?: number;
  batches?: number;
  durationMs?: number;
}

async function refreshDone(agent: ChildProcess, stateDir: string, generation: string, limitMs: number): Promise<RefreshFigures> {
  const end = Date.now() + limitMs;
  for (;;) {
    const st: AgentStatus = await agentStatus(agent, stateDir);
    const r = st.refresh as (RefreshFigures & { generation?: string }) | undefined;
    if (r && r.generation === generation && r.state !== 'running') return r;
    if (Date.now() > end) throw new Error(`no refresh for ${generation} within ${limitMs} ms: ${JSON.stringify(r)}`);
    await new Promise((res) => setTimeout(res, 200));
  }
}

async function generationOf(metricsUrl: string): Promise<string> {
  const text = await (await fetch(metricsUrl.replace(/\/metrics$/, '/healthz'))).text();
  return (JSON.parse(text) as { signatures?: { generation?: string }; generation?: string }).signatures?.generation ?? '';
}

async function main(): Promise<void> {
  const { values: args } = benchArgs(
    {
      name: 'bench/onaccess/signature-refresh',
      root: true,
      summary: `The signature refresh: a new generation on the SVM, then the agent's refresh (duration, CPU,
bytes uploaded), warm reads of the protected tree before and after it against a baseline tree,
and a second guest's refresh. docs/benchmarks.md, "Signature refresh".`,
    },
    {
      quick: { type: 'boolean', default: false, help: "the quick profile's small tree (workloads.ts PROFILES)" },
      reps: {
        type: 'string',
        arg: 'N',
        number: 'int',
        min: 1,
        help: 'paired reads before and after the change (default: 5 with --quick, else 3)',
      },
      out: { type: 'string', arg: 'FILE', help: `write the result as JSON there (default: ${BASE}/signature-refresh.json)` },
    },
  );
  needRoot('bench/onaccess/signature-refresh', 'fanotify and a loop mount');
  installCleanup('bench/onaccess/signature-refresh', (args.quick ? 15 : 60) * 60_000);
  const p = PROFILES[args.quick ? 'quick' : 'full'];
  const reps = Number(args.reps ?? (args.quick ? 5 : 3));
  const load0 = os.loadavg();
  fs.mkdirSync(BASE, { recursive: true });
  const mnt = path.join(BASE, 'mnt');
  const stageDir = path.join(BASE, 'stage');
  fs.rmSync(stageDir, { recursive: true, force: true });
  fs.mkdirSync(path.join(stageDir, 'T'), { recursive: true });
  for (const d of p.tree) if (fs.existsSync(d)) shSync(`cp -a '${d}' 'T/${d.replaceAll('/', '_')}'`, { cwd: stageDir });
  const mb = Number(shSync('du -sm T | cut -f1', { cwd: stageDir }).trim());
  const mntNone = path.join(BASE, 'mnt-none');
  for (const [img, dir] of [
    ['fs.img', mnt],
    ['fs-none.img', mntNone],
  ] as const) {
    ext4Mount(path.join(BASE, img), dir, Math.max(512, mb * 3 + 300));
    shSync(`cp -a '${stageDir}/T' '${dir}/T'`, { timeoutS: 900 });
  }
  const files = Number(shSync('find T -type f | wc -l', { cwd: mnt }).trim());
  say(`tree: ${files} files, ${mb} MB on ${mnt} (protected) and ${mntNone} (baseline)`);
  const READ = 'find T -type f -print0 | xargs -0 cat > /dev/null';
  const readIn = async (dir: string) => {
    const t = await timed(READ, dir, p.timeoutS);
    if (t.rc !== 0) throw new Error(`read failed: ${t.err}`);
    return t.wall;
  };
  const read = () => readIn(mnt);
  const none: number[] = [];
  /** `reps` pairs: the baseline tree, then the protected one. */
  const paired = async (): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < reps; i++) {
      none.push(await readIn(mntNone));
      out.push(await read());
    }
    return out;
  };

  // 1. the baseline tree in the page cache
  await readIn(mntNone);

  // 2. SVM + agent A, everything judged once
  const sig = path.join(BASE, 'sigs.hdb');
  fs.writeFileSync(sig, '44d88612fea8a8f36de82e1278abb02f:68:Bench.Placeholder\n');
  const svmLog = fs.openSync(path.join(BASE, 'svm.log'), 'w');
  const svm = track(
    spawn(
      productNode().path,
      [...SVM_NODE_FLAGS, SVM_CLI, '--listen', '127.0.0.1:0', '--token', TOKEN, '--signatures', sig, '--json', '--log-level', 'warn'],
      {
        stdio: ['ignore', 'pipe', svmLog],
      },
    ),
    'lightagent-svm',
  );
  const urls = await svmUrls(svm);
  const stateA = path.join(BASE, 'state-a');
  const stateB = path.join(BASE, 'state-b');
  const logA = path.join(BASE, 'agent-a.log');
  let a = await startAgent({ url: urls.url, protect: mnt, stateDir: stateA, logFile: logA, watchdogMs: 3600_000 });
  await read();
  say('agent A judged the tree; restarting it (cache saved) and copying its state for guest B');
  await stopChild(a);
  fs.rmSync(stateB, { recursive: true, force: true });
  shSync(`cp -a '${stateA}' '${stateB}'`);
  a = await startAgent({ url: urls.url, protect: mnt, stateDir: stateA, logFile: logA, fresh: false, watchdogMs: 3600_000 });
  await read(); // worker hits: the ignore marks come back
  const noneBefore = none.length;
  const warmBefore = await paired();
  const pairedBefore = none.slice(noneBefore);
  const gen0 = await generationOf(urls.metrics);

  // 3. a new generation
  const bytes0 = await metric(urls.metrics, 'lightagent_svm_bytes_received_total');
  const cpu0 = cpuNs(a.pid!);
  const t0 = performance.now();
  fs.appendFileSync(sig, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:12345:Bench.NewSignature\n');
  svm.kill('SIGHUP');
  let gen1 = gen0;
  while (gen1 === gen0) {
    await new Promise((r) => setTimeout(r, 50));
    gen1 = await generationOf(urls.metrics);
  }
  const ra = await refreshDone(a, stateA, gen1, p.timeoutS * 1000 * 4);
  const wallA = (performance.now() - t0) / 1000;
  const cpuA = (cpuNs(a.pid!) - cpu0) / 1e9;
  const bytesA = (await metric(urls.metrics, 'lightagent_svm_bytes_received_total')) - bytes0;
  say(`guest A refresh: ${JSON.stringify(ra)}; ${round(wallA, 2)} s wall, ${round(cpuA, 2)} s agent CPU, ${bytesA} bytes to the SVM`);

  // 4. warm reads after the change
  const ev0 = (await agentStatus(a, stateA)).backend?.open ?? 0;
  const noneAfter = none.length;
  const warmAfter = await paired();
  const pairedAfter = none.slice(noneAfter);
  const ev1 = (await agentStatus(a, stateA)).backend?.open ?? 0;
  await stopChild(a);

  // 5. guest B: the same files, its cache from before the change
  const bytes1 = await metric(urls.metrics, 'lightagent_svm_bytes_received_total');
  const t1 = performance.now();
  const b = await startAgent({
    url: urls.url,
    protect: mnt,
    stateDir: stateB,
    logFile: path.join(BASE, 'agent-b.log'),
    fresh: false,
    watchdogMs: 3600_000,
  });
  const rb = await refreshDone(b, stateB, gen1, p.timeoutS * 1000 * 4);
  const wallB = (performance.now() - t1) / 1000;
  // Its refresh starts when it connects, which may be before its "started" line: the CPU counted
  // is the whole process's since its start (start-up and the worker's warm-up included).
  const cpuB = cpuNs(b.pid!) / 1e9;
  const bytesB = (await metric(urls.metrics, 'lightagent_svm_bytes_received_total')) - bytes1;
  say(`guest B refresh: ${JSON.stringify(rb)}; ${round(wallB, 2)} s from its start, ${bytesB} bytes to the SVM`);
  await stopChild(b);
  await stopChild(svm);

  const mNone = median(none);
  const result = {
    profile: args.quick ? 'quick' : 'full',
    tree: { files, mb },
    reps,
    loadAverage: { before: load0.map((x) => round(x, 2)), after: os.loadavg().map((x) => round(x, 2)) },
    machine: machineFacts(),
    none: { medianS: round(mNone, 3), runs: none.map((x) => round(x, 3)) },
    warmBeforeChange: {
      medianS: round(median(warmBefore), 3),
      ratio: round(median(warmBefore) / median(pairedBefore), 2),
      pairRatios: warmBefore.map((x, i) => round(x / pairedBefore[i]!, 2)),
    },
    warmAfterRefresh: {
      medianS: round(median(warmAfter), 3),
      noneMedianS: round(median(pairedAfter), 3),
      ratio: round(median(warmAfter) / median(pairedAfter), 2),
      pairRatios: warmAfter.map((x, i) => round(x / pairedAfter[i]!, 2)),
      runs: warmAfter.map((x) => round(x, 3)),
      permissionEvents: ev1 - ev0,
      opens: files * reps,
    },
    guestA: { refresh: ra, wallS: round(wallA, 2), agentCpuS: round(cpuA, 2), svmBytesReceived: bytesA },
    guestB: { refresh: rb, wallFromStartS: round(wallB, 2), agentCpuSinceStartS: round(cpuB, 2), svmBytesReceived: bytesB },
  };
  const out = args.out ?? path.join(BASE, 'signature-refresh.json');
  fs.writeFileSync(out, JSON.stringify(result, null, 2));
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  say(`written ${out}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench/onaccess/signature-refresh failed: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
