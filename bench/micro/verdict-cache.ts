/**
 * The SVM's memory verdict cache full: what it costs in heap, resident memory, time per get and
 * set, and above all in every full garbage collection of the SVM's one thread, which answers
 * every tenant. Two implementations side by side, each in a child process of its own on the
 * product's Node with the SVM's V8 flags:
 *
 *   map    test/svm/map-lru.ts: the JS Map LRU the SVM used until 2026-12-06
 *   typed  src/svm/memory-verdict-cache.ts: the entries in typed arrays, off V8's heap
 *
 * Per size N: N sets of distinct SHA-256s (two tenants, one generation, clean verdicts from
 * `builtin`, 1 in 100 infected), then N gets (half hits, half misses), then 5 full collections
 * (`gc()`, median). Implementations alternate per size.
 *
 *   node build/bench/micro/verdict-cache.js [--sizes 100000,1000000] [--out FILE] [--json]
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import type { CachedVerdict, VerdictKey } from '../../src/svm/verdict-cache.js';
import { MapLru } from '../../test/svm/map-lru.js';
import { benchArgs } from '../lib/cli.js';
import { machineFacts, productNode, round, say, SVM_NODE_FLAGS } from '../lib/harness.js';

export interface VerdictCacheRow {
  impl: 'map' | 'typed';
  entries: number;
  setNs: number;
  getNs: number;
  heapMiB: number;
  externalMiB: number;
  rssMiB: number;
  fullGcMs: number;
}

/** One measurement in this process (the child's side). */
function measure(impl: 'map' | 'typed', n: number): VerdictCacheRow {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  gc();
  const heap0 = process.memoryUsage();
  const cache: { setNow(k: VerdictKey, v: CachedVerdict): void; getNow(k: VerdictKey): CachedVerdict | undefined } =
    impl === 'typed'
      ? new MemoryVerdictCache(n)
      : Object.assign(new MapLru(n), { setNow: MapLru.prototype.set, getNow: MapLru.prototype.get });
  const shas = Array.from({ length: n }, () => crypto.randomBytes(32).toString('hex'));
  const key = (i: number): VerdictKey => ({ tenant: i & 1 ? 'acme' : 'default', generation: 'builtin-5f3e1a2b', sha256: shas[i]! });
  const clean: CachedVerdict = { verdict: 'clean', engine: 'builtin' };
  let t = process.hrtime.bigint();
  for (let i = 0; i < n; i++)
    cache.setNow(key(i), i % 100 === 0 ? { verdict: 'infected', engine: 'builtin', threat: `Test.Threat-${i % 977}` } : clean);
  const setNs = Number(process.hrtime.bigint() - t) / n;
  const misses = Array.from({ length: Math.min(n, 100_000) }, () => crypto.randomBytes(32).toString('hex'));
  let hits = 0;
  t = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    const k = i & 1 ? key((i * 7919) % n) : { tenant: 'acme', generation: 'builtin-5f3e1a2b', sha256: misses[i % misses.length]! };
    if (cache.getNow(k)) hits++;
  }
  const getNs = Number(process.hrtime.bigint() - t) / n;
  if (hits !== n >> 1) throw new Error(`expected ${n >> 1} hits, got ${hits}`);
  shas.length = 0; // the keys' strings are the caller's, not the cache's
  misses.length = 0;
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    gc();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const m = process.memoryUsage();
  const row: VerdictCacheRow = {
    impl,
    entries: n,
    setNs: round(setNs, 0),
    getNs: round(getNs, 0),
    heapMiB: round((m.heapUsed - heap0.heapUsed) / 2 ** 20, 1),
    externalMiB: round((m.arrayBuffers - heap0.arrayBuffers) / 2 ** 20, 1),
    rssMiB: round(m.rss / 2 ** 20, 0),
    fullGcMs: round(times[2]!, 1),
  };
  // Keep the cache alive until here (the collections above must see it).
  if (cache.getNow({ tenant: 'x', generation: 'y', sha256: '0'.repeat(64) }) && n < 0) throw new Error('unreachable');
  return row;
}

async function main(): Promise<void> {
  const { values: args } = benchArgs(
    {
      name: 'bench/micro/verdict-cache',
      summary: `The SVM's memory verdict cache full: the JS Map it used before against the typed arrays it uses
now, each in its own process on the product's Node: ns per set and get, V8 heap, external memory,
RSS, and the time of one full collection. docs/benchmarks.md, "A full verdict cache".`,
    },
    {
      sizes: {
        type: 'string',
        default: '100000,1000000',
        arg: 'N,N',
        number: 'int',
        min: 1,
        max: 10_000_000,
        list: true,
        help: 'cache sizes, entries, 1 to 10,000,000 each',
      },
      out: { type: 'string', arg: 'FILE', help: 'write the rows and the machine facts as JSON there too' },
      json: { type: 'boolean', default: false, help: 'print the result as one JSON line instead of a line per row on stderr' },
      child: { type: 'string', arg: 'IMPL:N', help: '(internal) measure map or typed at N entries in this process, one JSON line' },
    },
  );
  if (args.child) {
    const [impl, n] = args.child.split(':');
    process.stdout.write(`${JSON.stringify(measure(impl as 'map' | 'typed', Number(n)))}\n`);
    return;
  }
  const sizes = args.sizes.split(',').map(Number);
  const node = productNode();
  const rows: VerdictCacheRow[] = [];
  for (const n of sizes)
    for (const impl of ['map', 'typed'] as const) {
      const r = spawnSync(node.path, [...SVM_NODE_FLAGS, '--expose-gc', new URL(import.meta.url).pathname, '--child', `${impl}:${n}`], {
        encoding: 'utf8',
        timeout: 600_000,
      });
      if (r.status !== 0) throw new Error(`the ${impl} child at ${n} entries failed (${r.status ?? r.signal}): ${r.stderr.slice(-2000)}`);
      const row = JSON.parse(r.stdout.trim().split('\n').pop()!) as VerdictCacheRow;
      rows.push(row);
      if (!args.json)
        say(
          `${impl.padEnd(5)} ${String(n).padStart(9)} entries: set ${row.setNs} ns, get ${row.getNs} ns, heap ${row.heapMiB} MiB, ` +
            `off-heap ${row.externalMiB} MiB, RSS ${row.rssMiB} MiB, full GC ${row.fullGcMs} ms`,
        );
    }
  const result = { machine: machineFacts(), node: node.version, flags: SVM_NODE_FLAGS, rows };
  if (args.out) fs.writeFileSync(args.out, `${JSON.stringify(result, null, 2)}\n`);
  if (args.json) process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/micro/verdict-cache failed: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
