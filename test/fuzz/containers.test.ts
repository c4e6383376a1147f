/**
 * Hostile bytes for every container reader of the builtin engine (zip, gzip, bzip2, tar, cpio,
 * MIME; zip also without its central directory, read from its local records), each reached through its real entry point, the engine's scan: a valid archive with a
 * few bytes flipped, cut, inserted or overwritten with 32-bit edge values (sizes, offsets,
 * counts). The promise: a verdict, or ArchiveTimeoutError; never another exception, never a hang
 * (each input is capped in time by fuzzAsync).
 */
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import { ArchiveTimeoutError } from '../../src/svm/engines/engine.js';
import { sniffContainer } from '../../src/svm/engines/containers/sniff.js';
import { bzip2, cpioOf, mail, tarOf, withoutDirectory, zip } from '../svm/engines/archive-corpus.js';
import { EICAR_BYTES as EICAR } from '../helpers/fixtures.js';
import { applyEdits, edits, expectOnly, fuzzAsync, FUZZ_MS } from './fuzz.js';

const engine = new BuiltinEngine({ archives: { timeoutMs: 1500 } });
const files = [
  { name: 'a/eicar.com', data: EICAR },
  { name: 'a/b.txt', data: Buffer.from('hello '.repeat(50)) },
];

const seeds = async (): Promise<Record<string, Buffer>> => ({
  zip: zip([
    { name: 'a.txt', data: Buffer.from('x'.repeat(300)) },
    { name: 'b.com', data: EICAR, method: 0 },
    { name: 'c.bz', data: EICAR, method: 12 },
    { name: 'd.z', data: EICAR, encrypted: true, method: 0 },
  ]),
  // No central directory: the local-record walk, with sizes in the records and in data descriptors.
  'zip-local': withoutDirectory(
    zip([
      { name: 'a.txt', data: Buffer.from('x'.repeat(300)) },
      { name: 'b.com', data: EICAR, method: 0 },
      { name: 'c.bz', data: EICAR, method: 12 },
    ]),
  ),
  'zip-descriptors': withoutDirectory(
    zip([
      { name: 'a.txt', data: Buffer.from('x'.repeat(300)) },
      { name: 'b.com', data: EICAR, method: 0 },
      { name: 'c.z', data: EICAR },
    ]),
    true,
  ),
  gzip: zlib.gzipSync(Buffer.concat([EICAR, Buffer.alloc(500, 1)])),
  bzip2: bzip2(Buffer.concat([EICAR, Buffer.alloc(500, 1)])),
  tar: await tarOf(files),
  cpio: cpioOf(files),
  mime: mail({ base64: zip([{ name: 'x.com', data: EICAR }]), name: 'x.zip' }),
});

describe('fuzz: container readers', () => {
  it('every reader: a verdict or ArchiveTimeoutError for damaged input, never a throw or a hang', async (t) => {
    const s = await seeds();
    const total: Record<string, number> = {};
    for (const [name, seed] of Object.entries(s)) {
      assert.equal(sniffContainer(seed)?.name, name.split('-')[0], `the ${name} seed is recognised`);
      const r = await fuzzAsync(
        t,
        `container ${name}`,
        edits,
        async (list) => {
          try {
            await engine.scan(applyEdits(seed, list, 4)); // the magic stays, so the reader is reached
          } catch (e) {
            expectOnly(e, [ArchiveTimeoutError], `the ${name} reader`);
          }
        },
        { ms: Math.max(500, Math.floor(FUZZ_MS / 2)), maxInputMs: 2500 },
      );
      total[name] = r.runs;
      assert.ok(r.runs > 0);
    }
    // Arbitrary bytes behind each format's magic.
    const r = await fuzzAsync(
      t,
      'container magic + random',
      fc.tuple(fc.constantFrom(...Object.values(s).map((b) => b.subarray(0, 8))), fc.uint8Array({ maxLength: 4096 })),
      async ([head, tail]) => {
        try {
          await engine.scan(Buffer.concat([head, tail]));
        } catch (e) {
          expectOnly(e, [ArchiveTimeoutError], 'a container reader');
        }
      },
    );
    total.random = r.runs;
    process.stderr.write(`container fuzz inputs: ${JSON.stringify(total)}\n`);
  });
});
