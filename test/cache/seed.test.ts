/** The per-install seed: created 0600 with random bytes, stable, and refused when others could read or own it. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CacheSeedError, loadOrCreateSeed } from '../../src/cache/seed.js';
import { tempDir } from '../helpers/procs.js';

const dir = tempDir('la-seed-');
const isSeedError = (re: RegExp) => (e: unknown) =>
  e instanceof CacheSeedError && e.code === 'LA_ERR_CACHE_SEED' && re.test(e.message) && /chmod 600/.test(e.hint ?? '');

describe('cache seed', () => {
  it('is created 0600 in a new directory, random, and read back unchanged', () => {
    const f = path.join(dir, 'a/state/cache.seed');
    const s1 = loadOrCreateSeed(f);
    assert.equal(fs.statSync(f).mode & 0o777, 0o600);
    assert.equal(fs.statSync(f).size, 8);
    assert.equal(loadOrCreateSeed(f), s1);
    assert.notEqual(loadOrCreateSeed(path.join(dir, 'b/cache.seed')), s1);
    assert.deepEqual(fs.readdirSync(path.dirname(f)), ['cache.seed'], 'no temp file left');
  });

  for (const mode of [0o644, 0o640, 0o604, 0o620]) {
    it(`refuses a seed file with mode ${mode.toString(8)}`, () => {
      const f = path.join(dir, `m${mode.toString(8)}/cache.seed`);
      loadOrCreateSeed(f);
      fs.chmodSync(f, mode);
      assert.throws(() => loadOrCreateSeed(f), isSeedError(/must be 600/));
    });
  }

  it('refuses a symlink and a short file', () => {
    const real = path.join(dir, 'real.seed');
    loadOrCreateSeed(real);
    const link = path.join(dir, 'link.seed');
    fs.symlinkSync(real, link);
    assert.throws(() => loadOrCreateSeed(link), isSeedError(/ELOOP|symbolic/));
    const short = path.join(dir, 'short.seed');
    fs.writeFileSync(short, 'abc', { mode: 0o600 });
    assert.throws(() => loadOrCreateSeed(short), isSeedError(/shorter/));
  });

  it('refuses a seed owned by another user', { skip: process.getuid?.() !== 0 && 'needs root to chown' }, () => {
    const f = path.join(dir, 'owned/cache.seed');
    loadOrCreateSeed(f);
    fs.chownSync(f, 65534, 65534);
    assert.throws(() => loadOrCreateSeed(f), isSeedError(/owned by uid 65534/));
  });
});
