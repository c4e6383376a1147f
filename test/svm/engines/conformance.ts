/**
 * The one conformance suite every ScanEngine must pass (builtin now, clamav next): call
 * `runEngineConformance(name, makeEngine)` from that engine's test file. `makeEngine` is called
 * once for the shared engine and once more for the close() test.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { ScanEngine } from '../../../src/svm/engines/engine.js';
import { EICAR_BYTES as EICAR, noise } from '../../helpers/fixtures.js';

export function runEngineConformance(name: string, makeEngine: () => Promise<ScanEngine>, opts: { skip?: string | undefined } = {}): void {
  describe(`engine conformance: ${name}`, { skip: opts.skip }, () => {
    let engine: ScanEngine;
    before(async () => {
      engine = await makeEngine();
    });
    after(async () => {
      await engine?.close();
    });

    it('detects EICAR with a threat name', async () => {
      const r = await engine.scan(EICAR);
      assert.equal(r.infected, true);
      assert.match(r.threat ?? '', /eicar/i);
    });

    it('detects EICAR embedded in a file larger than 1 MiB (and with its SHA-256 given)', async () => {
      const content = Buffer.concat([noise(1536 * 1024, 2), EICAR, Buffer.alloc(4096, 0x20)]);
      const r = await engine.scan(content);
      assert.equal(r.infected, true, 'embedded EICAR');
      assert.match(r.threat ?? '', /eicar/i);
      const sha256 = crypto.createHash('sha256').update(content).digest('hex');
      assert.equal((await engine.scan(content, { sha256 })).infected, true, 'with the SVM-computed hash');
    });

    it('does not flag clean text, empty content, random bytes or a truncated EICAR, and never throws on them', async () => {
      const samples = [
        Buffer.from('hello world\n'),
        Buffer.alloc(0),
        Buffer.alloc(1),
        crypto.randomBytes(200_000),
        noise(3 << 20, 3),
        EICAR.subarray(0, 60),
        Buffer.alloc(68, 0x58),
      ];
      for (const c of samples) {
        const r = await engine.scan(c);
        assert.equal(r.infected, false, `sample of ${c.length} bytes`);
      }
    });

    it('has a non-empty generation that is stable between calls, and is healthy', () => {
      const g = engine.generation();
      assert.ok(typeof g === 'string' && g.length > 0);
      assert.equal(engine.generation(), g);
      assert.equal(engine.healthy(), true);
      assert.ok(engine.name.length > 0);
    });

    it('answers 50 concurrent scans correctly', async () => {
      const jobs = Array.from({ length: 50 }, (_, i) =>
        i % 5 === 0
          ? Buffer.concat([Buffer.from(`file ${i}\n`), EICAR])
          : Buffer.concat([Buffer.from(`clean file ${i}\n`), noise(i * 1000, i)]),
      );
      const rs = await Promise.all(jobs.map((c) => engine.scan(c)));
      rs.forEach((r, i) => assert.equal(r.infected, i % 5 === 0, `job ${i}`));
    });

    it('closes cleanly (twice is harmless)', async () => {
      const e = await makeEngine();
      assert.equal((await e.scan(EICAR)).infected, true);
      await e.close();
      await e.close();
    });
  });
}
