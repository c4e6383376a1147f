/**
 * The `exclude:` setting: what the agent leaves alone, in one shape that the config file and (later)
 * a policy pushed from the SVM share, validated as a unit. A plain list is the old form and still
 * means paths:
 *
 *   exclude: [/srv/cache, /var/lib/postgresql]          # = exclude: { paths: [...] }
 *   exclude:
 *     paths: [/var/lib/postgresql/**, /srv/build/*.o]   # absolute globs; a path without glob syntax: that file or folder, all of it
 *     extensions: [.log, .tmp]                          # case-insensitive, matched on the end of the file name
 *     processes: [{path: /usr/bin/rsync, children: true}, /usr/sbin/mysqld]
 *     sha256: [<64 hex>]                                # this content is clean whatever the engine says
 *     threats: [PUA.Win.Tool.*]                         # detections of these are reported, not acted on
 *
 * What each kind means on access is in src/scan/exclusions.ts and docs/exclusions.md; the glob
 * syntax in ./glob.ts. Every rule is
 * bounded (count and length) and checked here, so the matcher never sees a rule it cannot compile.
 */
import path from 'node:path';
import * as z from 'zod';
import { expandBraces, GLOB_MAX_ALTERNATIVES } from './glob.js';

/** Limits: a policy is hostile input like a file. */
export const EXCLUDE_LIMITS = Object.freeze({ rules: 4096, pathLength: 4096, extensionLength: 32, threatLength: 256 });

const hasControl = (s: string) => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
};

/** `.` / `..` segments or `//`: such a pattern could never match the kernel's canonical path. */
const unnormalized = (p: string) =>
  p.split('/').some((seg, i, all) => seg === '.' || seg === '..' || (seg === '' && i > 0 && i < all.length - 1));

const pathRule = z
  .string()
  .min(1, 'must not be empty')
  .max(EXCLUDE_LIMITS.pathLength, `at most ${EXCLUDE_LIMITS.pathLength} characters`)
  .superRefine((p, ctx) => {
    if (hasControl(p)) return void ctx.addIssue({ code: 'custom', message: 'must not hold control characters' });
    if (!path.posix.isAbsolute(p) && !path.win32.isAbsolute(p))
      return void ctx.addIssue({ code: 'custom', message: `${JSON.stringify(p)} must be an absolute path or glob, e.g. /srv/build/**` });
    if (path.posix.isAbsolute(p) && unnormalized(p))
      return void ctx.addIssue({ code: 'custom', message: `${JSON.stringify(p)} must be a normalized path (no ".", ".." or "//")` });
    if (expandBraces(p) === undefined)
      ctx.addIssue({
        code: 'custom',
        message: `${JSON.stringify(p)} expands to more than ${GLOB_MAX_ALTERNATIVES} patterns ({a,b} braces)`,
      });
  });

const extensionRule = z
  .string()
  .superRefine((e, ctx) => {
    const ext = e.startsWith('.') ? e : `.${e}`;
    if (ext.length < 2 || ext.length > EXCLUDE_LIMITS.extensionLength || hasControl(ext) || /[/\\*?[\]{}]/.test(ext) || ext.endsWith('.'))
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(e)} is not a file extension (examples: .log, tmp, .tar.gz)` });
  })
  .transform((e) => (e.startsWith('.') ? e : `.${e}`).toLowerCase());

const exePath = z
  .string()
  .min(1, 'must not be empty')
  .max(EXCLUDE_LIMITS.pathLength, `at most ${EXCLUDE_LIMITS.pathLength} characters`)
  .superRefine((p, ctx) => {
    if (hasControl(p)) return void ctx.addIssue({ code: 'custom', message: 'must not hold control characters' });
    if (!path.posix.isAbsolute(p) && !path.win32.isAbsolute(p))
      return void ctx.addIssue({ code: 'custom', message: `${JSON.stringify(p)} must be the absolute path of an executable` });
    if (path.posix.isAbsolute(p) && (unnormalized(p) || p.endsWith('/')))
      ctx.addIssue({
        code: 'custom',
        message: `${JSON.stringify(p)} must be a normalized path to a file (no ".", "..", "//" or trailing "/")`,
      });
  });

const processRule = z
  .union([
    exePath.transform((p) => ({ path: p, children: false })),
    z.object({ path: exePath, children: z.boolean().default(false) }).strict(),
  ])
  .transform((r) => ({ path: r.path, children: r.children }));

const sha256Rule = z
  .string()
  .regex(/^[0-9a-fA-F]{64}$/, 'must be a SHA-256: 64 hexadecimal digits')
  .transform((h) => h.toLowerCase());

const threatRule = z
  .string()
  .min(1, 'must not be empty')
  .max(EXCLUDE_LIMITS.threatLength, `at most ${EXCLUDE_LIMITS.threatLength} characters`)
  .refine((t) => !hasControl(t), 'must not hold control characters');

const list = <T extends z.ZodType>(rule: T) =>
  z.array(rule).max(EXCLUDE_LIMITS.rules, `at most ${EXCLUDE_LIMITS.rules} entries`).default([]);

/** Patterns all `paths` may expand to through their braces, together (each is compiled and tried). */
export const GLOB_MAX_TOTAL = 4096;

const exclusionsObject = z
  .object({
    paths: list(pathRule),
    extensions: list(extensionRule),
    processes: list(processRule),
    sha256: list(sha256Rule),
    threats: list(threatRule),
  })
  .strict()
  .superRefine((ex, ctx) => {
    let total = 0;
    for (const p of ex.paths) total += expandBraces(p)?.length ?? 0;
    if (total > GLOB_MAX_TOTAL)
      ctx.addIssue({
        code: 'custom',
        path: ['paths'],
        message: `expand to ${total} patterns with their braces; at most ${GLOB_MAX_TOTAL}`,
      });
  });

/** `exclude:` in the agent's config (and, later, in a policy): a list of paths, or the full mapping. */
export const exclusionsSchema = z.preprocess((v) => (Array.isArray(v) ? { paths: v } : v), exclusionsObject);

export type ExclusionsConfig = z.output<typeof exclusionsObject>;

/** Nothing excluded. Frozen, lists included: copy it before changing anything. */
export const NO_EXCLUSIONS: ExclusionsConfig = Object.freeze({
  paths: Object.freeze([]) as unknown as string[],
  extensions: Object.freeze([]) as unknown as string[],
  processes: Object.freeze([]) as unknown as ExclusionsConfig['processes'],
  sha256: Object.freeze([]) as unknown as string[],
  threats: Object.freeze([]) as unknown as string[],
});
