/**
 * The exclusion matcher on the hot path (src/scan/exclusions.ts): ns per path() call for a
 * realistic rule set (a dozen folders, globs, extensions) over paths that miss (the common
 * case: every event that reaches the main thread is checked), hit a folder, hit a glob, hit an
 * extension; plus the compile time of the rules (once per reload) and one process check against
 * the real /proc (a readlink, only when process rules exist).
 *
 *   node build/bench/micro/exclusions.js [--iterations 2000000] [--out FILE]
 */
import fs from 'node:fs';
import { NO_EXCLUSIONS } from '../../src/config/exclusions.js';
import { Exclusions } from '../../src/scan/exclusions.js';
import { benchArgs } from '../lib/cli.js';

export interface ExclusionsBenchRow {
  case: string;
  nsPerCall: number;
}

function main(): void {
  const args = benchArgs(
    {
      name: 'bench/micro/exclusions',
      summary: `The exclusion matcher on the hot path (src/scan/exclusions.ts): ns per path check for a dozen
folder, glob and extension rules (miss, folder, glob and extension hits), a process check against
/proc and the rules' compile time. docs/exclusions.md, "Cost".`,
    },
    {
      iterations: {
        type: 'string',
        default: '2000000',
        arg: 'N',
        number: 'int',
        min: 100,
        help: 'path checks timed per case (process checks: N / 100, at most 20000)',
      },
      out: { type: 'string', arg: 'FILE', help: 'write the rows as JSON there too' },
    },
  ).values;
  const n = Number(args.iterations);
  const config = {
    ...NO_EXCLUSIONS,
    paths: [
      '/var/lib/postgresql/**',
      '/var/lib/mysql',
      '/srv/build/*.o',
      '/srv/build/**/*.tmp',
      '/home/*/.cache/**',
      '/opt/app/logs',
      '/var/cache/apt',
      '/var/log/journal/**',
      '/srv/data/{a,b,c}/scratch/**',
      '/tmp/build-*',
      '/mnt/backup',
      '/var/spool/postfix/**',
    ],
    extensions: ['.log', '.tmp', '.swp', '.o', '.pyc'],
    processes: [{ path: process.execPath, children: true }],
  };
  const t0 = process.hrtime.bigint();
  let ex: Exclusions | undefined;
  for (let i = 0; i < 100; i++) ex = new Exclusions(config, ['/var/lib/lightagent']);
  const compileUs = Number(process.hrtime.bigint() - t0) / 100 / 1000;
  const m = ex!;
  const cases: Array<[string, string[]]> = [
    ['miss (typical file)', ['/usr/lib/x86_64-linux-gnu/libssl.so.3', '/home/alice/projects/app/src/index.ts', '/etc/ssl/certs/ca.pem']],
    ['hit: folder', ['/var/lib/mysql/ibdata1', '/opt/app/logs/2026/12/app.1']],
    ['hit: glob', ['/srv/build/main.o', '/home/bob/.cache/pip/wheel/x.whl']],
    ['hit: extension', ['/home/alice/notes.LOG', '/srv/app/x.pyc']],
  ];
  const rows: ExclusionsBenchRow[] = [];
  let sink = 0;
  for (const [name, paths] of cases) {
    for (let i = 0; i < 200_000; i++) if (m.path(paths[i % paths.length]!) !== undefined) sink++; // warm-up
    const s = process.hrtime.bigint();
    for (let i = 0; i < n; i++) if (m.path(paths[i % paths.length]!) !== undefined) sink++;
    rows.push({ case: name, nsPerCall: Math.round((Number(process.hrtime.bigint() - s) / n) * 10) / 10 });
  }
  const np = Math.min(n / 100, 20_000);
  const s = process.hrtime.bigint();
  for (let i = 0; i < np; i++) if (m.process(process.pid)) sink++;
  rows.push({ case: 'process (readlink /proc/PID/exe, hit)', nsPerCall: Math.round(Number(process.hrtime.bigint() - s) / np) });
  const other = new Exclusions({ ...config, processes: [{ path: '/usr/bin/rsync', children: true }] });
  const s2 = process.hrtime.bigint();
  for (let i = 0; i < np; i++) if (other.process(process.pid)) sink++;
  rows.push({ case: 'process (miss, children: ancestor walk)', nsPerCall: Math.round(Number(process.hrtime.bigint() - s2) / np) });
  rows.push({ case: 'compile the rules (once per reload)', nsPerCall: Math.round(compileUs * 1000) });
  if (sink === 0) throw new Error('the benchmark matched nothing');
  for (const r of rows) process.stdout.write(`${r.case.padEnd(44)} ${String(r.nsPerCall).padStart(10)} ns\n`);
  if (args.out) fs.writeFileSync(args.out, `${JSON.stringify({ iterations: n, rows }, null, 2)}\n`);
}

main();
