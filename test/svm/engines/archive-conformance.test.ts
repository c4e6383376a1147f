/**
 * One detection corpus of built containers, run against every engine: builtin, clamav (a real
 * clamd with its default archive limits) and yara (YARA-X, which does not unpack). clamd is the
 * reference: whatever it finds in a container, builtin must find too. The table this prints
 * (stderr) is the one in docs/svm.md.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, describe, it } from 'node:test';
import { BuiltinEngine } from '../../../src/svm/engines/builtin.js';
import { ClamavEngine } from '../../../src/svm/engines/clamav.js';
import type { ScanEngine } from '../../../src/svm/engines/engine.js';
import { YaraEngine, loadYaraModule } from '../../../src/svm/engines/yara.js';
import { needClamd, startClamd, type Clamd } from '../../helpers/clamd.js';
import { EICAR as EICAR_TEXT, inCi, tempDir } from '../../helpers/procs.js';
import { deflatedZeros, detectionCorpus, nestedZips, tarOf, zip } from './archive-corpus.js';
import { EICAR_BYTES as EICAR, noise } from '../../helpers/fixtures.js';

const clamdSkip = needClamd();
let yaraSkip: string | undefined;
try {
  await loadYaraModule();
} catch (e) {
  if (inCi) throw new Error(`CI=true: @litko/yara-x cannot be loaded: ${(e as Error).message}`, { cause: e });
  yaraSkip = 'needs @litko/yara-x';
}
const dir = tempDir('la-arch-conf-');
let clamd: Clamd | undefined;
after(async () => {
  await clamd?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function hostileCorpus(): Promise<Array<{ name: string; content: Buffer; threat: boolean }>> {
  const tgz = zlib.gzipSync(
    await tarOf([
      { name: 'x/eicar.com', data: EICAR },
      { name: 'x/pad', data: noise(200_000) },
    ]),
  );
  return [
    { name: 'tar.gz cut in half (EICAR before the cut)', content: tgz.subarray(0, tgz.length >> 1), threat: true },
    {
      name: 'zip, EICAR after 10,000 members',
      content: zip([
        ...Array.from({ length: 10_000 }, (_, i) => ({ name: `f${i}`, data: Buffer.from(`${i}`), method: 0 as const })),
        { name: 'last.com', data: EICAR },
      ]),
      threat: true,
    },
    {
      name: 'zip, 10 GiB of zeros (10 MB)',
      content: zip([{ name: 'zeros', data: Buffer.alloc(0), raw: { bytes: deflatedZeros(10_240), size: 10_240 * 2 ** 20 } }]),
      threat: false,
    },
    {
      name: 'zip, overlapping entries',
      content: zip(
        [
          { name: 'a', data: Buffer.from('a') },
          { name: 'b', data: Buffer.from('b') },
        ],
        { share: true },
      ),
      threat: false,
    },
    { name: 'zip, encrypted member', content: zip([{ name: 'secret.exe', data: noise(500), encrypted: true, method: 0 }]), threat: false },
    { name: 'zip nested 20 deep', content: nestedZips(EICAR, 20), threat: true },
  ];
}

const table: Array<{ name: string; results: Record<string, string> }> = [];
const cell = (r: { infected: boolean; threat?: string } | Error): string =>
  r instanceof Error ? `error ${(r as { code?: string }).code ?? r.message}` : r.infected ? r.threat!.replace(/ in .*/, '') : 'clean';

describe('archive detection across engines', () => {
  it('runs the corpus on builtin, clamav and yara; builtin finds all clamd finds', async (t) => {
    const engines: Array<[string, ScanEngine]> = [['builtin', new BuiltinEngine()]];
    if (!clamdSkip) {
      clamd = await startClamd({ streamMaxLength: '32M' });
      engines.push(['clamav', await ClamavEngine.create({ address: clamd.socket })]);
    } else t.diagnostic(`clamav column skipped: ${clamdSkip}`);
    if (!yaraSkip) {
      const rules = path.join(dir, 'eicar.yar');
      fs.writeFileSync(rules, `rule EICAR { strings: $e = "${EICAR_TEXT.replace(/\\/g, '\\\\')}" condition: $e }\n`);
      engines.push(['yara', await YaraEngine.create({ rules, maxFileSize: 64 << 20 })]);
    } else t.diagnostic(`yara column skipped: ${yaraSkip}`);
    const corpus = [...(await detectionCorpus()), ...(await hostileCorpus())];
    for (const c of corpus) {
      const results: Record<string, string> = {};
      for (const [name, e] of engines) results[name] = cell(await e.scan(c.content).catch((err: Error) => err));
      table.push({ name: c.name, results });
    }
    for (const [, e] of engines) await e.close();
    const names = engines.map(([n]) => n);
    const lines = [
      `| container | ${names.join(' | ')} |`,
      `|---|${names.map(() => '---').join('|')}|`,
      ...table.map((r) => `| ${r.name} | ${names.map((n) => r.results[n]).join(' | ')} |`),
    ];
    process.stderr.write(`\n${lines.join('\n')}\n\n`);
    for (const r of table.filter((x) => !/^clean /.test(x.name))) {
      assert.notEqual(r.results.builtin, 'clean', `builtin missed a threat or a bomb in: ${r.name}`);
      if (r.results.clamav && r.results.clamav !== 'clean')
        assert.notEqual(r.results.builtin, 'clean', `clamd finds ${r.name}, builtin does not`);
    }
    for (const r of table.filter((x) => /^clean /.test(x.name)))
      for (const n of names) assert.equal(r.results[n], 'clean', `${n} on ${r.name}`);
    if (!yaraSkip) {
      // YARA-X judges raw bytes: a stored tar member is seen, a compressed one is not.
      assert.equal(table.find((r) => r.name === 'tar')!.results.yara, 'YARA.eicar.EICAR');
      assert.equal(table.find((r) => r.name === 'gzip')!.results.yara, 'clean');
    }
  });
});
