/**
 * TenantReadGate: while another tenant is active, a tenant past its bytes per event-loop turn has
 * its connections paused, and they are resumed a few per turn, in order, so none is left behind;
 * a tenant alone is held to a larger budget per turn, so a newcomer's frame is read soon.
 * (Its effect on a real SVM under a flood: test/reliability/fair-reads.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReadHolds, TenantReadGate } from '../../src/svm/read-gate.js';

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
  it('pauses every connection of a tenant past its bytes per turn while another is active, and resumes two a turn in order', async () => {
    const g = new TenantReadGate({ bytesPerTurn: 100_000, resumePerTurn: 2, activeMs: 1000 });
    const quiet = new Conn();
    g.account('quiet', quiet, 20_000);
    const noisy = Array.from({ length: 6 }, () => new Conn());
    g.account('noisy', noisy[0]!, 60_000);
    assert.equal(noisy[0]!.paused, false, 'the first frame fits the turn');
    await turn();
    // A new turn: connection 0 is known to the gate but sends nothing in it.
    g.account('noisy', noisy[1]!, 60_000);
    g.account('noisy', noisy[2]!, 60_000);
    assert.deepEqual(
      noisy.map((c) => c.paused),
      [true, true, true, false, false, false],
      'past the share the whole tenant is paused, also the connection that sent nothing this turn',
    );
    for (const c of noisy.slice(3)) g.account('noisy', c, 1_000);
    assert.ok(
      noisy.every((c) => c.paused),
      'a connection of a tenant over its share is paused at its first frame',
    );
    g.account('quiet', quiet, 20_000);
    assert.equal(quiet.paused, false, 'a tenant under its share is never paused');
    assert.equal(g.pausedNow, 6);
    await turn();
    assert.deepEqual(
      noisy.map((c) => c.paused),
      [false, false, true, true, true, true],
      'two resumed per turn, in the order paused',
    );
  });

  it('every paused connection gets its turn, two per turn, the one that went over last', async () => {
    const g = new TenantReadGate({ bytesPerTurn: 100, resumePerTurn: 2, activeMs: 1000 });
    g.account('quiet', new Conn(), 10);
    const noisy = Array.from({ length: 5 }, () => new Conn());
    for (const c of noisy) g.account('noisy', c, 10); // all known, under the share
    g.account('noisy', noisy[2]!, 500); // 2 takes the tenant over
    assert.ok(noisy.every((c) => c.paused));
    const order: number[] = [];
    for (let k = 0; k < 3; k++) {
      await turn();
      noisy.forEach((c, i) => {
        if (!c.paused && !order.includes(i)) order.push(i);
      });
    }
    assert.deepEqual(order, [0, 1, 3, 4, 2]);
    assert.equal(g.pausedNow, 0);
  });

  it("a connection of that tenant silent for activeMs is left running until it sends (the tenant's idle agents keep their place)", () => {
    const g = new TenantReadGate({ bytesPerTurn: 100, resumePerTurn: 1, activeMs: 1000 });
    const now = performance.now();
    const idle = new Conn();
    g.account('noisy', idle, 10, now - 5000); // heard from 5 s ago
    g.account('quiet', new Conn(), 10, now);
    const busy = [new Conn(), new Conn()];
    g.account('noisy', busy[0]!, 50, now);
    g.account('noisy', busy[1]!, 500, now);
    assert.deepEqual(
      busy.map((c) => c.paused),
      [true, true],
    );
    assert.equal(idle.paused, false, 'silent for 5 s: not paused with the others');
    g.account('noisy', idle, 10, now);
    assert.equal(idle.paused, true, 'paused at its first frame while its tenant is over');
  });

  it('holds a tenant alone to aloneBytesPerTurn and resumes all of it at the end of the turn; off is off', async () => {
    const alone = new TenantReadGate({ bytesPerTurn: 1000, aloneBytesPerTurn: 4000, resumePerTurn: 1, activeMs: 1000 });
    const cs = Array.from({ length: 5 }, () => new Conn());
    for (const c of cs) alone.account('only', c, 500); // 2,500 B: past the fair share, under the alone one
    assert.equal(cs.filter((c) => c.paused).length, 0, 'alone, past bytesPerTurn is fine');
    alone.account('only', cs[0]!, 2000); // 4,500 B in this turn
    assert.equal(cs.filter((c) => c.paused).length, 5, 'past aloneBytesPerTurn: every recently heard connection waits for the next turn');
    await turn();
    assert.equal(cs.filter((c) => c.paused).length, 0, 'nobody else active: all resumed at once, not resumePerTurn');
    // A newcomer (its frame read in the turn after) now meets the fair share.
    alone.account('only', cs[1]!, 900);
    alone.account('new', new Conn(), 10);
    alone.account('only', cs[2]!, 900);
    assert.equal(cs.filter((c) => c.paused).length, 5, 'with another tenant active, past bytesPerTurn');
    const dflt = new TenantReadGate({ bytesPerTurn: 1000, resumePerTurn: 1, activeMs: 1000 });
    const d = new Conn();
    dflt.account('only', d, 4000);
    assert.equal(d.pauses, 0, 'the default for alone is 4 x bytesPerTurn');
    dflt.account('only', d, 1);
    assert.equal(d.pauses, 1);
    const c = new Conn();
    const off = new TenantReadGate({ bytesPerTurn: 0, aloneBytesPerTurn: 10, resumePerTurn: 1, activeMs: 1000 });
    off.account('q', new Conn(), 1);
    for (let i = 0; i < 10; i++) off.account('n', c, 1 << 20);
    for (let i = 0; i < 10; i++) off.account('q', c, 1 << 20);
    assert.equal(c.pauses, 0, 'fair_read_bytes 0 turns the whole gate off');
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

describe('ReadHolds', () => {
  it('pauses at the first hold and reads again only when the last one is released', () => {
    const c = new Conn();
    const h = new ReadHolds(c);
    h.hold('busy');
    assert.ok(c.paused);
    h.hold('turn');
    assert.equal(c.pauses, 1, 'paused once for both');
    assert.equal(h.release('turn'), false);
    assert.ok(c.paused, 'the read gate cannot resume a connection held after a busy refusal');
    assert.equal(h.release('turn'), false, 'releasing what is not held changes nothing');
    assert.ok(c.paused);
    assert.equal(h.release('busy'), true);
    assert.ok(!c.paused);
    assert.equal(h.release('busy'), false);
    assert.ok(!h.holding);
  });
});
