/**
 * The `scan_schedule:` setting: when the daemon runs a scan job of its protected trees on its own.
 * One shape for the agent's config file and (later) a policy pushed from the SVM:
 *
 *   scan_schedule:
 *     every: 1d        # how often: at least 1h, at most 31d
 *     at: "02:30"      # optional, local time: slots start at HH:MM (for every a whole number of days)
 *     spread: 2h       # optional, default min(1h, every): each agent starts at its own offset in
 *                      # [0, spread), derived from its agent id (stable, different between clones)
 *
 * Slot arithmetic and the offset are in src/scan/scan-schedule.ts; the daemon's step runs it.
 */
import * as z from 'zod';
import { duration } from './load.js';

export const SCAN_SCHEDULE_LIMITS = Object.freeze({
  minEvery: 3_600_000,
  maxEvery: 31 * 86_400_000,
  defaultSpread: 3_600_000,
});

const HHMM = /^([01]\d|2[0-3]):([0-5]\d)$/;

export const scanScheduleSchema = z
  .object({
    every: duration().refine(
      (ms) => ms >= SCAN_SCHEDULE_LIMITS.minEvery && ms <= SCAN_SCHEDULE_LIMITS.maxEvery,
      'must be between 1h and 31d (examples: 1d, 12h, 7d)',
    ),
    at: z
      .string()
      .max(5)
      .refine((s) => HHMM.test(s), 'must be a local time HH:MM, e.g. "02:30"')
      .optional(),
    spread: duration().optional(),
  })
  .strict()
  .superRefine((s, ctx) => {
    if (s.spread !== undefined && s.spread > s.every)
      ctx.addIssue({ code: 'custom', path: ['spread'], message: 'must not be longer than `every`' });
    if (s.at !== undefined && s.every % 86_400_000 !== 0)
      ctx.addIssue({ code: 'custom', path: ['at'], message: 'goes with an `every` of whole days (1d, 7d...)' });
  });

export type ScanSchedule = z.output<typeof scanScheduleSchema>;

/** Validate a `scan_schedule` block from any source (a policy reuses this); every problem at once. */
export function validateScanSchedule(raw: unknown): { ok: true; value: ScanSchedule } | { ok: false; issues: string[] } {
  const r = scanScheduleSchema.safeParse(raw);
  if (r.success) return { ok: true, value: r.data };
  return { ok: false, issues: r.error.issues.map((i) => `scan_schedule${i.path.map((p) => `.${String(p)}`).join('')}: ${i.message}`) };
}

/** The spread in force: as set, else min(1h, every). */
export function effectiveSpread(s: ScanSchedule): number {
  return s.spread ?? Math.min(SCAN_SCHEDULE_LIMITS.defaultSpread, s.every);
}
