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
import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { describeError, PlatformError } from '../errors.js';
import { logger } from '../log.js';
import { closeFd } from '../platform/linux/libc.js';
import { connectorWakePipe, type ConnectorMessage, type ConnectorWorkerData, type ProcEvent } from '../platform/linux/proc-connector.js';
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
  /** Connector batch interval (default 20 ms). */
  batchMs?: number;
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
        if (e.info)
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

const STOP_GRACE_MS = 2000;

export class ConnectorWatcher extends EventEmitter<{ events: [ProcEvent[]] }> implements ProcessWatcher {
  readonly mode = 'connector' as const;
  private readonly log = logger('process-watcher');
  private readonly counts: Record<string, number> = { fork: 0, exec: 0, exit: 0, uid: 0, lost: 0, resyncs: 0 };
  private stopped: Promise<void> | undefined;
  private gone = false;
  private readonly exited: Promise<void>;

  private constructor(
    private readonly worker: Worker,
    private readonly wake: [number, number],
    private readonly table: ProcessTable,
  ) {
    super();
    this.exited = new Promise((r) =>
      worker.once('exit', () => {
        this.gone = true;
        closeFd(wake[0]);
        closeFd(wake[1]);
        r();
      }),
    );
  }

  static async start(o: ProcessWatcherOptions): Promise<ConnectorWatcher> {
    const wake = connectorWakePipe();
    const data: ConnectorWorkerData = { procConnector: true, wakeR: wake[0], batchMs: o.batchMs ?? 20 };
    const worker = new Worker(new URL('../platform/linux/proc-connector.js', import.meta.url), { workerData: data });
    const w = new ConnectorWatcher(worker, wake, o.table);
    await new Promise<void>((resolve, reject) => {
      const onMsg = (m: ConnectorMessage) => {
        if (m.t === 'ready') {
          worker.off('message', onMsg);
          worker.on('message', (x: ConnectorMessage) => w.onMessage(x));
          resolve();
        } else if (m.t === 'error') {
          worker.off('message', onMsg);
          reject(new PlatformError(m.code, m.message, m.hint));
        }
      };
      worker.on('message', onMsg);
      worker.once('error', reject);
      void w.exited.then(() =>
        reject(
          new PlatformError(
            'LA_ERR_PROC_CONNECTOR',
            'the process events worker exited before it was ready',
            'see the log above; the agent scans /proc instead',
          ),
        ),
      );
    });
    worker.on('error', (e) => w.log.error('process events worker failed', { message: e.message }));
    // The worker never keeps the agent alive: stop() ends it, and an agent that exits without
    // calling stop() must not hang on it. (After the listeners: adding one re-refs the port.)
    worker.unref();
    // Subscribed first, then seeded: a process that starts in between is in the event stream.
    seedTable(o.table);
    return w;
  }

  private onMessage(m: ConnectorMessage): void {
    if (m.t === 'events') {
      applyEvents(this.table, m.events, this.counts);
      if (m.events.some((e) => e.type === 'lost')) {
        // Events were lost: resync from /proc so the table holds every live process again.
        this.counts.resyncs = (this.counts.resyncs ?? 0) + 1;
        this.log.warn('process events were lost (receive buffer overflow); re-reading /proc', { lost: this.counts.lost });
        seedTable(this.table);
      }
      this.emit('events', m.events);
    } else if (m.t === 'error' && !this.stopped) {
      this.log.error('process events worker stopped on an error; attribution falls back to reading /proc at detection time', {
        code: m.code,
        message: m.message,
      });
    }
  }

  stats(): Record<string, number> {
    return { ...this.counts, ...prefixed(this.table.stats()) };
  }

  stop(): Promise<void> {
    this.stopped ??= (async () => {
      if (this.gone) return;
      try {
        fs.writeSync(this.wake[1], Buffer.from([1]));
      } catch {
        // full pipe: the worker is awake anyway
      }
      const t = setTimeout(() => void this.worker.terminate(), STOP_GRACE_MS);
      await this.exited;
      clearTimeout(t);
    })();
    return this.stopped;
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
