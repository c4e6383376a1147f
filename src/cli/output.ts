/**
 * The only place that writes to the terminal. Commands print results to stdout and problems to
 * stderr through these helpers; everything else logs through src/log.ts.
 */
import { LightagentError } from '../errors.js';

// Nobody reads our output any more (`| head`, a log collector restarted, the parent exited): a
// daemon keeps running rather than dying of an unhandled EPIPE at its next line of output.
for (const stream of [process.stdout, process.stderr])
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
  });

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
