/**
 * Operating the SVM: /healthz and /metrics over HTTP, load and generation reports to agents,
 * detection events from agents, graceful close.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CloseCode, encodeChunk, encodeMessage } from '../../src/protocol/index.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import type { SvmEvent } from '../../src/svm/events.js';
import { EICAR_BYTES as EICAR } from '../helpers/fixtures.js';
import { metric, rawAgent, startTestSvm, upload } from './helpers.js';
import { tempDir } from '../helpers/procs.js';

describe('SVM server: operations', () => {
  it('serves /healthz (JSON), Prometheus /metrics (text format 0.0.4) and 404 elsewhere', async () => {
    const s = await startTestSvm();
    const a = await rawAgent(s.url);
    await upload(a, 1, EICAR);
    const base = `http://127.0.0.1:${s.address.port}`;
    const h = await fetch(`${base}/healthz`);
    assert.equal(h.status, 200);
    assert.match(h.headers.get('content-type') ?? '', /application\/json/);
    const body = (await h.json()) as Record<string, unknown>;
    assert.equal(body.status, 'ok');
    assert.equal(body.engine, 'builtin');
    assert.equal(body.generation, s.core.generation());
    assert.equal(body.agents, 1);
    const res = await fetch(`${base}/metrics?x=1`);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const [name, type] of [
      ['lightagent_svm_bytes_received_total', 'counter'],
      ['lightagent_svm_scans_total', 'counter'],
      ['lightagent_svm_cache_hits_total', 'counter'],
      ['lightagent_svm_lookups_total', 'counter'],
      ['lightagent_svm_detections_total', 'counter'],
      ['lightagent_svm_cache_evictions_total', 'counter'],
      ['lightagent_svm_agents_connected', 'gauge'],
      ['lightagent_svm_upload_bytes_held', 'gauge'],
      ['lightagent_svm_engine_scan_seconds', 'histogram'],
    ]) {
      assert.match(text, new RegExp(`^# HELP ${name} \\S`, 'm'), name);
      assert.match(text, new RegExp(`^# TYPE ${name} ${type}$`, 'm'), name);
    }
    // Every sample line is `name{labels} value`, every family has HELP and TYPE (names may hold
    // digits: prom-client's process metrics have nodejs_eventloop_lag_p99_seconds).
    for (const line of text.trim().split('\n')) {
      if (line.startsWith('#')) assert.match(line, /^# (HELP|TYPE) [a-z_][a-z0-9_]* .+$/);
      else assert.match(line, /^[a-z_][a-z0-9_]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$/, line);
    }
    // Label order carries no meaning in the format; prom-client writes `le` first.
    assert.match(text, /^lightagent_svm_engine_scan_seconds_bucket\{(engine="builtin",le="\+Inf"|le="\+Inf",engine="builtin")\} 1$/m);
    assert.match(text, /^lightagent_svm_engine_scan_seconds_count\{engine="builtin"\} 1$/m);
    assert.match(text, /^lightagent_svm_detections_total 1$/m);
    assert.equal(s.metrics.lightagent_svm_scans_total, 1, 'the snapshot agrees');
    assert.equal((await fetch(`${base}/nope`)).status, 404);
    assert.equal((await fetch(`${base}/`)).status, 404);
    assert.equal((await fetch(`${base}/metrics`, { method: 'POST' })).status, 405);
    await s.close();
  });

  it('logs and counts detection events reported by agents, and publishes them on the event bus', async () => {
    const s = await startTestSvm();
    const heard: SvmEvent[] = [];
    s.core.events.subscribe(() => {
      throw new Error('a broken subscriber');
    });
    s.core.events.subscribe((e) => heard.push(e));
    const a = await rawAgent(s.url);
    a.ws.send(
      encodeMessage({
        t: 'event',
        kind: 'detection',
        time: new Date().toISOString(),
        path: '/home/u/eicar.com',
        threat: 'Eicar-Test-Signature',
        action: 'quarantined',
        process: { pid: 42, exe: '/usr/bin/cat' },
      }),
    );
    a.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: 'a'.repeat(64), size: 1 }));
    await a.verdict(1);
    assert.equal(await metric(s, 'lightagent_svm_agent_detection_events_total'), 1);
    assert.equal(heard.length, 1, 'the broken subscriber did not stop the event');
    assert.deepEqual(
      { ...heard[0], time: undefined },
      {
        kind: 'detection',
        time: undefined,
        tenant: 'a',
        agentId: 'raw-agent',
        host: 'test',
        path: '/home/u/eicar.com',
        sha256: undefined,
        threat: 'Eicar-Test-Signature',
        action: 'quarantined',
        process: { pid: 42, exe: '/usr/bin/cat' },
      },
    );
    await s.close();
  });

  it('serves added HTTP routes by longest prefix; a failing route answers 500 and the SVM goes on', async () => {
    const s = await startTestSvm();
    s.addRoute({ prefix: '/api/', handle: (_q, r, url) => void r.end(`api ${url.pathname} ${url.searchParams.get('x')}`) });
    s.addRoute({ prefix: '/api/agents', handle: (_q, r) => void r.end('agents') });
    s.addRoute({
      prefix: '/boom',
      handle: () => {
        throw new Error('kaput');
      },
    });
    s.addRoute({ prefix: '/later', handle: () => Promise.reject(new Error('kaput later')) });
    const get = async (p: string) => {
      const r = await fetch(s.httpUrl + p);
      return [r.status, await r.text()] as const;
    };
    assert.deepEqual(await get('/api/fleet?x=1'), [200, 'api /api/fleet 1']);
    assert.deepEqual(await get('/api/agents/7'), [200, 'agents']);
    assert.equal((await get('/boom'))[0], 500);
    assert.equal((await get('/later'))[0], 500);
    assert.equal((await get('/healthz'))[0], 200);
    assert.equal((await get('/nothing'))[0], 404);
    await s.close();
  });

  it('reports load only when it changed, at the report interval', async () => {
    const s = await startTestSvm({ reportIntervalMs: 1000, uploadMemory: 100_000, maxFileSize: 100_000 });
    const a = await rawAgent(s.url);
    const b = await rawAgent(s.url);
    await a.next((m) => m.t === 'welcome');
    await new Promise((r) => setTimeout(r, 1300));
    assert.ok(!a.msgs.some((m) => m.t === 'load'), 'no report while nothing changed');
    // Memory follows bytes received: 50,000 of 60,000 announced bytes hold half the budget.
    b.ws.send(encodeMessage({ t: 'scan', id: 1, size: 60_000 }));
    b.ws.send(encodeChunk(1, 0, false, Buffer.alloc(50_000)));
    const l = await a.next((m) => m.t === 'load', 2500);
    assert.ok(l.t === 'load' && l.load === 0.5, JSON.stringify(l));
    await s.close();
  });

  it('tells agents the new generation after a signature reload; old verdicts are not served for it', async () => {
    const dir = tempDir('la-gen-');
    const sigs = path.join(dir, 'local.ndb');
    fs.writeFileSync(sigs, `Test.One:0:*:${Buffer.from('FIRST-PATTERN').toString('hex')}\n`);
    const engine = new BuiltinEngine({ signatureFiles: [sigs] });
    const s = await startTestSvm({ engine });
    const a = await rawAgent(s.url);
    const content = Buffer.from('contains SECOND-PATTERN here');
    const v1 = await upload(a, 1, content);
    assert.equal(v1.verdict, 'clean');
    const g1 = v1.generation;
    fs.writeFileSync(sigs, `Test.Two:0:*:${Buffer.from('SECOND-PATTERN').toString('hex')}\n`);
    engine.reload();
    assert.equal(s.announceGeneration(), 1);
    const g = await a.next((m) => m.t === 'generation');
    assert.ok(g.t === 'generation' && g.generation !== g1 && g.generation === engine.generation());
    a.ws.send(encodeMessage({ t: 'lookup', id: 2, sha256: v1.sha256!, size: content.length }));
    assert.equal((await a.verdict(2)).verdict, 'unknown', 'the clean verdict of the old generation is stale');
    const v3 = await upload(a, 3, content);
    assert.equal(v3.verdict, 'infected');
    assert.equal(v3.threat, 'Test.Two');
    assert.equal(s.announceGeneration(), 0, 'told once');
    await s.close();
  });

  it('closes every agent with 4010 on close(), and refuses nothing silently afterwards', async () => {
    const s = await startTestSvm();
    const agents = await Promise.all([1, 2, 3].map(() => rawAgent(s.url)));
    await Promise.all(agents.map((a) => a.next((m) => m.t === 'welcome')));
    const silent = await rawAgent(s.url, null, false); // connected, never said hello
    const t0 = Date.now();
    await s.close();
    assert.ok(Date.now() - t0 < 2000, 'close does not hang');
    assert.deepEqual(await Promise.all([...agents, silent].map((a) => a.closed)), [
      CloseCode.SHUTDOWN,
      CloseCode.SHUTDOWN,
      CloseCode.SHUTDOWN,
      CloseCode.SHUTDOWN,
    ]);
    await assert.rejects(rawAgent(s.url));
    await s.close(); // twice is harmless
  });

  it('listens on a free port with port 0 and says clearly when a port is taken', async () => {
    const s = await startTestSvm();
    assert.ok(s.address.port > 0);
    assert.equal(s.address.host, '127.0.0.1');
    assert.equal(s.url, `ws://127.0.0.1:${s.address.port}`);
    await assert.rejects(
      startTestSvm({ port: s.address.port }),
      (e: Error & { code?: string }) => e.code === 'LA_ERR_LISTEN' && /EADDRINUSE/.test(e.message),
    );
    await s.close();
  });
});
