/**
 * Process watchers keep the process table current. One interface, chosen in one place
 * (startProcessWatcher), the mode logged:
 *   connector  the kernel's process events connector (src/platform/linux/proc-connector.ts): every
 *              fork, exec, uid change and exit, as it happens; needs root and CONFIG_PROC_EVENTS
 *   proc-poll  /proc scanned every `pollMs`: new pids are read, missing ones marked exited. A
 *              process that lives shorter than one interval is missed (attribution still reads
 *              /proc live at the time of a detection; only exited writers lose their history)
 * Both seed the table with the processes alive at start. The watcher only informs attribution:
 * when it lags or loses events (a storm), file protection is unaffected.
 */
import { EventEmitter } from 'node:events';
import type net from 'node:net';
import { describeError } from '../errors.js';
import { logger } from '../log.js';
import { readableFdStream } from '../platform/linux/fd-stream.js';
import { closeFd, dupFd } from '../platform/linux/libc.js';
import {
  connectorError,
  drainQueued,
  openProcConnector,
  parseProcDatagram,
  toProcEvents,
  unsubscribe,
  type ProcEvent,
} from '../platform/linux/proc-connector.js';
import { listPids, readProcess, readStat } from '../platform/linux/procfs.js';
import type { ProcessTable } from './process-table.js';

export type ProcessWatcherMode = 'connector' | 'proc-poll';

export interface ProcessWatcher extends EventEmitter<{ events: [ProcEvent[]] }> {
  readonly mode: ProcessWatcherMode;
  /** Counters: events by type, lost (connector overflow), polls. */
  stats(): Record<string, number>;
  /** Stop; always completes, safe to call twice. */
  stop(): Promise<void>;
}

export interface ProcessWatcherOptions {
  table: ProcessTable;
  /** auto: connector, else proc-poll (default). */
  mode?: 'auto' | 'connector' | 'proc-poll';
  /** proc-poll interval (default 1000 ms). */
  pollMs?: number;
  /** Connector: the socket's receive buffer in bytes (default DEFAULT_RCVBUF, 8 MiB; tests make it small). */
  receiveBuffer?: number;
}

/** Apply watcher events to the table. */
export function applyEvents(table: ProcessTable, events: readonly ProcEvent[], counts: Record<string, number>): void {
  for (const e of events) {
    counts[e.type] = (counts[e.type] ?? 0) + (e.type === 'lost' ? e.count : 1);
    switch (e.type) {
      case 'fork':
        table.upsert({ pid: e.pid, ppid: e.ppid, startTicks: e.startTicks });
        break;
      case 'exec':
        // Gone before its /proc could be read: what attribution lacks if it ever wrote something.
        if (!e.info) counts.execGone = (counts.execGone ?? 0) + 1;
        else
          table.upsert({
            pid: e.pid,
            ppid: e.info.ppid,
            startTicks: e.info.startTicks,
            exe: e.info.exe,
            cmdline: e.info.cmdline,
            comm: e.info.comm,
            uid: e.info.uid,
            euid: e.info.euid,
          });
        break;
      case 'uid':
        table.setUid(e.pid, e.uid, e.euid);
        break;
      case 'exit':
        table.exit(e.pid, e.code);
        break;
      case 'lost':
        break;
    }
  }
}

/** Read every live process into the table (start, and after the connector lost events). */
export function seedTable(table: ProcessTable): number {
  let n = 0;
  for (const pid of listPids()) {
    if (n >= table.capacity) break;
    const p = readProcess(pid);
    if (!p) continue;
    table.upsert({ pid, ppid: p.ppid, startTicks: p.startTicks, exe: p.exe, cmdline: p.cmdline, comm: p.comm, uid: p.uid, euid: p.euid });
    n++;
  }
  return n;
}

export async function startProcessWatcher(o: ProcessWatcherOptions): Promise<ProcessWatcher> {
  const log = logger('process-watcher');
  const mode = o.mode ?? 'auto';
  if (mode !== 'proc-poll') {
    try {
      const w = await ConnectorWatcher.start(o);
      log.info('process watcher: kernel process events connector (fork, exec, uid, exit as they happen)', {
        tableCapacity: o.table.capacity,
      });
      return w;
    } catch (e) {
      if (mode === 'connector') throw e;
      log.warn(
        'process events connector not available; FALLING BACK to scanning /proc (short-lived processes between scans are not seen)',
        { pollMs: o.pollMs ?? 1000, ...describeError(e) },
      );
    }
  }
  const w = ProcPollWatcher.start(o);
  if (mode === 'proc-poll') log.info('process watcher: scanning /proc', { pollMs: o.pollMs ?? 1000 });
  return w;
}

/** Datagrams read in one loop turn beyond the one libuv read (a storm still lets the loop turn). */
const DRAIN_PER_TURN = 256;

/**
 * The kernel's process events connector, read on the main thread's event loop: the netlink socket
 * is adopted into a libuv handle (src/platform/linux/fd-stream.ts) and each datagram is turned into
 * events and applied to the table as it is read, an exec's /proc read included. No thread of its
 * own: a worker thread was ~10 MB of RSS for its V8 isolate (docs/processes.md, "Measurements").
 *
 * The watcher keeps its own dup of the socket (`ctl`) and gives the stream another: when the
 * receive buffer overflows the read fails with ENOBUFS and the stream closes its fd, but the
 * socket and its subscription live on in `ctl`; a new stream over a new dup goes on reading what
 * is queued, and the table is re-read from /proc for what was dropped. After each datagram libuv
 * hands over, what else is queued is read at once (DRAIN_PER_TURN).
 */
export class ConnectorWatcher extends EventEmitter<{ events: [ProcEvent[]] }> implements ProcessWatcher {
  readonly mode = 'connector' as const;
  private readonly log = logger('process-watcher');
  private readonly counts: Record<string, number> = { fork: 0, exec: 0, execGone: 0, exit: 0, uid: 0, lost: 0, resyncs: 0 };
  private stream: net.Socket | undefined;
  private stopped = false;

  private constructor(
    private readonly ctl: number,
    private readonly table: ProcessTable,
  ) {
    super();
  }

  static async start(o: ProcessWatcherOptions): Promise<ConnectorWatcher> {
    const ctl = openProcConnector(o.receiveBuffer);
    const w = new ConnectorWatcher(ctl, o.table);
    try {
      w.read();
    } catch (e) {
      unsubscribe(ctl);
      closeFd(ctl);
      throw e;
    }
    // Subscribed first, then seeded: a process that starts in between is in the event stream.
    seedTable(o.table);
    return w;
  }

  /** A stream over a new dup of the socket. Throws a PlatformError (start: the caller falls back to /proc). */
  private read(): void {
    const fd = dupFd(this.ctl, (err) => connectorError('dup', err));
    let s: net.Socket;
    try {
      s = readableFdStream(fd);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    s.on('data', (b: Buffer) => {
      if (this.stopped) return;
      // libuv reads one datagram per loop turn (a read shorter than its buffer ends the turn's
      // reads), so a loop busy judging files would fall behind a storm, and an exec read late
      // finds a short-lived process gone: take what else is queued now, a bounded batch.
      try {
        this.onDatagram(b);
        const r = drainQueued(this.ctl, (buf, len) => this.onDatagram(buf, len), DRAIN_PER_TURN);
        if (r.overflows > 0) this.overflowed(r.overflows);
      } catch (e) {
        this.failed(e);
      }
    });
    s.on('error', (e: NodeJS.ErrnoException) => this.onError(e));
    // The watcher never keeps the agent alive: stop() ends it, and an agent that exits without
    // calling stop() must not hang on it.
    s.unref();
    this.stream = s;
  }

  private onDatagram(b: Buffer, len = b.length): void {
    const raw = parseProcDatagram(b, len);
    if (raw.length === 0) return;
    const events: ProcEvent[] = [];
    for (const r of raw) toProcEvents(r, events);
    if (events.length === 0) return;
    applyEvents(this.table, events, this.counts);
    this.emit('events', events);
  }

  private onError(e: NodeJS.ErrnoException): void {
    this.stream = undefined; // closed, with its dup of the socket
    if (this.stopped) return;
    if (e.code !== 'ENOBUFS') return this.failed(e);
    // The receive buffer overflowed: events were dropped, and the kernel drops every new one
    // until the queue has been read empty. So: read what is queued now (which ends that), then
    // re-read /proc for what was dropped, then read on. A process that starts in between is in
    // both, which the table takes.
    try {
      this.overflowed(1);
      this.read();
    } catch (err) {
      this.failed(err);
    }
  }

  private resync(): void {
    this.counts.resyncs = (this.counts.resyncs ?? 0) + 1;
    this.log.warn('process events were lost (receive buffer overflow); re-reading /proc', { lost: this.counts.lost });
    seedTable(this.table);
  }

  /** An overflow was reported: read the queue empty (which ends it), then re-read /proc. */
  private overflowed(times: number): void {
    const r = drainQueued(this.ctl, (buf, len) => this.onDatagram(buf, len));
    const lost: ProcEvent[] = [{ type: 'lost', count: times + r.overflows }];
    applyEvents(this.table, lost, this.counts);
    this.resync();
    this.emit('events', lost);
  }

  private failed(e: unknown): void {
    this.log.error(
      'process events connector stopped on an error; attribution falls back to reading /proc at detection time',
      describeError(e),
    );
    void this.stop();
  }

  stats(): Record<string, number> {
    return { ...this.counts, ...prefixed(this.table.stats()) };
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    unsubscribe(this.ctl);
    this.stream?.destroy();
    this.stream = undefined;
    closeFd(this.ctl);
  }
}

export class ProcPollWatcher extends EventEmitter<{ events: [ProcEvent[]] }> implements ProcessWatcher {
  readonly mode = 'proc-poll' as const;
  private readonly counts: Record<string, number> = { fork: 0, exec: 0, exit: 0, uid: 0, lost: 0, polls: 0 };
  private readonly timer: NodeJS.Timeout;
  /** pid -> start ticks of what the previous scan saw. */
  private known = new Map<number, number>();

  private constructor(
    private readonly table: ProcessTable,
    pollMs: number,
  ) {
    super();
    this.poll();
    this.timer = setInterval(() => this.poll(), Math.max(100, pollMs));
    this.timer.unref();
  }

  static start(o: ProcessWatcherOptions): ProcPollWatcher {
    return new ProcPollWatcher(o.table, o.pollMs ?? 1000);
  }

  /**
   * One scan: synchronous reads of small /proc files, only for pids not seen before (a steady
   * host of a few hundred processes costs one readdir and one stat read per process per scan).
   */
  private poll(): void {
    this.counts.polls = (this.counts.polls ?? 0) + 1;
    const events: ProcEvent[] = [];
    const now = new Map<number, number>();
    let pids: number[];
    try {
      pids = listPids();
    } catch {
      return;
    }
    for (const pid of pids) {
      if (now.size >= this.table.capacity) break;
      const prev = this.known.get(pid);
      if (prev !== undefined) {
        // One stat read tells a process seen before from a new one that got its pid.
        const st = readStat(pid);
        if (!st) continue;
        if (st.startTicks === prev) {
          now.set(pid, prev);
          continue;
        }
        events.push({ type: 'exit', pid, code: 0 });
      }
      const info = readProcess(pid);
      if (!info) continue;
      now.set(pid, info.startTicks);
      events.push({ type: 'exec', pid, info });
    }
    for (const [pid] of this.known) if (!now.has(pid)) events.push({ type: 'exit', pid, code: 0 });
    this.known = now;
    if (events.length > 0) {
      applyEvents(this.table, events, this.counts);
      this.emit('events', events);
    }
  }

  stats(): Record<string, number> {
    return { ...this.counts, ...prefixed(this.table.stats()) };
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
  }
}

function prefixed(s: object): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(s)) out[`table_${k}`] = v as number;
  return out;
}
