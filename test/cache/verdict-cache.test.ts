/**
 * VerdictCache: fast-check model tests against plain reference Maps (unbounded: exact answers;
 * bounded: never a wrong answer, newest kept, nothing lost below capacity), with generation
 * changes and save + reload from disk; persistence round trip; infected outlives clean.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { VerdictCache, type FileIdentity } from '../../src/cache/verdict-cache.js';
import { tempDir } from '../helpers/procs.js';

const dir = tempDir('la-cache-');
const id = (n: number): FileIdentity => ({ dev: 1n, ino: BigInt(n), size: BigInt(n * 7), mtimeNs: 1000n + BigInt(n), ctimeNs: 2000n });
const sha = (n: number) => crypto.createHash('sha256').update(`content ${n}`).digest('hex');
/** Each identity has one content; identities n, n+7, n+14... are copies of each other. */
const contentOf = (a: number) => (a % 7) + 1;
const fpOf = (b: number) => BigInt(b) * 0x9e3779b97f4a7c15n + 17n;

type Op =
  | { op: 'rec'; a: number; infected: boolean }
  | { op: 'copy'; a: number }
  | { op: 'refresh'; a: number; infected: boolean }
  | { op: 'gen'; g: number }
  | { op: 'get'; a: number }
  | { op: 'getFp'; b: number }
  | { op: 'reload' };

const opArb = (maxId: number): fc.Arbitrary<Op> =>
  fc.oneof(
    { weight: 4, arbitrary: fc.record({ op: fc.constant('rec' as const), a: fc.integer({ min: 1, max: maxId }), infected: fc.boolean() }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('copy' as const), a: fc.integer({ min: 1, max: maxId }) }) },
    {
      weight: 1,
      arbitrary: fc.record({ op: fc.constant('refresh' as const), a: fc.integer({ min: 1, max: maxId }), infected: fc.boolean() }),
    },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('gen' as const), g: fc.integer({ min: 1, max: 4 }) }) },
    { weight: 5, arbitrary: fc.record({ op: fc.constant('get' as const), a: fc.integer({ min: 1, max: maxId }) }) },
    { weight: 2, arbitrary: fc.record({ op: fc.constant('getFp' as const), b: fc.integer({ min: 1, max: 7 }) }) },
    { weight: 1, arbitrary: fc.constant({ op: 'reload' as const }) },
  );

interface Judged {
  infected: boolean;
  gen: string;
}

/** Runs `ops` against a cache and a reference model; `exact` demands the model's answer, else only a correct one. */
async function runModel(ops: Op[], capacity: number, exact: boolean): Promise<void> {
  const file = path.join(fs.mkdtempSync(path.join(dir, 'model-')), 'cache.v1');
  let c = await VerdictCache.open({ seed: 42n, capacity, generation: 'g0', file });
  const identities = new Set<number>(); // identity -> content is contentOf(a)
  const contents = new Map<number, Judged>(); // content -> latest verdict
  const ever = new Set<number>();
  let gen = 'g0';
  const check = (hit: ReturnType<VerdictCache['lookupIdentity']>, b: number, present: boolean, what: string) => {
    const m = contents.get(b);
    if (!present || !m) {
      assert.equal(hit, undefined, `${what}: nothing invented`);
      return;
    }
    if (!hit) {
      assert.ok(!exact, `${what}: kept (below capacity nothing is evicted)`);
      return;
    }
    assert.equal(hit.sha256, sha(b), `${what}: sha256`);
    const modelStale = !m.infected && m.gen !== gen;
    if (exact) {
      assert.equal(hit.verdict, m.infected ? 'infected' : 'clean', `${what}: verdict`);
      assert.equal(hit.stale, modelStale, `${what}: stale`);
      if (m.infected) assert.equal(hit.threat, `T-${b}`);
    } else {
      // Past capacity a copy may answer from its own (older) verdict, but a fresh answer is never wrong.
      if (!hit.stale) assert.equal(hit.verdict, m.infected ? 'infected' : 'clean', `${what}: a fresh answer is the latest verdict`);
      if (modelStale) assert.ok(hit.stale || hit.verdict === 'infected', `${what}: an old clean verdict is stale`);
    }
  };
  for (const o of ops) {
    if (o.op === 'rec') {
      const b = contentOf(o.a);
      c.record(id(o.a), fpOf(b), sha(b), o.infected ? 'infected' : 'clean', o.infected ? `T-${b}` : undefined);
      identities.add(o.a);
      ever.add(o.a);
      contents.set(b, { infected: o.infected, gen });
      assert.ok(c.lookupIdentity(id(o.a)), 'what was just recorded is there');
    } else if (o.op === 'copy') {
      const b = contentOf(o.a);
      const known = c.recordIdentity(id(o.a), fpOf(b));
      if (exact) assert.equal(known, contents.has(b), 'recordIdentity knows exactly the recorded contents');
      if (known) {
        identities.add(o.a);
        ever.add(o.a);
      }
    } else if (o.op === 'refresh') {
      const b = contentOf(o.a);
      const present = c.lookupIdentity(id(o.a)) !== undefined;
      c.refreshIdentity(id(o.a), o.infected ? 'infected' : 'clean', o.infected ? `T-${b}` : undefined);
      if (present) contents.set(b, { infected: o.infected, gen });
    } else if (o.op === 'gen') {
      gen = `g${o.g}`;
      c.setGeneration(gen);
    } else if (o.op === 'get') {
      check(c.lookupIdentity(id(o.a)), contentOf(o.a), identities.has(o.a), `identity ${o.a}`);
    } else if (o.op === 'getFp') {
      check(c.lookupFingerprint(fpOf(o.b)), o.b, true, `content ${o.b}`);
    } else {
      await c.save();
      c = await VerdictCache.open({ seed: 42n, capacity, generation: gen, file });
    }
    assert.ok(c.size <= c.capacity);
  }
  if (ever.size <= capacity) assert.equal(c.size, ever.size, 'nothing evicted below capacity');
}

describe('VerdictCache model', () => {
  it('unbounded: identity -> fingerprint -> verdict, copies, refreshes, generations, reloads match a reference Map exactly', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb(40), { maxLength: 150 }), (ops) => runModel(ops, 1000, true)),
      { numRuns: 150 },
    );
  });

  it('bounded (capacity 16, 60 identities): evicts, but never answers wrong, keeps the newest, loses nothing below capacity', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb(60), { maxLength: 250 }), (ops) => runModel(ops, 16, false)),
      { numRuns: 150 },
    );
  });

  it('a verdict for some content reaches every copy at once (detection in one copy)', async () => {
    const c = await VerdictCache.open({ seed: 9n, capacity: 100, generation: 'g1' });
    c.record(id(1), fpOf(1), sha(1), 'clean');
    assert.equal(c.recordIdentity(id(2), fpOf(1)), true);
    c.setGeneration('g2');
    c.record(id(3), fpOf(1), sha(1), 'infected', 'Eicar');
    for (const a of [1, 2, 3])
      assert.deepEqual(c.lookupIdentity(id(a))?.toJSON(), { verdict: 'infected', threat: 'Eicar', sha256: sha(1), stale: false });
  });
});

describe('VerdictCache', () => {
  it('fingerprints: streaming, one-shot and hashFd (one 1 MiB buffer, pread) agree; SHA-256 is right', async () => {
    const c = await VerdictCache.open({ seed: 1n, capacity: 100 });
    const content = crypto.randomBytes(2.5 * 1024 * 1024);
    const h = c.createHasher();
    h.update(content.subarray(0, 1000));
    h.update(content.subarray(1000));
    assert.equal(h.digest(), c.fingerprint(content));
    const f = path.join(dir, 'big.bin');
    fs.writeFileSync(f, content);
    const fd = fs.openSync(f, 'r');
    try {
      const d = c.hashFd(fd);
      assert.equal(d.fingerprint, c.fingerprint(content));
      assert.equal(d.sha256, crypto.createHash('sha256').update(content).digest('hex'));
      assert.equal(d.size, content.length);
    } finally {
      fs.closeSync(fd);
    }
    const other = await VerdictCache.open({ seed: 2n, capacity: 100 });
    assert.notEqual(other.fingerprint(content), c.fingerprint(content), 'the seed changes the fingerprint');
  });

  it('takes fs.BigIntStats as the identity, and a changed file is a miss', async () => {
    const c = await VerdictCache.open({ seed: 1n, capacity: 100 });
    const f = path.join(dir, 'stat.txt');
    fs.writeFileSync(f, 'one');
    const fd = fs.openSync(f, 'r');
    const st = fs.fstatSync(fd, { bigint: true });
    const d = c.hashFd(fd);
    fs.closeSync(fd);
    c.record(st, d.fingerprint, d.sha256, 'clean');
    assert.equal(c.lookupIdentity(fs.statSync(f, { bigint: true }))?.verdict, 'clean');
    fs.writeFileSync(f, 'two');
    assert.equal(c.lookupIdentity(fs.statSync(f, { bigint: true })), undefined);
  });

  it('persists: save + reload round trip, 0600, no temp file left, generations and threats kept', async () => {
    const file = path.join(dir, 'rt/cache.v1');
    const a = await VerdictCache.open({ seed: 7n, capacity: 5000, file, generation: 'g1' });
    for (let i = 1; i <= 3000; i++)
      a.record(id(i), fpOf(i), sha(i), i % 100 === 0 ? 'infected' : 'clean', i % 100 === 0 ? `Threat-${i % 3}` : undefined);
    assert.equal(await a.save(), true);
    assert.equal(await a.save(), false, 'nothing changed: no write');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['cache.v1']);
    const b = await VerdictCache.open({ seed: 7n, capacity: 5000, file });
    assert.equal(b.size, 3000);
    assert.equal(b.generation, 'g1', 'the saved generation is the default');
    assert.deepEqual(b.lookupIdentity(id(300))?.toJSON(), { verdict: 'infected', threat: 'Threat-0', sha256: sha(300), stale: false });
    assert.equal(b.lookupIdentity(id(301))?.sha256, sha(301));
    assert.equal(b.lookupFingerprint(fpOf(2999))?.verdict, 'clean');
    const c = await VerdictCache.open({ seed: 7n, capacity: 5000, file, generation: 'g2' });
    assert.equal(c.lookupIdentity(id(301))?.stale, true, 'a new generation makes clean verdicts stale');
    assert.equal(c.lookupIdentity(id(300))?.stale, false, 'infected verdicts stay valid');
    const small = await VerdictCache.open({ seed: 7n, capacity: 1000, file, generation: 'g1' });
    assert.equal(small.size, 1000, 'a smaller capacity loads what fits');
  });

  it('reopening a saved cache makes resident only what it holds, not its whole capacity', async () => {
    const file = path.join(dir, 'resident/cache.v1');
    const a = await VerdictCache.open({ seed: 7n, capacity: 1_000_000, file, generation: 'g1' });
    for (let i = 1; i <= 1000; i++) a.record(id(i), fpOf(i), sha(i), 'clean');
    assert.equal(await a.save(), true);
    const anonKb = () => Number(/Anonymous:\s+(\d+)/.exec(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'))![1]);
    const before = anonKb();
    const b = await VerdictCache.open({ seed: 7n, capacity: 1_000_000, file, generation: 'g1' });
    const grown = anonKb() - before;
    assert.equal(b.size, 1000);
    // A million-entry store is 63 MB of address space; zeroing all of it at load (the old
    // behaviour) made every page resident. 1,000 records touch well under 16 MB.
    assert.ok(grown < 16 * 1024, `loading 1,000 entries grew anonymous memory by ${grown} kB`);
  });

  it('serializes concurrent saves and keeps answering while a save runs', async () => {
    const file = path.join(dir, 'concurrent/cache.v1');
    const a = await VerdictCache.open({ seed: 8n, capacity: 50_000, file });
    for (let i = 1; i <= 40_000; i++) a.record(id(i), fpOf(i), sha(i), 'clean');
    const first = a.save();
    a.record(id(40_001), fpOf(40_001), sha(40_001), 'infected', 'Late');
    const second = a.save();
    assert.equal(a.lookupIdentity(id(5))?.verdict, 'clean');
    const [r1] = await Promise.all([first, second]);
    assert.equal(r1, true); // the second may find nothing left to write: the first snapshot began after the late record
    await a.close();
    const b = await VerdictCache.open({ seed: 8n, capacity: 50_000, file });
    assert.equal(b.size, 40_001);
    assert.equal(b.lookupIdentity(id(40_001))?.threat, 'Late');
  });

  it('allocates its tables on a SharedArrayBuffer when asked', async () => {
    const c = await VerdictCache.open({ seed: 1n, capacity: 100, shared: true });
    assert.ok(c.store.buffer instanceof SharedArrayBuffer);
    // Address space for full capacity: 52 B record + 1 B clock + two index regions of 2 x 5 B.
    assert.ok(c.store.bytes / c.capacity <= 74, `${c.store.bytes / c.capacity} bytes per entry`);
  });

  it('touches index memory in proportion to the entries it holds, not to its capacity', async () => {
    const c = await VerdictCache.open({ seed: 3n, capacity: 1_000_000 });
    for (let i = 1; i <= 1000; i++) c.record(id(i), fpOf(i), sha(i), 'clean');
    const st = c.stats();
    assert.equal(st.indexSlots, 4096);
    assert.equal(st.residentBytes, 1000 * 53 + 4096 * 8, 'records + clock of 1,000 entries, one 4,096-slot region');
    for (let i = 1001; i <= 50_000; i++) c.record(id(i), fpOf(i), sha(i), 'clean');
    assert.equal(c.stats().indexSlots, 65536);
    assert.ok(c.stats().residentBytes! < 50_000 * 53 + 3 * 65536 * 8, `${c.stats().residentBytes} bytes resident for 50,000 entries`);
    for (const i of [1, 4097, 49_999]) assert.equal(c.lookupIdentity(id(i))?.sha256, sha(i));
  });

  it('single flight: 100 concurrent asks for one key run once; errors are shared; a later ask runs again', async () => {
    const c = await VerdictCache.open({ seed: 1n, capacity: 100 });
    let runs = 0;
    const results = await Promise.all(
      Array.from({ length: 100 }, () =>
        c.singleFlight('k', async () => {
          runs++;
          await new Promise((r) => setTimeout(r, 20));
          return 'v';
        }),
      ),
    );
    assert.equal(runs, 1);
    assert.ok(results.every((r) => r === 'v'));
    const failing = Array.from({ length: 10 }, () =>
      c.singleFlight('e', async () => {
        runs++;
        throw new Error('svm down');
      }),
    );
    for (const p of failing) await assert.rejects(p, /svm down/);
    assert.equal(runs, 2);
    await c.singleFlight('k', async () => runs++);
    assert.equal(runs, 3, 'a later ask runs again');
  });

  it('evicts clean entries before infected ones when full', async () => {
    const c = await VerdictCache.open({ seed: 1n, capacity: 64 });
    for (let i = 1; i <= 8; i++) c.record(id(i), fpOf(i), sha(i), 'infected', 'Keep-Me');
    for (let i = 9; i < 2000; i++) c.record(id(i), fpOf(i), sha(i), 'clean');
    for (let i = 1; i <= 8; i++) assert.equal(c.lookupIdentity(id(i))?.threat, 'Keep-Me');
    assert.equal(c.size, 64);
    assert.ok(c.stats()['evictions']! > 1000);
  });

  it('generation ids are reused when 16k generations have been seen: current verdicts stay fresh', async () => {
    const c = await VerdictCache.open({ seed: 1n, capacity: 100, generation: 'g0' });
    c.record(id(1), fpOf(1), sha(1), 'clean');
    for (let g = 1; g < 20_000; g++) {
      c.setGeneration(`g${g}`);
      if (g === 19_000) c.record(id(2), fpOf(2), sha(2), 'clean');
    }
    c.setGeneration('g19000');
    assert.equal(c.lookupIdentity(id(1))?.stale, true);
    assert.equal(c.lookupIdentity(id(2))?.stale, false);
  });
});
