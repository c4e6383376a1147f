/**
 * The only place that writes to the terminal. Commands print results to stdout and problems to
 * stderr through these helpers; everything else logs through src/log.ts.
 */
import { LightagentError } from '../errors.js';

export function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

export function err(text: string): void {
  process.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
}

export function printJson(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

/** Print an error for a person: what happened and what to do. Returns exit code 2. */
export function fail(e: unknown, prefix = 'lightagent'): number {
  if (e instanceof LightagentError) err(`${prefix}: ${e.toUserString()}`);
  else err(`${prefix}: ${(e as Error)?.message ?? String(e)}`);
  return 2;
}

/** Flush stdout before exiting so piped output is never cut. */
export function exitAfterFlush(code: number): void {
  process.stdout.write('', () => process.exit(code));
}
