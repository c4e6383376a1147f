/**
 * Scheduled scan jobs: slots from `scan_schedule` (src/config/scan-schedule.ts), each agent
 * starting at its own offset inside the spread, derived from its agent id: a hundred clones of
 * one template (each with its own id) start at a hundred different moments, and one agent starts
 * at the same moment after every restart.
 *
 * Slots: without `at`, every `every` from the Unix epoch (UTC); with `at`, local HH:MM on the
 * days whose number since Monday 2024-01-01 (local calendar) is a multiple of `every` in days.
 * The last slot handled is kept in <state_dir>/scan-schedule.json, so a restart never runs a
 * slot twice, and slots missed while the agent was down run once (not once each), one `offset`
 * (at least a minute) after the start: a farm booting together catches up spread out too.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describeError } from '../errors.js';
import { logger } from '../log.js';
import { effectiveSpread, type ScanSchedule } from '../config/scan-schedule.js';

export const SCHEDULE_STATE_FILE = 'scan-schedule.json';
const DAY = 86_400_000;
/** Re-plan at least this often: a reload may change the schedule; a suspended VM's clock jumps. */
const RECHECK_MS = 60_000;
const MIN_CATCH_UP_MS = 60_000;
const EPOCH_DAY = { y: 2024, m: 0, d: 1 };

/** This agent's start offset in [0, spread): SHA-256 of its id, not Math.random, so it is stable. */
export function spreadOffset(agentId: string, spreadMs: number): number {
  if (spreadMs <= 0) return 0;
  const h = createHash('sha256').update(`lightagent scan spread\0${agentId}`).digest();
  return Math.floor((h.readUIntBE(0, 6) / 2 ** 48) * spreadMs);
}

function localDayNumber(t: number): number {
  const d = new Date(t);
  return Math.round((Date.UTC(d.getFullYear(), d.getMonth(), d.getDate()) - Date.UTC(EPOCH_DAY.y, EPOCH_DAY.m, EPOCH_DAY.d)) / DAY);
}

function localStart(day: number, at: string): number {
  const [hh, mm] = at.split(':').map(Number) as [number, number];
  return new Date(EPOCH_DAY.y, EPOCH_DAY.m, EPOCH_DAY.d + day, hh, mm).getTime();
}

/** The start of the latest slot at or before `t`. */
export function slotAtOrBefore(s: ScanSchedule, t: number): number {
  if (s.at === undefined) return Math.floor(t / s.every) * s.every;
  const n = Math.round(s.every / DAY);
  const today = localDayNumber(t);
  let day = today - (((today % n) + n) % n);
  if (localStart(day, s.at) > t) day -= n;
  return localStart(day, s.at);
}

/** The start of the slot after the one starting at `slot`. */
export function slotAfter(s: ScanSchedule, slot: number): number {
  if (s.at === undefined) return slot + s.every;
  return localStart(localDayNumber(slot) + Math.round(s.every / DAY), s.at);
}

export interface SchedulePlan {
  /** When the next job starts (ms since the epoch). */
  runAt: number;
  /** The slot it stands for. */
  slot: number;
  /** A missed slot, run once after the start. */
  catchUp: boolean;
  offsetMs: number;
}

interface StateRecord {
  v: 1;
  schedule: string;
  /** The last slot handled (run, or skipped because a job was running). */
  lastSlot: number;
  lastRunAt?: string;
  lastJob?: string;
}

export interface ScanSchedulerOptions {
  stateDir: string;
  agentId: string;
  /** The schedule of the moment (config, later a policy); undefined: no scheduled scans. */
  schedule(): ScanSchedule | undefined;
  /** Start a job (trigger schedule); throws when one runs already. Returns its id. */
  start(): string;
  now?: () => number;
}

export class ScanScheduler {
  private readonly log = logger('scan-schedule');
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  private planned: (SchedulePlan & { key: string }) | undefined;
  private stopped = false;

  constructor(private readonly o: ScanSchedulerOptions) {
    this.now = o.now ?? Date.now;
  }

  get file(): string {
    return path.join(this.o.stateDir, SCHEDULE_STATE_FILE);
  }

  /** The plan in force (re-made when the schedule changed); undefined without a schedule. */
  plan(): SchedulePlan | undefined {
    const s = this.o.schedule();
    if (!s) return (this.planned = undefined);
    const key = JSON.stringify(s);
    if (this.planned?.key === key) return this.planned;
    const now = this.now();
    const offsetMs = spreadOffset(this.o.agentId, effectiveSpread(s));
    // The latest slot whose start (with this agent's offset) has come.
    const due = slotAtOrBefore(s, now - offsetMs);
    const rec = this.read();
    let p: SchedulePlan;
    if (!rec || rec.schedule !== key) {
      // A new schedule (or the first start): nothing is owed; a farm switched on together does not scan at once.
      this.write({ v: 1, schedule: key, lastSlot: due });
      p = { slot: slotAfter(s, due), runAt: slotAfter(s, due) + offsetMs, catchUp: false, offsetMs };
    } else if (rec.lastSlot < due) {
      p = { slot: due, runAt: now + Math.max(MIN_CATCH_UP_MS, offsetMs), catchUp: true, offsetMs };
      this.log.info('a scheduled scan was missed while the agent was down: it runs once, soon', {
        missedSlot: new Date(due).toISOString(),
        runAt: new Date(p.runAt).toISOString(),
      });
    } else {
      const next = slotAfter(s, Math.max(due, rec.lastSlot));
      p = { slot: next, runAt: next + offsetMs, catchUp: false, offsetMs };
    }
    this.planned = { ...p, key };
    return this.planned;
  }

  /** Run the planned job if its time has come; returns the job id started, if any. */
  tick(): string | undefined {
    const p = this.plan();
    if (!p || this.now() < p.runAt) return undefined;
    const key = this.planned!.key;
    let id: string | undefined;
    try {
      id = this.o.start();
      this.log.info('scheduled scan started', { id, slot: new Date(p.slot).toISOString(), catchUp: p.catchUp });
    } catch (e) {
      this.log.warn('scheduled scan skipped', { slot: new Date(p.slot).toISOString(), ...describeError(e) });
    }
    this.write({ v: 1, schedule: key, lastSlot: p.slot, lastRunAt: new Date(this.now()).toISOString(), ...(id ? { lastJob: id } : {}) });
    this.planned = undefined;
    return id;
  }

  start(): void {
    const loop = () => {
      if (this.stopped) return;
      this.tick();
      const p = this.plan();
      const wait = p ? Math.min(RECHECK_MS, Math.max(1000, p.runAt - this.now())) : RECHECK_MS;
      this.timer = setTimeout(loop, wait);
      this.timer.unref();
    };
    loop();
    const p = this.plan();
    if (p) this.log.info('scheduled scans', { next: new Date(p.runAt).toISOString(), offsetMs: p.offsetMs, catchUp: p.catchUp });
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** The state file is ours, but read as hostile all the same: small, typed, else ignored. */
  private read(): StateRecord | undefined {
    try {
      const st = fs.lstatSync(this.file);
      if (!st.isFile() || st.size > 4096) return undefined;
      const v = JSON.parse(fs.readFileSync(this.file, 'utf8')) as Partial<StateRecord>;
      if (v.v !== 1 || typeof v.schedule !== 'string' || typeof v.lastSlot !== 'number' || !Number.isFinite(v.lastSlot)) return undefined;
      return v as StateRecord;
    } catch {
      return undefined;
    }
  }

  private write(r: StateRecord): void {
    const tmp = `${this.file}.tmp`;
    try {
      fs.writeFileSync(tmp, `${JSON.stringify(r)}\n`, { mode: 0o600 });
      fs.renameSync(tmp, this.file);
    } catch (e) {
      this.log.warn('could not save the scan schedule state (a restart may run a slot again)', { file: this.file, ...describeError(e) });
    }
  }
}
