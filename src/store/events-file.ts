/**
 * The events file: recent detections and denied accesses, one JSON object a line, in
 * <state_dir>/events.jsonl, for `lightagent events`. Bounded: rotated to events.jsonl.1 when it
 * passes `maxBytes` (one old file kept), each line at most MAX_LINE bytes (long strings cut),
 * at most MAX_PENDING lines waiting for the disk (more are counted and dropped: a flood of
 * denials must not grow memory). Writes are appended in order, off the decision path.
 */
import fs from 'node:fs';
import path from 'node:path';

/** A process as the agent records it: src/processes/attribution.ts fills these in. */
export interface ProcessIdentity {
  pid: number;
  exe?: string | undefined;
  cmdline?: string | undefined;
  uid?: number | undefined;
  user?: string | undefined;
  /** Clock ticks after boot (/proc/PID/stat field 22): pid + start is the process's identity. */
  startTicks?: number | undefined;
}

export interface Attribution extends ProcessIdentity {
  ppid?: number | undefined;
  /** Parent, grandparent, great-grandparent (up to 3), nearest first. */
  parents: ProcessIdentity[];
  /** The process had exited when it was attributed (facts come from the process table). */
  exited?: boolean | undefined;
  /** Where the facts came from. */
  source: 'proc' | 'table' | 'none';
}

export const EVENTS_FILE = 'events.jsonl';
export const MAX_LINE = 16 * 1024;
const MAX_PENDING = 1000;
const MAX_STRING = 2048;

export interface AgentEvent {
  time: string;
  kind: 'detection' | 'denied';
  path: string;
  threat?: string | undefined;
  sha256?: string | undefined;
  /** detection: denied | quarantined | reported | killed */
  action?: string | undefined;
  /** denied: why (no verdict within the deadline, SVM unavailable...) */
  reason?: string | undefined;
  access?: 'open' | 'exec' | 'close-write' | undefined;
  process?: Attribution | undefined;
  /** What on_detect did to the process: killed, spared (why), failed (why). */
  response?: string | undefined;
}

export function eventsFilePath(stateDir: string): string {
  return path.join(stateDir, EVENTS_FILE);
}

export class EventsFile {
  private queue: string[] = [];
  private writing: Promise<void> | undefined;
  private size: number;
  dropped = 0;
  written = 0;

  constructor(
    readonly file: string,
    private readonly maxBytes = 4 * 1024 * 1024,
  ) {
    try {
      this.size = fs.statSync(file).size;
    } catch {
      this.size = 0;
    }
  }

  append(e: AgentEvent): void {
    if (this.queue.length >= MAX_PENDING) {
      this.dropped++;
      return;
    }
    this.queue.push(encodeLine(e));
    this.writing ??= this.drain();
  }

  /** Resolves when everything queued so far is on disk (or failed). */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const items = this.queue.splice(0, 256);
        const chunk = items.join('');
        const bytes = Buffer.byteLength(chunk);
        if (this.size > 0 && this.size + bytes > this.maxBytes) {
          await fs.promises.rename(this.file, `${this.file}.1`).catch(() => undefined);
          this.size = 0;
        }
        await fs.promises.appendFile(this.file, chunk, { mode: 0o600 });
        this.size += bytes;
        this.written += items.length;
      }
    } catch {
      // a full or read-only disk: the log keeps the detection; the events file is a convenience
      this.dropped += this.queue.length;
      this.queue = [];
    } finally {
      this.writing = undefined;
    }
  }
}

/** One JSON line, at most MAX_LINE bytes: long strings are cut first, then the parent chain goes. */
export function encodeLine(e: AgentEvent): string {
  let line = JSON.stringify(e, (_k, v: unknown) => (typeof v === 'string' && v.length > MAX_STRING ? `${v.slice(0, MAX_STRING)}…` : v));
  if (Buffer.byteLength(line) > MAX_LINE && e.process)
    line = JSON.stringify({
      ...e,
      process: { pid: e.process.pid, exe: e.process.exe?.slice(0, 256), parents: [], source: e.process.source },
    });
  if (Buffer.byteLength(line) > MAX_LINE)
    line = JSON.stringify({ time: e.time, kind: e.kind, path: e.path.slice(0, 1024), truncated: true });
  return `${line}\n`;
}

/**
 * The last `limit` events (oldest first), reading at most `maxRead` bytes from the end of the
 * current file and its rotated predecessor. Lines that are not JSON objects are skipped.
 */
export function readRecentEvents(file: string, limit = 50, maxRead = 1024 * 1024): AgentEvent[] {
  const lines: string[] = [];
  for (const f of [file, `${file}.1`]) {
    if (lines.length >= limit) break;
    const tail = readTail(f, maxRead);
    if (tail === undefined) continue;
    const ls = tail.split('\n').filter((l) => l.length > 0);
    lines.unshift(...ls.slice(-(limit - lines.length)));
  }
  return parseLines(lines);
}

export function parseLines(lines: readonly string[]): AgentEvent[] {
  const out: AgentEvent[] = [];
  for (const l of lines) {
    try {
      const v = JSON.parse(l) as unknown;
      if (
        v &&
        typeof v === 'object' &&
        !Array.isArray(v) &&
        typeof (v as AgentEvent).time === 'string' &&
        typeof (v as AgentEvent).path === 'string'
      )
        out.push(v as AgentEvent);
    } catch {
      // a line cut by a crash: skip
    }
  }
  return out;
}

function readTail(file: string, maxRead: number): string | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const start = Math.max(0, size - maxRead);
    const b = Buffer.alloc(size - start);
    const n = fs.readSync(fd, b, 0, b.length, start);
    let s = b.toString('utf8', 0, n);
    if (start > 0) s = s.slice(s.indexOf('\n') + 1); // drop the partial first line
    return s;
  } finally {
    fs.closeSync(fd);
  }
}
