/**
 * SVM throughput and latency with N = 1, 10, 100 simulated agents on loopback, through the SVM
 * engineer's `runSvmBench` (bench/svm/svm-bench.ts), builtin engine:
 *   - upload throughput (MB/s, every upload a cache miss) and lookups/s of 4 busy agents;
 *   - N quiet agents each uploading a distinct 16 KiB file every 50 ms: verdict latency p50/p99
 *     and verdicts/s in all.
 *
 *   node build/bench/micro/svm-scale.js [--seconds 2] [--agents 1,10,100] [--out FILE]
 */
import fs from 'node:fs';
import { configureLogging } from '../../src/log.js';
import { benchArgs } from '../lib/cli.js';
import { runSvmBench } from '../svm/svm-bench.js';

export interface SvmScaleRow {
  agents: number;
  uploadMBps: number;
  lookupsPerSec: number;
  p50ms: number;
  p99ms: number;
  verdictsPerSec: number;
}

async function main(): Promise<void> {
  const args = benchArgs(
    {
      name: 'bench/micro/svm-scale',
      summary: `SVM throughput and latency with N simulated agents on loopback (runSvmBench, builtin engine):
upload MB/s and lookups/s of 4 busy agents, verdict latency p50/p99 of N quiet agents. The svm
step of npm run bench; docs/benchmarks.md, "What runs" (Micro).`,
    },
    {
      seconds: {
        type: 'string',
        default: '2',
        arg: 'S',
        number: 'float',
        above: 0,
        help: 'length of each phase (uploads, lookups, quiet agents), seconds',
      },
      agents: {
        type: 'string',
        default: '1,10,100',
        arg: 'N,N',
        number: 'int',
        min: 1,
        list: true,
        help: 'quiet agent counts, one run each',
      },
      out: { type: 'string', arg: 'FILE', help: 'write the result as JSON there too' },
    },
  ).values;
  configureLogging({ level: 'error' });
  const seconds = Number(args.seconds);
  const rows: SvmScaleRow[] = [];
  for (const n of args.agents!.split(',').map(Number)) {
    // runSvmBench's `agents` counts the quiet agents plus one noisy agent.
    const r = await runSvmBench({ seconds, engines: ['builtin'], agents: n + 1, fileSize: 1 << 20 });
    const e = r.results[0]!;
    rows.push({
      agents: n,
      uploadMBps: e.throughputMBps,
      lookupsPerSec: e.lookupsPerSec,
      p50ms: e.quietAlone.p50ms,
      p99ms: e.quietAlone.p99ms,
      verdictsPerSec: Math.round(e.quietAlone.verdicts / seconds),
    });
    process.stderr.write(`svm-scale: N=${n}: ${JSON.stringify(rows.at(-1))}\n`);
  }
  const text = JSON.stringify({ seconds, engine: 'builtin', rows }, null, 2);
  if (args.out) fs.writeFileSync(args.out, text);
  process.stdout.write(`${text}\n`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`svm-scale: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  },
);
