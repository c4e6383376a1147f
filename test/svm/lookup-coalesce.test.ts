/**
 * Clones that miss the same file at the same moment upload it once: a lookup of content another
 * agent is about to upload waits for that upload's verdict; it is released (answered `unknown`,
 * so its agent uploads itself) as soon as that upload cannot bring one: cancelled, dropped,
 * failed, its agent gone, or no progress. Never held past lookup_coalesce, never across tenants,
 * never on the asker's own miss, and never more than a quarter of an agent's window at once.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, it } from 'node:test';
import { encodeChunk, encodeMessage } from '../../src/protocol/index.js';
import { LookupCoalescer } from '../../src/svm/coalesce.js';
import type { SvmServer } from '../../src/svm/server.js';
import { metric, rawAgent, startTestSvm, upload, type RawAgent } from './helpers.js';

const sha = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
/** Held lookups are allowed this long: a release that comes from the hold time is a failure here. */
const HOLD = 8000;

async function twoAgents(s: SvmServer, tokens: [string?, string?] = []): Promise<[RawAgent, RawAgent]> {
  const a = await rawAgent(s.url, tokens[0]);
  const b = await rawAgent(s.url, tokens[1]);
  await a.next((m) => m.t === 'welcome');
  await b.next((m) => m.t === 'welcome');
  return [a, b];
}

/** A misses `content` (it is the owner); B's lookup of it is then held. Resolves with B's pending verdict and when B asked. */
async function ownerAndHeld(a: RawAgent, b: RawAgent, content: Buffer) {
  a.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: sha(content), size: content.length }));
  assert.equal((await a.verdict(1)).verdict, 'unknown', 'the first miss answers at once: that agent uploads');
  const t0 = performance.now();
  b.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: sha(content), size: content.length }));
  await new Promise((r) => setTimeout(r, 80));
  assert.ok(!b.msgs.some((m) => m.t === 'verdict'), 'the second lookup is held');
  return { t0, verdict: b.verdict(1, HOLD + 5000) };
}

describe('lookup coalescing', () => {
  it("a second agent's lookup waits for the first agent's upload and gets its verdict: one upload in all", async () => {
    const s = await startTestSvm({ coalesceMs: HOLD });
    try {
      const [a, b] = await twoAgents(s);
      const content = crypto.randomBytes(300_000);
      const held = await ownerAndHeld(a, b, content);
      // In three chunks with pauses shorter than the progress bound: the hold follows the upload.
      a.ws.send(encodeMessage({ t: 'scan', id: 2, size: content.length }));
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 60));
        a.ws.send(encodeChunk(2, i, i === 2, content.subarray(i * 100_000, (i + 1) * 100_000)));
      }
      assert.equal((await a.verdict(2)).verdict, 'clean');
      const v = await held.verdict;
      assert.equal(v.verdict, 'clean');
      assert.equal(v.sha256, sha(content));
      assert.equal(v.cached, true);
      assert.equal(await metric(s, 'lightagent_svm_uploads_total'), 1);
      assert.equal(s.core.coalescer.coalesced, 1);
    } finally {
      await s.close();
    }
  });

  it('an infected upload answers the held lookup infected', async () => {
    const s = await startTestSvm({ coalesceMs: HOLD });
    try {
      const [a, b] = await twoAgents(s);
      const eicar = Buffer.from('X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*');
      const held = await ownerAndHeld(a, b, eicar);
      assert.equal((await upload(a, 2, eicar)).verdict, 'infected');
      assert.equal((await held.verdict).verdict, 'infected');
    } finally {
      await s.close();
    }
  });

  const released = async (held: { t0: number; verdict: Promise<{ verdict: string }> }, what: string) => {
    const v = await held.verdict;
    const ms = performance.now() - held.t0;
    assert.equal(v.verdict, 'unknown', `${what}: the held lookup answers unknown (its agent uploads), never clean`);
    assert.ok(ms < HOLD / 4, `${what}: released after ${Math.round(ms)} ms, not at the hold's end (${HOLD} ms)`);
  };

  it("is released at once when the owner's upload is cancelled", async () => {
    const s = await startTestSvm({ coalesceMs: HOLD });
    try {
      const [a, b] = await twoAgents(s);
      const content = crypto.randomBytes(200_000);
      const held = await ownerAndHeld(a, b, content);
      a.ws.send(encodeMessage({ t: 'scan', id: 2, size: content.length }));
      a.ws.send(encodeChunk(2, 0, false, content.subarray(0, 100_000)));
      await new Promise((r) => setTimeout(r, 50));
      a.ws.send(encodeMessage({ t: 'cancel', id: 2 }));
      await released(held, 'cancel');
      assert.equal(s.core.coalescer.released.dropped, 1);
    } finally {
      await s.close();
    }
  });

  it('is released at once when the owner disconnects', async () => {
    const s = await startTestSvm({ coalesceMs: HOLD });
    try {
      const [a, b] = await twoAgents(s);
      const content = crypto.randomBytes(200_000);
      const held = await ownerAndHeld(a, b, content);
      a.ws.send(encodeMessage({ t: 'scan', id: 2, size: content.length }));
      a.ws.send(encodeChunk(2, 0, false, content.subarray(0, 100_000)));
      await new Promise((r) => setTimeout(r, 50));
      a.ws.terminate();
      await released(held, 'disconnect');
      assert.equal(s.core.coalescer.released.disconnected, 1);
    } finally {
      await s.close();
    }
  });

  it("is released at once when the owner's upload fails (over its memory share)", async () => {
    const s = await startTestSvm({ coalesceMs: HOLD, uploadMemoryPerAgent: 64 << 10, maxFileSize: 1 << 20 });
    try {
      const [a, b] = await twoAgents(s);
      const content = crypto.randomBytes(200_000);
      const held = await ownerAndHeld(a, b, content);
      a.ws.send(encodeMessage({ t: 'scan', id: 2, size: content.length }));
      a.ws.send(encodeChunk(2, 0, false, content.subarray(0, 100_000)));
      assert.equal((await a.verdict(2)).code, 'LA_ERR_BUSY');
      await released(held, 'failed upload');
    } finally {
      await s.close();
    }
  });

  it('is released when the owner uploads nothing, or its upload stops making progress', async () => {
    const s = await startTestSvm({ coalesceMs: HOLD, uploadStallMs: 60_000 });
    try {
      const [a, b] = await twoAgents(s);
      await released(await ownerAndHeld(a, b, crypto.randomBytes(1000)), 'no upload');
      const content = crypto.randomBytes(200_000);
      const held = await ownerAndHeld(a, b, content);
      a.ws.send(encodeMessage({ t: 'scan', id: 3, size: content.length }));
      a.ws.send(encodeChunk(3, 0, false, content.subarray(0, 100_000)));
      await released(held, 'stalled upload');
      assert.equal(s.core.coalescer.released['no-progress'], 2);
    } finally {
      await s.close();
    }
  });

  it("an upload of other content of the same size does not answer the hold; the owner's next one does", async () => {
    const s = await startTestSvm({ coalesceMs: HOLD });
    try {
      const [a, b] = await twoAgents(s);
      const content = crypto.randomBytes(5000);
      const held = await ownerAndHeld(a, b, content);
      assert.equal((await upload(a, 2, crypto.randomBytes(5000))).verdict, 'clean');
      await new Promise((r) => setTimeout(r, 50));
      assert.ok(!b.msgs.some((m) => m.t === 'verdict'), 'still held');
      assert.equal((await upload(a, 3, content)).verdict, 'clean');
      assert.equal((await held.verdict).verdict, 'clean');
    } finally {
      await s.close();
    }
  });

  it("never held: the owner's own lookups, another tenant's, and past a quarter of the agent's window", async () => {
    const s = await startTestSvm({
      coalesceMs: HOLD,
      maxInFlight: 8,
      tokens: [
        { tenant: 'a', token: 'token-of-tenant-a' },
        { tenant: 'b', token: 'token-of-tenant-b' },
      ],
    });
    try {
      const [a, other] = await twoAgents(s, ['token-of-tenant-a', 'token-of-tenant-b']);
      const [b, c] = await twoAgents(s, ['token-of-tenant-a', 'token-of-tenant-a']);
      const hashes = ['1', '2', '3'].map((x) => x.repeat(64));
      // A owns the first two misses (its share: 8 / 4), C the third.
      for (const i of [0, 1]) a.ws.send(encodeMessage({ t: 'lookup', id: 10 + i, sha256: hashes[i]!, size: 10 }));
      c.ws.send(encodeMessage({ t: 'lookup', id: 12, sha256: hashes[2]!, size: 10 }));
      for (const i of [0, 1]) assert.equal((await a.verdict(10 + i)).verdict, 'unknown');
      assert.equal((await c.verdict(12)).verdict, 'unknown');
      const t0 = performance.now();
      // The owner again (e.g. a second file with the same content): it uploads, it never waits on itself.
      a.ws.send(encodeMessage({ t: 'lookup', id: 20, sha256: hashes[0]!, size: 10 }));
      // Another tenant: its own cache and uploads.
      other.ws.send(encodeMessage({ t: 'lookup', id: 20, sha256: hashes[0]!, size: 10 }));
      // B: two held (8 / 4), the third answered at once.
      for (const [i, h] of hashes.entries()) b.ws.send(encodeMessage({ t: 'lookup', id: 30 + i, sha256: h, size: 10 }));
      assert.equal((await a.verdict(20)).verdict, 'unknown');
      assert.equal((await other.verdict(20)).verdict, 'unknown');
      assert.equal((await b.verdict(32)).verdict, 'unknown');
      assert.ok(performance.now() - t0 < 1000, 'all answered at once');
      assert.equal(s.core.coalescer.waiting, 2, "B's first two lookups are held");
    } finally {
      await s.close();
    }
  });

  it('off with lookup_coalesce 0', async () => {
    const s = await startTestSvm({ coalesceMs: 0 });
    try {
      const [a, b] = await twoAgents(s);
      const h = 'c'.repeat(64);
      a.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: h, size: 10 }));
      await a.verdict(1);
      b.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: h, size: 10 }));
      assert.equal((await b.verdict(1, 1000)).verdict, 'unknown');
      assert.equal(s.core.coalescer.size, 0);
    } finally {
      await s.close();
    }
  });

  it('a miss whose upload completed but whose scan never settles it is forgotten after the hold time', async () => {
    const c = new LookupCoalescer({ holdMs: 100, progressMs: 50, perAgent: 4, capacity: 10 });
    const owner = {};
    assert.equal(c.miss('k', 'a'.repeat(64), owner, 10), undefined);
    c.started(owner, 1, 10);
    c.completed(owner, 1, 'a'.repeat(64)); // e.g. the generation changed: the scan settles another key
    assert.equal(c.size, 1);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(c.size, 0, "not kept (it would use up the owner's share of misses)");
  });

  it('once the bytes are in, a hold waits for the scan past the hold time, bounded by joinMs, as a join does', async () => {
    const c = new LookupCoalescer({ holdMs: 50, joinMs: 400, progressMs: 40, perAgent: 4, capacity: 10 });
    const owner = {};
    const waiter = {};
    const h = 'a'.repeat(64);
    assert.equal(c.miss('k', h, owner, 10), undefined);
    const held = c.miss('k', h, waiter, 10)!;
    c.started(owner, 1, 10);
    c.completed(owner, 1, h);
    const slow = (ms: number) =>
      new Promise<{ verdict: 'clean'; sha256: string }>((r) => setTimeout(() => r({ verdict: 'clean', sha256: h }), ms));
    c.settle('k', slow(200)); // the engine takes 200 ms: 4x the hold time
    assert.equal((await held)?.verdict, 'clean', 'answered by the scan, not released at 50 ms to upload again');
    const joined = c.join(waiter, slow(200))!;
    assert.equal((await joined)?.verdict, 'clean', 'a join of a running scan waits for it too');
    const t0 = performance.now();
    const late = c.join(waiter, slow(2000))!;
    assert.equal(await late, undefined, 'released at joinMs');
    assert.ok(performance.now() - t0 < 1500);
    assert.equal(c.released['hold-time'], 1);
  });
});
