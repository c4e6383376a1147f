/**
 * The SVM server with real agents: raw ws clients for hostile and precise cases, SvmLink for the
 * normal path. Every server listens on port 0.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { CloseCode, decodeSvmMessage, encodeChunk, encodeMessage, type SvmMessage } from '../../src/protocol/index.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import { SvmServer, type SvmOptions } from '../../src/svm/server.js';
import { EICAR } from './engines/conformance.js';

const TOKEN = 'tenant-a-token';

async function start(extra: Partial<SvmOptions> = {}) {
  return SvmServer.start({ host: '127.0.0.1', port: 0, tokens: [{ tenant: 'a', token: TOKEN }], engine: new BuiltinEngine(), cache: new MemoryVerdictCache(1000), ...extra });
}

/** A raw agent: collects every message, resolves `closed` with the close code. */
async function rawAgent(url: string, token = TOKEN, hello = true) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const msgs: SvmMessage[] = [];
  const waiters: Array<() => void> = [];
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
  ws.on('message', (d, bin) => {
    if (!bin) msgs.push(decodeSvmMessage(d as Buffer));
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((r, j) => {
    ws.once('open', () => r());
    ws.once('error', j);
  });
  const next = async (pred: (m: SvmMessage) => boolean, ms = 5000): Promise<SvmMessage> => {
    const end = Date.now() + ms;
    for (;;) {
      const m = msgs.find(pred);
      if (m) return m;
      if (Date.now() > end) throw new Error(`no matching message; got ${JSON.stringify(msgs)}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 50);
      });
    }
  };
  if (hello) {
    ws.send(encodeMessage({ t: 'hello', v: 1, agentId: 'raw-agent', token, host: 'test', os: 'linux', agentVersion: '0' }));
  }
  return { ws, msgs, closed, next };
}

async function upload(a: Awaited<ReturnType<typeof rawAgent>>, id: number, content: Buffer, chunk = 1 << 20) {
  a.ws.send(encodeMessage({ t: 'scan', id, size: content.length }));
  let idx = 0;
  for (let off = 0; off < content.length || idx === 0; off += chunk) {
    const part = content.subarray(off, off + chunk);
    a.ws.send(encodeChunk(id, idx++, off + chunk >= content.length, part));
    if (content.length === 0) break;
  }
  return a.next((m) => m.t === 'verdict' && m.id === id);
}

async function metric(s: SvmServer, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${s.address.port}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `metric ${name} present`);
  return Number(m[1]);
}

describe('SVM server', () => {
  let s: SvmServer;
  before(async () => {
    s = await start();
  });
  after(async () => {
    await s.close();
  });

  it('refuses a wrong or missing token with 4001 and never answers a request', async () => {
    for (const token of ['wrong-token', '']) {
      const a = await rawAgent(s.url, token);
      a.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: 'a'.repeat(64), size: 1 }));
      assert.equal(await a.closed, CloseCode.AUTH);
      assert.ok(a.msgs.some((m) => m.t === 'error' && m.code === 'LA_ERR_AUTH'));
      assert.ok(!a.msgs.some((m) => m.t === 'verdict'));
    }
  });

  it('closes a connection that never says hello', async () => {
    const quick = await start({ helloTimeoutMs: 200 });
    const a = await rawAgent(quick.url, TOKEN, false);
    assert.equal(await a.closed, CloseCode.HELLO_TIMEOUT);
    await quick.close();
  });

  it('finds EICAR alone and inside a 3 MiB file sent in 1 MiB chunks; clean stays clean', async () => {
    const a = await rawAgent(s.url);
    await a.next((m) => m.t === 'welcome');
    const v1 = await upload(a, 1, EICAR);
    assert.equal(v1.t === 'verdict' && v1.verdict, 'infected');
    assert.equal(v1.t === 'verdict' && v1.threat, 'Eicar-Test-Signature');
    const big = Buffer.concat([crypto.randomBytes(2 << 20), EICAR, crypto.randomBytes(1 << 20)]);
    const v2 = await upload(a, 2, big);
    assert.equal(v2.t === 'verdict' && v2.verdict, 'infected');
    assert.equal(v2.t === 'verdict' && v2.sha256, crypto.createHash('sha256').update(big).digest('hex'), 'the SVM hashed what it received');
    const v3 = await upload(a, 3, Buffer.from('clean\n'));
    assert.equal(v3.t === 'verdict' && v3.verdict, 'clean');
    const v4 = await upload(a, 4, Buffer.alloc(0));
    assert.equal(v4.t === 'verdict' && v4.verdict, 'clean');
    a.ws.close();
  });

  it('answers a second agent from the shared cache: a lookup hits and no bytes are received', async () => {
    const content = crypto.randomBytes(300_000);
    const sha = crypto.createHash('sha256').update(content).digest('hex');
    const a = await rawAgent(s.url);
    await upload(a, 9, content);
    const before = await metric(s, 'lightagent_svm_bytes_received_total');
    const b = await rawAgent(s.url);
    b.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: sha, size: content.length }));
    const v = await b.next((m) => m.t === 'verdict');
    assert.equal(v.t === 'verdict' && v.verdict, 'clean');
    assert.equal(v.t === 'verdict' && v.cached, true);
    assert.equal(await metric(s, 'lightagent_svm_bytes_received_total'), before);
    b.ws.send(encodeMessage({ t: 'lookup', id: 2, sha256: 'f'.repeat(64), size: 1 }));
    const u = await b.next((m) => m.t === 'verdict' && m.id === 2);
    assert.equal(u.t === 'verdict' && u.verdict, 'unknown');
    a.ws.close();
    b.ws.close();
  });

  for (const [what, send, code] of [
    ['invalid JSON', (ws: WebSocket) => ws.send('{not json'), CloseCode.PROTOCOL],
    ['an unknown message type', (ws: WebSocket) => ws.send('{"t":"format-disk"}'), CloseCode.PROTOCOL],
    ['an oversized text frame', (ws: WebSocket) => ws.send(JSON.stringify({ t: 'cancel', id: 1, pad: 'x'.repeat(70_000) })), CloseCode.OVERSIZED],
    ['a bad chunk header', (ws: WebSocket) => ws.send(Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])), CloseCode.PROTOCOL],
    ['a chunk for an unknown id', (ws: WebSocket) => ws.send(encodeChunk(77, 0, true, Buffer.from('x'))), CloseCode.PROTOCOL],
    ['chunks out of order', (ws: WebSocket) => {
      ws.send(encodeMessage({ t: 'scan', id: 5, size: 10 }));
      ws.send(encodeChunk(5, 1, true, Buffer.alloc(10)));
    }, CloseCode.PROTOCOL],
    ['more bytes than announced', (ws: WebSocket) => {
      ws.send(encodeMessage({ t: 'scan', id: 6, size: 3 }));
      ws.send(encodeChunk(6, 0, true, Buffer.alloc(4)));
    }, CloseCode.PROTOCOL],
    ['a frame over the ws payload limit', (ws: WebSocket) => ws.send(Buffer.alloc((1 << 20) + 1000)), 1009],
  ] as const) {
    it(`closes only the connection that sent ${what}; another agent keeps scanning`, async () => {
      const good = await rawAgent(s.url);
      await good.next((m) => m.t === 'welcome');
      const bad = await rawAgent(s.url);
      await bad.next((m) => m.t === 'welcome');
      send(bad.ws);
      assert.equal(await bad.closed, code);
      const v = await upload(good, 1, Buffer.concat([Buffer.from('ok '), EICAR]));
      assert.equal(v.t === 'verdict' && v.verdict, 'infected');
      good.ws.close();
    });
  }

  it('refuses uploads over max_file_size with an error verdict and keeps the connection', async () => {
    const small = await start({ maxFileSize: 1000 });
    const a = await rawAgent(small.url);
    a.ws.send(encodeMessage({ t: 'scan', id: 1, size: 5000 }));
    const v = await a.next((m) => m.t === 'verdict' && m.id === 1);
    assert.equal(v.t === 'verdict' && v.code, 'LA_ERR_UPLOAD_TOO_LARGE');
    const ok = await upload(a, 2, Buffer.from('fine'));
    assert.equal(ok.t === 'verdict' && ok.verdict, 'clean');
    await small.close();
  });

  it('times out an upload that never finishes, and frees its memory', async () => {
    const quick = await start({ uploadTimeoutMs: 200 });
    const a = await rawAgent(quick.url);
    a.ws.send(encodeMessage({ t: 'scan', id: 1, size: 100_000 }));
    a.ws.send(encodeChunk(1, 0, false, Buffer.alloc(1000)));
    const v = await a.next((m) => m.t === 'verdict' && m.id === 1);
    assert.equal(v.t === 'verdict' && v.code, 'LA_ERR_UPLOAD_TIMEOUT');
    assert.equal(await metric(quick, 'lightagent_svm_upload_bytes_held'), 0);
    a.ws.send(encodeChunk(1, 1, false, Buffer.alloc(1000))); // late chunk: ignored, not fatal
    assert.equal((await upload(a, 2, Buffer.from('x'))).t, 'verdict');
    await quick.close();
  });

  it('answers LA_ERR_BUSY past the upload memory budget instead of buffering without bound', async () => {
    const tight = await start({ uploadMemory: 10_000 });
    const a = await rawAgent(tight.url);
    a.ws.send(encodeMessage({ t: 'scan', id: 1, size: 8000 }));
    a.ws.send(encodeMessage({ t: 'scan', id: 2, size: 8000 }));
    const v = await a.next((m) => m.t === 'verdict' && m.id === 2);
    assert.equal(v.t === 'verdict' && v.code, 'LA_ERR_BUSY');
    await tight.close();
  });

  it('serves /healthz and Prometheus /metrics, and 404 elsewhere', async () => {
    const base = `http://127.0.0.1:${s.address.port}`;
    const h = await fetch(`${base}/healthz`);
    assert.equal(h.status, 200);
    const body = (await h.json()) as { status: string; generation: string };
    assert.equal(body.status, 'ok');
    assert.match(body.generation, /^builtin-/);
    const m = await (await fetch(`${base}/metrics`)).text();
    for (const name of ['lightagent_svm_bytes_received_total', 'lightagent_svm_scans_total', 'lightagent_svm_cache_hits_total', 'lightagent_svm_agents_connected']) assert.match(m, new RegExp(`^# TYPE ${name} `, 'm'));
    assert.match(m, /^lightagent_svm_engine_scan_seconds_bucket\{le="\+Inf"\} \d+$/m);
    assert.equal((await fetch(`${base}/nope`)).status, 404);
  });
});
