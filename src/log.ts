/**
 * Logging: winston, JSON lines, named child loggers with key/value fields.
 * Destinations: a size-rotated file (`file`), stderr (`stderr`), or nothing (`silent`, tests).
 * There is no stray console output anywhere else in the code.
 */
import fs from 'node:fs';
import path from 'node:path';
import winston from 'winston';

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';
export interface LogOptions {
  level?: LogLevel;
  /** Path of the JSON-lines log file; rotated at `maxBytes`, keeping `maxFiles` old files. */
  file?: string;
  maxBytes?: number;
  maxFiles?: number;
  /** Also write JSON lines to stderr (daemons in the foreground). */
  stderr?: boolean;
}

export type Logger = winston.Logger;

let root: winston.Logger = winston.createLogger({
  level: 'info',
  silent: true,
  transports: [new winston.transports.Console({ silent: true })],
});

export function configureLogging(opts: LogOptions): Logger {
  const transports: winston.transport[] = [];
  if (opts.file) {
    fs.mkdirSync(path.dirname(opts.file), { recursive: true, mode: 0o750 });
    transports.push(
      new winston.transports.File({
        filename: opts.file,
        maxsize: opts.maxBytes ?? 10 * 1024 * 1024,
        maxFiles: opts.maxFiles ?? 5,
        tailable: true,
      }),
    );
  }
  if (opts.stderr) transports.push(new winston.transports.Stream({ stream: process.stderr }));
  root = winston.createLogger({
    level: opts.level ?? 'info',
    format: winston.format.combine(winston.format.timestamp(), winston.format.errors({ stack: false }), winston.format.json()),
    transports: transports.length ? transports : [new winston.transports.Console({ silent: true })],
    silent: transports.length === 0,
  });
  return root;
}

/**
 * A named child logger; `fields` are added to every line. Resolved at call time, so configure first.
 *
 * A `message` field in the metadata (`log.warn('cannot connect', { code, message: e.message })`,
 * or `describeError(e)` spread in) is written as `error`: winston itself would append it to the
 * line's message ("SVM not reachable at start; protecting by policy until it is no SVM reachable
 * at ..."), and the reader could no longer tell our words from the error's.
 */
export function logger(name: string, fields: Record<string, unknown> = {}): Logger {
  const child = root.child({ component: name, ...fields });
  const log = child.log;
  child.log = function (this: Logger, ...args: unknown[]) {
    const meta = args[2];
    if (
      args.length === 3 &&
      typeof args[1] === 'string' &&
      meta !== null &&
      typeof meta === 'object' &&
      !(meta instanceof Error) &&
      'message' in meta
    ) {
      const { message, ...rest } = meta as Record<string, unknown>;
      args[2] = 'error' in rest ? { ...rest, errorMessage: message } : { ...rest, error: message };
    }
    return (log as (...a: unknown[]) => Logger).apply(this, args);
  } as Logger['log'];
  return child;
}

export async function closeLogging(): Promise<void> {
  const r = root;
  await new Promise<void>((resolve) => {
    r.on('finish', () => resolve());
    r.end();
    setTimeout(resolve, 500).unref();
  });
}
