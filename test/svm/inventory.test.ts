/**
 * The memory inventory: the conformance suite, and its file in state_dir (written atomically,
 * 0600, read back with connected cleared, a damaged or foreign file set aside, hostile rows
 * skipped).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { INVENTORY_FILE, MemoryInventoryStore } from '../../src/svm/inventory/memory-store.js';
import { eventually, tempDir } from '../helpers/procs.js';
import { row, runInventoryConformance } from './inventory-conformance.js';

runInventoryConformance('memory', () => Promise.resolve(new MemoryInventoryStore()));
runInventoryConformance('memory with a file', () =>
  Promise.resolve(new MemoryInventoryStore({ stateDir: tempDir('la-inv-conf-'), flushMs: 50 })),
);

describe('memory inventory file', () => {
  it('is written atomically (0600) and read back, connections cleared', async () => {
    const dir = path.join(tempDir('la-inv-'), 'state');
    const a = new MemoryInventoryStore({ stateDir: dir, flushMs: 20 });
    await a.put(row('a', 'x', { connected: true, conn: 'c1', state: 'degraded', reasons: ['files-queued'] }));
    await a.pushHistory({ tenant: 'a', agentId: 'x' }, { time: new Date().toISOString(), state: 'degraded', reasons: [] });
    const file = path.join(dir, INVENTORY_FILE);
    await eventually(() => fs.existsSync(file), 5000, 'the file written after flushMs, without close');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
    await a.put(row('a', 'y'));
    await a.close();
    assert.deepEqual(fs.readdirSync(dir), [INVENTORY_FILE], 'no temporary file left');
    const b = new MemoryInventoryStore({ stateDir: dir });
    assert.equal(b.size, 2);
    const x = (await b.get({ tenant: 'a', agentId: 'x' }))!;
    assert.equal(x.state, 'degraded');
    assert.equal(x.connected, false);
    assert.equal(x.conn, null);
    assert.equal((await b.history({ tenant: 'a', agentId: 'x' })).length, 1);
    await b.close();
  });

  it('sets aside a damaged, foreign or oversized file and starts empty; skips hostile rows', async () => {
    for (const [content, max] of [
      ['{"v":1,"agents":[', undefined],
      ['{"v":2,"agents":[]}', undefined],
      ['[1,2,3]', undefined],
      [JSON.stringify({ v: 1, agents: [] }) + ' '.repeat(2000), 1000],
    ] as const) {
      const dir = tempDir('la-inv-bad-');
      fs.writeFileSync(path.join(dir, INVENTORY_FILE), content);
      const s = new MemoryInventoryStore({ stateDir: dir, ...(max ? { maxFileBytes: max } : {}) });
      assert.equal(s.size, 0, content.slice(0, 30));
      assert.ok(
        fs.readdirSync(dir).some((f) => f.startsWith(`${INVENTORY_FILE}.bad-`)),
        `set aside: ${content.slice(0, 30)}`,
      );
      await s.close();
    }
    const dir = tempDir('la-inv-rows-');
    const good = row('a', 'ok');
    const agents = [
      {
        row: good,
        history: [
          { time: 'x', state: 'nope', reasons: [] },
          { time: 't', state: 'off', reasons: [] },
        ],
        detections: [{ bad: 1 }],
      },
      { row: { ...good, agentId: 'big', host: 'h'.repeat(5000) } },
      { row: { ...good, agentId: 'neg', lastSeen: -1 } },
      { row: { ...good, agentId: 'st', state: 'pwned' } },
      { row: { ...good, agentId: 'proto', __proto__: { polluted: true } } },
      null,
      'x',
    ];
    fs.writeFileSync(path.join(dir, INVENTORY_FILE), JSON.stringify({ v: 1, agents }));
    const s = new MemoryInventoryStore({ stateDir: dir });
    assert.deepEqual((await s.list()).map((r) => r.agentId).sort(), ['ok', 'proto']);
    assert.equal((await s.history({ tenant: 'a', agentId: 'ok' })).length, 1);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    await s.close();
  });
});
