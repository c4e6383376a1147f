/**
 * TenantReadGate: while another tenant is active, a tenant past its bytes per event-loop turn has
 * its connections paused, and they are resumed a few per turn, in order, so none is left behind.
 * (Its effect on a real SVM under a flood: test/reliability/fair-reads.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TenantReadGate } from '../../src/svm/read-gate.js';

class Conn {
  paused = false;
  pauses = 0;
  pause(): void {
    this.paused = true;
    this.pauses++;
  }
  resume(): void {
    this.paused = false;
  }
}

const turn = () => new Promise((r) => setImmediate(r));

describe('TenantReadGate', () => {
  it('pauses a tenant past its bytes per turn while another is active, and resumes two a turn in order', async () => {
    const g = new TenantReadGate({ bytesPerTurn: 100_000, resumePerTurn: 2, activeMs: 1000 });
    const quiet = new Conn();
    g.account('quiet', quiet, 20_000);
    const noisy = Array.from({ length: 6 }, () => new Conn());
    for (const c of noisy) g.account('noisy', c, 60_000);
    assert.deepEqual(
      noisy.map((c) => c.paused),
      [false, true, true, true, true, true],
      'the first frame fits the turn; every connection past it is paused',
    );
    g.account('quiet', quiet, 20_000);
    assert.equal(quiet.paused, false, 'a tenant under its share is never paused');
    assert.equal(g.pausedNow, 5);
    await turn();
    assert.deepEqual(
      noisy.map((c) => c.paused),
      [false, false, false, true, true, true],
    );
    await turn();
    await turn();
    assert.ok(
      noisy.every((c) => !c.paused),
      'every paused connection gets its turn',
    );
    assert.equal(g.pausedNow, 0);
  });

  it('never pauses a tenant alone, nor with the gate off', () => {
    const alone = new TenantReadGate({ bytesPerTurn: 1000, resumePerTurn: 1, activeMs: 1000 });
    const c = new Conn();
    for (let i = 0; i < 10; i++) alone.account('only', c, 1 << 20);
    assert.equal(c.pauses, 0);
    const off = new TenantReadGate({ bytesPerTurn: 0, resumePerTurn: 1, activeMs: 1000 });
    off.account('q', new Conn(), 1);
    for (let i = 0; i < 10; i++) off.account('n', c, 1 << 20);
    assert.equal(c.pauses, 0);
  });

  it('another tenant silent for activeMs no longer counts: the line is resumed whole', async () => {
    const g = new TenantReadGate({ bytesPerTurn: 1000, resumePerTurn: 0, activeMs: 50 });
    g.account('quiet', new Conn(), 10, performance.now() - 10);
    const cs = Array.from({ length: 4 }, () => new Conn());
    for (const c of cs) g.account('noisy', c, 5000);
    assert.equal(cs.filter((c) => c.paused).length, 4);
    await turn();
    assert.equal(cs.filter((c) => c.paused).length, 4, 'none resumed while the other tenant is active');
    await new Promise((r) => setTimeout(r, 80));
    await turn();
    assert.equal(cs.filter((c) => c.paused).length, 0);
  });

  it('a closed connection is forgotten', () => {
    const g = new TenantReadGate({ bytesPerTurn: 10, resumePerTurn: 1, activeMs: 1000 });
    g.account('quiet', new Conn(), 1);
    const c = new Conn();
    g.account('noisy', c, 100);
    assert.equal(g.pausedNow, 1);
    g.forget(c);
    assert.equal(g.pausedNow, 0);
  });
});
