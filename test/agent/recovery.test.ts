/**
 * The recovery step's supervisor (src/agent/steps/recovery.ts) on mocked timers: a stopped backend
 * is restarted at once, then after 1, 2, 4... s up to 60 s apart while restarts fail; a success
 * starts the sequence over; stop() cancels a pending retry.
 */
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { RecoverySupervisor } from '../../src/agent/steps/recovery.js';
import { logger } from '../../src/log.js';

/** Let the restart promise and its .then run (they are microtasks; the timers are mocked). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

describe('RecoverySupervisor', () => {
  let now = 0;
  let calls: number[];
  let failures: number;
  let restarted: number;
  let supervisor: RecoverySupervisor;

  beforeEach(() => {
    mock.timers.enable({ apis: ['setTimeout'] });
    now = 0;
    calls = [];
    restarted = 0;
    supervisor = new RecoverySupervisor(
      async () => {
        calls.push(now);
        if (failures > 0) {
          failures--;
          throw new Error('fanotify_init: EMFILE');
        }
      },
      () => restarted++,
      logger('test-recovery'),
    );
  });
  afterEach(() => {
    supervisor.stop();
    mock.timers.reset();
  });

  /** Advance the mocked clock in 250 ms steps, letting each step's restarts settle. */
  async function advance(ms: number): Promise<void> {
    const end = now + ms;
    while (now < end) {
      const step = Math.min(end - now, 250);
      now += step;
      mock.timers.tick(step);
      await settle();
    }
  }

  it('restarts at once, then after 1, 2, 4... s, at most 60 s apart, while restarts fail', async () => {
    failures = 9;
    supervisor.kick();
    mock.timers.tick(0);
    await settle();
    await advance(5 * 60_000);
    assert.deepEqual(calls, [0, 1000, 3000, 7000, 15_000, 31_000, 63_000, 123_000, 183_000, 243_000]);
    const gaps = calls.slice(1).map((t, i) => t - calls[i]!);
    assert.deepEqual(gaps, [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000, 60_000]);
    assert.equal(restarted, 1, 'the tenth attempt succeeded');
    await advance(120_000);
    assert.equal(calls.length, 10, 'nothing more once it runs');
  });

  it('starts the sequence over after a success, and a kick while one is pending adds nothing', async () => {
    failures = 2;
    supervisor.kick();
    supervisor.kick();
    mock.timers.tick(0);
    await settle();
    supervisor.kick(); // a retry is scheduled: no second one
    await advance(10_000);
    assert.deepEqual(calls, [0, 1000, 3000]);
    assert.equal(restarted, 1);
    failures = 1;
    const t = now;
    supervisor.kick();
    mock.timers.tick(0);
    await settle();
    await advance(10_000);
    assert.deepEqual(
      calls.slice(3).map((c) => c - t),
      [0, 1000],
      'back to 1 s after a success',
    );
    assert.equal(restarted, 2);
  });

  it('stop() cancels a pending retry and later kicks', async () => {
    failures = 100;
    supervisor.kick();
    mock.timers.tick(0);
    await settle();
    assert.equal(calls.length, 1);
    supervisor.stop();
    await advance(120_000);
    supervisor.kick();
    await advance(120_000);
    assert.equal(calls.length, 1);
    assert.equal(restarted, 0);
  });
});
