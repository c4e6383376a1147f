/**
 * Config files (YAML or JSON) validated by zod, every problem reported at once with its key path.
 * Sizes and durations are human (`64 MiB`, `2s`): use `size()` and `duration()` in schemas.
 */
import fs from 'node:fs';
import YAML from 'yaml';
import * as z from 'zod';
import { ConfigError } from '../errors.js';
import { parseDuration, parseSize } from './units.js';

/** A size setting: a number of bytes or a string like `64 MiB`; parsed to bytes. */
export const size = () =>
  z.union([z.number(), z.string()]).transform((v, ctx) => {
    const n = parseSize(v);
    if (n === undefined) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a size (examples: 1048576, "64 MiB", "1.5 GB")` });
      return z.NEVER;
    }
    return n;
  });

/** A duration setting: a number of seconds or a string like `2s`, `500ms`; parsed to milliseconds. */
export const duration = () =>
  z.union([z.number(), z.string()]).transform((v, ctx) => {
    const n = parseDuration(v);
    if (n === undefined) {
      ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not a duration (examples: 2, "2s", "500ms", "5m")` });
      return z.NEVER;
    }
    return n;
  });

/** Read a YAML or JSON file into plain data. Errors name the file. */
export function readConfigFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [`cannot read the file: ${(err as Error).message}`]);
  }
  if (text.length > 1024 * 1024) throw new ConfigError(file, ['the file is larger than 1 MiB; is it really a config file?']);
  let doc: YAML.Document.Parsed;
  try {
    // logLevel silent: the yaml package would print warnings on its own (process warnings on
    // stderr); they are collected below and reported as errors naming the file instead.
    doc = YAML.parseDocument(text, { logLevel: 'silent' });
  } catch (err) {
    throw new ConfigError(file, [`not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`]);
  }
  const problems = [...doc.errors, ...doc.warnings].map((e) => `not valid YAML or JSON: ${e.message.split('\n')[0]}`);
  if (problems.length > 0) throw new ConfigError(file, problems);
  try {
    return (doc.toJS({ maxAliasCount: 100 }) as unknown) ?? {};
  } catch (err) {
    throw new ConfigError(file, [`not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`]);
  }
}

/** Validate `raw` against `schema`; on failure throw one ConfigError listing every issue with its key path. */
export function parseConfig<S extends z.ZodType>(schema: S, raw: unknown, source: string): z.output<S> {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const issues = r.error.issues.map((i) => {
    const key = i.path.length ? i.path.map(String).join('.') : '(top level)';
    return `${key}: ${i.message}`;
  });
  throw new ConfigError(source, issues);
}

/** Set `obj[path]` (dotted) when `value` is defined: for flags and environment overrides. */
export function override(obj: Record<string, unknown>, dotted: string, value: unknown): void {
  if (value === undefined) return;
  const parts = dotted.split('.');
  let cur: Record<string, unknown> = obj;
  for (const p of parts.slice(0, -1)) {
    if (typeof cur[p] !== 'object' || cur[p] === null) cur[p] = {};
    cur = cur[p] as Record<string, unknown>;
  }
  cur[parts.at(-1)!] = value;
}
