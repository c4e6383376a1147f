/**
 * Local verdict cache: identity hit cost, bytes per entry (computed and as RSS), save and load
 * time of a full cache. `node build/bench/cache/cache-bench.js [--entries N]`
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { VerdictCache, type FileIdentity } from '../../src/cache/verdict-cache.js';

const { values } = parseArgs({ options: { entries: { type: 'string' } } });
const sizes = values.entries ? [Number(values.entries)] : [100_000, 1_000_000];
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'la-cache-bench-'));
const rss = () => process.memoryUsage().rss;
const gc = () => (globalThis as { gc?: () => void }).gc?.();
const id = (n: number): FileIdentity => ({ dev: 2049n, ino: BigInt(n), size: BigInt(1000 + (n % 5000)), mtimeNs: 1_700_000_000_000_000_000n + BigInt(n), ctimeNs: 1_700_000_000_000_000_000n + BigInt(n) });
const sha = (n: number) => n.toString(16).padStart(64, '0');

const results: Record<string, unknown>[] = [];
for (const n of sizes) {
  gc();
  const before = rss();
  const c = await VerdictCache.open({ seed: 0x1234n, capacity: n, file: path.join(dir, `c${n}/cache.v1`), generation: 'g1' });
  for (let i = 1; i <= n; i++) c.record(id(i), BigInt(i) * 0x9e3779b97f4a7c15n & 0xffff_ffff_ffff_ffffn || 1n, sha(i), i % 1000 === 0 ? 'infected' : 'clean', i % 1000 === 0 ? 'T' : undefined);
  gc();
  const filled = rss();
  // hit cost: lookups of identities that are present, in a shuffled order
  const probes = Array.from({ length: 200_000 }, (_, k) => id(1 + ((k * 7919) % n)));
  let hits = 0;
  for (const p of probes.slice(0, 20_000)) if (c.lookupIdentity(p)) hits++; // warm up
  const t0 = process.hrtime.bigint();
  for (const p of probes) if (c.lookupIdentity(p)) hits++;
  const hitNs = Number(process.hrtime.bigint() - t0) / probes.length;
  const tableBytes = c.identities.bytes + c.contents.bytes;
  const t1 = performance.now();
  await c.save();
  const saveMs = performance.now() - t1;
  const fileBytes = fs.statSync(path.join(dir, `c${n}/cache.v1`)).size;
  const t2 = performance.now();
  const d = await VerdictCache.open({ seed: 0x1234n, capacity: n, file: path.join(dir, `c${n}/cache.v1`), generation: 'g1' });
  const loadMs = performance.now() - t2;
  if (d.identities.size !== n) throw new Error(`reload lost entries: ${d.identities.size} of ${n}`);
  results.push({
    entries: n,
    identityHitNs: Math.round(hitNs),
    hits,
    tableBytesPerEntry: +(tableBytes / n).toFixed(1),
    rssBytesPerEntry: +((filled - before) / n).toFixed(1),
    rssMB: +(filled / 2 ** 20).toFixed(1),
    saveMs: Math.round(saveMs),
    loadMs: Math.round(loadMs),
    fileBytesPerEntry: +(fileBytes / n).toFixed(1),
  });
}
fs.rmSync(dir, { recursive: true, force: true });
process.stdout.write(`${JSON.stringify({ node: process.version, results }, null, 2)}\n`);
process.stdout.write(`\n| entries | identity hit | table B/entry | RSS B/entry | RSS total | save | load |\n|---|---|---|---|---|---|---|\n`);
for (const r of results) process.stdout.write(`| ${r.entries} | ${r.identityHitNs} ns | ${r.tableBytesPerEntry} | ${r.rssBytesPerEntry} | ${r.rssMB} MB | ${r.saveMs} ms | ${r.loadMs} ms |\n`);
