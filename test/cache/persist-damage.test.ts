/**
 * cache.v1 files that are truncated, corrupt, of a foreign version, with a wrong checksum, made
 * under another seed or not a cache at all: the cache starts empty with a warning, sets the file
 * aside, never throws, and saves again.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { closeLogging, configureLogging } from '../../src/log.js';
import { VerdictCache, type FileIdentity } from '../../src/cache/verdict-cache.js';
import { tempDir } from '../helpers/procs.js';

const dir = tempDir('la-cache-damage-');
const logFile = path.join(dir, 'log.jsonl');
const id = (n: number): FileIdentity => ({ dev: 1n, ino: BigInt(n), size: 1n, mtimeNs: 1n, ctimeNs: 1n });
const sha = (n: number) => n.toString(16).padStart(64, '0');

async function warningsFor(file: string): Promise<string[]> {
  for (let i = 0; i < 100; i++) {
    const lines = fs.existsSync(logFile)
      ? fs
          .readFileSync(logFile, 'utf8')
          .split('\n')
          .filter((l) => l.includes(file))
      : [];
    if (lines.length) return lines;
    await new Promise((r) => setTimeout(r, 20));
  }
  return [];
}

const flip = (at: (size: number) => number) => (f: string) => {
  const b = fs.readFileSync(f);
  const i = at(b.length);
  b[i] = b[i]! ^ 0xff;
  fs.writeFileSync(f, b);
};

const damages: [string, (f: string) => void, RegExp][] = [
  ['truncated in the records', (f) => fs.truncateSync(f, Math.floor(fs.statSync(f).size / 2)), /truncated/],
  ['truncated in the checksum', (f) => fs.truncateSync(f, fs.statSync(f).size - 5), /checksum|truncated|string tables/],
  ['empty', (f) => fs.writeFileSync(f, ''), /too short/],
  ['corrupt in a record', flip(() => 100), /checksum/],
  ['corrupt in the string tables', flip((n) => n - 40), /checksum/],
  ['with a wrong checksum', flip((n) => n - 1), /checksum/],
  [
    'of a foreign version',
    (f) => {
      const b = fs.readFileSync(f);
      b.writeUInt32LE(99, 8);
      fs.writeFileSync(f, b);
    },
    /version 99/,
  ],
  [
    'of the pre-release version 1',
    (f) => {
      const b = fs.readFileSync(f);
      b.writeUInt32LE(1, 8);
      fs.writeFileSync(f, b);
    },
    /version 1;/,
  ],
  [
    'claiming more records than it holds',
    (f) => {
      const b = fs.readFileSync(f);
      b.writeUInt32LE(0xffffff, 24);
      fs.writeFileSync(f, b);
    },
    /truncated/,
  ],
  ['not a cache at all', (f) => fs.writeFileSync(f, 'not a cache at all, '.repeat(10)), /not a lightagent cache/],
];

describe('cache.v1 damage', () => {
  before(() => configureLogging({ file: logFile, level: 'warn' }));
  after(() => closeLogging());

  for (const [what, damage, reason] of damages) {
    it(`starts empty, with a warning, from a file that is ${what}`, async () => {
      const file = path.join(dir, what.replace(/\W+/g, '-'), 'cache.v1');
      const a = await VerdictCache.open({ seed: 3n, capacity: 100, file });
      for (let i = 1; i <= 50; i++) a.record(id(i), BigInt(i), sha(i), i === 7 ? 'infected' : 'clean', 'T');
      await a.save();
      damage(file);
      const b = await VerdictCache.open({ seed: 3n, capacity: 100, file });
      assert.equal(b.size, 0);
      assert.equal(b.lookupIdentity(id(1)), undefined);
      assert.ok(fs.existsSync(`${file}.bad`), 'set aside');
      const warnings = await warningsFor(file);
      assert.ok(
        warnings.some((l) => JSON.parse(l).level === 'warn' && reason.test(l) && /LA_ERR_CACHE_FILE/.test(l)),
        `warning about ${reason}: ${warnings.join('\n')}`,
      );
      b.record(id(1), 1n, sha(1), 'clean');
      assert.equal(await b.save(), true, 'and saves again');
      assert.equal((await VerdictCache.open({ seed: 3n, capacity: 100, file })).size, 1);
    });
  }

  it('refuses a file made under another seed', async () => {
    const file = path.join(dir, 'seed/cache.v1');
    const a = await VerdictCache.open({ seed: 5n, capacity: 100, file });
    a.record(id(1), 1n, sha(1), 'clean');
    await a.save();
    const b = await VerdictCache.open({ seed: 6n, capacity: 100, file });
    assert.equal(b.size, 0);
    assert.ok((await warningsFor(file)).some((l) => /another seed/.test(l)));
  });

  it('a save that cannot write logs, answers false and retries later', async () => {
    const blocker = path.join(dir, 'not-a-dir');
    fs.writeFileSync(blocker, '');
    const c = await VerdictCache.open({ seed: 1n, capacity: 100, file: path.join(blocker, 'cache.v1') });
    c.record(id(1), 1n, sha(1), 'clean');
    assert.equal(await c.save(), false);
    assert.equal(c.stats()['saveFailures'], 1);
  });
});
