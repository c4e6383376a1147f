/**
 * Hop timestamps of the on-access round trip, for bench/onaccess/rtt-breakdown.ts (docs/benchmarks.md,
 * "Where an SVM round trip goes"). Off unless LIGHTAGENT_RTT_TRACE names a directory: then each
 * thread of each process (agent, its gate worker, the SVM) records `[hop, key, microseconds]` on
 * the process-wide monotonic clock (comparable across threads and processes on one machine) and
 * appends them to `<dir>/<pid>-<thread>.jsonl` every 500 ms and at exit. Off, a call site costs one
 * test of a constant boolean: `if (RTT_TRACE) rttMark(...)`. Garbage collections of a traced
 * thread are recorded too: `gc.start` and `gc.end` with the collection's kind as the key.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PerformanceObserver, performance } from 'node:perf_hooks';
import { threadId } from 'node:worker_threads';

const dir = process.env.LIGHTAGENT_RTT_TRACE;
export const RTT_TRACE: boolean = !!dir;

let marks: Array<[string, string, number]> = [];
let timer: NodeJS.Timeout | undefined;

function flush(): void {
  if (marks.length === 0) return;
  const out = marks;
  marks = [];
  try {
    fs.appendFileSync(path.join(dir!, `${process.pid}-${threadId}.jsonl`), out.map((m) => JSON.stringify(m)).join('\n') + '\n');
  } catch {
    /* a trace only */
  }
}

/** Microseconds on CLOCK_MONOTONIC. */
export function rttNow(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Record that `key` (a path, a SHA-256) passed `hop` at `us` (default now). Call only under `if (RTT_TRACE)`. */
export function rttMark(hop: string, key: string, us: number = rttNow()): void {
  marks.push([hop, key, us]);
  if (!timer) start();
}

function start(): void {
  try {
    fs.mkdirSync(dir!, { recursive: true });
  } catch {
    /* a trace only: flush() fails quietly too */
  }
  timer = setInterval(flush, 500);
  timer.unref();
  process.once('exit', flush);
  // performance.now() and hrtime share one clock; the offset turns GC entries into marks.
  const offset = rttNow() - performance.now() * 1000;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = String((e as unknown as { detail?: { kind?: number } }).detail?.kind ?? '');
      marks.push(
        ['gc.start', kind, Math.round(offset + e.startTime * 1000)],
        ['gc.end', kind, Math.round(offset + (e.startTime + e.duration) * 1000)],
      );
    }
  }).observe({ entryTypes: ['gc'] });
}
