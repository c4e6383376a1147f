/**
 * `lightagent-svm --cache redis://...` as operators run it: two SVM processes on one real
 * redis-server share verdicts (content scanned through A is a cached verdict on B, no bytes sent
 * to B), and the Redis client (ioredis) is loaded only when a Redis store is configured: an SVM on
 * the memory cache never loads it (~5 MB of the executable's anonymous memory: docs/svm.md,
 * "Shared verdict cache").
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { spawnNode, SVM_CLI, tempDir, waitFor, type Proc } from '../helpers/procs.js';
import { redisPerFile } from '../helpers/redis.js';
import { rawAgent, upload } from './helpers.js';

const { skip, redis, prefix } = redisPerFile();
const TOKEN = 'svm-cli-redis-token';

/** A preload that says at exit whether ioredis was loaded (it is CommonJS: it sits in require.cache). */
function preload(): string {
  const file = path.join(tempDir('la-svm-preload-'), 'ioredis-probe.cjs');
  fs.writeFileSync(
    file,
    "process.on('exit', () => require('node:fs').writeSync(2, `ioredis-loaded=${Object.keys(require.cache).some((k) => k.includes('/node_modules/ioredis/'))}\\n`));\n",
  );
  return file;
}

async function startSvm(extra: string[], probe: string): Promise<Proc & { url: string; listening: Record<string, unknown> }> {
  const p = spawnNode(SVM_CLI, ['--listen', '127.0.0.1:0', '--token', TOKEN, '--json', ...extra], {
    env: { ...process.env, NODE_OPTIONS: `--require ${probe}` },
    watchdogMs: 60_000,
  });
  const m = await waitFor(p, /^(\{"event":"listening".*\})$/m);
  const listening = JSON.parse(m[1]!) as Record<string, unknown>;
  return { ...p, url: String(listening.url), listening };
}

/** What the probe said when `p` exited (stopped with SIGTERM: a graceful exit runs the handler). */
function ioredisLoaded(p: Proc): boolean {
  const m = /ioredis-loaded=(true|false)/.exec(p.output());
  assert.ok(m, `the probe reported at exit; output: ${p.output().slice(-2000)}`);
  return m[1] === 'true';
}

describe('lightagent-svm with a Redis verdict cache', { skip }, () => {
  it('two SVM processes share verdicts through one redis-server; only they load ioredis', async () => {
    const r = await redis();
    const probe = preload();
    const keys = ['--config', writeConfig(prefix('cli'))];
    const a = await startSvm(['--cache', r.url, ...keys], probe);
    const b = await startSvm(['--cache', r.url, ...keys], probe);
    const mem = await startSvm([], probe);
    try {
      for (const s of [a, b]) {
        assert.equal(s.listening.cache, r.url);
        assert.equal(s.listening.cacheHealthy, true);
      }
      assert.equal(mem.listening.cache, 'memory');

      const content = Buffer.from(`svm-cli-redis ${process.pid} ${Date.now()}\n`);
      const sha256 = createHash('sha256').update(content).digest('hex');
      const onA = await rawAgent(a.url, TOKEN);
      const scanned = await upload(onA, 1, content);
      assert.equal(scanned.verdict, 'clean');
      assert.equal(scanned.sha256, sha256);
      assert.notEqual(scanned.cached, true, 'A ran its engine');

      // B never saw these bytes: its answer can only come from Redis.
      const onB = await rawAgent(b.url, TOKEN);
      onB.ws.send(JSON.stringify({ t: 'lookup', id: 7, sha256, size: content.length }));
      const looked = await onB.verdict(7);
      assert.equal(looked.verdict, 'clean', `B's lookup: ${JSON.stringify(looked)}`);
      assert.equal(looked.cached, true);
      // The memory-cache SVM shares nothing.
      const onMem = await rawAgent(mem.url, TOKEN);
      onMem.ws.send(JSON.stringify({ t: 'lookup', id: 8, sha256, size: content.length }));
      assert.equal((await onMem.verdict(8)).verdict, 'unknown');
      for (const x of [onA, onB, onMem]) x.ws.close();
    } finally {
      for (const s of [a, b, mem]) await s.stop('SIGTERM');
    }
    assert.deepEqual({ a: ioredisLoaded(a), b: ioredisLoaded(b), mem: ioredisLoaded(mem) }, { a: true, b: true, mem: false });
  });
});

/** A config file naming a key prefix of this test's own, so runs sharing the Redis never collide. */
function writeConfig(keyPrefix: string): string {
  const file = path.join(tempDir('la-svm-cfg-'), 'svm.json');
  fs.writeFileSync(file, JSON.stringify({ cache: { key_prefix: keyPrefix } }));
  return file;
}
