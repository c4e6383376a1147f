/**
 * Windows process watcher: CreateToolhelp32Snapshot (TH32CS_SNAPPROCESS) every ~500 ms, diffed
 * against the previous snapshot. New processes go to the agent's process monitor
 * (src/processes/process-monitor.ts), which keeps the process table for attribution and hands each
 * new image to OnAccessHandler.started: scanned through the same FileScanner/SVM path as files,
 * and an infected process is terminated (ProcessResponse, its kill hook = TerminateProcess here)
 * and its image quarantined, recorded like any detection (events.jsonl, status, SVM report).
 *
 * Why snapshot diffing, not ETW or WMI:
 *   - ETW (Microsoft-Windows-Kernel-Process) needs a real-time trace session: admin rights, a
 *     session-name slot shared machine-wide (64 by default), and a consumer thread blocked in
 *     ProcessTrace with callbacks into JS; through koffi that is a native callback from a foreign
 *     thread, which is fragile and hard to stop cleanly.
 *   - WMI (__InstanceCreationEvent / Win32_ProcessStartTrace) goes through COM and the WMI service,
 *     polls internally anyway (WITHIN n), and costs far more CPU per event than a snapshot.
 *   - A Toolhelp snapshot is one call, needs no privileges to list, and a 500 ms period meets
 *     "noticed within a second". Its limit: a process that lives less than one period can be
 *     missed; its image is still scanned on access by the file protection when it is opened.
 * Pid reuse: a Windows pid is reused only after every handle to the process is closed; the diff
 * keys processes by pid + parent pid + image name, so a reused pid reads as a new process.
 *
 * The diff logic (ProcessSnapshotDiff) is plain TypeScript and unit-tested on Linux with a fake
 * snapshot source; the koffi bindings load only on Windows (tested under Wine, test/windows).
 */
import koffi from 'koffi';
import { EventEmitter } from 'node:events';
import { PlatformError } from '../../errors.js';

export interface WinProcess {
  pid: number;
  ppid: number;
  /** szExeFile: the image file name (no directory). */
  name: string;
  /** Full image path (QueryFullProcessImageNameW), when it could be read. */
  image?: string | undefined;
}

/** Where snapshots come from: Toolhelp on Windows, a fake in tests. */
export interface SnapshotSource {
  snapshot(): WinProcess[];
  imagePath(pid: number): string | undefined;
  terminate(pid: number): boolean;
}

const key = (p: WinProcess) => `${p.pid}:${p.ppid}:${p.name}`;

/** Diff successive snapshots: which processes are new, which are gone. */
export class ProcessSnapshotDiff {
  private prev = new Map<string, WinProcess>();
  private first = true;

  /** Returns started/exited since the last call. The first call reports everything as started only if `reportInitial`. */
  next(snapshot: readonly WinProcess[], reportInitial = false): { started: WinProcess[]; exited: WinProcess[] } {
    const now = new Map<string, WinProcess>();
    for (const p of snapshot) now.set(key(p), p);
    const started: WinProcess[] = [];
    const exited: WinProcess[] = [];
    if (!this.first || reportInitial) for (const [k, p] of now) if (!this.prev.has(k)) started.push(p);
    for (const [k, p] of this.prev) if (!now.has(k)) exited.push(p);
    this.prev = now;
    this.first = false;
    return { started, exited };
  }

  get size(): number {
    return this.prev.size;
  }
}

export interface WindowsProcessWatcherOptions {
  source?: SnapshotSource;
  intervalMs?: number;
  /** At most this many checks at once; further new processes wait (queue of at most 4096). */
  maxConcurrentChecks?: number;
}

/** A process that started since the last snapshot, with its image path when it could be read. */
export type NewProcess = WinProcess & { image?: string | undefined };

export type WinProcessEvent = { type: 'started' | 'exited'; process: WinProcess };

/**
 * Polls the source every `intervalMs` (default 500) and reports started and exited processes.
 * Each new process with a readable image path goes to the checker (`setChecker`; the daemon's
 * OnAccessHandler.started: scan the image, and through the shared response code terminate the
 * process and quarantine the image if it is infected). Checks run at most `maxConcurrentChecks`
 * at once; processes that start before a checker is set wait in the same bounded queue.
 */
export class WindowsProcessWatcher extends EventEmitter<{ event: [WinProcessEvent] }> {
  readonly mode = 'toolhelp-snapshot' as const;
  private readonly diff = new ProcessSnapshotDiff();
  private timer: NodeJS.Timeout | undefined;
  private readonly queue: NewProcess[] = [];
  private active = 0;
  private checker: ((p: NewProcess & { image: string }) => Promise<unknown>) | undefined;
  readonly counts = { polls: 0, pollErrors: 0, started: 0, exited: 0, checked: 0, noImage: 0, queueDropped: 0 };
  private readonly src: SnapshotSource;

  constructor(private readonly o: WindowsProcessWatcherOptions = {}) {
    super();
    this.src = o.source ?? toolhelpSource();
  }

  /** Take the first snapshot (the baseline: processes already running are not reported) and poll. */
  start(): void {
    this.poll(false);
    this.timer = setInterval(() => this.poll(true), Math.max(100, this.o.intervalMs ?? 500));
    this.timer.unref();
  }

  /** Who checks new processes; the queue starts draining once it is set. */
  setChecker(fn: (p: NewProcess & { image: string }) => Promise<unknown>): void {
    this.checker = fn;
    this.pump();
  }

  /**
   * TerminateProcess (the response code calls it through ProcessResponse's kill hook). With
   * `expectImage`, only if the pid still runs that image (case-insensitive): a pid freed and
   * reused since the snapshot belongs to another process, which is left alone ('reused').
   */
  terminate(pid: number, expectImage?: string): 'killed' | 'gone' | 'reused' | 'failed' {
    try {
      if (expectImage !== undefined) {
        const now = this.src.imagePath(pid);
        if (now === undefined) return 'gone';
        if (now.toLowerCase() !== expectImage.toLowerCase()) return 'reused';
      }
      return this.src.terminate(pid) ? 'killed' : 'failed';
    } catch {
      return 'failed';
    }
  }

  /** One poll (exposed for tests). */
  poll(report = true): void {
    this.counts.polls++;
    let snap: WinProcess[];
    try {
      snap = this.src.snapshot();
    } catch {
      this.counts.pollErrors++;
      return;
    }
    const { started, exited } = this.diff.next(snap, false);
    if (!report) return;
    for (const p of exited) {
      this.counts.exited++;
      this.emit('event', { type: 'exited', process: p });
    }
    for (const p of started) {
      this.counts.started++;
      let image = p.image;
      if (image === undefined) {
        try {
          image = this.src.imagePath(p.pid);
        } catch {
          image = undefined;
        }
      }
      const np: NewProcess = { ...p, image };
      this.emit('event', { type: 'started', process: np });
      if (!image) this.counts.noImage++;
      else if (this.queue.length >= 4096) this.counts.queueDropped++;
      else this.queue.push(np);
    }
    this.pump();
  }

  private pump(): void {
    const check = this.checker;
    if (!check) return;
    const max = this.o.maxConcurrentChecks ?? 4;
    while (this.active < max && this.queue.length > 0) {
      const p = this.queue.shift()! as NewProcess & { image: string };
      this.active++;
      this.counts.checked++;
      void Promise.resolve()
        .then(() => check(p))
        .catch(() => undefined) // not judged: the image is still scanned when the file protection sees it
        .finally(() => {
          this.active--;
          this.pump();
        });
    }
  }

  stats(): Record<string, number> {
    return { ...this.counts, queued: this.queue.length, checking: this.active };
  }

  /**
   * Stop polling; queued processes are dropped, no new check starts, and the checks in flight are
   * waited for (at most `waitMs`), so none of them runs on into a scanner or queue being closed.
   */
  async stop(waitMs = 5000): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
    this.checker = undefined;
    const until = Date.now() + waitMs;
    while (this.active > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  }
}

// ------------------------------------------------------------------ koffi bindings (Windows only)

const TH32CS_SNAPPROCESS = 0x0000_0002;
const INVALID_HANDLE_VALUE = -1;
const PROCESS_TERMINATE = 0x0001;
const PROCESS_QUERY_LIMITED_INFORMATION = 0x1000;
const MAX_PATH = 260;

/** The real source: kernel32 through koffi. Throws a PlatformError off Windows. */
export function toolhelpSource(): SnapshotSource {
  if (process.platform !== 'win32')
    throw new PlatformError(
      'LA_ERR_WIN_PROCESSES',
      'the Toolhelp process snapshot exists only on Windows',
      'use the Linux process watcher',
    );
  const k32 = koffi.load('kernel32.dll');
  // tagPROCESSENTRY32W (tlhelp32.h)
  const PROCESSENTRY32W = koffi.struct('PROCESSENTRY32W', {
    dwSize: 'uint32',
    cntUsage: 'uint32',
    th32ProcessID: 'uint32',
    th32DefaultHeapID: 'uintptr_t',
    th32ModuleID: 'uint32',
    cntThreads: 'uint32',
    th32ParentProcessID: 'uint32',
    pcPriClassBase: 'int32',
    dwFlags: 'uint32',
    szExeFile: koffi.array('char16_t', MAX_PATH, 'String'),
  });
  const CreateToolhelp32Snapshot = k32.func('__stdcall', 'CreateToolhelp32Snapshot', 'intptr_t', ['uint32', 'uint32']);
  const Process32FirstW = k32.func('__stdcall', 'Process32FirstW', 'bool', ['intptr_t', koffi.inout(koffi.pointer(PROCESSENTRY32W))]);
  const Process32NextW = k32.func('__stdcall', 'Process32NextW', 'bool', ['intptr_t', koffi.inout(koffi.pointer(PROCESSENTRY32W))]);
  const CloseHandle = k32.func('__stdcall', 'CloseHandle', 'bool', ['intptr_t']);
  const OpenProcess = k32.func('__stdcall', 'OpenProcess', 'intptr_t', ['uint32', 'bool', 'uint32']);
  const TerminateProcess = k32.func('__stdcall', 'TerminateProcess', 'bool', ['intptr_t', 'uint32']);
  const QueryFullProcessImageNameW = k32.func('__stdcall', 'QueryFullProcessImageNameW', 'bool', [
    'intptr_t',
    'uint32',
    koffi.out(koffi.pointer('char16_t')),
    koffi.inout(koffi.pointer('uint32')),
  ]);
  const entrySize = koffi.sizeof(PROCESSENTRY32W);
  return {
    snapshot() {
      const h = Number(CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0));
      if (h === INVALID_HANDLE_VALUE || h === 0)
        throw new PlatformError('LA_ERR_WIN_PROCESSES', 'CreateToolhelp32Snapshot failed', 'check the agent has not run out of handles');
      const out: WinProcess[] = [];
      try {
        const e: Record<string, unknown> = { dwSize: entrySize };
        for (let ok = Process32FirstW(h, e); ok && out.length < 65_536; ok = Process32NextW(h, e)) {
          out.push({ pid: e.th32ProcessID as number, ppid: e.th32ParentProcessID as number, name: String(e.szExeFile) });
          e.dwSize = entrySize;
        }
      } finally {
        CloseHandle(h);
      }
      return out;
    },
    imagePath(pid) {
      const h = Number(OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, false, pid));
      if (!h) return undefined;
      try {
        const buf = Buffer.alloc(32_768 * 2);
        const len = [32_768];
        if (!QueryFullProcessImageNameW(h, 0, buf, len)) return undefined;
        return buf.toString('utf16le', 0, len[0]! * 2);
      } finally {
        CloseHandle(h);
      }
    },
    terminate(pid) {
      const h = Number(OpenProcess(PROCESS_TERMINATE, false, pid));
      if (!h) return false;
      try {
        return Boolean(TerminateProcess(h, 1));
      } finally {
        CloseHandle(h);
      }
    },
  };
}
