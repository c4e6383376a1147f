/**
 * Upload rules on a real SVM: size cap, timeout, the shared memory budget, cancel, single flight
 * for identical content, and engine failures.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, it } from 'node:test';
import { encodeChunk, encodeMessage } from '../../src/protocol/index.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import type { EngineResult, ScanEngine } from '../../src/svm/engines/engine.js';
import { EICAR_BYTES as EICAR, noise } from '../helpers/fixtures.js';
import { metric, rawAgent, sendUpload, startTestSvm, upload } from './helpers.js';

/** The builtin engine, slowed down and counted, or made to fail: a real engine with knobs, not a mock of the server. */
class TestEngine implements ScanEngine {
  readonly name = 'test';
  runs = 0;
  delayMs = 0;
  fail = false;
  isHealthy = true;
  private readonly inner = new BuiltinEngine();
  generation(): string {
    return this.inner.generation();
  }
  async scan(content: Buffer, known?: { sha256?: string }): Promise<EngineResult> {
    this.runs++;
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    if (this.fail) throw new Error('engine exploded');
    return this.inner.scan(content, known);
  }
  healthy(): boolean {
    return this.isHealthy;
  }
  async close(): Promise<void> {}
}

describe('SVM server: uploads', () => {
  it('answers LA_ERR_UPLOAD_TOO_LARGE over max_file_size, swallows the chunks already sent, and keeps the connection', async () => {
    const s = await startTestSvm({ maxFileSize: 1000 });
    const a = await rawAgent(s.url);
    sendUpload(a, 1, Buffer.alloc(5000), 1000); // an agent that streams before reading the verdict
    const v = await a.verdict(1);
    assert.equal(v.verdict, 'error');
    assert.equal(v.code, 'LA_ERR_UPLOAD_TOO_LARGE');
    assert.equal((await upload(a, 2, Buffer.from('fine'))).verdict, 'clean');
    a.ws.send(encodeMessage({ t: 'scan', id: 3, size: 1001 })); // refused; its chunks never come
    assert.equal((await a.verdict(3)).code, 'LA_ERR_UPLOAD_TOO_LARGE');
    assert.equal((await upload(a, 3, Buffer.from('id reused after a refusal'))).verdict, 'clean');
    assert.equal(await metric(s, 'lightagent_svm_bytes_received_total'), 4 + 25, 'refused bytes are not counted as received');
    await s.close();
  });

  it('times out an upload that never finishes, frees its memory, and ignores its late chunks', async () => {
    const s = await startTestSvm({ uploadTimeoutMs: 200 });
    const a = await rawAgent(s.url);
    a.ws.send(encodeMessage({ t: 'scan', id: 1, size: 100_000 }));
    a.ws.send(encodeChunk(1, 0, false, Buffer.alloc(1000)));
    await a.next((m) => m.t === 'welcome');
    assert.equal(await metric(s, 'lightagent_svm_upload_bytes_held'), 1000, 'held: the bytes received, not the 100,000 announced');
    const v = await a.verdict(1);
    assert.equal(v.code, 'LA_ERR_UPLOAD_TIMEOUT');
    assert.equal(await metric(s, 'lightagent_svm_upload_bytes_held'), 0);
    a.ws.send(encodeChunk(1, 1, false, Buffer.alloc(1000))); // late: ignored, not fatal
    assert.equal((await upload(a, 2, Buffer.from('x'))).verdict, 'clean');
    await s.close();
  });

  it('answers LA_ERR_BUSY past the upload memory budget (shared by all agents) instead of buffering without bound', async () => {
    const s = await startTestSvm({ uploadMemory: 10_000, maxFileSize: 10_000 });
    const a = await rawAgent(s.url);
    const b = await rawAgent(s.url);
    // Memory is held for bytes received: a holds 8,000 of the 10,000 bytes.
    a.ws.send(encodeMessage({ t: 'scan', id: 1, size: 9000 }));
    a.ws.send(encodeChunk(1, 0, false, Buffer.alloc(8000)));
    await a.next((m) => m.t === 'welcome');
    await b.next((m) => m.t === 'welcome');
    await new Promise((r) => setTimeout(r, 50));
    b.ws.send(encodeMessage({ t: 'scan', id: 1, size: 8000 }));
    b.ws.send(encodeChunk(1, 0, true, Buffer.alloc(8000)));
    const v = await b.verdict(1);
    assert.equal(v.code, 'LA_ERR_BUSY');
    a.ws.send(encodeChunk(1, 1, true, Buffer.alloc(1000)));
    assert.equal((await a.verdict(1)).verdict, 'clean');
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(await metric(s, 'lightagent_svm_upload_bytes_held'), 0, 'released after the verdict');
    assert.equal((await upload(b, 2, Buffer.alloc(8000, 1))).verdict, 'clean', 'the agent retries and gets in');
    await s.close();
  });

  it('does not read a connection for a while after refusing it as busy (20 ms, doubling); nothing it sent is lost', async () => {
    const s = await startTestSvm({ uploadsPerAgent: 1 });
    const a = await rawAgent(s.url);
    const b = await rawAgent(s.url);
    let stop = false;
    try {
      await a.next((m) => m.t === 'welcome');
      await b.next((m) => m.t === 'welcome');
      // a fills its one upload slot, then reopens an upload at each refusal, as fast as it is answered.
      a.ws.send(encodeMessage({ t: 'scan', id: 1, size: 2000 }));
      a.ws.send(encodeChunk(1, 0, false, Buffer.alloc(1000)));
      let refused = 0;
      let next = 2;
      const reopen = () => {
        const id = next++;
        a.ws.send(encodeMessage({ t: 'scan', id, size: 100 }));
        a.ws.send(encodeChunk(id, 0, true, Buffer.alloc(100)));
      };
      a.ws.on('message', (d, bin) => {
        if (bin || stop) return;
        const m = JSON.parse((d as Buffer).toString()) as { t: string; code?: string };
        if (m.t === 'verdict' && m.code === 'LA_ERR_BUSY') {
          refused++;
          reopen();
        }
      });
      reopen();
      await new Promise((r) => setTimeout(r, 600));
      stop = true;
      // Held 20 ms, then up to 40, 80, 160, 320 ms (jittered): a handful of refusals in 600 ms.
      // Read at once, the same loop is refused thousands of times.
      assert.ok(refused >= 2 && refused <= 12, `${refused} refusals in 600 ms`);
      assert.ok((await metric(s, 'lightagent_svm_busy_holds_total')) >= refused - 1);
      // Another agent is read meanwhile; a's lookup and the rest of its upload wait, and are answered.
      assert.equal((await upload(b, 1, Buffer.from('b is read'))).verdict, 'clean');
      a.ws.send(encodeMessage({ t: 'lookup', id: 9999, sha256: '0'.repeat(64), size: 1 }));
      a.ws.send(encodeChunk(1, 1, true, Buffer.alloc(1000)));
      assert.equal((await a.verdict(9999, 5000)).verdict, 'unknown');
      assert.equal((await a.verdict(1, 5000)).verdict, 'clean');
    } finally {
      stop = true;
      a.ws.terminate();
      b.ws.terminate();
      await s.close();
    }
  });

  it('drops an upload on cancel: memory released, late chunks ignored, no verdict for it', async () => {
    const s = await startTestSvm();
    const a = await rawAgent(s.url);
    a.ws.send(encodeMessage({ t: 'scan', id: 1, size: 50_000 }));
    a.ws.send(encodeChunk(1, 0, false, Buffer.alloc(10_000)));
    a.ws.send(encodeMessage({ t: 'cancel', id: 1 }));
    a.ws.send(encodeChunk(1, 1, false, Buffer.alloc(10_000)));
    assert.equal((await upload(a, 2, EICAR)).verdict, 'infected');
    assert.equal(await metric(s, 'lightagent_svm_upload_bytes_held'), 0);
    assert.ok(!a.msgs.some((m) => m.t === 'verdict' && m.id === 1));
    assert.equal((await upload(a, 1, Buffer.from('id 1 again'))).verdict, 'clean');
    await s.close();
  });

  it('runs the engine once when several agents upload the same content at the same time (single flight)', async () => {
    const engine = new TestEngine();
    engine.delayMs = 150;
    const s = await startTestSvm({ engine });
    const content = Buffer.concat([noise(500_000, 21), EICAR]);
    const agents = await Promise.all([1, 2, 3, 4].map(() => rawAgent(s.url)));
    const vs = await Promise.all(agents.map((a) => upload(a, 5, content, 64 * 1024)));
    assert.equal(engine.runs, 1);
    assert.ok(vs.every((v) => v.verdict === 'infected' && v.threat === 'Eicar-Test-Signature'));
    assert.equal(vs.filter((v) => v.cached).length, 3);
    assert.equal(await metric(s, 'lightagent_svm_scans_total'), 1);
    assert.equal(
      await metric(s, 'lightagent_svm_bytes_received_total'),
      4 * content.length,
      'each agent uploaded (none knew); the engine ran once',
    );
    await s.close();
  });

  it('answers LA_ERR_ENGINE when the engine fails, caches nothing, and reports 503 on /healthz when unhealthy', async () => {
    const engine = new TestEngine();
    const s = await startTestSvm({ engine });
    const a = await rawAgent(s.url);
    engine.fail = true;
    const v = await upload(a, 1, Buffer.from('anything'));
    assert.equal(v.verdict, 'error');
    assert.equal(v.code, 'LA_ERR_ENGINE');
    engine.fail = false;
    const again = await upload(a, 2, Buffer.from('anything'));
    assert.equal(again.verdict, 'clean');
    assert.equal(again.cached, undefined, 'the failure was not cached');
    const base = `http://127.0.0.1:${s.address.port}`;
    engine.isHealthy = false;
    const h = await fetch(`${base}/healthz`);
    assert.equal(h.status, 503);
    assert.equal(((await h.json()) as { status: string }).status, 'unhealthy');
    engine.isHealthy = true;
    assert.equal((await fetch(`${base}/healthz`)).status, 200);
    await s.close();
  });

  it('scans many uploads from many agents at once, every verdict right', async () => {
    const s = await startTestSvm();
    const agents = await Promise.all(Array.from({ length: 8 }, () => rawAgent(s.url)));
    const jobs = agents.flatMap((a, ai) =>
      Array.from({ length: 10 }, (_, i) => {
        const bad = (ai + i) % 3 === 0;
        const content = Buffer.concat([noise(20_000 + i * 1000, ai * 100 + i), bad ? EICAR : Buffer.alloc(0)]);
        return upload(a, i + 1, content, 8192).then((v) => assert.equal(v.verdict, bad ? 'infected' : 'clean'));
      }),
    );
    await Promise.all(jobs);
    assert.equal(await metric(s, 'lightagent_svm_upload_bytes_held'), 0);
    await s.close();
  });

  it('hashes the bytes it received, whatever the agent says elsewhere', async () => {
    const s = await startTestSvm();
    const a = await rawAgent(s.url);
    const content = Buffer.from('the real bytes');
    a.ws.send(JSON.stringify({ t: 'scan', id: 1, size: content.length, sha256: 'f'.repeat(64), name: '/etc/passwd' }));
    a.ws.send(encodeChunk(1, 0, true, content));
    assert.equal((await a.verdict(1)).sha256, crypto.createHash('sha256').update(content).digest('hex'));
    await s.close();
  });
});
