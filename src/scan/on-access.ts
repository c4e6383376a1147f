/**
 * OnAccessHandler — what the daemon answers when the kernel asks "may this file be opened?",
 * and what it does after a file was written. Backend-neutral: the fanotify gate calls `decide`
 * and `written`, the portable watcher calls `written` only.
 *
 * Policy, in order:
 *   - not a regular file                         -> allow
 *   - excluded path or extension, or an opener   -> allow unscanned, never cacheable (exclusions.ts:
 *     excluded by process                           a mark follows the inode, not the path or process)
 *   - larger than max_file_size                  -> allow, marked clean-for-now (stated policy:
 *                                                   huge files are not scanned on access; counted)
 *   - verdict within the deadline: clean         -> allow, cacheable (kernel ignore mark)
 *                                   infected     -> deny (EPERM), quarantine, detection event
 *                                   its SHA-256 excluded -> clean (cacheable)
 *                                   its threat excluded  -> allow, detection `reported` (not cacheable)
 *   - no verdict (SVM down, deadline passed)     -> `on_svm_unavailable`: allow (file queued for a
 *                                                   later scan) or deny; never cacheable
 * The scan goes on after a deadline answer: if it later finds a threat, the file is quarantined
 * and reported then, so a slow SVM delays a detection but never loses it.
 */
import type fs from 'node:fs';
import { describeError } from '../errors.js';
import { logger } from '../log.js';
import type { Detection, DetectionLog } from '../store/detections.js';
import type { Attribution } from '../store/events-file.js';
import type { ProcessHooks } from '../processes/process-monitor.js';
import type { ResponseReason } from '../processes/response.js';
import { skippedResult, type FileScanner, type ScanResult } from './file-scanner.js';
import { NOTHING_EXCLUDED, type Exclusions } from './exclusions.js';

export interface AccessEvent {
  /** Open fd of the file (the fanotify event fd); valid until the returned promise settles. */
  fd: number;
  path: string;
  pid: number;
  kind: 'open' | 'exec';
  stat: fs.BigIntStats;
}

/** The answer to an AccessEvent, as every protection backend takes it (src/watchers/protection.ts). */
export interface Decision {
  allow: boolean;
  /** Clean and unchanged: the gate may add a kernel ignore mark so later opens cost nothing. Absent: false. */
  cacheable?: boolean | undefined;
  /**
   * Set when the answer was given before the scan finished (deadline): the scan still reads
   * through the event fd, so the gate must keep that fd open until this settles.
   */
  hold?: Promise<void>;
}

/** Files allowed without a verdict, to be scanned when an SVM is back. */
export interface DeferredSink {
  add(entry: { path: string; dev: string; ino: string; size: number; mtimeNs: string; ctimeNs: string; reason: string }): void;
}

/** Where infected files go. Resolves with the quarantine id, or rejects (the detection stands). */
export interface QuarantineSink {
  put(path: string, info: { threat: string; sha256?: string | undefined }): Promise<string>;
}

export interface OnAccessOptions {
  scanner: FileScanner;
  detections: DetectionLog;
  deferred: DeferredSink;
  quarantine: QuarantineSink;
  deadlineMs: number;
  onSvmUnavailable: 'allow' | 'deny';
  maxFileSize: number;
  /** Quarantine infected files (default true). */
  quarantineInfected?: boolean;
  /** Attribution and on_detect; called only on deny/detection, never for a clean open. */
  processes?: ProcessHooks | undefined;
  /** `exclude:` compiled (src/scan/exclusions.ts); default nothing excluded. */
  exclusions?: Exclusions | undefined;
}

/** The errno behind an error or its cause chain. */
function causeCode(e: unknown): string | undefined {
  for (let c: unknown = e, i = 0; c && i < 5; c = (c as { cause?: unknown }).cause, i++) {
    const code = (c as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && !code.startsWith('LA_')) return code;
  }
  return undefined;
}

/** How long a quarantined path is remembered, so a second detection of it shares the move. */
const QUARANTINE_MEMORY_MS = 10_000;
/** An excluded threat at the same path with the same content is reported once per this. */
const REPORT_MEMORY_MS = 10 * 60_000;
/** How long the image of a terminated process is tried again while Windows keeps it locked. */
const LOCKED_IMAGE_RETRY_MS = 15_000;

export class OnAccessHandler {
  private readonly log = logger('on-access');
  private readonly quarantining = new Map<string, Promise<string>>();
  private readonly recentlyQuarantined = new Map<string, { id: string; sha256: string | undefined; until: number }>();
  private readonly recentlyReported = new Map<string, number>();
  private readonly ex: Exclusions;
  readonly counts = {
    decisions: 0,
    allowed: 0,
    denied: 0,
    deadline: 0,
    unavailable: 0,
    tooLarge: 0,
    written: 0,
    processes: 0,
    detections: 0,
    /** Accesses and written files left alone by `exclude` (path, extension, process), and infected content whose SHA-256 is excluded. */
    excluded: 0,
    /** Detections of an excluded threat: reported, not acted on. */
    reported: 0,
  };

  constructor(private readonly o: OnAccessOptions) {
    this.ex = o.exclusions ?? NOTHING_EXCLUDED;
  }

  /** What this handler leaves alone (its literal folders go to the backends as prefixes). */
  get exclusions(): Exclusions {
    return this.ex;
  }

  async decide(ev: AccessEvent): Promise<Decision> {
    this.counts.decisions++;
    if (!ev.stat.isFile()) return this.allow(false);
    // Excluded: allowed unscanned and never cacheable (no kernel ignore mark: it would follow the
    // inode out of the excluded place, or let every other process in).
    if ((!this.ex.noPaths && this.ex.path(ev.path) !== undefined) || (!this.ex.noProcesses && this.ex.process(ev.pid))) {
      this.counts.excluded++;
      return this.allow(false);
    }
    if (Number(ev.stat.size) > this.o.maxFileSize) {
      this.counts.tooLarge++;
      return this.allow(true);
    }
    const now = this.o.scanner.scanFdNow(ev.fd, ev.path, ev.stat, 'foreground');
    if (!(now instanceof Promise)) return this.fromResult(ev, now);
    const scan = now;
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'deadline'>((r) => (timer = setTimeout(() => r('deadline'), this.o.deadlineMs)));
    const first = await Promise.race([scan, deadline]);
    clearTimeout(timer);
    if (first === 'deadline') {
      this.counts.deadline++;
      const hold = scan.then((r) => this.afterLate(ev, r));
      return { ...this.noVerdict(ev, `no verdict within ${this.o.deadlineMs} ms`), hold };
    }
    return this.fromResult(ev, first);
  }

  /**
   * `written` for the gate's close-writes: a result the scan gave synchronously (a local cache
   * hit) that calls for no action comes back as is, without a promise (a copy of a tree is
   * thousands of these in a burst); anything else goes through `written`.
   */
  writtenNow(path: string, scan: () => ScanResult | Promise<ScanResult>, pid?: number): ScanResult | Promise<ScanResult> {
    const skip = this.excludedWrite(path, pid);
    if (skip) return skip;
    const r = scan();
    if (r instanceof Promise || r.outcome === 'infected' || r.outcome === 'error') return this.written(path, async () => r, pid);
    this.counts.written++;
    return r;
  }

  /** A file was written (close-write, or the watcher saw it settle): scan it in the background. */
  async written(path: string, scan: () => Promise<ScanResult>, pid?: number): Promise<ScanResult> {
    const skip = this.excludedWrite(path, pid);
    if (skip) return skip;
    this.counts.written++;
    const r = this.exempt(await scan());
    if (r.outcome === 'infected' && this.ex.threat(r.threat)) this.reportOnly(path, r, pid);
    else if (r.outcome === 'infected') await this.act(path, r, 'quarantined', pid, 'wrote');
    else if (r.outcome === 'error') this.defer(path, undefined, r.error?.code ?? 'scan-error');
    return r;
  }

  /**
   * Windows: a new process `pid` runs the image `path` (the process watcher saw it start; nothing
   * could refuse the exec). Scan the image like a file; if infected, the process is terminated
   * (ProcessResponse, reason 'started'), the image quarantined and the detection recorded with
   * the process. An image the SVM could not judge is queued for a later scan, as a written file.
   */
  async started(path: string, pid: number, scan: () => Promise<ScanResult>): Promise<ScanResult> {
    this.counts.processes++;
    const r = this.exempt(await scan());
    if (r.outcome === 'infected' && this.ex.threat(r.threat)) this.reportOnly(path, r, pid);
    else if (r.outcome === 'infected') await this.act(path, r, 'quarantined', pid, 'started');
    else if (r.outcome === 'error') this.defer(path, undefined, r.error?.code ?? 'scan-error');
    return r;
  }

  /**
   * A written file left alone by `exclude` (path, extension, or a writer excluded by process; a
   * writer gone by now is not excluded): a skipped result, so no mark either.
   */
  private excludedWrite(path: string, pid: number | undefined): ScanResult | undefined {
    if (this.ex.noPaths && this.ex.noProcesses) return undefined;
    if (this.ex.path(path) === undefined && (pid === undefined || !this.ex.process(pid))) return undefined;
    this.counts.excluded++;
    return skippedResult(path, 0, 'LA_SKIP_EXCLUDED', 'excluded by `exclude`');
  }

  /** `exclude.sha256`: infected content with a listed hash is clean (a known false positive). */
  private exempt(r: ScanResult): ScanResult {
    if (r.outcome !== 'infected' || !this.ex.sha256(r.sha256)) return r;
    this.counts.excluded++;
    const { threat: _threat, ...rest } = r;
    return { ...rest, outcome: 'clean' };
  }

  /**
   * `exclude.threats`: the detection is recorded (events, the SVM, the tray) with action
   * `reported`: no deny, no quarantine, no on_detect. The same path with the same content is
   * reported once per REPORT_MEMORY_MS (every open of it would otherwise report it again).
   */
  private reportOnly(path: string, r: ScanResult, pid: number | undefined): void {
    const key = `${path}\0${r.sha256 ?? ''}`;
    const now = Date.now();
    const until = this.recentlyReported.get(key);
    if (until !== undefined && until > now) return;
    if (this.recentlyReported.size >= 1024)
      for (const [k, v] of this.recentlyReported) if (v <= now || this.recentlyReported.size >= 1024) this.recentlyReported.delete(k);
    this.recentlyReported.set(key, now + REPORT_MEMORY_MS);
    this.counts.reported++;
    const who = pid !== undefined ? this.o.processes?.attribute(pid) : undefined;
    this.record(path, r, 'reported', pid, who);
  }

  private async fromResult(ev: AccessEvent, result: ScanResult): Promise<Decision> {
    const r = this.exempt(result);
    if (r.outcome === 'infected' && this.ex.threat(r.threat)) {
      this.reportOnly(ev.path, r, ev.pid);
      return this.allow(false);
    }
    switch (r.outcome) {
      case 'clean':
        return this.allow(true);
      case 'skipped':
        return this.allow(false);
      case 'infected': {
        this.counts.denied++;
        // Who, while the process still waits in open/execve (after the answer it may be gone);
        // then answer first (the caller writes the response), quarantine right after.
        const who = this.o.processes?.attribute(ev.pid);
        setImmediate(() => void this.act(ev.path, r, 'denied', ev.pid, undefined, who));
        return { allow: false, cacheable: false };
      }
      case 'error':
        return this.noVerdict(ev, `${r.error?.code}: ${r.error?.message}`);
    }
  }

  private noVerdict(ev: AccessEvent, why: string): Decision {
    this.counts.unavailable++;
    this.defer(ev.path, ev.stat, why);
    if (this.o.onSvmUnavailable === 'deny') {
      this.o.processes?.denied(ev, why);
      this.counts.denied++;
      return { allow: false, cacheable: false };
    }
    return this.allow(false);
  }

  private allow(cacheable: boolean): Decision {
    this.counts.allowed++;
    return { allow: true, cacheable };
  }

  private defer(path: string, st: fs.BigIntStats | undefined, reason: string): void {
    try {
      this.o.deferred.add({
        path,
        dev: String(st?.dev ?? 0n),
        ino: String(st?.ino ?? 0n),
        size: Number(st?.size ?? 0n),
        mtimeNs: String(st?.mtimeNs ?? 0n),
        ctimeNs: String(st?.ctimeNs ?? 0n),
        reason,
      });
    } catch (e) {
      this.log.error('could not queue a file for a later scan', { path, ...describeError(e) });
    }
  }

  private afterLate(ev: AccessEvent, result: ScanResult): void {
    const r = this.exempt(result);
    if (r.outcome === 'infected' && this.ex.threat(r.threat)) this.reportOnly(ev.path, r, ev.pid);
    else if (r.outcome === 'infected')
      void this.act(ev.path, r, 'quarantined', ev.pid, ev.kind === 'exec' && this.o.onSvmUnavailable === 'allow' ? 'runs' : undefined);
  }

  /**
   * One quarantine per file: a denied open and the close-write scan of the same new file both
   * find it infected at about the same time. A move in flight is shared; a file already moved
   * (ENOENT) whose path and content were quarantined in the last QUARANTINE_MEMORY_MS is that
   * same move, not an error. Anything else (a new infected file at the same path) is moved anew.
   */
  private async quarantineOnce(path: string, r: ScanResult): Promise<string> {
    const inFlight = this.quarantining.get(path);
    if (inFlight) return inFlight;
    const done = this.o.quarantine.put(path, { threat: r.threat ?? 'Unknown-Threat', sha256: r.sha256 });
    this.quarantining.set(path, done);
    try {
      const id = await done;
      const now = Date.now();
      if (this.recentlyQuarantined.size >= 1024)
        for (const [k, v] of this.recentlyQuarantined)
          if (v.until <= now || this.recentlyQuarantined.size >= 1024) this.recentlyQuarantined.delete(k);
      this.recentlyQuarantined.set(path, { id, sha256: r.sha256, until: now + QUARANTINE_MEMORY_MS });
      return id;
    } catch (e) {
      const recent = this.recentlyQuarantined.get(path);
      if (recent && recent.until > Date.now() && recent.sha256 !== undefined && recent.sha256 === r.sha256 && causeCode(e) === 'ENOENT')
        return recent.id;
      throw e;
    } finally {
      this.quarantining.delete(path);
    }
  }

  /** The detection, with its process when known, into the log (events file, tray, SVM report). */
  private record(path: string, r: ScanResult, action: Detection['action'], pid: number | undefined, who: Attribution | undefined): void {
    const d: Detection = { kind: 'detection', time: new Date().toISOString(), path, threat: r.threat ?? 'Unknown-Threat', action };
    if (r.sha256) d.sha256 = r.sha256;
    if (pid !== undefined) d.process = who ? { pid, exe: who.exe, cmdline: who.cmdline, uid: who.uid } : { pid };
    if (who) d.attribution = who;
    this.o.detections.add(d);
  }

  private async act(
    path: string,
    r: ScanResult,
    action: Detection['action'],
    pid: number | undefined,
    culprit?: ResponseReason,
    known?: Attribution,
  ): Promise<void> {
    this.counts.detections++;
    let finalAction = action;
    let moved = false;
    // Who, before anything slow (it may exit); then on_detect for a writer or a running image.
    const who = known ?? (pid !== undefined ? this.o.processes?.attribute(pid) : undefined);
    if (who && culprit && this.o.processes!.respond(who, culprit, path).action === 'killed') finalAction = 'killed';
    if (this.o.quarantineInfected !== false) {
      // Windows: the image of a process just terminated stays locked until the process object
      // is gone (TerminateProcess returns before that, and on a busy machine it can take
      // seconds): a refused move is tried again, backing off, for up to LOCKED_IMAGE_RETRY_MS.
      const retryUntil = culprit === 'started' && finalAction === 'killed' ? performance.now() + LOCKED_IMAGE_RETRY_MS : 0;
      for (let attempt = 0; ; attempt++) {
        try {
          await this.quarantineOnce(path, r);
          moved = true;
          if (finalAction !== 'killed') finalAction = 'quarantined';
          if (attempt > 0) this.log.info('quarantined a locked image once it was released', { path, attempts: attempt + 1 });
          break;
        } catch (e) {
          const code = causeCode(e);
          if (performance.now() < retryUntil && (code === 'EBUSY' || code === 'EPERM' || code === 'EACCES')) {
            await new Promise((res) => setTimeout(res, Math.min(1000, 100 * 2 ** attempt)));
            continue;
          }
          this.log.error('could not quarantine an infected file', { path, attempts: attempt + 1, ...describeError(e) });
          break;
        }
      }
    }
    // A file that could not be moved is not called quarantined: it was left in place, reported.
    if (finalAction === 'quarantined' && !moved) finalAction = 'reported';
    this.record(path, r, finalAction, pid, who);
  }
}
