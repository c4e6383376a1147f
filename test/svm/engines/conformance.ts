/**
 * The one conformance suite every ScanEngine must pass (builtin now, clamav next).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { ScanEngine } from '../../../src/svm/engines/engine.js';

export const EICAR = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*', 'latin1');

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

    it('detects EICAR embedded in a file larger than 1 MiB', async () => {
      const content = Buffer.concat([crypto.randomBytes(1536 * 1024).fill(0x41, 0, 16), EICAR, Buffer.alloc(4096, 0x20)]);
      const r = await engine.scan(content);
      assert.equal(r.infected, true, 'embedded EICAR');
    });

    it('does not flag clean text, empty content or random bytes, and never throws on them', async () => {
      for (const c of [Buffer.from('hello world\n'), Buffer.alloc(0), crypto.randomBytes(200_000), EICAR.subarray(0, 60)]) {
        const r = await engine.scan(c);
        assert.equal(r.infected, false);
      }
    });

    it('has a stable, non-empty signature generation', () => {
      const g = engine.generation();
      assert.ok(typeof g === 'string' && g.length > 0);
      assert.equal(engine.generation(), g);
      assert.equal(engine.healthy(), true);
    });

    it('answers 50 concurrent scans correctly', async () => {
      const jobs = Array.from({ length: 50 }, (_, i) => (i % 5 === 0 ? Buffer.concat([Buffer.from(`file ${i}\n`), EICAR]) : Buffer.from(`clean file ${i}\n`)));
      const rs = await Promise.all(jobs.map((c) => engine.scan(c)));
      rs.forEach((r, i) => assert.equal(r.infected, i % 5 === 0, `job ${i}`));
    });
  });
}
