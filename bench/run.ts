/**
 * `npm run bench [-- --quick]`: every benchmark in one run, each as its own process (so one's
 * memory does not colour another's), results under bench/results/. Needs root for the on-access
 * parts (fanotify, loop and tmpfs mounts); refuses without it and says why.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false } } });
if (process.getuid?.() !== 0) {
  process.stderr.write('npm run bench: needs root (fanotify permission events, loop and tmpfs mounts for the on-access benchmarks)\n');
  process.exit(2);
}
const here = path.dirname(new URL(import.meta.url).pathname);
const results = path.join(here, '../../bench/results');
const steps: Array<[string, string[]]> = [
  ['cache/cache-bench.js', values.quick ? ['--entries', '100000'] : []],
  ['onaccess/open-latency.js', ['--files', values.quick ? '2000' : '5000', '--out', path.join(results, 'open-latency.json')]],
  ['onaccess/workloads.js', ['--reps', values.quick ? '3' : '5', '--out', path.join(results, 'onaccess.json')]],
];
let failed = 0;
for (const [script, args] of steps) {
  process.stderr.write(`\n== ${script} ${args.join(' ')}\n`);
  const r = spawnSync(process.execPath, ['--expose-gc', path.join(here, script), ...args], { stdio: 'inherit', timeout: 3 * 3600_000 });
  if (r.status !== 0) {
    failed++;
    process.stderr.write(`!! ${script} failed (exit ${r.status})\n`);
  }
}
process.exit(failed ? 1 : 0);
