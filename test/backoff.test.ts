/**
 * Backoff: the bounds every delay stays in, the doubling cap, the ceiling, reset, and that the
 * jitter comes from the injected random source.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Backoff } from '../src/backoff.js';

/** A random source that replays `values` in turn. */
const replay = (...values: number[]) => {
  let i = 0;
  return () => values[i++ % values.length]!;
};

describe('Backoff', () => {
  it('with the top of the jitter range, the delay doubles from min up to max and stays there', () => {
    const b = new Backoff(250, 30_000, () => 1);
    const got = Array.from({ length: 10 }, () => b.next());
    assert.deepEqual(got, [250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]);
    assert.equal(b.attempts, 10);
  });

  it('with the bottom of the jitter range, every delay is min, never 0', () => {
    const b = new Backoff(20, 1000, () => 0);
    for (let i = 0; i < 12; i++) assert.equal(b.next(), 20);
  });

  it('the delay is the random fraction of the cap for that attempt (full jitter)', () => {
    const b = new Backoff(100, 10_000, replay(0.5, 0.5, 0.25, 0.9));
    // caps 100, 200, 400, 800: 0.5 * 100 = 50 is below min and is raised to it
    assert.deepEqual([b.next(), b.next(), b.next(), b.next()], [100, 100, 100, 720]);
  });

  it('with Math.random, every delay is within [min, the cap of its attempt]; they spread out', () => {
    const min = 500;
    const max = 30_000;
    const seen = new Set<number>();
    for (let run = 0; run < 200; run++) {
      const b = new Backoff(min, max);
      for (let attempt = 0; attempt < 12; attempt++) {
        const d = b.next();
        const cap = Math.min(max, min * 2 ** attempt);
        assert.ok(d >= min && d <= cap, `attempt ${attempt}: ${d} ms outside [${min}, ${cap}]`);
        assert.ok(Number.isInteger(d));
        if (attempt === 8) seen.add(d);
      }
    }
    assert.ok(seen.size > 100, `200 clients at the cap chose only ${seen.size} distinct delays`);
  });

  it('reset() starts the doubling again from min', () => {
    const b = new Backoff(1000, 60_000, () => 1);
    b.next();
    b.next();
    assert.equal(b.next(), 4000);
    b.reset();
    assert.equal(b.attempts, 0);
    assert.equal(b.next(), 1000);
    assert.equal(b.next(), 2000);
  });

  it('thousands of attempts neither overflow nor pass max', () => {
    const b = new Backoff(1, 60_000, () => 1);
    for (let i = 0; i < 5000; i++) b.next();
    assert.equal(b.next(), 60_000);
  });

  it('min == max is a fixed delay', () => {
    const b = new Backoff(300, 300, Math.random);
    for (let i = 0; i < 5; i++) assert.equal(b.next(), 300);
  });

  it('a random source out of [0, 1] or NaN cannot push a delay out of bounds', () => {
    const b = new Backoff(10, 80, replay(-3, 7, Number.NaN, Infinity));
    const got = [b.next(), b.next(), b.next(), b.next()];
    assert.deepEqual(got, [10, 20, 40, 80]);
  });

  it('refuses a zero or negative floor, max below min, and non-finite bounds', () => {
    assert.throws(() => new Backoff(0, 1000), RangeError);
    assert.throws(() => new Backoff(-1, 1000), RangeError);
    assert.throws(() => new Backoff(500, 100), RangeError);
    assert.throws(() => new Backoff(Number.NaN, 100), RangeError);
    assert.throws(() => new Backoff(100, Infinity), RangeError);
  });
});
