/**
 * A scan job report (feature scan-command) read back from the inventory's file or Redis: checked
 * field by field like the rest of a stored row; anything else is dropped (undefined).
 */
import { SCAN_COMMAND_LIMITS, type ScanJobReport } from '../protocol/index.js';

const TRIGGERS = new Set(['manual', 'schedule', 'svm']);
const STATES = new Set(['running', 'done', 'cancelled', 'failed', 'refused']);
const JOB_ID = /^[A-Za-z0-9._-]{1,64}$/;
const CODE = /^[A-Z0-9_]{1,64}$/;
const count = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const time = (v: unknown): v is string => typeof v === 'string' && v.length <= 64 && Number.isFinite(Date.parse(v));

export function parseScanJobReport(v: unknown): ScanJobReport | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const ok =
    typeof o.id === 'string' &&
    o.id.length <= SCAN_COMMAND_LIMITS.maxId &&
    JOB_ID.test(o.id) &&
    typeof o.trigger === 'string' &&
    TRIGGERS.has(o.trigger) &&
    typeof o.state === 'string' &&
    STATES.has(o.state) &&
    time(o.startedAt) &&
    (o.finishedAt === undefined || time(o.finishedAt)) &&
    count(o.seen) &&
    count(o.scanned) &&
    count(o.skipped) &&
    count(o.infected) &&
    count(o.errors) &&
    (o.code === undefined || (typeof o.code === 'string' && CODE.test(o.code)));
  if (!ok) return undefined;
  return {
    id: o.id as string,
    trigger: o.trigger as ScanJobReport['trigger'],
    state: o.state as ScanJobReport['state'],
    startedAt: o.startedAt as string,
    ...(o.finishedAt !== undefined ? { finishedAt: o.finishedAt as string } : {}),
    seen: o.seen as number,
    scanned: o.scanned as number,
    skipped: o.skipped as number,
    infected: o.infected as number,
    errors: o.errors as number,
    ...(o.code !== undefined ? { code: o.code as string } : {}),
  };
}
