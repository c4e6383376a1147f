/**
 * SVM discovery: the answer is validated whole (shape, URLs, priorities, duplicates, count),
 * bounded in size and time, redirects are not followed; a pool fed only by a discovery URL
 * connects to the best SVM listed, follows a changed list, and keeps its SVMs when discovery fails.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, it } from 'node:test';
import { SvmDiscoveryError } from '../../src/errors.js';
import { DISCOVERY_LIMITS, SvmPool, fetchSvmList, parseSvmList } from '../../src/svm-link/index.js';
import { eventually } from '../helpers/procs.js';
import { fakeSvm } from '../helpers/fake-svm.js';

const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** An HTTP server on port 0 whose answer the test sets per request. */
async function discoveryServer(handler: (res: http.ServerResponse) => void) {
  const sockets = new Set<import('node:net').Socket>();
  const server = http.createServer((_req, res) => handler(res));
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/svms`;
  const close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  cleanups.push(close);
  return { url, close };
}

const json = (body: unknown) => (res: http.ServerResponse) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

describe('SVM discovery', () => {
  it('accepts a list of URLs or {url, priority}, bare or under `svms`; priority defaults to the position', () => {
    assert.deepEqual(parseSvmList(['wss://a:1', { url: 'wss://b:2', priority: 7 }], 'x'), [
      { url: 'wss://a:1', priority: 0 },
      { url: 'wss://b:2', priority: 7 },
    ]);
    assert.deepEqual(parseSvmList({ svms: ['ws://127.0.0.1:9'] }, 'x'), [{ url: 'ws://127.0.0.1:9', priority: 0 }]);
  });

  it('rejects every malformed answer with LA_ERR_SVM_DISCOVERY naming the entry', () => {
    const bad: Array<[unknown, RegExp]> = [
      [{}, /must be a JSON list/],
      [[], /empty/],
      [Array.from({ length: DISCOVERY_LIMITS.maxEntries + 1 }, (_, i) => `wss://s${i}:1`), /at most 16/],
      [['http://a:1'], /entry 0: url must be a ws:\/\/ or wss:\/\//],
      [['wss://user:pw@a:1'], /credentials/],
      [[`wss://${'a'.repeat(3000)}:1`], /longer than/],
      [[{ url: 'wss://a:1', priority: -1 }], /priority must be an integer/],
      [[{ url: 'wss://a:1', priority: 1.5 }], /priority must be an integer/],
      [[{ url: 'wss://a:1', weight: 1 }], /unknown key "weight"/],
      [['wss://a:1', 'wss://a:1/'], /listed twice/],
      [[42], /must be a URL or/],
    ];
    for (const [doc, re] of bad) {
      assert.throws(
        () => parseSvmList(doc, 'http://d/'),
        (e: unknown) => e instanceof SvmDiscoveryError && e.code === 'LA_ERR_SVM_DISCOVERY' && re.test(e.message),
        `${JSON.stringify(doc).slice(0, 60)} -> ${re}`,
      );
    }
  });

  it('bounds the answer in size and time, and follows no redirect', async () => {
    const big = await discoveryServer((res) => {
      res.writeHead(200);
      // no content-length: counted as it streams
      for (let i = 0; i < 100; i++) res.write('x'.repeat(1024));
      res.end();
    });
    await assert.rejects(fetchSvmList(big.url), /larger than 65536 bytes/);
    const slow = await discoveryServer((res) => {
      res.writeHead(200);
      res.write('['); // and never more
    });
    const t0 = performance.now();
    await assert.rejects(fetchSvmList(slow.url, { timeoutMs: 300 }), /no complete answer within 300 ms/);
    assert.ok(performance.now() - t0 < 1500);
    const redirect = await discoveryServer((res) => {
      res.writeHead(302, { location: 'http://evil.example/' });
      res.end();
    });
    await assert.rejects(fetchSvmList(redirect.url), /HTTP 302 \(redirects are not followed\)/);
    const notJson = await discoveryServer((res) => {
      res.writeHead(200);
      res.end('<html>');
    });
    await assert.rejects(fetchSvmList(notJson.url), /not JSON/);
    await assert.rejects(fetchSvmList('ftp://x/'), /http:\/\/ or https:\/\//);
  });

  it('a pool fed by discovery uses the best SVM listed, follows a new list, and keeps its SVMs when discovery fails', async () => {
    const [a, b] = await Promise.all([fakeSvm({ id: 'a' }), fakeSvm({ id: 'b' })]);
    cleanups.push(
      () => a.close(),
      () => b.close(),
    );
    let answer: (res: http.ServerResponse) => void = json([{ url: b.url, priority: 1 }, { url: a.url, priority: 0 }, 'ws://10.9.9.9:7443']);
    const d = await discoveryServer((res) => answer(res));
    const p = new SvmPool({
      svms: [],
      discovery: { url: d.url, intervalMs: 200 },
      token: 'good',
      agentId: 'ag',
      host: 'h',
      os: 'linux',
      agentVersion: '0',
      backoffMinMs: 20,
      backoffMaxMs: 50,
      holdDownMs: 300,
    });
    cleanups.push(() => p.close());
    await p.connect();
    await p.settled(1000);
    assert.equal(p.url, a.url);
    // the plain ws:// SVM on another host was dropped
    assert.deepEqual(
      p
        .status()
        .map((s) => s.url)
        .sort(),
      [a.url, b.url].sort(),
    );
    // The list changes: A leaves it, the pool moves to B.
    answer = json([{ url: b.url, priority: 1 }]);
    await eventually(() => p.url === b.url && p.status().length === 1, 3000, 'the new list');
    // Discovery breaks: the pool keeps B and says why.
    answer = (res) => {
      res.writeHead(500);
      res.end();
    };
    await eventually(() => p.discoveryFailure !== undefined, 3000, 'a discovery failure');
    assert.match(p.discoveryFailure!.message, /HTTP 500/);
    assert.equal(p.url, b.url);
    assert.equal((await p.lookup('d'.repeat(64), 1)).engine, 'b');
  });
});
