/**
 * The Redis inventory against a real redis-server (test/helpers/redis.ts): the conformance suite;
 * two SVMs sharing one Redis, an agent failing over from A to B stays one row (B's, connected),
 * whichever order A's close and B's hello come in; rows planted in Redis that are malformed or
 * sit under another agent's key are skipped; Redis stopped: the API answers 503, the SVM scans on.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RedisInventoryStore } from '../../src/svm/inventory/redis-store.js';
import { redisPerFile, startRedis } from '../helpers/redis.js';
import { EICAR_BYTES as EICAR } from '../helpers/fixtures.js';
import { rawAgent, startTestSvm, TOKEN, upload } from './helpers.js';
import { row, runInventoryConformance } from './inventory-conformance.js';
import { api, eventuallyAsync, stateAgent } from './inventory-helpers.js';

const { skip, redis, prefix: keySpace } = redisPerFile();
const prefix = () => keySpace('inv');
const ADMIN = 'admin-token-0123456789';

runInventoryConformance('redis', async () => RedisInventoryStore.connect({ url: (await redis()).url, keyPrefix: prefix() }), { skip });

describe('redis inventory shared by SVMs', { skip }, () => {
  it('an agent failing over from SVM A to SVM B stays one row, connected to B', async () => {
    const r = await redis();
    const p = prefix();
    const svm = async (id: string) =>
      startTestSvm({
        svmId: id,
        adminTokens: [{ token: ADMIN, role: 'admin' }],
        inventory: { store: await RedisInventoryStore.connect({ url: r.url, keyPrefix: p }) },
      });
    const a = await svm('svm-a');
    const b = await svm('svm-b');
    try {
      const onA = await stateAgent(a.url, { token: TOKEN, agentId: 'mover' });
      onA.state({ state: 'degraded', reasons: ['files-queued'] });
      await eventuallyAsync(async () => (await api(b.httpUrl, '/api/agents/a/mover', ADMIN)).body?.agent?.svmId === 'svm-a');
      // B welcomes the agent before A has noticed it is gone; then A's connection closes.
      const onB = await stateAgent(b.url, { token: TOKEN, agentId: 'mover' });
      onB.state();
      await eventuallyAsync(async () => (await api(a.httpUrl, '/api/agents/a/mover', ADMIN)).body?.agent?.svmId === 'svm-b');
      onA.ws.terminate();
      await onA.closed;
      await a.inventory!.settled();
      for (const s of [a, b]) {
        const x = await api(s.httpUrl, '/api/agents', ADMIN);
        assert.equal(x.body.total, 1, 'one row on every SVM');
        assert.equal(x.body.agents[0].svmId, 'svm-b');
        assert.equal(x.body.agents[0].connected, true, "A's late disconnect does not mark it gone");
        assert.equal(x.body.agents[0].state, 'protected');
      }
      const h = await api(a.httpUrl, '/api/agents/a/mover', ADMIN);
      assert.deepEqual(
        h.body.history.map((e: { state: string }) => e.state),
        ['protected', 'degraded'],
      );
      onB.ws.terminate();
      await onB.closed;
      await eventuallyAsync(async () => (await api(a.httpUrl, '/api/agents/a/mover', ADMIN)).body?.agent?.connected === false);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('skips planted rows: malformed, oversized, or under another agent key', async () => {
    const r = await redis();
    const p = prefix();
    const s = await RedisInventoryStore.connect({ url: r.url, keyPrefix: p });
    try {
      await s.put(row('a', 'real'));
      const hash = `${p}inv:rows`;
      await r.command(['HSET', hash, 'a/fake', 'not json']);
      await r.command(['HSET', hash, 'a/big', JSON.stringify({ ...row('a', 'big'), host: 'x'.repeat(70_000) })]);
      await r.command(['HSET', hash, 'a/other', JSON.stringify(row('b', 'victim'))]);
      await r.command(['HSET', hash, 'a/bad', JSON.stringify({ ...row('a', 'bad'), state: 'owned' })]);
      await r.command([
        'LPUSH',
        `${p}inv:d:a/real`,
        JSON.stringify({
          time: 't',
          tenant: 'b',
          agentId: 'x',
          host: 'h',
          path: '/',
          sha256: null,
          threat: 'T',
          action: 'denied',
          process: null,
        }),
        '{',
      ]);
      assert.deepEqual(
        (await s.list()).map((x) => x.agentId),
        ['real'],
      );
      assert.deepEqual(
        (await s.detections([{ tenant: 'a', agentId: 'real' }]))[0],
        [],
        "another agent's detection planted in the list is dropped",
      );
    } finally {
      await s.close();
    }
  });

  it('Redis stopped: the API answers 503, scanning goes on', async () => {
    const r = await startRedis();
    const s = await startTestSvm({
      adminTokens: [{ token: ADMIN, role: 'admin' }],
      inventory: { store: await RedisInventoryStore.connect({ url: r.url, keyPrefix: prefix(), timeoutMs: 200 }) },
    });
    try {
      assert.equal((await api(s.httpUrl, '/api/agents', ADMIN)).status, 200);
      await r.stop();
      const x = await eventuallyAsync(async () => {
        const y = await api(s.httpUrl, '/api/agents', ADMIN);
        return y.status === 503 ? y : undefined;
      });
      assert.equal(x.body.error.code, 'LA_ERR_ADMIN_UNAVAILABLE');
      const agent = await rawAgent(s.url);
      const v = await upload(agent, 1, EICAR);
      assert.equal(v.verdict, 'infected');
      agent.ws.terminate();
    } finally {
      await s.close();
    }
  });
});
