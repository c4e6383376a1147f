/**
 * Added open() latency of the fanotify gate, per open, with ClamAV's openbench (the same C timer
 * the clamonacc peer numbers come from: ../shared/peers/clamonacc/openbench.c).
 *
 *   sudo node build/bench/onaccess/gate-open-latency.js [--n 20000] [--rounds 3] [--read]
 *
 * Variants, alternated within each round on one 4 KiB file of a tmpfs mounted for the run:
 *   none   no gate
 *   miss   gate, decide() always allows, never cacheable: every open is an event answered by the
 *          main thread (the cost of the path a cache miss takes, minus the scan itself)
 *   warm   gate, decide() allows cacheable: the first open adds a kernel ignore mark, every later
 *          open raises no event at all
 * Prints p50/p90/p99/max per variant (median over rounds) and events per open.
 *
 * Safety: only the tmpfs made here is marked; the gate runs in a child process that is
 * SIGKILLed by a watchdog; every openbench run has a hard timeout; the tmpfs is unmounted at exit.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { FanotifyGate } from '../../src/watchers/fanotify-gate.js';
import { benchArgs } from '../lib/cli.js';
import { needRoot, productNode } from '../lib/harness.js';

const NAME = 'bench/onaccess/gate-open-latency';
const SELF = new URL(import.meta.url).pathname;

if (process.argv[2] === '--gate') await gateChild(process.argv[3]!, process.argv[4]!);
else await main();

/** The gate under test, in its own process: stdin "stats" -> one JSON line; "stop" -> exit. */
async function gateChild(mount: string, behaviour: string): Promise<void> {
  let decides = 0;
  const gate = await FanotifyGate.start({
    mounts: [mount],
    protect: [mount],
    exclude: [],
    deadlineMs: 2000,
    onDeadline: 'allow',
    closeWrite: false,
    decide: async () => {
      decides++;
      return { allow: true, cacheable: behaviour === 'warm' };
    },
  });
  process.stdout.write('READY\n');
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (line === 'stats') process.stdout.write(`${JSON.stringify({ decides, ...gate.stats() })}\n`);
    if (line === 'stop') void gate.stop().then(() => process.exit(0));
  });
}

interface BenchResult {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
  errors: number;
}

async function main(): Promise<void> {
  const args = benchArgs(
    {
      name: NAME,
      root: true,
      summary: `Added open() latency of the fanotify gate alone (no agent, no SVM), timed by ClamAV's openbench
(the clamonacc peer's C timer), on one 4 KiB file of a tmpfs: no gate, every open a miss, warm
(ignore marks). Full run of npm run bench only; docs/benchmarks.md, "What runs".`,
    },
    {
      n: { type: 'string', default: '20000', arg: 'N', number: 'int', min: 1, help: 'opens per openbench run' },
      rounds: {
        type: 'string',
        default: '3',
        arg: 'N',
        number: 'int',
        min: 1,
        help: 'rounds, each variant once per round; the table shows their medians',
      },
      read: { type: 'boolean', default: false, help: 'read the file after each open (open+read+close)' },
      gate: { type: 'string', arg: 'MOUNT MODE', help: '(internal) be the gate under test on MOUNT, deciding as miss or warm' },
    },
  ).values;
  const N = Number(args.n);
  const ROUNDS = Number(args.rounds);
  needRoot(NAME, 'fanotify permission events, a tmpfs mount');
  const repo = path.resolve(path.dirname(SELF), '../../..');
  const source = process.env.OPENBENCH_C ?? path.resolve(repo, '../shared/peers/clamonacc/openbench.c');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'la-openbench-'));
  const mnt = path.join(work, 'mnt');
  fs.mkdirSync(mnt);
  const children = new Set<ChildProcess>();
  let mounted = false;
  const cleanup = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    if (mounted) spawnSync('umount', ['-l', mnt]);
    mounted = false;
    fs.rmSync(work, { recursive: true, force: true });
  };
  process.on('exit', cleanup);
  process.on('SIGINT', () => process.exit(130));
  process.on('SIGTERM', () => process.exit(143));
  const watchdog = setTimeout(() => {
    process.stderr.write(`${NAME}: total time limit reached\n`);
    process.exit(3);
  }, 20 * 60_000);
  watchdog.unref();

  try {
    const bin = path.join(work, 'openbench');
    const cc = spawnSync('gcc', ['-O2', '-o', bin, source], { encoding: 'utf8', timeout: 60_000 });
    if (cc.status !== 0) throw new Error(`gcc ${source} failed: ${cc.stderr || cc.error?.message}`);
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', mnt], { encoding: 'utf8' });
    if (m.status !== 0) throw new Error(`mount tmpfs on ${mnt} failed: ${m.stderr}`);
    mounted = true;
    const target = path.join(mnt, 'target.bin');
    fs.writeFileSync(target, Buffer.alloc(4096, 0x61));

    const openbench = (): BenchResult => {
      const r = spawnSync(bin, [target, String(N), ...(args.read ? ['read'] : [])], {
        encoding: 'utf8',
        timeout: 120_000,
        killSignal: 'SIGKILL',
      });
      if (r.status !== 0) throw new Error(`openbench failed (${r.status ?? r.signal}): ${r.stderr}`);
      const num = (k: string) => Number(new RegExp(`${k}=([\\d.]+)`).exec(r.stdout)?.[1] ?? NaN);
      return {
        p50: num('p50_us'),
        p90: num('p90_us'),
        p99: num('p99_us'),
        max: num('max_us'),
        mean: num('mean_us'),
        errors: num('errors'),
      };
    };

    const withGate = async (behaviour: string): Promise<{ bench: BenchResult; stats: Record<string, number> }> => {
      const child = spawn(productNode().path, [SELF, '--gate', mnt, behaviour], { stdio: ['pipe', 'pipe', 'inherit'] });
      children.add(child);
      const kill = setTimeout(() => child.kill('SIGKILL'), 180_000);
      const lines = readline.createInterface({ input: child.stdout! });
      const next = () =>
        new Promise<string>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error('the gate child did not answer within 10 s')), 10_000);
          lines.once('line', (l) => {
            clearTimeout(t);
            resolve(l);
          });
        });
      try {
        if ((await next()) !== 'READY') throw new Error('the gate child did not start');
        const bench = openbench();
        child.stdin!.write('stats\n');
        const stats = JSON.parse(await next()) as Record<string, number>;
        return { bench, stats };
      } finally {
        child.stdin!.write('stop\n');
        await Promise.race([new Promise((r) => child.once('exit', r)), new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
        clearTimeout(kill);
        children.delete(child);
      }
    };

    const variants = ['none', 'miss', 'warm'] as const;
    const results: Record<string, Array<{ bench: BenchResult; stats?: Record<string, number> }>> = { none: [], miss: [], warm: [] };
    openbench(); // page cache, dentry, binary warm
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? variants : [...variants].reverse();
      for (const v of order) results[v]!.push(v === 'none' ? { bench: openbench() } : await withGate(v));
    }

    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const mode = args.read ? 'open+read(4 KiB)+close' : 'open+close';
    process.stdout.write(
      `\nopen latency, ${mode}, ${N} opens x ${ROUNDS} rounds (median of rounds), one 4 KiB file on tmpfs, ${os.cpus().length} CPUs, Linux ${os.release()}, Node ${process.version}\n\n`,
    );
    process.stdout.write(
      `${'variant'.padEnd(8)}${['p50 us', 'p90 us', 'p99 us', 'max us', 'mean us'].map((h) => h.padStart(9)).join('')}   events/open  gate answer p50/p99 us\n`,
    );
    const base = median(results.none!.map((r) => r.bench.p50));
    for (const v of variants) {
      const rs = results[v]!;
      const col = (k: keyof BenchResult) =>
        median(rs.map((r) => r.bench[k]))
          .toFixed(1)
          .padStart(9);
      let extra = '';
      if (v !== 'none') {
        const perOpen = median(rs.map((r) => (r.stats!.open ?? 0) / (N + 0)));
        const a50 = median(rs.map((r) => r.stats!.answerP50Us ?? NaN));
        const a99 = median(rs.map((r) => r.stats!.answerP99Us ?? NaN));
        extra = `   ${perOpen.toFixed(5).padStart(11)}  ${a50}/${a99}`;
      }
      const errors = rs.reduce((s, r) => s + r.bench.errors, 0);
      process.stdout.write(
        `${v.padEnd(8)}${col('p50')}${col('p90')}${col('p99')}${col('max')}${col('mean')}${extra}${errors ? `  errors=${errors}` : ''}\n`,
      );
    }
    process.stdout.write(
      `\nadded p50 on a miss: ${(median(results.miss!.map((r) => r.bench.p50)) - base).toFixed(1)} us; warm: ${(median(results.warm!.map((r) => r.bench.p50)) - base).toFixed(1)} us\n`,
    );
    process.stdout.write(
      `raw rounds: ${JSON.stringify(Object.fromEntries(variants.map((v) => [v, results[v]!.map((r) => [r.bench.p50, r.bench.p99, r.stats?.open ?? 0])])))}\n`,
    );
  } finally {
    cleanup();
  }
}
