/**
 * Raw, malformed bytes on a real SvmServer socket. Each case runs beside a well-behaved agent
 * that connected first: the promise is that no byte sequence crashes the SVM, each bad connection
 * is closed (or shed) alone, memory held for it is released, and the good agent keeps getting
 * verdicts. The SVM runs in this process, so an uncaught exception in it fails the test run.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { encodeChunk, encodeMessage } from '../../src/protocol/index.js';
import type { SvmServer } from '../../src/svm/server.js';
import { EICAR } from '../helpers/fixtures.js';
import { eventually, run, spawnNode, waitFor } from '../helpers/procs.js';
import { metric, rawAgent, startTestSvm, TOKEN, upload, type RawAgent } from '../svm/helpers.js';
import { OP, rawConnect, wsFrame, type RawSocket } from './raw-ws.js';

const HELLO = JSON.stringify({ t: 'hello', v: 1, agentId: 'raw', token: TOKEN, host: 'h', os: 'linux', agentVersion: '0' });
let seq = 0;

async function until(fn: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The good agent still gets a correct verdict for new content (an engine run, not a cache hit). */
async function stillServes(good: RawAgent, what: string): Promise<number> {
  const t0 = performance.now();
  const v = await upload(good, 1, Buffer.concat([Buffer.from(`${what} ${++seq} ${Math.random()}\n`), Buffer.from(EICAR)]), 1 << 16);
  assert.equal(v.verdict, 'infected', `good agent after ${what}`);
  return performance.now() - t0;
}

async function helloRaw(port: number): Promise<RawSocket> {
  const r = await rawConnect(port);
  r.sock.write(wsFrame(OP.TEXT, Buffer.from(HELLO)));
  await eventually(() => r.received().includes('"welcome"'), 5000, 'welcome');
  return r;
}

describe('SVM socket: malformed bytes never crash the SVM; other agents are unaffected', () => {
  let s: SvmServer;
  let good: RawAgent;
  before(async () => {
    s = await startTestSvm({ uploadTimeoutMs: 600, uploadMemory: 8 << 20, maxFileSize: 4 << 20, helloTimeoutMs: 3000 });
    good = await rawAgent(s.url);
    await good.next((m) => m.t === 'welcome');
  });
  after(async () => {
    good.ws.close();
    await s.close();
  });

  const closingCases: Array<[string, (port: number) => Promise<RawSocket>, number[]]> = [
    [
      'invalid UTF-8 in a text frame before hello',
      async (port) => {
        const r = await rawConnect(port);
        r.sock.write(wsFrame(OP.TEXT, Buffer.from([0x7b, 0xff, 0xfe, 0x80, 0xc0, 0xaf, 0x7d])));
        return r;
      },
      [1007],
    ],
    [
      'invalid UTF-8 in a text frame after hello',
      async (port) => {
        const r = await helloRaw(port);
        r.sock.write(
          wsFrame(OP.TEXT, Buffer.concat([Buffer.from('{"t":"cancel","id":1,"x":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')])),
        );
        return r;
      },
      [1007],
    ],
    [
      'a 2^63-1 byte length prefix',
      async (port) => {
        const r = await helloRaw(port);
        r.sock.write(wsFrame(OP.BINARY, Buffer.alloc(8), { claimLen: 0x7fff_ffff_ffff_ffffn }));
        return r;
      },
      [1009],
    ],
    [
      'a 2^64-1 byte length prefix (top bit set)',
      async (port) => {
        const r = await rawConnect(port);
        r.sock.write(wsFrame(OP.BINARY, Buffer.alloc(8), { claimLen: 0xffff_ffff_ffff_ffffn }));
        return r;
      },
      [1009, 1002],
    ],
    [
      'a length prefix just over the frame limit (1 MiB + 13)',
      async (port) => {
        const r = await helloRaw(port);
        r.sock.write(wsFrame(OP.BINARY, Buffer.alloc(16), { claimLen: BigInt((1 << 20) + 13) }));
        return r;
      },
      [1009],
    ],
    [
      'an unmasked client frame',
      async (port) => {
        const r = await helloRaw(port);
        r.sock.write(wsFrame(OP.TEXT, Buffer.from('{"t":"cancel","id":1}'), { mask: false }));
        return r;
      },
      [1002],
    ],
    [
      'a text message fragmented past the limit (64 KiB fragments, no FIN)',
      async (port) => {
        const r = await helloRaw(port);
        r.sock.write(wsFrame(OP.TEXT, Buffer.alloc(65536, 0x20), { fin: false }));
        for (let i = 0; i < 20 && !r.sock.destroyed; i++) r.sock.write(wsFrame(OP.CONT, Buffer.alloc(65536, 0x20), { fin: false }));
        return r;
      },
      [1009],
    ],
    [
      'reserved opcode 0x3',
      async (port) => {
        const r = await rawConnect(port);
        r.sock.write(wsFrame(3, Buffer.from('x')));
        return r;
      },
      [1002],
    ],
    [
      'chunk index 0xFFFFFFFF as the first chunk',
      async (port) => {
        const r = await helloRaw(port);
        r.sock.write(wsFrame(OP.TEXT, Buffer.from(encodeMessage({ t: 'scan', id: 3, size: 10 }))));
        r.sock.write(wsFrame(OP.BINARY, encodeChunk(3, 0xffffffff, false, Buffer.alloc(4))));
        return r;
      },
      [4000],
    ],
    [
      'chunk index 0 sent twice',
      async (port) => {
        const r = await helloRaw(port);
        r.sock.write(wsFrame(OP.TEXT, Buffer.from(encodeMessage({ t: 'scan', id: 3, size: 10 }))));
        r.sock.write(wsFrame(OP.BINARY, encodeChunk(3, 0, false, Buffer.alloc(4))));
        r.sock.write(wsFrame(OP.BINARY, encodeChunk(3, 0, true, Buffer.alloc(6))));
        return r;
      },
      [4000],
    ],
  ];

  for (const [what, send, codes] of closingCases) {
    it(`${what}: that connection alone is closed (${codes.join(' or ')}), nothing is held for it, the good agent still gets verdicts`, async () => {
      const rss0 = process.memoryUsage().rss;
      const r = await send(s.address.port);
      await Promise.race([r.ended, new Promise((res) => setTimeout(res, 5000))]);
      assert.ok(r.sock.destroyed || r.closeCodes().length > 0, 'the server closed the connection');
      const got = r.closeCodes();
      if (got.length) assert.ok(codes.includes(got[0]!), `close code ${got[0]} (expected ${codes.join(' or ')})`);
      r.sock.destroy();
      await stillServes(good, what);
      await until(async () => (await metric(s, 'lightagent_svm_upload_bytes_held')) === 0, 3000, 'upload memory released');
      assert.ok(process.memoryUsage().rss - rss0 < 64 << 20, 'no allocation sized by the lying header');
    });
  }

  it('a scan announcing 2^53-1 bytes is refused with an error verdict before any memory is reserved; its chunks are ignored', async () => {
    const a = await rawAgent(s.url);
    await a.next((m) => m.t === 'welcome');
    a.ws.send(JSON.stringify({ t: 'scan', id: 3, size: Number.MAX_SAFE_INTEGER }));
    a.ws.send(encodeChunk(3, 0, false, Buffer.alloc(1000)));
    const v = await a.verdict(3);
    assert.equal(v.verdict, 'error');
    assert.match(v.code ?? '', /TOO_LARGE|SIZE|LIMIT/i);
    assert.equal(await metric(s, 'lightagent_svm_upload_bytes_held'), 0);
    await stillServes(good, 'a 2^53 announcement');
    a.ws.close();
    await a.closed;
  });

  it('a frame cut in half (header says 1,000 bytes, 10 arrive, then silence): the good agent is not blocked; hanging up releases the session', async () => {
    await until(async () => (await metric(s, 'lightagent_svm_agents_connected')) === 1, 5000, 'only the good agent connected');
    const agents = 1;
    const r = await helloRaw(s.address.port);
    assert.equal(await metric(s, 'lightagent_svm_agents_connected'), agents + 1);
    r.sock.write(wsFrame(OP.BINARY, Buffer.alloc(1000)).subarray(0, 16));
    await stillServes(good, 'a half frame');
    r.sock.destroy();
    await until(async () => (await metric(s, 'lightagent_svm_agents_connected')) === agents, 5000, 'session released');
  });

  it('uploads that never finish are capped by the memory budget, answered LA_ERR_UPLOAD_TIMEOUT or refused busy, and their memory is released', async () => {
    const stallers: RawAgent[] = [];
    for (let i = 0; i < 6; i++) {
      const a = await rawAgent(s.url);
      await a.next((m) => m.t === 'welcome');
      // Announce 4 MiB, send 64 KiB, stop: six of them would need 24 MiB; the budget is 8 MiB.
      for (let id = 1; id <= 2; id++) {
        a.ws.send(encodeMessage({ t: 'scan', id, size: 4 << 20 }));
        a.ws.send(encodeChunk(id, 0, false, crypto.randomBytes(65536)));
      }
      stallers.push(a);
    }
    let peak = 0;
    const sampler = setInterval(() => void metric(s, 'lightagent_svm_upload_bytes_held').then((v) => (peak = Math.max(peak, v))), 50);
    try {
      const codes: string[] = [];
      for (const a of stallers) {
        for (const id of [1, 2]) {
          const v = await a.verdict(id, 5000);
          assert.equal(v.verdict, 'error');
          codes.push(v.code!);
        }
      }
      assert.ok(codes.includes('LA_ERR_UPLOAD_TIMEOUT'), `timeouts answered: ${codes.join(',')}`);
      assert.ok(
        codes.every((c) => c === 'LA_ERR_UPLOAD_TIMEOUT' || /BUSY|MEMORY|CAPACITY/i.test(c)),
        codes.join(','),
      );
    } finally {
      clearInterval(sampler);
    }
    assert.ok(peak <= 8 << 20, `upload memory ${peak} stayed within the 8 MiB budget`);
    assert.equal(await metric(s, 'lightagent_svm_upload_bytes_held'), 0);
    await stillServes(good, 'stalled uploads');
    for (const a of stallers) a.ws.close();
  });
});

describe('SVM socket: thousands of idle connections without hello', () => {
  it('10,000 idle upgraded connections (no hello; fewer only if the fd limit is lower, and said): the SVM keeps answering a good agent quickly and sheds them all at the hello timeout', async (t) => {
    // Both ends of each loopback connection are fds: the server's here, the clients' in a child.
    // 10,000, or what the fd limit allows (each side needs one fd per connection, plus slack).
    const limit = Number(run('bash', ['-c', 'ulimit -n']).stdout.trim());
    const want = Number.isFinite(limit) ? Math.min(10_000, limit - 512) : 10_000;
    if (want < 10_000) t.diagnostic(`fd limit ${limit}: testing ${want} idle connections, not 10,000`);
    assert.ok(want >= 1000, `fd limit ${limit} is too low for this test (raise ulimit -n)`);
    const s = await startTestSvm({ helloTimeoutMs: 10_000 });
    const good = await rawAgent(s.url);
    await good.next((m) => m.t === 'welcome');
    const rss0 = process.memoryUsage().rss;
    const child = spawnNode(new URL('./fixtures/idle-clients.js', import.meta.url).pathname, [String(s.address.port), String(want)], {
      watchdogMs: 90_000,
    });
    try {
      const m = await waitFor(child, /\{"open":(\d+),"failed":(\d+),"firstError":"([^"]*)","ms":(\d+)\}/, 60_000);
      const open = Number(m[1]);
      t.diagnostic(`idle connections open: ${open} of ${want} in ${m[4]} ms; failed ${m[2]} ${m[3]}`);
      assert.ok(open >= 0.95 * want, `at least 95% of ${want} connections opened (${open}; first error: ${m[3]})`);
      const ms = await stillServes(good, '10k idle connections');
      const rssMb = (process.memoryUsage().rss - rss0) / 2 ** 20;
      t.diagnostic(`good agent verdict with ${open} idle connections: ${ms.toFixed(0)} ms; SVM process RSS +${rssMb.toFixed(0)} MiB`);
      assert.ok(ms < 3000, `verdict in ${ms.toFixed(0)} ms`);
      // Shed at the hello timeout even though these peers never answer the close frame (ws alone would wait 30 s more).
      await waitFor(child, new RegExp(`"closedByServer":${open}\\b`), 20_000);
      await stillServes(good, 'after shedding');
    } finally {
      await child.stop('SIGKILL');
      good.ws.close();
      await s.close();
    }
  });
});
