import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { SignatureFileError } from '../../../src/errors.js';
import { BuiltinEngine } from '../../../src/svm/engines/builtin.js';
import { emptySignatureSet, loadSignatureFile, parseHexSig } from '../../../src/svm/engines/signatures.js';
import { runEngineConformance } from './conformance.js';
import { tempDir } from '../../helpers/procs.js';

runEngineConformance('builtin', async () => new BuiltinEngine());

const dir = tempDir('la-sigs-');
const write = (name: string, text: string) => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
};
const hex = (s: string) => Buffer.from(s).toString('hex');

describe('builtin engine signatures', () => {
  it('loads .hdb (md5), .hsb (sha256 and sha1) with exact and wildcard sizes', async () => {
    const content = Buffer.from('malicious payload v1');
    const md5 = (await import('node:crypto')).createHash('md5').update(content).digest('hex');
    const sha256 = (await import('node:crypto')).createHash('sha256').update('other bad thing').digest('hex');
    const sha1 = (await import('node:crypto')).createHash('sha1').update('third').digest('hex');
    const e = new BuiltinEngine({
      signatureFiles: [
        write('a.hdb', `# comment\n${md5}:${content.length}:Test.Md5\n`),
        write('b.hsb', `${sha256}:*:Test.Sha256\n${sha1}:5:Test.Sha1\n`),
      ],
    });
    assert.deepEqual(await e.scan(content), { infected: true, threat: 'Test.Md5' });
    assert.deepEqual(await e.scan(Buffer.from('other bad thing')), { infected: true, threat: 'Test.Sha256' });
    assert.deepEqual(await e.scan(Buffer.from('third')), { infected: true, threat: 'Test.Sha1' });
    assert.equal((await e.scan(Buffer.from('malicious payload v2'))).infected, false);
  });

  it('matches .ndb patterns with ?? wildcards, gaps and offsets', async () => {
    const e = new BuiltinEngine({
      signatureFiles: [
        write(
          'p.ndb',
          [
            `Test.Wild:0:*:${hex('EVIL')}??${hex('CODE')}`,
            `Test.Gap:0:*:${hex('START')}{2-4}${hex('END!')}`,
            `Test.Star:0:*:${hex('ALPHA')}*${hex('OMEGA')}`,
            `Test.Offset:0:0:${hex('MZHEAD')}`,
            `Test.Eof:0:EOF-4:${hex('TAIL')}`,
            `Test.Shift:0:10,5:${hex('SHIFTED')}`,
          ].join('\n'),
        ),
      ],
    });
    const t = async (s: string) => (await e.scan(Buffer.from(s))).threat;
    assert.equal(await t('xxEVIL_CODEyy'), 'Test.Wild');
    assert.equal(await t('xxEVILCODEyy'), undefined, '?? needs exactly one byte');
    assert.equal(await t('START..END!'), 'Test.Gap');
    assert.equal(await t('START.....END!'), undefined, 'gap of 5 is over {2-4}');
    assert.equal(await t('ALPHA lots of text in between OMEGA'), 'Test.Star');
    assert.equal(await t('MZHEAD at the start'), 'Test.Offset');
    assert.equal(await t('not at start MZHEAD'), undefined);
    assert.equal(await t('ends with TAIL'), 'Test.Eof');
    assert.equal(await t('TAIL not at the end'), undefined);
    assert.equal(await t('0123456789abSHIFTED'), 'Test.Shift');
    assert.equal(await t('0123456789abcdefSHIFTED'), undefined);
  });

  it('skips bad lines with file:line errors and keeps the rest; refuses unknown file types', () => {
    const set = emptySignatureSet();
    const f = write(
      'bad.ndb',
      `Good:0:*:${hex('GOOD')}\nNoHex:0:*:zz\nShort\nNeg:0:*:${hex('AB')}!(aa|bb)\nNib:0:*:a?${hex('XYZ')}\nOff:0:EP+0:${hex('XYZ')}\nOne:0:*:41\n`,
    );
    assert.equal(loadSignatureFile(set, f), 1);
    assert.equal(set.errors.length, 6);
    assert.ok(set.errors.every((e) => e instanceof SignatureFileError && e.message.startsWith(`${f}:`)));
    assert.deepEqual(
      set.errors.map((e) => Number(/:(\d+): /.exec(e.message)?.[1])),
      [2, 3, 4, 5, 6, 7],
    );
    assert.ok(set.errors.every((e) => e.code === 'LA_ERR_SIGNATURES'));
    assert.throws(() => loadSignatureFile(set, write('x.yara', 'rule')), /unknown signature file type/);
    assert.throws(() => new BuiltinEngine({ signatureFiles: [path.join(dir, 'missing.hdb')] }), /missing\.hdb: cannot read/);
  });

  it('parses hex signatures into pieces', () => {
    assert.equal(typeof parseHexSig('*aabb'), 'string');
    assert.equal(typeof parseHexSig('aabb*'), 'string');
    const p = parseHexSig('aabb{3}cc??dd');
    assert.ok(Array.isArray(p));
    assert.equal(p.length, 2);
    assert.deepEqual([p[0]!.gapMin, p[0]!.gapMax], [3, 3]);
  });

  it('changes generation when the signatures change, and reload picks them up', () => {
    const f = write('g.hdb', `${'0'.repeat(32)}:1:A\n`);
    const e = new BuiltinEngine({ signatureFiles: [f] });
    const g1 = e.generation();
    assert.equal(new BuiltinEngine({ signatureFiles: [f] }).generation(), g1, 'deterministic');
    fs.writeFileSync(f, `${'1'.repeat(32)}:1:B\n`);
    assert.equal(e.reload().generation !== g1, true);
  });
});

describe('builtin engine: pattern matching details', () => {
  const engineFor = (lines: string[]) =>
    new BuiltinEngine({ signatureFiles: [write(`m${Math.random().toString(36).slice(2)}.ndb`, lines.join('\r\n'))] });

  it('expands (aa|bb) alternatives, including multi-byte and ?? ones', async () => {
    const e = engineFor([`Test.Alt:0:*:${hex('PRE')}(${hex('A')}|${hex('BC')}|??${hex('D')})${hex('POST')}`]);
    const t = async (s: string) => (await e.scan(Buffer.from(s))).threat;
    assert.equal(await t('..PREAPOST..'), 'Test.Alt');
    assert.equal(await t('..PREBCPOST..'), 'Test.Alt');
    assert.equal(await t('..PRExDPOST..'), 'Test.Alt');
    assert.equal(await t('..PREBPOST..'), undefined);
    assert.equal(await t('..PREPOST..'), undefined);
  });

  it('finds pieces before the anchor (backward search) with {-n} and {n-} gaps', async () => {
    const e = engineFor([`Test.Back:0:*:${hex('ab')}{-3}${hex('LONGANCHOR')}{2-}${hex('zz')}`]);
    const t = async (s: string) => (await e.scan(Buffer.from(s))).threat;
    assert.equal(await t('xxab..LONGANCHOR..zz'), 'Test.Back');
    assert.equal(await t('xxabLONGANCHOR....zz'), 'Test.Back');
    assert.equal(await t('xxab....LONGANCHOR..zz'), undefined, '{-3} allows at most 3 bytes');
    assert.equal(await t('xxab..LONGANCHOR.zz'), undefined, '{2-} needs at least 2 bytes');
  });

  it('honours EOF-n and n,shift offsets with patterns whose anchor is not first', async () => {
    const e = engineFor([`Test.EofGap:0:EOF-12:${hex('H')}{0-2}${hex('TRAILER')}`, `Test.AbsGap:0:4,2:${hex('M')}??${hex('HEADERX')}`]);
    const t = async (s: string) => (await e.scan(Buffer.from(s))).threat;
    assert.equal(await t('lots of data H..TRAILER..'), 'Test.EofGap');
    assert.equal(await t('lots of data H..TRAILER...'), undefined);
    assert.equal(await t('0123M.HEADERX and more'), 'Test.AbsGap');
    assert.equal(await t('012345M.HEADERX and more'), 'Test.AbsGap');
    assert.equal(await t('0123456M.HEADERX and more'), undefined);
    assert.equal(await t('M.HEADERX'), undefined);
  });

  it('stays fast on content built to make * patterns backtrack', async () => {
    const e = engineFor([`Test.Slow:0:*:${hex('aa')}*${hex('ab')}*${hex('ac')}*${hex('zz')}`]);
    const hostile = Buffer.from('aaabac'.repeat(200_000)); // 1.2 MB of partial matches, no `zz`
    const t0 = performance.now();
    assert.equal((await e.scan(hostile)).infected, false);
    const ms = performance.now() - t0;
    assert.ok(ms < 3000, `took ${ms.toFixed(0)} ms`);
    assert.equal((await e.scan(Buffer.concat([hostile, Buffer.from('zz')]))).threat, 'Test.Slow');
  });

  it('computes a hash only for sizes some signature of that hash has', async () => {
    const content = Buffer.from('sized content');
    const crypto = await import('node:crypto');
    const md5 = crypto.createHash('md5').update(content).digest('hex');
    const e = new BuiltinEngine({
      signatureFiles: [
        write('sized.hdb', `${md5}:${content.length}:Test.Sized\n${md5.toUpperCase()}:999:Test.OtherSize\n`),
        write('p.hdu', `${'e'.repeat(32)}:*:Test.Pua\n`),
      ],
    });
    assert.equal((await e.scan(content)).threat, 'Test.Sized');
    // a wrong SHA-256 passed in does not matter: no SHA-256 signature applies
    assert.equal((await e.scan(content, { sha256: '0'.repeat(64) })).threat, 'Test.Sized');
    const sha = crypto.createHash('sha256').update('by sha').digest('hex');
    const e2 = new BuiltinEngine({ signatureFiles: [write('s.hsb', `${sha}:6:Test.BySha\n`)] });
    assert.equal((await e2.scan(Buffer.from('by sha'), { sha256: sha })).threat, 'Test.BySha', 'uses the SVM-computed hash');
    assert.equal((await e2.scan(Buffer.from('by sha'))).threat, 'Test.BySha', 'computes it when not given');
  });

  it('keeps the previous signatures when a reload fails', () => {
    const f = write('r.ndb', `Test.R:0:*:${hex('RELOADME')}\n`);
    const e = new BuiltinEngine({ signatureFiles: [f] });
    const g = e.generation();
    fs.rmSync(f);
    assert.throws(() => e.reload(), /r\.ndb: cannot read the file/);
    assert.equal(e.generation(), g);
    assert.equal(e.scanSync(Buffer.from('xxRELOADMExx')).threat, 'Test.R');
  });

  it('scans 64 MiB at a useful rate (figure printed)', () => {
    const e = new BuiltinEngine();
    const buf = Buffer.alloc(64 << 20, 'lorem ipsum dolor sit amet X5O!P%@AP[4 ');
    e.scanSync(buf, { sha256: 'x' });
    const t0 = performance.now();
    for (let i = 0; i < 3; i++) assert.equal(e.scanSync(buf, { sha256: 'x' }).infected, false);
    const ms = (performance.now() - t0) / 3;
    const mbs = 64 / (ms / 1000);
    process.stderr.write(`builtin engine: 64 MiB in ${ms.toFixed(1)} ms = ${mbs.toFixed(0)} MiB/s (EICAR set, SHA-256 given)\n`);
    assert.ok(mbs > 200, `${mbs.toFixed(0)} MiB/s`);
  });
});

describe('builtin engine: matcher agrees with a regular-expression reference', () => {
  it('on random patterns and random content (fast-check, 2,000 cases)', async () => {
    const fc = (await import('fast-check')).default;
    const { parseNdbLine } = await import('../../../src/svm/engines/signatures.js');
    const { matchBody } = await import('../../../src/svm/engines/builtin.js');
    const alphabet = 'abc';
    const byte = fc.constantFrom(...alphabet.split('').map((c) => c.charCodeAt(0)), -1);
    const gap = fc.oneof(
      fc.constant('{0}'),
      fc.tuple(fc.nat(3), fc.nat(3)).map(([a, b]) => `{${a}-${a + b}}`),
      fc.constant('*'),
      fc.nat(3).map((n) => `{-${n}}`),
      fc.nat(3).map((n) => `{${n}-}`),
    );
    const piece = fc.array(byte, { minLength: 1, maxLength: 4 });
    const pattern = fc
      .tuple(fc.array(fc.tuple(piece, gap), { maxLength: 3 }), piece)
      .filter(([pre, last]) => [...pre.map(([p]) => p), last].some((p) => p.some((b, i) => b >= 0 && (p[i + 1] ?? -1) >= 0)));
    const offset = fc.oneof(
      fc.constant('*'),
      fc.tuple(fc.nat(6), fc.nat(3)).map(([a, s]) => `${a},${s}`),
      fc.tuple(fc.nat(6), fc.nat(3)).map(([a, s]) => `EOF-${a},${s}`),
    );
    const content = fc.array(fc.constantFrom(...alphabet.split('')), { maxLength: 40 }).map((a) => a.join(''));
    const hexOf = (p: number[]) => p.map((b) => (b < 0 ? '??' : b.toString(16).padStart(2, '0'))).join('');
    const reOf = (p: number[]) => p.map((b) => (b < 0 ? '[\\s\\S]' : String.fromCharCode(b))).join('');
    const reGap = (g: string) =>
      g === '*'
        ? '[\\s\\S]*'
        : g
            .replace(/^\{-(\d+)\}$/, '{0,$1}')
            .replace(/^\{(\d+)-\}$/, '{$1,}')
            .replace(/^\{(\d+)-(\d+)\}$/, '{$1,$2}')
            .replace(/^\{/, '[\\s\\S]{');
    fc.assert(
      fc.property(pattern, offset, content, ([pre, last], off, text) => {
        const set = emptySignatureSet();
        const hexSig = pre.map(([p, g]) => hexOf(p) + g).join('') + hexOf(last);
        const err = parseNdbLine(set, `T:0:${off}:${hexSig}`);
        if (err) return; // e.g. no 2-byte literal run: refused, nothing to compare
        const body = pre.map(([p, g]) => reOf(p) + reGap(g)).join('') + reOf(last);
        let prefix = '';
        const m = /^(EOF-)?(\d+),(\d+)$/.exec(off);
        if (m) {
          const base = m[1] ? text.length - Number(m[2]) : Number(m[2]);
          if (base < 0) prefix = '(?!)';
          else prefix = `^[\\s\\S]{${base},${base + Number(m[3])}}`;
        }
        const expected = new RegExp(prefix + (prefix ? `(?:${body})` : body)).test(text);
        const got = set.body.some((sig) => matchBody(sig, Buffer.from(text, 'latin1')));
        assert.equal(got, expected, `sig ${hexSig} offset ${off} on ${JSON.stringify(text)}`);
      }),
      { numRuns: Number(process.env.MATCH_RUNS ?? 2000) },
    );
  });
});
