/**
 * SvmLink against a scripted WebSocket server on port 0: handshake, multiplexing, the in-flight
 * window, deadlines, loss of connection, reconnect, and refusals that must be final.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { AuthError, DeadlineError, SvmUnavailableError } from '../../src/errors.js';
import { encodeMessage } from '../../src/protocol/index.js';
import { fakeSvm } from '../helpers/fake-svm.js';
import { Priority, SvmLink } from '../../src/svm-link/index.js';

function link(url: string, extra: Partial<ConstructorParameters<typeof SvmLink>[0]> = {}) {
  return new SvmLink({
    url,
    token: 'good',
    agentId: 'agent-test-1',
    host: 'h',
    os: 'linux',
    agentVersion: '0',
    deadlineMs: 1000,
    backoffMinMs: 20,
    backoffMaxMs: 100,
    connectTimeoutMs: 2000,
    ...extra,
  });
}

const SHA = 'a'.repeat(64);
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe('SvmLink', () => {
  it('says hello, then multiplexes lookups by id', async () => {
    const svm = await fakeSvm({
      script: (ws, m) => {
        if (m.t === 'lookup') {
          // answer in reverse order of arrival to prove ids, not order, match answers
          setTimeout(
            () => ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: m.size === 1 ? 'clean' : 'unknown', sha256: m.sha256 })),
            m.size === 1 ? 30 : 1,
          );
        }
      },
    });
    cleanups.push(svm.close);
    const l = link(svm.url);
    await l.connect();
    assert.equal(l.state, 'connected');
    assert.equal(l.generation, 'g1');
    const [a, b] = await Promise.all([l.lookup(SHA, 1), l.lookup(SHA, 2)]);
    assert.equal(a.verdict, 'clean');
    assert.equal(b.verdict, 'unknown');
    l.close();
  });

  it('uploads in ordered chunks, the last flagged, and an empty file as one empty chunk', async () => {
    const seen: Array<{ id: number; index: number; last: boolean; bytes: number }> = [];
    const svm = await fakeSvm({
      script: (ws, m) => {
        if (m.t === 'chunk') {
          seen.push(m);
          if (m.last) ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'clean', sha256: SHA }));
        }
      },
    });
    cleanups.push(svm.close);
    const l = link(svm.url);
    await l.connect();
    const content = Buffer.alloc((1 << 20) * 2 + 5, 7);
    const v = await l.scan(content.length, (off, len) => content.subarray(off, off + len), 5000);
    assert.equal(v.verdict, 'clean');
    assert.deepEqual(
      seen.map((c) => [c.index, c.last, c.bytes]),
      [
        [0, false, 1 << 20],
        [1, false, 1 << 20],
        [2, true, 5],
      ],
    );
    seen.length = 0;
    await l.scan(0, () => Buffer.alloc(0), 5000);
    assert.deepEqual(
      seen.map((c) => [c.index, c.last, c.bytes]),
      [[0, true, 0]],
    );
    l.close();
  });

  it('fails a request at its deadline and cancels the upload on the SVM', async () => {
    const cancels: number[] = [];
    const svm = await fakeSvm({
      script: (_ws, m) => {
        if (m.t === 'cancel') cancels.push(m.id);
      },
    });
    cleanups.push(svm.close);
    const l = link(svm.url);
    await l.connect();
    const t0 = performance.now();
    await assert.rejects(l.lookup(SHA, 1, 150), DeadlineError);
    const took = performance.now() - t0;
    assert.ok(took >= 140 && took < 1000, `deadline honoured (${took.toFixed(0)} ms)`);
    await assert.rejects(
      l.scan(3, () => Buffer.from('abc'), 150),
      DeadlineError,
    );
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(cancels.length, 1);
    assert.equal(l.inFlight, 0);
    l.close();
  });

  it('keeps at most maxInFlight requests on the wire (the smaller of ours and the SVM limit)', async () => {
    let inFlight = 0;
    let peak = 0;
    const svm = await fakeSvm({
      script: (ws, m) => {
        if (m.t === 'lookup') {
          inFlight++;
          peak = Math.max(peak, inFlight);
          setTimeout(() => {
            inFlight--;
            ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'clean' }));
          }, 5);
        }
      },
      limits: { maxInFlight: 3 },
    });
    cleanups.push(svm.close);
    const l = link(svm.url, { maxInFlight: 10 });
    await l.connect();
    const all = await Promise.all(Array.from({ length: 30 }, () => l.lookup(SHA, 1, 5000)));
    assert.equal(all.length, 30);
    assert.ok(all.every((v) => v.verdict === 'clean'));
    assert.equal(peak, 3);
    l.close();
  });

  it('fails pending requests at once when the connection drops, then reconnects by itself', async () => {
    let drop = true;
    const svm = await fakeSvm({
      script: (ws, m) => {
        if (m.t !== 'lookup') return;
        if (drop) ws.terminate();
        else ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'clean' }));
      },
    });
    cleanups.push(svm.close);
    const l = link(svm.url);
    await l.connect();
    const disconnected = new Promise((r) => l.once('disconnected', r));
    const t0 = performance.now();
    await assert.rejects(l.lookup(SHA, 1, 5000), SvmUnavailableError);
    assert.ok(performance.now() - t0 < 1000, 'failed fast, not at the deadline');
    await disconnected;
    drop = false;
    const v = await l.lookup(SHA, 1, 3000); // waits for the reconnect within its deadline
    assert.equal(v.verdict, 'clean');
    l.close();
  });

  it('keeps one connection: connect() during the reconnect back-off does not leave a second socket when the timer fires', async () => {
    const svm = await fakeSvm({
      script: (ws, m) => {
        if (m.t === 'lookup') ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'clean' }));
      },
    });
    cleanups.push(svm.close);
    const l = link(svm.url, { backoffMinMs: 300, backoffMaxMs: 300 });
    await l.connect();
    for (let round = 0; round < 3; round++) {
      const lost = new Promise((r) => l.once('disconnected', r));
      for (const c of svm.wss.clients) c.terminate();
      await lost;
      await l.connect(); // inside the back-off: opens at once
      await new Promise((r) => setTimeout(r, 500)); // the back-off timer fires meanwhile
      assert.equal((await l.lookup(SHA, 1, 2000)).verdict, 'clean');
      assert.equal(svm.wss.clients.size, 1, `round ${round}: one connection to the SVM, not ${svm.wss.clients.size}`);
    }
    l.close();
  });

  it('treats a refused token as final: no reconnect loop, a clear AuthError', async () => {
    let hellos = 0;
    const svm = await fakeSvm({ script: () => {} });
    svm.wss.on('connection', () => hellos++);
    cleanups.push(svm.close);
    const l = link(svm.url, { token: 'bad' });
    await assert.rejects(l.connect(), AuthError);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(hellos, 1);
    assert.equal(l.state, 'refused');
    await assert.rejects(l.lookup(SHA, 1), AuthError);
    l.close();
  });

  it('reports an unreachable SVM within the connect timeout', async () => {
    const svm = await fakeSvm({ script: () => {} });
    const url = svm.url;
    await svm.close();
    const l = link(url, { connectTimeoutMs: 300 });
    const t0 = performance.now();
    await assert.rejects(l.connect(), SvmUnavailableError);
    assert.ok(performance.now() - t0 < 2000);
    l.close();
  });

  it('closes the connection on a malformed frame from the SVM instead of crashing', async () => {
    const svm = await fakeSvm({
      script: (ws, m) => {
        if (m.t === 'lookup') ws.send('{"t":"verdict","id":"not-a-number"}');
      },
    });
    cleanups.push(svm.close);
    const l = link(svm.url);
    await l.connect();
    await assert.rejects(l.lookup(SHA, 1, 2000), SvmUnavailableError);
    l.close();
  });

  it('answers a foreground lookup in about one SVM round trip while 100 background uploads are queued', async () => {
    // A slow SVM (40 ms per answer), 8 in flight: FIFO would put the lookup behind ~92 uploads.
    const arrivals: string[] = [];
    const svm = await fakeSvm({
      limits: { maxInFlight: 8 },
      script: (ws, m) => {
        if (m.t === 'lookup') arrivals.push('fg');
        else if (m.t === 'scan') arrivals.push('bg');
        const id = m.t === 'lookup' ? m.id : m.t === 'chunk' && m.last ? m.id : undefined;
        if (id !== undefined) setTimeout(() => ws.send(encodeMessage({ t: 'verdict', id, verdict: 'clean', sha256: SHA })), 40);
      },
    });
    cleanups.push(svm.close);
    const l = link(svm.url);
    await l.connect();
    const content = Buffer.alloc(4096, 1);
    let bgDone = 0;
    const uploads = Array.from({ length: 100 }, () =>
      l
        .scan(content.length, (off, len) => content.subarray(off, off + len), 60_000, 'bg', 'background')
        .then((v) => {
          bgDone++;
          return v;
        }),
    );
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(l.windowStats.background.admitted, 6, 'background holds 6 of 8 slots (75%)');
    const v = await l.lookup(SHA, 1, 30_000, 'foreground');
    const doneWhenAnswered = bgDone;
    assert.equal(v.verdict, 'clean');
    const st = l.windowStats;
    assert.equal(st.foreground.atOnce, 1, 'the lookup found a free slot without waiting');
    assert.ok(arrivals.indexOf('fg') <= 8, `lookup arrived as request #${arrivals.indexOf('fg') + 1} of ${arrivals.length}`);
    assert.ok(doneWhenAnswered <= 12, `${doneWhenAnswered} background uploads were answered before the lookup`);
    const all = await Promise.all(uploads);
    assert.equal(all.length, 100);
    assert.ok(all.every((x) => x.verdict === 'clean'));
    assert.equal(l.windowStats.background.admitted, 100);
    l.close();
  });

  it('moves a waiting background upload ahead once its priority is raised', async () => {
    const order: number[] = [];
    const svm = await fakeSvm({
      limits: { maxInFlight: 2 },
      script: (ws, m) => {
        if (m.t === 'scan') order.push(m.size);
        if (m.t === 'chunk' && m.last)
          setTimeout(() => ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'clean', sha256: SHA })), 20);
      },
    });
    cleanups.push(svm.close);
    const l = link(svm.url);
    await l.connect();
    const read = (_off: number, len: number) => Buffer.alloc(len);
    const raised = new Priority('background');
    // Window of 2, background share 1 slot: sizes 1..10 queue behind each other.
    const all = Array.from({ length: 10 }, (_, i) => l.scan(i + 1, read, 30_000, undefined, i === 8 ? raised : 'background'));
    await new Promise((r) => setTimeout(r, 5));
    raised.raise();
    await Promise.all(all);
    assert.equal(order[0], 1);
    assert.equal(order[1], 9, `the raised upload (size 9) went next: ${order.join(',')}`);
    l.close();
  });

  it('paces background uploads by the send buffer and still delivers every chunk', async () => {
    const got = new Map<number, number>();
    const svm = await fakeSvm({
      script: (ws, m) => {
        if (m.t !== 'chunk') return;
        got.set(m.id, (got.get(m.id) ?? 0) + m.bytes);
        if (m.last) ws.send(encodeMessage({ t: 'verdict', id: m.id, verdict: 'clean', sha256: SHA }));
      },
    });
    cleanups.push(svm.close);
    const l = link(svm.url);
    await l.connect();
    const big = Buffer.alloc(6 * (1 << 20) + 3, 2);
    const read = (off: number, len: number) => big.subarray(off, off + len);
    const vs = await Promise.all(Array.from({ length: 6 }, () => l.scan(big.length, read, 60_000, undefined, 'background')));
    assert.ok(vs.every((v) => v.verdict === 'clean'));
    assert.deepEqual([...got.values()], Array(6).fill(big.length));
    assert.ok(l.windowStats.pacedChunks > 0, 'some background chunks waited for the send buffer');
    l.close();
  });
});
