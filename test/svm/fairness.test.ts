/**
 * Fairness: the per-agent rate limit, the bounded per-agent queue and round-robin scheduling of
 * engine scans, so a noisy agent cannot starve quiet ones; queue depth in /metrics.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeMessage } from '../../src/protocol/index.js';
import type { EngineResult, ScanEngine } from '../../src/svm/engines/engine.js';
import { FairScheduler, RateLimitedError, TokenBucket } from '../../src/svm/fairness.js';
import { noise } from '../helpers/fixtures.js';
import { eventually } from '../helpers/procs.js';
import { rawAgent, sendUpload, startTestSvm } from './helpers.js';

/** An engine that takes `ms` per scan (like clamd on big files), never infected. */
class SlowEngine implements ScanEngine {
  readonly name = 'slow';
  constructor(private readonly ms: number) {}
  generation(): string {
    return 'slow-1';
  }
  healthy(): boolean {
    return true;
  }
  async scan(): Promise<EngineResult> {
    await new Promise((r) => setTimeout(r, this.ms));
    return { infected: false };
  }
  async close(): Promise<void> {}
}

describe('fairness', () => {
  it('TokenBucket: burst, then the rate', () => {
    const b = new TokenBucket(10, 3, 0);
    assert.deepEqual([b.take(0), b.take(0), b.take(0), b.take(0)], [true, true, true, false]);
    assert.equal(b.take(99), false, '0.99 tokens after 99 ms');
    assert.equal(b.take(201), true);
  });

  it('FairScheduler: a freed slot goes round-robin by agent; a full agent queue is refused', async () => {
    const s = new FairScheduler(1, 3);
    const order: string[] = [];
    const job = (tag: string) => async () => {
      order.push(tag);
      await new Promise((r) => setTimeout(r, 1));
    };
    const noisy = {};
    const quiet = {};
    const all = [s.run('t', noisy, job('n0')), s.run('t', noisy, job('n1')), s.run('t', noisy, job('n2')), s.run('t', noisy, job('n3'))];
    await assert.rejects(s.run('t', noisy, job('n4')), RateLimitedError);
    assert.equal(s.depth, 3);
    all.push(s.run('t', quiet, job('q0')), s.run('t', quiet, job('q1')));
    await Promise.all(all);
    assert.deepEqual(order, ['n0', 'n1', 'q0', 'n2', 'q1', 'n3']);
  });

  it('a noisy agent flooding scans does not delay quiet agents beyond a few scan times; its excess is refused with LA_ERR_RATE_LIMITED', async () => {
    const s = await startTestSvm({ engine: new SlowEngine(20), scanConcurrency: 2, agentQueue: 8, maxInFlight: 64 });
    try {
      const noisy = await rawAgent(s.url);
      await noisy.next((m) => m.t === 'welcome');
      for (let id = 1; id <= 60; id++) sendUpload(noisy, id, noise(2000, 1000 + id));
      // Wait until the noisy uploads are queued (a loaded machine takes a while to receive them).
      const depth = await eventually(
        () => (s.metrics.lightagent_svm_scan_queue_depth! >= 4 ? s.metrics.lightagent_svm_scan_queue_depth : undefined),
        5000,
        'noisy scans queued',
      );
      assert.ok(depth <= 8, `queue depth ${depth} is bounded by agent_queue`);
      const quiet = await Promise.all([1, 2, 3].map(() => rawAgent(s.url)));
      const t0 = performance.now();
      const vs = await Promise.all(
        quiet.map(async (q, i) => {
          sendUpload(q, 1, noise(1000, 5000 + i));
          return q.verdict(1);
        }),
      );
      const quietMs = performance.now() - t0;
      assert.ok(vs.every((v) => v.verdict === 'clean'));
      // Round-robin: each quiet scan waits for at most ~one noisy scan per slot, not the noisy queue.
      assert.ok(quietMs < 1000, `quiet agents answered in ${quietMs} ms`);
      const noisyVerdicts = await Promise.all(Array.from({ length: 60 }, (_, i) => noisy.verdict(i + 1, 10_000)));
      const limited = noisyVerdicts.filter((v) => v.code === 'LA_ERR_RATE_LIMITED').length;
      assert.ok(limited > 0, 'the excess was refused');
      assert.equal(noisyVerdicts.filter((v) => v.verdict === 'clean').length + limited, 60);
      assert.equal(s.metrics.lightagent_svm_rate_limited_total, limited);
      for (const a of [noisy, ...quiet]) a.ws.close();
    } finally {
      await s.close();
    }
  });

  it('the per-agent request rate: lookups over the burst are refused at once, others are unaffected', async () => {
    const s = await startTestSvm({ rateLimit: { perSecond: 5, burst: 10 } });
    try {
      const noisy = await rawAgent(s.url);
      await noisy.next((m) => m.t === 'welcome');
      for (let id = 1; id <= 20; id++) noisy.ws.send(encodeMessage({ t: 'lookup', id, sha256: 'a'.repeat(64), size: 1 }));
      const vs = await Promise.all(Array.from({ length: 20 }, (_, i) => noisy.verdict(i + 1)));
      const limited = vs.filter((v) => v.code === 'LA_ERR_RATE_LIMITED').length;
      assert.ok(limited >= 9 && limited <= 10, `${limited} refused`);
      const quiet = await rawAgent(s.url);
      quiet.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: 'b'.repeat(64), size: 1 }));
      assert.equal((await quiet.verdict(1)).verdict, 'unknown');
      noisy.ws.send(encodeMessage({ t: 'scan', id: 99, size: 3 }));
      noisy.ws.send(encodeMessage({ t: 'lookup', id: 98, sha256: 'c'.repeat(64), size: 1 }));
      noisy.ws.close();
      quiet.ws.close();
    } finally {
      await s.close();
    }
  });
});
