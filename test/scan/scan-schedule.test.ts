/**
 * Scheduled scans: the per-agent start offset (deterministic from the agent id, different
 * between clones, inside the spread), the slot arithmetic, and the scheduler against a real
 * state file on a fake clock: no scan owed at the first start, one run per slot, slots missed
 * while down run once after a restart (not once each), never twice.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { validateScanSchedule, type ScanSchedule } from '../../src/config/scan-schedule.js';
import { loadAgentConfig } from '../../src/config/agent.js';
import { SCHEDULE_STATE_FILE, ScanScheduler, slotAfter, slotAtOrBefore, spreadOffset } from '../../src/scan/scan-schedule.js';
import { tempDir } from '../helpers/procs.js';

const H = 3_600_000;
const D = 24 * H;

function sched(raw: unknown): ScanSchedule {
  const v = validateScanSchedule(raw);
  assert.ok(v.ok, JSON.stringify(v));
  return v.value;
}

describe('scan schedule spread', () => {
  it('two agent ids start at different offsets within the spread; one id always at the same', () => {
    const a = spreadOffset('agent-a-0001', 2 * H);
    const b = spreadOffset('agent-b-0002', 2 * H);
    assert.notEqual(a, b);
    for (const x of [a, b]) assert.ok(x >= 0 && x < 2 * H, String(x));
    assert.equal(spreadOffset('agent-a-0001', 2 * H), a, 'deterministic');
    assert.equal(spreadOffset('agent-a-0001', 0), 0);
  });

  it('a hundred clones spread over the hour instead of one minute', () => {
    const minutes = new Set(Array.from({ length: 100 }, (_, i) => Math.floor(spreadOffset(`clone-${i}`, H) / 60_000)));
    // 100 uniform draws over 60 minutes fill ~49 of them on average; all in one minute would be 1.
    assert.ok(minutes.size > 35, `only ${minutes.size} distinct minutes`);
  });
});

describe('scan schedule config', () => {
  it('accepts {every, at?, spread?} and reports every problem at once', () => {
    assert.deepEqual(sched({ every: '1d', at: '02:30', spread: '2h' }), { every: D, at: '02:30', spread: 2 * H });
    const bad = validateScanSchedule({ every: '5m', at: '25:00', spread: 'soon', extra: 1 });
    assert.equal(bad.ok, false);
    const text = bad.ok ? '' : bad.issues.join('\n');
    assert.match(text, /scan_schedule\.every: must be between 1h and 31d/);
    assert.match(text, /scan_schedule\.at: must be a local time HH:MM/);
    assert.match(text, /scan_schedule\.spread: .*not a duration/);
    assert.match(text, /extra/);
    const notDays = validateScanSchedule({ every: '12h', at: '02:00' });
    assert.ok(!notDays.ok && /whole days/.test(notDays.issues.join()));
    const longSpread = validateScanSchedule({ every: '1h', spread: '2h' });
    assert.ok(!longSpread.ok && /spread: must not be longer/.test(longSpread.issues.join()));
  });

  it('is an agent config key', () => {
    const dir = tempDir('la-sched-cfg-');
    const f = path.join(dir, 'agent.yaml');
    fs.writeFileSync(f, 'scan_schedule:\n  every: 7d\n  at: "03:15"\n');
    assert.deepEqual(loadAgentConfig({ file: f, env: {} }).scan_schedule, { every: 7 * D, at: '03:15' });
    fs.writeFileSync(f, 'scan_schedule:\n  every: 1m\n');
    assert.throws(() => loadAgentConfig({ file: f, env: {} }), /scan_schedule\.every/);
  });
});

describe('scan schedule slots', () => {
  it('without `at`: every `every` from the epoch', () => {
    const s = sched({ every: '6h' });
    const t = Date.UTC(2026, 4, 3, 13, 20);
    assert.equal(slotAtOrBefore(s, t), Date.UTC(2026, 4, 3, 12, 0));
    assert.equal(slotAfter(s, slotAtOrBefore(s, t)), Date.UTC(2026, 4, 3, 18, 0));
  });

  it('with `at`: local HH:MM, every n days', () => {
    const s = sched({ every: '1d', at: '02:30' });
    const t = new Date(2026, 4, 3, 1, 0).getTime();
    assert.equal(slotAtOrBefore(s, t), new Date(2026, 4, 2, 2, 30).getTime());
    assert.equal(slotAfter(s, slotAtOrBefore(s, t)), new Date(2026, 4, 3, 2, 30).getTime());
    const weekly = sched({ every: '7d', at: '02:30' });
    const w = slotAtOrBefore(weekly, t);
    assert.equal(slotAfter(weekly, w) - w, 7 * D, 'no DST change in May');
    assert.ok(w <= t && t - w < 7 * D);
  });
});

describe('scan scheduler', () => {
  it('first start owes nothing; one run per slot; missed slots run once after a restart, never twice', () => {
    const stateDir = tempDir('la-sched-');
    const schedule = sched({ every: '1d', spread: '1h' });
    let now = Date.UTC(2026, 4, 3, 10, 0);
    const runs: number[] = [];
    const make = () =>
      new ScanScheduler({
        stateDir,
        agentId: 'agent-under-test',
        schedule: () => schedule,
        start: () => {
          runs.push(now);
          return `job-${runs.length}`;
        },
        now: () => now,
      });
    const offset = spreadOffset('agent-under-test', H);

    let s = make();
    const p = s.plan()!;
    assert.equal(p.catchUp, false, 'a first start owes no scan');
    assert.equal(p.runAt, Date.UTC(2026, 4, 4) + offset);
    assert.equal(s.tick(), undefined);
    now = p.runAt;
    assert.equal(s.tick(), 'job-1');
    assert.equal(s.tick(), undefined, 'once per slot');

    // A restart within the same slot: nothing owed.
    s = make();
    assert.equal(s.plan()!.catchUp, false);
    assert.equal(s.plan()!.runAt, Date.UTC(2026, 4, 5) + offset);

    // Down for three days: the missed slots run once, soon after the start.
    now = Date.UTC(2026, 4, 8, 12, 0);
    s = make();
    const c = s.plan()!;
    assert.equal(c.catchUp, true);
    assert.equal(c.runAt, now + Math.max(60_000, offset));
    now = c.runAt;
    assert.equal(s.tick(), 'job-2');
    s = make();
    assert.equal(s.plan()!.catchUp, false, 'the catch-up is not repeated after another restart');
    assert.equal(s.plan()!.runAt, Date.UTC(2026, 4, 9) + offset);
    assert.equal(runs.length, 2);
    const rec = JSON.parse(fs.readFileSync(path.join(stateDir, SCHEDULE_STATE_FILE), 'utf8')) as { lastJob: string };
    assert.equal(rec.lastJob, 'job-2');
  });

  it('a busy job skips the slot (recorded), a garbage state file counts as a first start', () => {
    const stateDir = tempDir('la-sched-');
    const schedule = sched({ every: '1h', spread: '0s' });
    let now = Date.UTC(2026, 4, 3, 10, 30);
    let attempts = 0;
    const s = new ScanScheduler({
      stateDir,
      agentId: 'x',
      schedule: () => schedule,
      start: () => {
        attempts++;
        throw new Error('busy');
      },
      now: () => now,
    });
    now = s.plan()!.runAt;
    assert.equal(s.tick(), undefined);
    assert.equal(attempts, 1);
    assert.equal(s.plan()!.runAt, Date.UTC(2026, 4, 3, 12, 0), 'on to the next slot');
    fs.writeFileSync(path.join(stateDir, SCHEDULE_STATE_FILE), '{"v":1,"schedule":');
    now += 5 * H;
    const fresh = new ScanScheduler({ stateDir, agentId: 'x', schedule: () => schedule, start: () => 'j', now: () => now });
    assert.equal(fresh.plan()!.catchUp, false);
  });
});
