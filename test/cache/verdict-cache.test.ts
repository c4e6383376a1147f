/**
 * VerdictCache: a fast-check model test against a plain Map, persistence round trip, damaged
 * files, the seed file's permissions, single flight, generations.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { loadOrCreateSeed } from '../../src/cache/seed.js';
import { U64Table } from '../../src/cache/table.js';
import { VerdictCache, type FileIdentity } from '../../src/cache/verdict-cache.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'la-cache-'));
const id = (n: number): FileIdentity => ({ dev: 1n, ino: BigInt(n), size: BigInt(n * 7), mtimeNs: 1000n + BigInt(n), ctimeNs: 2000n });
const sha = (n: number) => n.toString(16).padStart(64, '0');

describe('U64Table', () => {
  it('model: behaves like a bounded map (never wrong, keeps what fits)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('put', 'get', 'del'), fc.integer({ min: 1, max: 60 })), { maxLength: 400 }), (ops) => {
        const t = new U64Table(32, 1);
        const model = new Map<number, number>();
        for (const [op, k] of ops) {
          if (op === 'put') {
            const i = t.upsert(BigInt(k));
            t.words[i] = k * 3;
            model.set(k, k * 3);
          } else if (op === 'del') {
            t.delete(BigInt(k));
            model.delete(k);
          } else {
            const i = t.find(BigInt(k));
            if (i >= 0) assert.equal(t.words[i], model.get(k), 'a hit returns the value last stored');
          }
          assert.ok(t.size <= t.capacity);
        }
        // everything the table still holds is right, and the model's entries it lost were evicted
        let present = 0;
        for (const [k, v] of model) {
          const i = t.find(BigInt(k));
          if (i >= 0) {
            present++;
            assert.equal(t.words[i], v);
          }
        }
        assert.equal(present, t.size);
        if (model.size <= t.capacity) assert.equal(t.size, model.size, 'nothing evicted below capacity');
      }),
      { numRuns: 300 },
    );
  });
});

describe('VerdictCache', () => {
  it('model test: identity -> fingerprint -> verdict, generations, reloads from disk, against a reference Map', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.oneof(fc.tuple(fc.constant('rec'), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 10 }), fc.boolean()), fc.tuple(fc.constant('gen'), fc.integer({ min: 1, max: 3 }), fc.constant(0), fc.constant(false)), fc.tuple(fc.constant('get'), fc.integer({ min: 1, max: 40 }), fc.constant(0), fc.constant(false)), fc.tuple(fc.constant('reload'), fc.constant(0), fc.constant(0), fc.constant(false))), { maxLength: 200 }),
        async (ops) => {
          const file = path.join(fs.mkdtempSync(path.join(dir, 'model-')), 'cache.v1');
          let c = await VerdictCache.open({ seed: 42n, capacity: 1000, generation: 'g0', file });
          const model = new Map<number, { content: number; infected: boolean; gen: string }>();
          let gen = 'g0';
          for (const [op, a, b, infected] of ops) {
            if (op === 'rec') {
              c.record(id(a), BigInt(b), sha(b), infected ? 'infected' : 'clean', infected ? 'T' : undefined);
              for (const v of model.values()) if (v.content === b) Object.assign(v, { infected, gen }); // same content: one verdict
              model.set(a, { content: b, infected, gen });
            } else if (op === 'reload') {
              await c.save();
              c = await VerdictCache.open({ seed: 42n, capacity: 1000, generation: gen, file });
            } else if (op === 'gen') {
              gen = `g${a}`;
              c.setGeneration(gen);
            } else {
              const hit = c.lookupIdentity(id(a));
              const m = model.get(a);
              if (!m) assert.equal(hit, undefined);
              else {
                assert.ok(hit);
                assert.equal(hit.verdict, m.infected ? 'infected' : 'clean');
                assert.equal(hit.sha256, sha(m.content));
                assert.equal(hit.stale, !m.infected && m.gen !== gen, 'clean verdicts of an older generation are stale; infected never');
              }
            }
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('answers a copy of known content by fingerprint', async () => {
    const c = await VerdictCache.open({ seed: 1n, capacity: 100 });
    const content = Buffer.from('same bytes');
    c.record(id(1), c.fingerprint(content), sha(9), 'infected', 'Eicar');
    const h = c.createHasher();
    h.update(content.subarray(0, 4));
    h.update(content.subarray(4));
    const fp = h.digest();
    assert.equal(fp, c.fingerprint(content), 'streaming and one-shot hashes agree');
    assert.equal(c.lookupFingerprint(fp)?.threat, 'Eicar');
    assert.equal(c.lookupIdentity(id(2)), undefined);
  });

  it('persists: save + reload round trip, atomically and 0600', async () => {
    const file = path.join(dir, 'rt/cache.v1');
    const a = await VerdictCache.open({ seed: 7n, capacity: 5000, file, generation: 'g1' });
    for (let i = 1; i <= 3000; i++) a.record(id(i), BigInt(i), sha(i), i % 100 === 0 ? 'infected' : 'clean', i % 100 === 0 ? `Threat-${i % 3}` : undefined);
    assert.equal(await a.save(), true);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['cache.v1'], 'no temp file left behind');
    const b = await VerdictCache.open({ seed: 7n, capacity: 5000, file, generation: 'g1' });
    assert.equal(b.identities.size, 3000);
    assert.deepEqual(b.lookupIdentity(id(300)), { verdict: 'infected', threat: 'Threat-0', sha256: sha(300), stale: false });
    assert.equal(b.lookupIdentity(id(301))?.verdict, 'clean');
    const c = await VerdictCache.open({ seed: 7n, capacity: 5000, file, generation: 'g2' });
    assert.equal(c.lookupIdentity(id(301))?.stale, true, 'a new generation makes clean verdicts stale');
    assert.equal(c.lookupIdentity(id(300))?.stale, false);
  });

  for (const [what, damage] of [
    ['truncated', (f: string) => fs.truncateSync(f, Math.floor(fs.statSync(f).size / 2))],
    ['corrupt', (f: string) => {
      const b = fs.readFileSync(f);
      b[100] = b[100]! ^ 0xff;
      fs.writeFileSync(f, b);
    }],
    ['of a foreign version', (f: string) => {
      const b = fs.readFileSync(f);
      b.writeUInt32LE(99, 8);
      fs.writeFileSync(f, b);
    }],
    ['not a cache at all', (f: string) => fs.writeFileSync(f, 'not a cache at all')],
  ] as const) {
    it(`starts empty, without crashing, from a file that is ${what}, and sets it aside`, async () => {
      const file = path.join(dir, `bad-${what.replace(/ /g, '-')}/cache.v1`);
      const a = await VerdictCache.open({ seed: 3n, capacity: 100, file });
      for (let i = 1; i <= 50; i++) a.record(id(i), BigInt(i), sha(i), 'clean');
      await a.save();
      damage(file);
      const b = await VerdictCache.open({ seed: 3n, capacity: 100, file });
      assert.equal(b.identities.size, 0);
      assert.ok(fs.readdirSync(path.dirname(file)).some((n) => n.startsWith('cache.v1.bad-')));
      b.record(id(1), 1n, sha(1), 'clean');
      assert.equal(await b.save(), true, 'and can save again');
    });
  }

  it('refuses a file made under another seed', async () => {
    const file = path.join(dir, 'seed/cache.v1');
    const a = await VerdictCache.open({ seed: 5n, capacity: 100, file });
    a.record(id(1), 1n, sha(1), 'clean');
    await a.save();
    const b = await VerdictCache.open({ seed: 6n, capacity: 100, file });
    assert.equal(b.identities.size, 0);
  });

  it('creates the seed 0600 and refuses a seed others can read', () => {
    const f = path.join(dir, 'seeds/cache.seed');
    const s1 = loadOrCreateSeed(f);
    assert.equal(fs.statSync(f).mode & 0o777, 0o600);
    assert.equal(loadOrCreateSeed(f), s1);
    fs.chmodSync(f, 0o644);
    assert.throws(() => loadOrCreateSeed(f), (e: unknown) => (e as { code: string }).code === 'LA_ERR_CACHE_SEED' && /must be 600/.test((e as Error).message));
  });

  it('single flight: 100 concurrent asks for one key run once', async () => {
    const c = await VerdictCache.open({ seed: 1n, capacity: 100 });
    let runs = 0;
    const results = await Promise.all(Array.from({ length: 100 }, () => c.singleFlight('k', async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 20));
      return 'v';
    })));
    assert.equal(runs, 1);
    assert.ok(results.every((r) => r === 'v'));
    await c.singleFlight('k', async () => runs++);
    assert.equal(runs, 2, 'a later ask runs again');
  });

  it('evicts clean entries before infected ones when full', async () => {
    const c = await VerdictCache.open({ seed: 1n, capacity: 64 });
    c.record(id(1), 1n, sha(1), 'infected', 'Keep-Me');
    for (let i = 2; i < 400; i++) c.record(id(i), BigInt(i), sha(i), 'clean');
    assert.equal(c.lookupFingerprint(1n)?.threat, 'Keep-Me');
    assert.ok(c.contents.size <= c.contents.capacity);
  });
});
