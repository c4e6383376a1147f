/**
 * ProcessMonitor: the agent's process side in one object — the watcher that keeps the bounded
 * process table current, attribution (who did it), the on_detect response and the events file.
 * OnAccessHandler sees it through ProcessHooks and calls it only when it denies an access or
 * finds a threat: clean opens never touch it.
 */
import { describeError } from '../errors.js';
import { logger } from '../log.js';
import { startProcessWatcher, type ProcessWatcher } from './process-watcher.js';
import { WindowsProcessWatcher, type NewProcess, type SnapshotSource } from '../platform/windows/processes.js';
import type { Attribution } from '../store/events-file.js';
import { Attributor } from './attribution.js';
import type { AgentConfig } from '../config/agent.js';
import type { Detection } from '../store/detections.js';
import { EventsFile, eventsFilePath } from '../store/events-file.js';
import { ProcessTable } from './process-table.js';
import { ProcessResponse, type ResponseOutcome, type ResponseReason } from './response.js';

/** What OnAccessHandler may ask about processes. */
export interface ProcessHooks {
  /** Who is `pid` now (with its parent chain). Only on deny/detection paths. */
  attribute(pid: number): Attribution;
  /** A process wrote an infected file (close-write), runs an infected image, or (Windows) started from one: on_detect. */
  respond(who: Attribution, why: ResponseReason, file: string): ResponseOutcome;
  /** An access was denied without a verdict (policy): record it, with its process. */
  denied(ev: { pid: number; path: string; kind: 'open' | 'exec' }, reason: string): void;
}

export interface ProcessMonitorSettings {
  onDetect: AgentConfig['on_detect'];
  protectedProcesses: string[];
  watcher: 'auto' | 'connector' | 'proc-poll' | 'off';
  tableEntries: number;
  pollMs: number;
  eventsFile: string;
  eventsMaxBytes: number;
  /** Windows: where process snapshots come from (default Toolhelp; a fake in tests on Linux). */
  windowsSource?: SnapshotSource | undefined;
  /** Windows snapshot period (default 500 ms). */
  windowsIntervalMs?: number | undefined;
  /** Which platform's watcher to run (default process.platform; tests). */
  platform?: NodeJS.Platform | undefined;
}

export function processSettings(cfg: AgentConfig): ProcessMonitorSettings {
  return {
    onDetect: cfg.on_detect,
    protectedProcesses: cfg.protected_processes,
    watcher: cfg.processes.watcher,
    tableEntries: cfg.processes.table_entries,
    pollMs: cfg.processes.poll_interval,
    eventsFile: eventsFilePath(cfg.state_dir),
    eventsMaxBytes: cfg.processes.events_file_size,
  };
}

export class ProcessMonitor implements ProcessHooks {
  private readonly log = logger('processes');
  readonly table: ProcessTable;
  readonly attributor: Attributor;
  readonly response: ProcessResponse;
  readonly events: EventsFile;
  private watcher: ProcessWatcher | undefined;
  /** Windows: Toolhelp snapshot diffing; new processes' images are checked (checkNewProcesses). */
  private win: WindowsProcessWatcher | undefined;
  /** Last response per detection path, so the detection event can carry it. */
  private readonly lastResponse = new Map<string, string>();

  private constructor(s: ProcessMonitorSettings) {
    const windows = (s.platform ?? process.platform) === 'win32';
    this.table = new ProcessTable(s.tableEntries);
    // Windows has no /proc: attribution answers from the table the snapshots keep.
    this.attributor = windows ? new Attributor(this.table, () => undefined) : new Attributor(this.table);
    this.response = new ProcessResponse({
      onDetect: s.onDetect,
      protectedProcesses: s.protectedProcesses,
      platform: windows ? 'win32' : undefined,
      // Windows: TerminateProcess, only while the pid still runs the image the table knows for
      // it (a pid freed and reused since the snapshot is another process: 'reused', left alone).
      ...(windows ? { kill: (pid: number) => this.killWindows(pid) } : {}),
    });
    this.events = new EventsFile(s.eventsFile, s.eventsMaxBytes);
  }

  static async start(s: ProcessMonitorSettings): Promise<ProcessMonitor> {
    const m = new ProcessMonitor(s);
    if (s.watcher !== 'off' && (s.platform ?? process.platform) === 'win32') {
      try {
        m.startWindows(s);
        m.log.info('process watcher: Toolhelp snapshots (new processes noticed within one period, their images scanned)', {
          intervalMs: s.windowsIntervalMs ?? 500,
        });
      } catch (e) {
        m.win = undefined;
        m.log.error('Windows process watcher did not start; new processes are not checked', describeError(e));
      }
    } else if (s.watcher !== 'off' && process.platform === 'linux') {
      try {
        m.watcher = await startProcessWatcher({ table: m.table, mode: s.watcher, pollMs: s.pollMs });
      } catch (e) {
        // Only a forced mode throws; attribution still reads /proc at detection time.
        m.log.error('process watcher did not start; attribution reads /proc only when something is detected', describeError(e));
      }
    } else {
      m.log.info('process watcher off; attribution reads /proc only when something is detected');
    }
    m.log.info('process monitoring', {
      watcher: m.mode,
      on_detect: s.onDetect,
      tableEntries: s.tableEntries,
      protected: s.protectedProcesses,
    });
    return m;
  }

  get mode(): string {
    return this.win?.mode ?? this.watcher?.mode ?? 'off';
  }

  private killWindows(pid: number): 'killed' | 'gone' | 'reused' | 'failed' {
    const e = this.table.latest(pid);
    if (!this.win || !e || e.exited) return 'gone';
    return this.win.terminate(pid, e.exe);
  }

  private startWindows(s: ProcessMonitorSettings): void {
    const w = new WindowsProcessWatcher({ source: s.windowsSource, intervalMs: s.windowsIntervalMs });
    this.win = w;
    w.on('event', (e) => {
      if (e.type === 'exited') this.table.exit(e.process.pid);
      else {
        const p = e.process as NewProcess;
        this.table.upsert({ pid: p.pid, ppid: p.ppid, startTicks: undefined, exe: p.image, comm: p.name });
      }
    });
    w.start();
  }

  /**
   * Windows: who checks each new process (the daemon: OnAccessHandler.started, which scans the
   * image and, if infected, terminates the process and quarantines the image). No-op elsewhere.
   */
  checkNewProcesses(check: (image: string, pid: number) => Promise<unknown>): void {
    this.win?.setChecker((p) => check(p.image, p.pid));
  }

  attribute(pid: number): Attribution {
    try {
      return this.attributor.attribute(pid);
    } catch {
      return { pid, parents: [], source: 'none' };
    }
  }

  respond(who: Attribution, why: ResponseReason, file: string): ResponseOutcome {
    const r = this.response.respond(who, why, file);
    if (r.action !== 'none') {
      if (this.lastResponse.size >= 256) this.lastResponse.clear();
      this.lastResponse.set(file, r.action === 'killed' ? 'killed' : `${r.action}: ${r.why}`);
    }
    return r;
  }

  denied(ev: { pid: number; path: string; kind: 'open' | 'exec' }, reason: string): void {
    this.events.append({
      time: new Date().toISOString(),
      kind: 'denied',
      path: ev.path,
      reason,
      access: ev.kind,
      process: this.attribute(ev.pid),
    });
  }

  /** A detection (from DetectionLog): into the events file with its process and response. */
  recordDetection(d: Detection): void {
    const response = this.lastResponse.get(d.path);
    this.lastResponse.delete(d.path);
    this.events.append({
      time: d.time,
      kind: 'detection',
      path: d.path,
      threat: d.threat,
      sha256: d.sha256,
      action: d.action,
      process: d.attribution ?? (d.process ? { ...d.process, parents: [], source: 'none' } : undefined),
      response,
    });
  }

  stats(): Record<string, number> {
    return {
      ...(this.watcher?.stats() ?? {}),
      ...(this.win?.stats() ?? {}),
      killed: this.response.counts.killed,
      spared: this.response.counts.spared,
      eventsWritten: this.events.written,
      eventsDropped: this.events.dropped,
    };
  }

  async stop(): Promise<void> {
    await this.win?.stop();
    await this.watcher?.stop();
    await this.events.flush();
  }
}
