/**
 * The SVM server with raw ws agents: authentication, isolation of connections that send bad
 * frames, scanning (EICAR alone, embedded in 3 MiB sent as 1 MiB chunks, clean) and the shared
 * cache across agents.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type WebSocket from 'ws';
import { CloseCode, encodeChunk, encodeMessage } from '../../src/protocol/index.js';
import type { SvmServer } from '../../src/svm/server.js';
import { EICAR_BYTES as EICAR, noise } from '../helpers/fixtures.js';
import { TOKEN, metric, rawAgent, startTestSvm, upload } from './helpers.js';

describe('SVM server: hello and authentication', () => {
  let s: SvmServer;
  before(async () => {
    s = await startTestSvm();
  });
  after(() => s.close());

  for (const [what, token] of [
    ['a wrong token', 'wrong-token'],
    ['an empty token', ''],
    ['no token field', null],
  ] as const) {
    it(`refuses ${what} with LA_ERR_AUTH and 4001, and never answers a request`, async () => {
      const failures = await metric(s, 'lightagent_svm_auth_failures_total');
      const a = await rawAgent(s.url, token);
      a.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: 'a'.repeat(64), size: 1 }));
      a.ws.send(encodeMessage({ t: 'scan', id: 2, size: EICAR.length }));
      a.ws.send(encodeChunk(2, 0, true, EICAR));
      assert.equal(await a.closed, CloseCode.AUTH);
      assert.deepEqual(
        a.msgs.map((m) => m.t === 'error' && m.code),
        ['LA_ERR_AUTH'],
      );
      assert.equal(await metric(s, 'lightagent_svm_auth_failures_total'), failures + 1);
    });
  }

  it('refuses another protocol version with 4002', async () => {
    const a = await rawAgent(s.url, TOKEN, false);
    a.ws.send(JSON.stringify({ t: 'hello', v: 2, agentId: 'x', token: TOKEN, host: 'h', os: 'linux', agentVersion: '9' }));
    assert.equal(await a.closed, CloseCode.VERSION);
    assert.ok(a.msgs.some((m) => m.t === 'error' && m.code === 'LA_ERR_PROTO_VERSION'));
  });

  it('closes with 4000 when the first frame is not a hello', async () => {
    const a = await rawAgent(s.url, TOKEN, false);
    a.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: 'a'.repeat(64), size: 1 }));
    assert.equal(await a.closed, CloseCode.PROTOCOL);
    assert.ok(!a.msgs.some((m) => m.t === 'verdict'));
  });

  it('closes a connection that never says hello with 4004', async () => {
    const quick = await startTestSvm({ helloTimeoutMs: 200 });
    const a = await rawAgent(quick.url, TOKEN, false);
    const t0 = Date.now();
    assert.equal(await a.closed, CloseCode.HELLO_TIMEOUT);
    assert.ok(Date.now() - t0 < 2000);
    await quick.close();
  });

  it('welcomes a good agent with the SVM id, generation, load and limits', async () => {
    const a = await rawAgent(s.url);
    const w = await a.next((m) => m.t === 'welcome');
    assert.ok(w.t === 'welcome');
    assert.equal(w.v, 1);
    assert.match(w.generation, /^builtin-[0-9a-f]{16}$/);
    assert.equal(w.load, 0);
    assert.deepEqual(w.limits, { maxFileSize: 64 << 20, maxChunk: 1 << 20, maxInFlight: 32 });
    assert.equal(await metric(s, 'lightagent_svm_agents_connected'), 1);
    a.ws.close();
    await a.closed;
  });
});

describe('SVM server: scanning and the shared cache', () => {
  let s: SvmServer;
  before(async () => {
    s = await startTestSvm();
  });
  after(() => s.close());

  it('finds EICAR alone and inside a 3 MiB file sent as 1 MiB chunks; clean and empty stay clean', async () => {
    const a = await rawAgent(s.url);
    await a.next((m) => m.t === 'welcome');
    const v1 = await upload(a, 1, EICAR);
    assert.equal(v1.verdict, 'infected');
    assert.equal(v1.threat, 'Eicar-Test-Signature');
    assert.equal(v1.engine, 'builtin');
    assert.equal(v1.generation, (await a.next((m) => m.t === 'welcome')).t === 'welcome' ? s.core.generation() : '');
    const big = Buffer.concat([noise(2 << 20, 7), EICAR, noise((1 << 20) - EICAR.length, 8)]);
    assert.equal(big.length, 3 << 20);
    const before = await metric(s, 'lightagent_svm_bytes_received_total');
    const v2 = await upload(a, 2, big);
    assert.equal(v2.verdict, 'infected');
    assert.equal(v2.threat, 'Eicar-Test-Signature');
    assert.equal(v2.sha256, crypto.createHash('sha256').update(big).digest('hex'), 'the SVM hashed what it received');
    assert.equal(await metric(s, 'lightagent_svm_bytes_received_total'), before + big.length);
    const v3 = await upload(a, 3, Buffer.from('clean\n'));
    assert.equal(v3.verdict, 'clean');
    assert.equal(v3.threat, undefined);
    const v4 = await upload(a, 4, Buffer.alloc(0));
    assert.equal(v4.verdict, 'clean');
    assert.equal(v4.sha256, crypto.createHash('sha256').digest('hex'));
    a.ws.close();
  });

  it('answers a second agent from the shared cache: its lookup hits and no bytes are received', async () => {
    const content = noise(300_000, 11);
    const sha = crypto.createHash('sha256').update(content).digest('hex');
    const a = await rawAgent(s.url);
    assert.equal((await upload(a, 9, content)).verdict, 'clean');
    a.ws.close();
    const bytes = await metric(s, 'lightagent_svm_bytes_received_total');
    const scans = await metric(s, 'lightagent_svm_scans_total');
    const hits = await metric(s, 'lightagent_svm_cache_hits_total');
    const lookups = await metric(s, 'lightagent_svm_lookups_total');
    const b = await rawAgent(s.url);
    b.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: sha, size: content.length }));
    const v = await b.verdict(1);
    assert.equal(v.verdict, 'clean');
    assert.equal(v.cached, true);
    assert.equal(v.sha256, sha);
    b.ws.send(encodeMessage({ t: 'lookup', id: 2, sha256: 'f'.repeat(64), size: 1 }));
    const u = await b.verdict(2);
    assert.equal(u.verdict, 'unknown');
    assert.equal(u.cached, undefined);
    assert.equal(await metric(s, 'lightagent_svm_bytes_received_total'), bytes, 'nothing uploaded');
    assert.equal(await metric(s, 'lightagent_svm_scans_total'), scans);
    assert.equal(await metric(s, 'lightagent_svm_cache_hits_total'), hits + 1);
    assert.equal(await metric(s, 'lightagent_svm_lookups_total'), lookups + 2);
    b.ws.close();
  });

  it('an upload of content another agent already sent is answered from the cache, without an engine run', async () => {
    const content = Buffer.concat([Buffer.from('shared '), EICAR]);
    const a = await rawAgent(s.url);
    assert.equal((await upload(a, 1, content)).cached, undefined);
    const scans = await metric(s, 'lightagent_svm_scans_total');
    const b = await rawAgent(s.url);
    const v = await upload(b, 1, content);
    assert.equal(v.verdict, 'infected');
    assert.equal(v.cached, true);
    assert.equal(await metric(s, 'lightagent_svm_scans_total'), scans);
    a.ws.close();
    b.ws.close();
  });

  it('keeps tenants apart: a lookup from another tenant does not see the verdict', async () => {
    const t = await startTestSvm({
      tokens: [
        { tenant: 'a', token: TOKEN },
        { tenant: 'b', token: 'tenant-b-token' },
      ],
    });
    const content = noise(1000, 12);
    const a = await rawAgent(t.url);
    await upload(a, 1, content);
    const b = await rawAgent(t.url, 'tenant-b-token');
    b.ws.send(
      encodeMessage({ t: 'lookup', id: 1, sha256: crypto.createHash('sha256').update(content).digest('hex'), size: content.length }),
    );
    assert.equal((await b.verdict(1)).verdict, 'unknown');
    await t.close();
  });
});

describe('SVM server: a bad connection is closed alone', () => {
  let s: SvmServer;
  before(async () => {
    s = await startTestSvm({ maxInFlight: 4 });
  });
  after(() => s.close());

  const cases: ReadonlyArray<readonly [string, (ws: WebSocket) => void, number]> = [
    ['invalid JSON', (ws) => ws.send('{not json'), CloseCode.PROTOCOL],
    ['an unknown message type', (ws) => ws.send('{"t":"format-disk"}'), CloseCode.PROTOCOL],
    ['a message of the wrong direction', (ws) => ws.send(encodeMessage({ t: 'verdict', id: 1, verdict: 'clean' })), CloseCode.PROTOCOL],
    [
      'a second hello',
      (ws) => ws.send(encodeMessage({ t: 'hello', v: 1, agentId: 'x', token: TOKEN, host: 'h', os: 'linux', agentVersion: '0' })),
      CloseCode.PROTOCOL,
    ],
    ['an oversized text frame', (ws) => ws.send(JSON.stringify({ t: 'cancel', id: 1, pad: 'x'.repeat(70_000) })), CloseCode.OVERSIZED],
    ['a bad chunk header', (ws) => ws.send(Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13])), CloseCode.PROTOCOL],
    ['a truncated chunk header', (ws) => ws.send(Buffer.from([0x4c, 1, 0])), CloseCode.PROTOCOL],
    ['a chunk for an unknown id', (ws) => ws.send(encodeChunk(77, 0, true, Buffer.from('x'))), CloseCode.PROTOCOL],
    [
      'chunks out of order',
      (ws) => {
        ws.send(encodeMessage({ t: 'scan', id: 5, size: 10 }));
        ws.send(encodeChunk(5, 0, false, Buffer.alloc(4)));
        ws.send(encodeChunk(5, 2, true, Buffer.alloc(6)));
      },
      CloseCode.PROTOCOL,
    ],
    [
      'more bytes than announced',
      (ws) => {
        ws.send(encodeMessage({ t: 'scan', id: 6, size: 3 }));
        ws.send(encodeChunk(6, 0, true, Buffer.alloc(4)));
      },
      CloseCode.PROTOCOL,
    ],
    [
      'a last flag before the announced size',
      (ws) => {
        ws.send(encodeMessage({ t: 'scan', id: 6, size: 30 }));
        ws.send(encodeChunk(6, 0, true, Buffer.alloc(10)));
      },
      CloseCode.PROTOCOL,
    ],
    [
      'all bytes without a last flag',
      (ws) => {
        ws.send(encodeMessage({ t: 'scan', id: 6, size: 3 }));
        ws.send(encodeChunk(6, 0, false, Buffer.alloc(3)));
      },
      CloseCode.PROTOCOL,
    ],
    [
      'a request id already in use',
      (ws) => {
        ws.send(encodeMessage({ t: 'scan', id: 8, size: 3 }));
        ws.send(encodeMessage({ t: 'scan', id: 8, size: 3 }));
      },
      CloseCode.PROTOCOL,
    ],
    [
      'more than max_in_flight requests',
      (ws) => {
        for (let id = 1; id <= 5; id++) ws.send(encodeMessage({ t: 'scan', id, size: 100 }));
      },
      CloseCode.PROTOCOL,
    ],
    ['a frame over the ws payload limit', (ws) => ws.send(Buffer.alloc((1 << 20) + 1000)), 1009],
  ];
  for (const [what, send, code] of cases) {
    it(`closes only the connection that sent ${what}; another agent keeps scanning`, async () => {
      const good = await rawAgent(s.url);
      await good.next((m) => m.t === 'welcome');
      const bad = await rawAgent(s.url);
      await bad.next((m) => m.t === 'welcome');
      const errors = await metric(s, 'lightagent_svm_protocol_errors_total');
      send(bad.ws);
      assert.equal(await bad.closed, code);
      if (code !== 1009) {
        assert.ok(
          bad.msgs.some((m) => m.t === 'error' && m.code.startsWith('LA_ERR_PROTO')),
          'an error frame came first',
        );
        assert.equal(await metric(s, 'lightagent_svm_protocol_errors_total'), errors + 1);
      }
      assert.ok(!bad.msgs.some((m) => m.t === 'verdict'));
      const v = await upload(good, 1, Buffer.concat([Buffer.from(`ok ${what} `), EICAR]));
      assert.equal(v.verdict, 'infected');
      good.ws.close();
      await good.closed;
      assert.equal(await metric(s, 'lightagent_svm_upload_bytes_held'), 0, 'memory of the closed connection released');
    });
  }
});
