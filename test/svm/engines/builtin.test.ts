import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { SignatureFileError } from '../../../src/errors.js';
import { BuiltinEngine } from '../../../src/svm/engines/builtin.js';
import { emptySignatureSet, loadSignatureFile, parseHexSig } from '../../../src/svm/engines/signatures.js';
import { runEngineConformance } from './conformance.js';

runEngineConformance('builtin', async () => new BuiltinEngine());

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'la-sigs-'));
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
    const e = new BuiltinEngine({ signatureFiles: [write('a.hdb', `# comment\n${md5}:${content.length}:Test.Md5\n`), write('b.hsb', `${sha256}:*:Test.Sha256\n${sha1}:5:Test.Sha1\n`)] });
    assert.deepEqual(await e.scan(content), { infected: true, threat: 'Test.Md5' });
    assert.deepEqual(await e.scan(Buffer.from('other bad thing')), { infected: true, threat: 'Test.Sha256' });
    assert.deepEqual(await e.scan(Buffer.from('third')), { infected: true, threat: 'Test.Sha1' });
    assert.equal((await e.scan(Buffer.from('malicious payload v2'))).infected, false);
  });

  it('matches .ndb patterns with ?? wildcards, gaps and offsets', async () => {
    const e = new BuiltinEngine({
      signatureFiles: [
        write('p.ndb', [
          `Test.Wild:0:*:${hex('EVIL')}??${hex('CODE')}`,
          `Test.Gap:0:*:${hex('START')}{2-4}${hex('END!')}`,
          `Test.Star:0:*:${hex('ALPHA')}*${hex('OMEGA')}`,
          `Test.Offset:0:0:${hex('MZHEAD')}`,
          `Test.Eof:0:EOF-4:${hex('TAIL')}`,
          `Test.Shift:0:10,5:${hex('SHIFTED')}`,
        ].join('\n')),
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
    const f = write('bad.ndb', `Good:0:*:${hex('GOOD')}\nNoHex:0:*:zz\nShort\nAlt:0:*:${hex('AB')}(aa|bb)\nNib:0:*:a?${hex('XYZ')}\n`);
    assert.equal(loadSignatureFile(set, f), 1);
    assert.equal(set.errors.length, 4);
    assert.ok(set.errors.every((e) => e instanceof SignatureFileError && e.message.startsWith(`${f}:`)));
    assert.match(set.errors[0]!.message, /:2:/);
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
