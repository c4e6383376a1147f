/**
 * Local verdict cache: identity hit cost, bytes per entry (from the typed arrays and as an RSS
 * delta), RSS with 100k and 1M entries, save and load time of a full cache.
 *
 *   node build/bench/cache/cache-bench.js [--entries N]
 *
 * Each size runs in its own child process (with --expose-gc) so RSS deltas do not mix.
 * Prints one JSON object, then a short table.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { VerdictCache, type FileIdentity } from '../../src/cache/verdict-cache.js';
import { benchArgs } from '../lib/cli.js';

interface Result {
  entries: number;
  identityHitNs: number;
  identityMissNs: number;
  fingerprintHitNs: number;
  recordNs: number;
  tableBytesPerEntry: number;
  rssBytesPerEntry: number;
  rssMB: number;
  saveMs: number;
  loadMs: number;
  fileBytesPerEntry: number;
}

const { values } = benchArgs(
  {
    name: 'bench/cache/cache-bench',
    summary: `The agent's local verdict cache (src/cache) full: ns per identity hit, miss, fingerprint hit and
record, bytes per entry (typed arrays and RSS), save and load of the cache file. Each size in a
child process of its own; one JSON object, then a table. docs/cache.md, "Measured".`,
  },
  {
    entries: { type: 'string', arg: 'N', number: 'int', min: 1, help: 'one cache size, entries (default: 100000, then 1000000)' },
    child: { type: 'boolean', help: '(internal) measure --entries in this process and print one JSON line' },
  },
);
const T0 = 1_700_000_000_000_000_000n;
const identity = (n: number): FileIdentity => ({
  dev: 2049n,
  ino: BigInt(n),
  size: BigInt(1000 + (n % 5000)),
  mtimeNs: T0 + BigInt(n),
  ctimeNs: T0 + BigInt(n),
});
const fpOf = (n: number) => (BigInt(n) * 0x9e3779b97f4a7c15n) & 0xffff_ffff_ffff_ffffn;
const shaOf = (n: number) => n.toString(16).padStart(64, '0');
const rss = () => process.memoryUsage().rss;
const gc = () => (globalThis as { gc?: () => void }).gc?.();
/** ns per operation: the best of `rounds` timed passes (the machine may be shared; the best pass is the cost). */
const nsPer = (n: number, f: () => void, rounds = 1) => {
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t = process.hrtime.bigint();
    f();
    best = Math.min(best, Number(process.hrtime.bigint() - t) / n);
  }
  return best;
};

async function measure(n: number): Promise<Result> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'la-cache-bench-'));
  const file = path.join(dir, 'cache.v1');
  try {
    gc();
    const before = rss();
    const c = await VerdictCache.open({ seed: 0x1234n, capacity: n, file, generation: 'g1' });
    const recordNs = nsPer(n, () => {
      for (let i = 1; i <= n; i++) {
        const bad = i % 1000 === 0;
        c.record(identity(i), fpOf(i), shaOf(i), bad ? 'infected' : 'clean', bad ? `Threat-${i % 7}` : undefined);
      }
    });
    gc();
    const filled = rss();
    const probes = Array.from({ length: 200_000 }, (_, k) => identity(1 + ((k * 7919) % n)));
    const absent = Array.from({ length: 200_000 }, (_, k) => identity(n + 1 + k));
    const fps = Array.from({ length: 200_000 }, (_, k) => fpOf(1 + ((k * 7919) % n)));
    let hits = 0;
    for (let r = 0; r < 2; r++) for (const p of probes) if (c.lookupIdentity(p)) hits++; // warm up
    const identityHitNs = nsPer(
      probes.length,
      () => {
        for (const p of probes) if (c.lookupIdentity(p)) hits++;
      },
      5,
    );
    const identityMissNs = nsPer(
      absent.length,
      () => {
        for (const p of absent) if (c.lookupIdentity(p)) hits--;
      },
      5,
    );
    const fingerprintHitNs = nsPer(
      fps.length,
      () => {
        for (const f of fps) if (c.lookupFingerprint(f)) hits++;
      },
      5,
    );
    if (hits !== probes.length * 7 + fps.length * 5) throw new Error(`lookups went wrong: ${hits}`);
    const t1 = performance.now();
    if (!(await c.save())) throw new Error('save failed');
    const saveMs = performance.now() - t1;
    const fileBytes = fs.statSync(file).size;
    const t2 = performance.now();
    const d = await VerdictCache.open({ seed: 0x1234n, capacity: n, file, generation: 'g1' });
    const loadMs = performance.now() - t2;
    if (d.size !== n) throw new Error(`reload lost entries: ${d.size} of ${n}`);
    if (d.lookupIdentity(identity(n))?.sha256 !== shaOf(n)) throw new Error('reload answers wrong');
    return {
      entries: n,
      identityHitNs: Math.round(identityHitNs),
      identityMissNs: Math.round(identityMissNs),
      fingerprintHitNs: Math.round(fingerprintHitNs),
      recordNs: Math.round(recordNs),
      tableBytesPerEntry: +(c.store.bytes / n).toFixed(1),
      rssBytesPerEntry: +((filled - before) / n).toFixed(1),
      rssMB: +(filled / 2 ** 20).toFixed(1),
      saveMs: Math.round(saveMs),
      loadMs: Math.round(loadMs),
      fileBytesPerEntry: +(fileBytes / n).toFixed(1),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (values.child) {
  process.stdout.write(JSON.stringify(await measure(Number(values.entries))));
} else {
  const sizes = values.entries ? [Number(values.entries)] : [100_000, 1_000_000];
  const self = fileURLToPath(import.meta.url);
  const results: Result[] = [];
  for (const n of sizes) {
    const r = spawnSync(process.execPath, ['--expose-gc', self, '--child', '--entries', String(n)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`bench child for ${n} entries failed:\n${r.stderr}`);
    results.push(JSON.parse(r.stdout) as Result);
  }
  const out = process.stdout;
  out.write(`${JSON.stringify({ node: process.version, cpu: os.cpus()[0]?.model, results }, null, 2)}\n\n`);
  out.write(
    '| entries | identity hit | identity miss | fp hit | record | table B/entry | RSS B/entry | RSS | save | load | file B/entry |\n',
  );
  out.write('|---|---|---|---|---|---|---|---|---|---|---|\n');
  for (const r of results) {
    out.write(
      `| ${r.entries} | ${r.identityHitNs} ns | ${r.identityMissNs} ns | ${r.fingerprintHitNs} ns | ${r.recordNs} ns | ${r.tableBytesPerEntry} | ${r.rssBytesPerEntry} | ${r.rssMB} MB | ${r.saveMs} ms | ${r.loadMs} ms | ${r.fileBytesPerEntry} |\n`,
    );
  }
}
