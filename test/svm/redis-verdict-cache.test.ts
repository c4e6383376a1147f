/**
 * The Redis verdict cache against a real redis-server (test/helpers/redis.ts): the conformance
 * suite, keys and TTL, two SVMs sharing verdicts through one Redis (a hit on B with zero bytes
 * received or scanned there), and Redis killed or stopped: scans go on, bounded, from memory.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { before, describe, it } from 'node:test';
import { encodeMessage } from '../../src/protocol/index.js';
import { RedisVerdictCache, parseCachedVerdict } from '../../src/svm/redis-verdict-cache.js';
import { redactUrl } from '../../src/svm/verdict-cache.js';
import { loadSvmConfig } from '../../src/svm/config.js';
import { eventually } from '../helpers/procs.js';
import { redisPerFile, type RedisProc } from '../helpers/redis.js';
import { EICAR_BYTES as EICAR, noise } from '../helpers/fixtures.js';
import { rawAgent, startTestSvm, upload } from './helpers.js';
import { runVerdictCacheConformance } from './verdict-cache-conformance.js';

const { skip, redis, prefix: keySpace } = redisPerFile();
const prefix = () => keySpace('t');
const sha = (i: number) => i.toString(16).padStart(64, '0');

runVerdictCacheConformance(
  'redis',
  async (entries) => RedisVerdictCache.connect({ url: (await redis()).url, entries, keyPrefix: prefix() }),
  { skip },
);

describe('redis verdict cache: values and config', () => {
  it('reads back only well-formed values', () => {
    assert.deepEqual(parseCachedVerdict('{"v":"c","e":"clamav"}'), { verdict: 'clean', engine: 'clamav' });
    assert.deepEqual(parseCachedVerdict('{"v":"i","e":"builtin","t":"Eicar"}'), {
      verdict: 'infected',
      threat: 'Eicar',
      engine: 'builtin',
    });
    for (const bad of [
      null,
      '',
      'nope',
      '{"v":"i","e":"x"}',
      '{"v":"x","e":"x"}',
      '{"v":"c"}',
      `{"v":"c","e":"${'x'.repeat(2000)}"}`,
      '[1]',
      'null',
    ])
      assert.equal(parseCachedVerdict(bad), undefined, String(bad));
  });

  it('never prints a Redis password', () => {
    assert.equal(redactUrl('redis://user:secret@10.0.0.9:6379/0'), 'redis://***@10.0.0.9:6379/0');
  });

  it('config: cache is memory, a redis URL, or a mapping; anything else is named', () => {
    const base = { tokens: ['a-long-token'] };
    assert.equal(loadSvmConfig({ env: {}, flags: base }).cache.store, 'memory');
    const r = loadSvmConfig({ env: {}, flags: { ...base, 'cache.store': 'redis://127.0.0.1:6379' } }).cache;
    assert.deepEqual(r, {
      store: 'redis://127.0.0.1:6379',
      entries: 1_000_000,
      ttl: 7 * 24 * 3600 * 1000,
      timeout: 250,
      key_prefix: 'lightagent:v1:',
    });
    assert.throws(
      () => loadSvmConfig({ env: {}, flags: { ...base, 'cache.store': 'http://x' } }),
      /cache\.store: must be memory or a redis/,
    );
  });
});

describe('redis verdict cache against redis-server', { skip }, () => {
  let r: RedisProc;
  before(async () => {
    r = await redis();
  });

  it('keys by tenant, generation and SHA-256 under the prefix, with the TTL', async () => {
    const p = prefix();
    const c = await RedisVerdictCache.connect({ url: r.url, entries: 10, keyPrefix: p, ttlMs: 60_000 });
    await c.set({ tenant: 'acme', generation: 'clamav-1:x', sha256: sha(7) }, { verdict: 'infected', threat: 'T', engine: 'clamav' });
    const key = `${p}acme:clamav-1%3Ax:${sha(7)}`;
    assert.equal(await r.command(['GET', key]), `$${'{"v":"i","e":"clamav","t":"T"}'.length}\r\n{"v":"i","e":"clamav","t":"T"}\r\n`);
    const pttl = Number(/^:(\d+)/.exec(await r.command(['PTTL', key]))![1]);
    assert.ok(pttl > 50_000 && pttl <= 60_000, `pttl ${pttl}`);
    await c.close();
  });

  it('a verdict one instance wrote is a redis-tier hit on another; a malformed value is a miss', async () => {
    const p = prefix();
    const a = await RedisVerdictCache.connect({ url: r.url, entries: 10, keyPrefix: p });
    const b = await RedisVerdictCache.connect({ url: r.url, entries: 10, keyPrefix: p });
    const key = { tenant: 't', generation: 'g', sha256: sha(1) };
    await a.set(key, { verdict: 'clean', engine: 'builtin' });
    assert.deepEqual(await b.get(key), { verdict: 'clean', engine: 'builtin' });
    assert.deepEqual(b.tierHits(), { memory: 0, redis: 1 });
    assert.deepEqual(await b.get(key), { verdict: 'clean', engine: 'builtin' });
    assert.deepEqual(b.tierHits(), { memory: 1, redis: 1 }, 'copied into the memory tier');
    await r.command(['SET', `${p}t:g:${sha(2)}`, '{"v":"i","e":"x"}']);
    assert.equal(await b.get({ ...key, sha256: sha(2) }), undefined);
    await a.close();
    await b.close();
  });

  it('Redis stopped (SIGSTOP): a lookup costs one bounded timeout, then Redis is skipped for a second; it is used again when it answers', async () => {
    const p = prefix();
    const c = await RedisVerdictCache.connect({ url: r.url, entries: 10, keyPrefix: p, timeoutMs: 150 });
    const key = { tenant: 't', generation: 'g', sha256: sha(3) };
    await c.set(key, { verdict: 'clean', engine: 'e' });
    r.pause();
    try {
      let t0 = performance.now();
      assert.equal(await c.get({ ...key, sha256: sha(4) }), undefined);
      const first = performance.now() - t0;
      assert.ok(first >= 100 && first < 1000, `first lookup ${first} ms`);
      t0 = performance.now();
      assert.equal(await c.get({ ...key, sha256: sha(5) }), undefined);
      await c.set({ ...key, sha256: sha(6) }, { verdict: 'clean', engine: 'e' });
      assert.ok(performance.now() - t0 < 50, 'skipped while failing');
      assert.deepEqual(await c.get(key), { verdict: 'clean', engine: 'e' }, 'the memory tier answers');
    } finally {
      r.resume();
    }
    await new Promise((res) => setTimeout(res, 1100));
    await c.set({ ...key, sha256: sha(8) }, { verdict: 'clean', engine: 'e' });
    assert.match(await r.command(['EXISTS', `${p}t:g:${sha(8)}`]), /^:1/, 'written to redis again');
    await c.close();
  });

  it('two SVMs sharing one Redis: content scanned through A is a hit on B with zero bytes received or scanned on B; Redis killed: both keep scanning', async () => {
    const p = prefix();
    const a = await startTestSvm({ cache: await RedisVerdictCache.connect({ url: r.url, entries: 100, keyPrefix: p, timeoutMs: 200 }) });
    const b = await startTestSvm({ cache: await RedisVerdictCache.connect({ url: r.url, entries: 100, keyPrefix: p, timeoutMs: 200 }) });
    try {
      const content = Buffer.concat([noise(200_000, 21), EICAR]);
      const hash = crypto.createHash('sha256').update(content).digest('hex');
      const agentA = await rawAgent(a.url);
      const va = await upload(agentA, 1, content);
      assert.equal(va.verdict, 'infected');
      assert.equal(a.metrics.lightagent_svm_bytes_scanned_total, content.length);

      const agentB = await rawAgent(b.url);
      agentB.ws.send(encodeMessage({ t: 'lookup', id: 1, sha256: hash, size: content.length }));
      const vb = await agentB.verdict(1);
      assert.equal(vb.verdict, 'infected');
      assert.equal(vb.cached, true);
      assert.equal(vb.threat, va.threat);
      const vb2 = await upload(agentB, 2, content);
      assert.equal(vb2.cached, true, 'an upload of the same content on B is answered from the cache too');
      const mb = b.metrics;
      assert.equal(mb.lightagent_svm_scans_total, 0);
      assert.equal(mb.lightagent_svm_bytes_scanned_total, 0, 'zero bytes scanned on B');
      assert.equal(mb['lightagent_svm_cache_hits_by_tier_total{tier="redis"}'], 1);
      assert.equal(mb['lightagent_svm_cache_hits_by_tier_total{tier="memory"}'], 1);
      const text = await (await fetch(`${b.httpUrl}/metrics`)).text();
      assert.match(text, /^lightagent_svm_cache_hits_by_tier_total\{tier="redis"\} 1$/m);

      await r.kill();
      await eventually(() => !a.core.cache.healthy() && !b.core.cache.healthy(), 5000, 'both caches unhealthy');
      const h = await fetch(`${a.httpUrl}/healthz`);
      assert.equal(h.status, 200, 'a cache outage is not an engine outage');
      assert.equal(((await h.json()) as { status: string }).status, 'degraded');
      const t0 = performance.now();
      for (let i = 0; i < 5; i++) assert.equal((await upload(agentA, 10 + i, noise(10_000, 100 + i))).verdict, 'clean');
      assert.equal((await upload(agentB, 20, Buffer.concat([Buffer.from('x'), EICAR]))).verdict, 'infected');
      assert.ok(performance.now() - t0 < 3000, 'scans did not wait on Redis');
      await r.start();
      await eventually(() => a.core.cache.healthy() && b.core.cache.healthy(), 10_000, 'both caches back');
      const again = noise(5000, 300);
      assert.equal((await upload(agentA, 30, again)).verdict, 'clean');
      agentB.ws.send(
        encodeMessage({ t: 'lookup', id: 31, sha256: crypto.createHash('sha256').update(again).digest('hex'), size: again.length }),
      );
      assert.equal((await agentB.verdict(31)).cached, true, 'sharing resumed');
      agentA.ws.close();
      agentB.ws.close();
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('an unreachable Redis at start: the SVM starts, unhealthy cache, memory tier answering', async () => {
    const c = await RedisVerdictCache.connect({ url: 'redis://127.0.0.1:1', entries: 10, timeoutMs: 100 });
    try {
      assert.equal(c.healthy(), false);
      const key = { tenant: 't', generation: 'g', sha256: sha(9) };
      await c.set(key, { verdict: 'clean', engine: 'e' });
      assert.deepEqual(await c.get(key), { verdict: 'clean', engine: 'e' });
    } finally {
      await c.close();
    }
  });
});
