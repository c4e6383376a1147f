/**
 * Upload memory follows bytes received, within per-agent, per-tenant and SVM-wide shares; a
 * stalled upload is dropped; engine scan slots go round-robin by tenant, then agent.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ProtocolError } from '../../src/errors.js';
import { decodeChunk, encodeChunk } from '../../src/protocol/index.js';
import { uploadLimits } from '../../src/svm/core.js';
import { FairScheduler } from '../../src/svm/fairness.js';
import { expiries, TurnQueue, UploadBudget, UploadTable, type UploadTableOptions } from '../../src/svm/uploads.js';

const chunk = (id: number, index: number, last: boolean, n: number) =>
  decodeChunk(encodeChunk(id, index, last, Buffer.alloc(n, index + 1)), 1 << 20);

function table(budget: UploadBudget, tenant: string, extra: Partial<UploadTableOptions> = {}) {
  const events: string[] = [];
  const t = new UploadTable({
    account: budget.account(tenant),
    timeoutMs: 10_000,
    maxRefused: 8,
    onTimeout: (id, why) => events.push(`timeout ${id} ${why}`),
    onOverBudget: (id) => events.push(`busy ${id}`),
    onBytes: () => {},
    ...extra,
  });
  return { t, events };
}

describe('upload fairness', () => {
  it('an announced size reserves nothing: memory is held for the bytes that arrived', () => {
    const budget = new UploadBudget({ capacity: 1 << 20 });
    const { t } = table(budget, 'a');
    assert.ok(t.accept(1, 1 << 30), 'a 1 GiB announcement is accepted without reserving it');
    assert.equal(budget.used, 0);
    t.add(chunk(1, 0, false, 4096));
    assert.equal(budget.used, 4096);
    t.drop(1);
    assert.equal(budget.used, 0);
  });

  it('a chunk past the agent share ends that upload with busy, releases it, and its late chunks are discarded', () => {
    const budget = new UploadBudget({ capacity: 100_000, perTenant: 50_000, perAgent: 10_000 });
    const { t, events } = table(budget, 'a');
    assert.ok(t.accept(1, 20_000));
    assert.equal(t.add(chunk(1, 0, false, 8000)), undefined);
    assert.equal(budget.used, 8000);
    assert.equal(t.add(chunk(1, 1, false, 8000)), undefined);
    assert.deepEqual(events, ['busy 1']);
    assert.equal(budget.used, 0, 'released at once');
    assert.equal(t.add(chunk(1, 2, true, 4000)), undefined, 'the rest is read and discarded, not a protocol error');
    assert.throws(() => t.add(chunk(1, 3, true, 1)), ProtocolError, 'once forgotten, a chunk for the id is an error again');
    // The agent's next upload fits again
    assert.ok(t.accept(2, 9000));
    const done = t.add(chunk(2, 0, true, 9000));
    assert.equal(done?.content.length, 9000);
    done!.release();
    assert.equal(budget.used, 0);
  });

  it('a tenant cannot take more than its share, so another tenant still gets memory', () => {
    const budget = new UploadBudget({ capacity: 30_000, perTenant: 15_000, perAgent: 10_000 });
    const noisy = [table(budget, 'noisy'), table(budget, 'noisy'), table(budget, 'noisy')];
    noisy.forEach((n, i) => {
      assert.ok(n.t.accept(1, 10_000));
      n.t.add(chunk(1, 0, false, 8000));
      assert.equal(n.events.length, i < 1 ? 0 : 1, `agent ${i}`);
    });
    assert.equal(budget.usedBy('noisy'), 8000, 'only the first fits within the tenant share (15,000)');
    const quiet = table(budget, 'quiet');
    assert.ok(quiet.t.accept(1, 10_000));
    const done = quiet.t.add(chunk(1, 0, true, 10_000));
    assert.ok(done, 'the quiet tenant uploads in full');
    assert.deepEqual(quiet.events, []);
  });

  it('the SVM-wide capacity still bounds every tenant together', () => {
    const budget = new UploadBudget({ capacity: 10_000 });
    const a = budget.account('a');
    const b = budget.account('b');
    assert.ok(a.tryReserve(6000));
    assert.equal(b.tryReserve(6000), false);
    a.release(6000);
    assert.ok(b.tryReserve(6000));
  });

  it('an upload that stops making progress is dropped after the stall time, not the whole timeout', async () => {
    const budget = new UploadBudget({ capacity: 1 << 20 });
    const { t, events } = table(budget, 'a', { stallMs: 100, timeoutMs: 60_000 });
    assert.ok(t.accept(1, 100_000));
    t.add(chunk(1, 0, false, 1000));
    await new Promise((r) => setTimeout(r, 60));
    t.add(chunk(1, 1, false, 1000)); // progress: the stall clock starts again
    await new Promise((r) => setTimeout(r, 60));
    assert.deepEqual(events, []);
    await new Promise((r) => setTimeout(r, 120));
    assert.deepEqual(events, ['timeout 1 stalled']);
    assert.equal(budget.used, 0);
  });

  it('time a connection spent paused by the read gate is not its uploads stalling', async () => {
    const budget = new UploadBudget({ capacity: 1 << 20 });
    const { t, events } = table(budget, 'a', { stallMs: 100, timeoutMs: 60_000 });
    assert.ok(t.accept(1, 100_000));
    t.add(chunk(1, 0, false, 1000));
    await new Promise((r) => setTimeout(r, 70));
    t.restartStallClocks(); // the gate resumed the connection
    await new Promise((r) => setTimeout(r, 70));
    assert.deepEqual(events, [], 'not dropped 140 ms after its last chunk: 70 ms since the resume');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(events, ['timeout 1 stalled'], 'dropped once it stalls for stallMs after the resume');
  });

  it('uploads that stall together end a bounded number per event-loop turn, all of them, memory released', async () => {
    const budget = new UploadBudget({ capacity: 64 << 20 });
    const tables = Array.from({ length: 10 }, () => table(budget, 'a', { stallMs: 30, timeoutMs: 60_000 }));
    for (const { t } of tables)
      for (let id = 1; id <= 50; id++) {
        assert.ok(t.accept(id, 100_000));
        t.add(chunk(id, 0, false, 1000));
      }
    assert.equal(budget.used, 500 * 1000);
    const ended = () => tables.reduce((n, { events }) => n + events.length, 0);
    // Turn by turn until all have ended (the stall timers fire ~30 ms in, together).
    const perTurn: number[] = [];
    let before = 0;
    const t0 = performance.now();
    while (ended() < 500 && performance.now() - t0 < 5000) {
      await new Promise((r) => setImmediate(r));
      if (ended() > before) perTurn.push(ended() - before);
      before = ended();
    }
    assert.equal(ended(), 500, 'every stalled upload ends');
    assert.ok(Math.max(...perTurn) <= expiries.perTurn, `at most ${expiries.perTurn} per turn: ${perTurn.join(' ')}`);
    assert.ok(perTurn.length >= Math.ceil(500 / expiries.perTurn) - 1, `spread over turns: ${perTurn.join(' ')}`);
    assert.equal(budget.used, 0);
    assert.equal(expiries.pending, 0);
  });

  it('a TurnQueue runs everything in order, perTurn a turn, and keeps no slots of a backlog it works through', async () => {
    const q = new TurnQueue(64);
    const ran: number[] = [];
    let i = 0;
    // A backlog fed faster than it drains for a while (100 a turn for 60 turns), then left to drain.
    for (let turn = 0; turn < 60; turn++) {
      for (let k = 0; k < 100; k++) {
        const n = i++;
        q.add(() => ran.push(n));
      }
      await new Promise((r) => setImmediate(r));
      assert.ok(q.slots <= 2 * q.pending + 1024, `slots ${q.slots} for ${q.pending} pending`);
    }
    while (q.pending > 0) await new Promise((r) => setImmediate(r));
    assert.equal(ran.length, 6000);
    assert.ok(
      ran.every((n, k) => n === k),
      'in order',
    );
    assert.equal(q.slots, 0);
  });

  it('a TurnQueue with a time budget stops a turn once the budget is spent, and still runs one a turn', async () => {
    const spin = (ms: number) => {
      const until = performance.now() + ms;
      while (performance.now() < until);
    };
    const q = new TurnQueue(64, 0.25);
    const ran: number[] = [];
    for (let n = 0; n < 40; n++) q.add(() => (spin(0.1), ran.push(n)));
    const perTurn: number[] = [];
    while (q.pending > 0) {
      const before = ran.length;
      await new Promise((r) => setImmediate(r));
      perTurn.push(ran.length - before);
    }
    // Each takes >= 0.1 ms: the third ends past 0.25 ms, so no turn runs more than three.
    assert.ok(Math.max(...perTurn) <= 3, `at most 3 a turn: ${perTurn.join(' ')}`);
    assert.ok(perTurn.length >= 14, `spread over turns: ${perTurn.join(' ')}`);
    assert.deepEqual(
      ran,
      Array.from({ length: 40 }, (_, k) => k),
    );
    // A budget smaller than one item still runs one a turn: the queue always moves.
    const slow = new TurnQueue(64, 0.01);
    let done = 0;
    for (let n = 0; n < 5; n++) slow.add(() => (spin(0.05), done++));
    for (let turn = 1; turn <= 5; turn++) {
      await new Promise((r) => setImmediate(r));
      assert.equal(done, turn);
    }
  });

  it('bounds the uploads one agent receives at once', () => {
    const { t } = table(new UploadBudget({ capacity: 1 << 20 }), 'a', { maxActive: 2 });
    assert.ok(t.accept(1, 10));
    assert.ok(t.accept(2, 10));
    assert.equal(t.accept(3, 10), false);
    t.drop(1);
    assert.ok(t.accept(3, 10));
  });

  it('default shares: half the memory per tenant with several tenants, max(max_file_size, 1/8) per agent', () => {
    const tokens = [
      { tenant: 'a', token: 'x'.repeat(16) },
      { tenant: 'b', token: 'y'.repeat(16) },
    ];
    assert.deepEqual(uploadLimits({ uploadMemory: 512 << 20, maxFileSize: 64 << 20, tokens }), {
      capacity: 512 << 20,
      perTenant: 256 << 20,
      perAgent: 64 << 20,
    });
    assert.deepEqual(uploadLimits({ uploadMemory: 512 << 20, maxFileSize: 8 << 20, tokens: tokens.slice(0, 1) }), {
      capacity: 512 << 20,
      perTenant: 512 << 20,
      perAgent: 64 << 20,
    });
    assert.deepEqual(uploadLimits({ uploadMemory: 100, maxFileSize: 10, tokens, uploadMemoryPerAgent: 500, uploadMemoryPerTenant: 40 }), {
      capacity: 100,
      perTenant: 40,
      perAgent: 40,
    });
  });

  it('engine slots go round-robin by tenant first: a tenant of many agents gets one turn in two', async () => {
    const s = new FairScheduler(1, 10);
    const order: string[] = [];
    const job = (tag: string) => async () => {
      order.push(tag);
      await new Promise((r) => setTimeout(r, 1));
    };
    const noisyAgents = [{}, {}, {}];
    const quiet = {};
    const all: Promise<void>[] = [s.run('noisy', noisyAgents[0]!, job('first'))];
    for (let round = 0; round < 2; round++) noisyAgents.forEach((a, i) => all.push(s.run('noisy', a, job(`n${i}.${round}`))));
    all.push(s.run('quiet', quiet, job('q0')), s.run('quiet', quiet, job('q1')), s.run('quiet', quiet, job('q2')));
    await Promise.all(all);
    assert.deepEqual(order, ['first', 'n0.0', 'q0', 'n1.0', 'q1', 'n2.0', 'q2', 'n0.1', 'n1.1', 'n2.1']);
  });
});

describe('upload reassembly', () => {
  it('a large upload is joined once: small ones from pieces, large ones into one buffer as they arrive', () => {
    for (const [size, chunkSize] of [
      [3000, 1000],
      [(1 << 20) + 5, 1 << 19],
      [3 << 20, 1 << 20],
      [(2 << 20) + 17, 300_000],
    ] as const) {
      const budget = new UploadBudget({ capacity: 64 << 20 });
      const { t } = table(budget, 'a');
      const content = Buffer.alloc(size);
      for (let i = 0; i < size; i++) content[i] = (i * 31 + (i >> 11)) & 0xff;
      assert.ok(t.accept(1, size));
      let done;
      for (let off = 0, idx = 0; off < size; off += chunkSize, idx++) {
        const part = content.subarray(off, Math.min(size, off + chunkSize));
        done = t.add(decodeChunk(encodeChunk(1, idx, off + part.length >= size, part), 1 << 20));
        if (!done) assert.equal(budget.used, off + part.length, 'held: the bytes received so far');
      }
      assert.ok(done && done.content.equals(content), `size ${size} in chunks of ${chunkSize}`);
      done.release();
      assert.equal(budget.used, 0);
    }
  });
});
