/**
 * The builtin engine inside containers: every format of the corpus found and named by member
 * path, and hostile archives (nested 10 deep, 100k members, ~10 GiB of zeros, overlapping zip
 * entries, truncated and corrupt, encrypted) answered by a stated verdict in bounded time and
 * memory. Every archive is built here, at run time.
 */
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { describe, it } from 'node:test';
import { BuiltinEngine } from '../../../src/svm/engines/builtin.js';
import { ArchiveTimeoutError } from '../../../src/svm/engines/engine.js';
import { sniffContainer } from '../../../src/svm/engines/containers/sniff.js';
import { EICAR_BYTES as EICAR, noise } from '../../helpers/fixtures.js';
import { deflatedZeros, detectionCorpus, nestedZips, tarOf, withoutDirectory, zip } from './archive-corpus.js';

const engine = new BuiltinEngine();

describe('builtin engine: threats inside containers', () => {
  it('finds EICAR in every format of the corpus and names the member; the clean ones stay clean', async () => {
    for (const c of await detectionCorpus()) {
      const r = await engine.scan(c.content);
      assert.equal(r.infected, c.threat, `${c.name}: ${JSON.stringify(r)}`);
      if (c.threat) assert.match(r.threat ?? '', /^Eicar-Test-Signature/, c.name);
    }
  });

  it('names the member path, nested members joined by !', async () => {
    const inner = zip([{ name: 'bin/tool.exe', data: EICAR }]);
    const r = await engine.scan(
      zip([
        { name: 'docs/readme.txt', data: Buffer.from('hi') },
        { name: 'docs/report.zip', data: inner },
      ]),
    );
    assert.deepEqual(r, {
      infected: true,
      threat: 'Eicar-Test-Signature in docs/report.zip!bin/tool.exe',
      member: 'docs/report.zip!bin/tool.exe',
    });
    const t = await engine.scan(zlib.gzipSync(await tarOf([{ name: 'a/b.com', data: EICAR }])));
    assert.equal(t.member, 'a/b.com');
  });

  it('cleans control characters out of hostile member names', async () => {
    const r = await engine.scan(zip([{ name: 'a\x1b[31m\u202ecom.exe', data: EICAR }]));
    assert.equal(r.member, 'a?[31m?com.exe');
  });

  it('finds EICAR 10 zips deep by default; past max_depth the file is Heuristics.Limits.Exceeded.MaxRecursion', async () => {
    const nest = nestedZips(EICAR, 10);
    const r = await engine.scan(nest);
    assert.equal(r.infected, true);
    assert.equal(r.member?.split('!').length, 10, r.member);
    const shallow = new BuiltinEngine({ archives: { maxDepth: 5 } });
    const s = await shallow.scan(nest);
    assert.equal(s.infected, true);
    assert.match(
      s.threat ?? '',
      /^Heuristics\.Limits\.Exceeded\.MaxRecursion in level1\.zip!level2\.zip!level3\.zip!level4\.zip!level5\.zip$/,
    );
  });

  it('a zip of 100,001 members is MaxFiles at once (from its directory count); with room it is read to the last member', async () => {
    const entries = Array.from({ length: 100_000 }, (_, i) => ({
      name: `f/${i}.txt`,
      data: Buffer.from(`file ${i}\n`),
      method: 0 as const,
    }));
    entries.push({ name: 'f/last.com', data: Buffer.from(zlib.deflateRawSync(EICAR)), method: 0 });
    const big = zip([...entries.slice(0, -1), { name: 'f/last.com', data: EICAR, method: 8 }]);
    let t0 = performance.now();
    const r = await engine.scan(big);
    const quick = performance.now() - t0;
    assert.equal(r.threat, 'Heuristics.Limits.Exceeded.MaxFiles');
    assert.ok(quick < 2000, `${quick} ms`);
    const roomy = new BuiltinEngine({ archives: { maxMembers: 200_000 } });
    t0 = performance.now();
    const all = await roomy.scan(big);
    assert.equal(all.threat, 'Eicar-Test-Signature in f/last.com');
    process.stderr.write(
      `100,001-member zip (${(big.length / 1e6).toFixed(1)} MB): limit in ${quick.toFixed(0)} ms, read to the end in ${(performance.now() - t0).toFixed(0)} ms\n`,
    );
  });

  it('a zip of ~10 GiB of zeros (10 MB packed) is MaxRatio within 1 MiB of output: fast, and memory stays flat', async () => {
    const z = zip([{ name: 'zeros.bin', data: Buffer.alloc(0), raw: { bytes: deflatedZeros(10_240), size: 10_240 * 2 ** 20 } }]);
    const rss0 = process.memoryUsage().rss;
    const t0 = performance.now();
    const r = await engine.scan(z);
    const ms = performance.now() - t0;
    const grew = process.memoryUsage().rss - rss0;
    assert.equal(r.threat, 'Heuristics.Limits.Exceeded.MaxRatio in zeros.bin');
    assert.ok(ms < 3000, `${ms} ms`);
    assert.ok(grew < 128 * 2 ** 20, `rss grew ${grew} bytes`);
    // With the ratio out of the way, the member size stops it instead, still without unpacking 10 GiB.
    const lax = new BuiltinEngine({ archives: { maxRatio: 100_000 } });
    assert.equal((await lax.scan(z)).threat, 'Heuristics.Limits.Exceeded.MaxFileSize in zeros.bin');
    const total = new BuiltinEngine({ archives: { maxRatio: 100_000, maxMemberSize: 2 ** 30, maxUnpacked: 100 * 2 ** 20 } });
    assert.equal((await total.scan(z)).threat, 'Heuristics.Limits.Exceeded.MaxScanSize in zeros.bin');
  });

  it('a gzip bomb (1 GiB of zeros) is MaxRatio too', async () => {
    const gz = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]), deflatedZeros(1024), Buffer.alloc(8)]);
    assert.equal((await engine.scan(gz)).threat, 'Heuristics.Limits.Exceeded.MaxRatio');
  });

  it('zip entries that share bytes are Heuristics.Zip.OverlappingFiles', async () => {
    const z = zip(
      [
        { name: 'a.txt', data: Buffer.from('a') },
        { name: 'b.txt', data: Buffer.from('b') },
      ],
      { share: true },
    );
    assert.equal((await engine.scan(z)).threat, 'Heuristics.Zip.OverlappingFiles in b.txt');
  });

  it('an encrypted member is Heuristics.Encrypted.Zip, or skipped with alert_encrypted off', async () => {
    const z = zip([{ name: 'secret.exe', data: noise(1000), encrypted: true, method: 0 }]);
    assert.equal((await engine.scan(z)).threat, 'Heuristics.Encrypted.Zip in secret.exe');
    assert.equal((await new BuiltinEngine({ archives: { alertEncrypted: false } }).scan(z)).infected, false);
  });

  it('truncated archives: what came before the cut is still judged; corrupt ones never throw', async () => {
    const tgz = zlib.gzipSync(
      await tarOf([
        { name: 'x/eicar.com', data: EICAR },
        { name: 'x/pad', data: noise(200_000) },
      ]),
    );
    const cut = tgz.subarray(0, Math.floor(tgz.length / 2));
    assert.equal((await engine.scan(cut)).member, 'x/eicar.com');
    const z = zip([
      { name: 'a.com', data: Buffer.concat([EICAR, noise(100)]) },
      { name: 'pad', data: noise(10_000) },
    ]);
    for (let at = 0; at < z.length; at += 97) {
      const broken = Buffer.from(z);
      broken[at] ^= 0xff;
      await engine.scan(broken); // must resolve: any verdict, never a throw
      await engine.scan(z.subarray(0, at));
    }
  });

  it('a zip without a usable central directory is read from its local records, under the same limits', async () => {
    // Deflated with compressible text after it, so EICAR is not in the zip's raw bytes.
    const payload = Buffer.concat([EICAR, Buffer.from(Array.from({ length: 20_000 }, (_, i) => `line ${i * 7919}\n`).join(''))]);
    const z = zip([
      { name: 'a.txt', data: noise(5000) },
      { name: 'bin/x.com', data: payload },
      { name: 'c.txt', data: noise(100) },
    ]);
    assert.equal(z.indexOf(EICAR), -1);
    const cd = z.indexOf(Buffer.from('PK\x01\x02', 'latin1'));
    const found = { infected: true, threat: 'Eicar-Test-Signature in bin/x.com', member: 'bin/x.com' };
    assert.deepEqual(await engine.scan(z.subarray(0, cd)), found, 'directory cut off');
    const second = z.indexOf(Buffer.from('PK\x03\x04', 'latin1'), 4);
    const third = z.indexOf(Buffer.from('PK\x03\x04', 'latin1'), second + 4);
    assert.deepEqual(await engine.scan(z.subarray(0, Math.floor((second + third) / 2))), found, 'cut inside the member, after the payload');
    const damaged = Buffer.from(z);
    damaged.fill(0x55, cd, cd + 4); // the directory's first record is damaged, the end record intact
    assert.deepEqual(await engine.scan(damaged), found, 'damaged directory');
    // Sizes only in data descriptors (bit 3): the deflate stream's own end says where the next record is.
    const dd = withoutDirectory(
      zip([
        { name: 'a.txt', data: noise(5000) },
        { name: 'b.txt', data: Buffer.alloc(3000, 0x41) },
        { name: 'd/x.com', data: payload },
      ]),
      true,
    );
    assert.deepEqual(
      await engine.scan(dd),
      { infected: true, threat: 'Eicar-Test-Signature in d/x.com', member: 'd/x.com' },
      'data descriptors',
    );
    const stored = withoutDirectory(
      zip([
        { name: 'a.txt', data: noise(300), method: 0 },
        { name: 's/x.com', data: EICAR, method: 0 },
      ]),
      true,
    );
    assert.equal((await engine.scan(stored)).member, 's/x.com', 'stored members with data descriptors');
    // The limits hold: a bomb, too many members, an encrypted member.
    const bomb = withoutDirectory(zip([{ name: 'zeros.bin', data: Buffer.alloc(0), raw: { bytes: deflatedZeros(1024), size: 2 ** 30 } }]));
    assert.equal((await engine.scan(bomb)).threat, 'Heuristics.Limits.Exceeded.MaxRatio in zeros.bin');
    const many = withoutDirectory(zip(Array.from({ length: 50 }, (_, i) => ({ name: `${i}`, data: noise(10, i) }))));
    assert.equal(
      (await new BuiltinEngine({ archives: { maxMembers: 20 } }).scan(many)).threat,
      'Heuristics.Limits.Exceeded.MaxFiles in 20',
    );
    const enc = withoutDirectory(zip([{ name: 'secret.exe', data: noise(1000), encrypted: true, method: 0 }]));
    assert.equal((await engine.scan(enc)).threat, 'Heuristics.Encrypted.Zip in secret.exe');
    assert.equal((await engine.scan(withoutDirectory(zip([{ name: 'a.txt', data: noise(5000) }])))).infected, false);
  });

  it('past archives.timeout the scan rejects with LA_ERR_ARCHIVE_TIMEOUT (an error verdict, not cached)', async () => {
    const slow = new BuiltinEngine({ archives: { timeoutMs: 1, maxMembers: 1_000_000 } });
    const many = zip(Array.from({ length: 5000 }, (_, i) => ({ name: `${i}`, data: noise(64, i) })));
    await assert.rejects(slow.scan(many), (e: unknown) => e instanceof ArchiveTimeoutError && e.code === 'LA_ERR_ARCHIVE_TIMEOUT');
  });

  it('the generation changes with the limits and with unpacking on or off, and only then', () => {
    const g = engine.generation();
    assert.equal(new BuiltinEngine().generation(), g);
    assert.equal(new BuiltinEngine({ archives: { timeoutMs: 5 } }).generation(), g, 'a timeout never yields a cached verdict');
    const others = [
      { maxDepth: 3 },
      { maxMembers: 5 },
      { maxUnpacked: 2 ** 21 },
      { maxMemberSize: 2 ** 20 },
      { maxRatio: 20 },
      { alertEncrypted: false },
      { enabled: false },
    ];
    const gens = new Set([g, ...others.map((a) => new BuiltinEngine({ archives: a }).generation())]);
    assert.equal(gens.size, others.length + 1);
  });

  it('does not open what is no container, and a non-archive scan is unchanged', async () => {
    for (const b of [noise(1 << 20), Buffer.from('plain text\n'), Buffer.alloc(0), Buffer.from('PK')])
      assert.equal(sniffContainer(b), undefined);
    const off = new BuiltinEngine({ archives: { enabled: false } });
    assert.equal((await off.scan(zlib.gzipSync(EICAR))).infected, false, 'unpacking off: only raw bytes');
    assert.equal((await off.scan(Buffer.concat([noise(1000), EICAR]))).threat, 'Eicar-Test-Signature');
  });
});
