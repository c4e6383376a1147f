/**
 * Scan jobs run by the daemon: a walk of the protected trees (or of paths inside them) through
 * the daemon's own scanner, so a job shares the verdict cache and reports detections exactly as
 * on-access does. One job at a time, a few files in flight, every SVM request in the link's
 * background class, and the event loop given back between files so the on-access decisions the
 * same thread serves are not held up. Cancellable; progress in counters.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ServiceError, describeError } from '../errors.js';
import { logger } from '../log.js';
import type { ScanResult } from './file-scanner.js';
import { walkTree, type WalkEntry, type WalkOptions } from './tree-walker.js';

export const SCAN_TRIGGERS = ['manual', 'schedule', 'svm'] as const;
export type ScanTrigger = (typeof SCAN_TRIGGERS)[number];
export const SCAN_JOB_STATES = ['running', 'done', 'cancelled', 'failed'] as const;
export type ScanJobState = (typeof SCAN_JOB_STATES)[number];

/** Bounds of a job request, whoever asks (control socket, SVM). */
export const SCAN_JOB_LIMITS = {
  maxPaths: 64,
  maxPathBytes: 4096,
  maxReason: 256,
  /** Job ids: [A-Za-z0-9._-], at most this long. */
  maxId: 64,
} as const;

export interface ScanJobCounters {
  /** Regular files the walk found. */
  seen: number;
  /** Files judged (clean or infected). */
  scanned: number;
  /** Files left unjudged on purpose (excluded, too large, vanished, not regular). */
  skipped: number;
  infected: number;
  /** Files the SVM could not judge (they go to the deferred queue, as on-access). */
  errors: number;
  bytes: number;
}

export interface ScanJobStatus {
  id: string;
  trigger: ScanTrigger;
  state: ScanJobState;
  /** What was walked: the protected trees, or the paths asked for. */
  paths: string[];
  reason?: string | undefined;
  startedAt: string;
  finishedAt?: string | undefined;
  counters: ScanJobCounters;
  error?: { code: string; message: string } | undefined;
}

export interface ScanJobRequest {
  trigger: ScanTrigger;
  /** Absolute paths inside the protected trees; none: every protected tree. */
  paths?: readonly string[] | undefined;
  /** Given by the SVM (its scan command id), else made here. */
  id?: string | undefined;
  reason?: string | undefined;
}

export interface ScanJobRunnerOptions {
  /** The protected trees of the moment (a reload may change them). */
  roots(): readonly string[];
  /** Scan one file the way the daemon scans a written one (quarantine, report, defer). */
  scan(entry: WalkEntry): Promise<ScanResult>;
  /** Folders and files the walk leaves out (the configuration's exclusions, the state dir). */
  walkOptions(): Pick<WalkOptions, 'exclude' | 'excludeFile'>;
  /** Files in flight at once (default 2: a job is idle work, the SVM's fairness bounds the rest). */
  concurrency?: number | undefined;
}

const ID_RE = /^[A-Za-z0-9._-]{1,64}$/;

export function isScanJobId(v: unknown): v is string {
  return typeof v === 'string' && ID_RE.test(v);
}

function inside(p: string, root: string): boolean {
  return p === root || p.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}

function realOrSelf(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/**
 * The paths of a job request, checked against the protected trees after every symbolic link is
 * followed (a link inside a protected tree to /etc must not make /etc scannable by the SVM).
 * Throws LA_ERR_SCAN_PATH naming the first bad path.
 */
export function checkJobPaths(paths: readonly string[], roots: readonly string[]): string[] {
  if (paths.length > SCAN_JOB_LIMITS.maxPaths)
    throw new ServiceError(
      'LA_ERR_SCAN_PATH',
      `a scan job takes at most ${SCAN_JOB_LIMITS.maxPaths} paths`,
      'scan a parent folder instead',
    );
  const realRoots = roots.map(realOrSelf);
  return paths.map((p) => {
    if (typeof p !== 'string' || !path.isAbsolute(p) || p.includes('\0') || Buffer.byteLength(p) > SCAN_JOB_LIMITS.maxPathBytes)
      throw new ServiceError(
        'LA_ERR_SCAN_PATH',
        `scan path ${JSON.stringify(String(p).slice(0, 200))} is not an absolute path`,
        'name files or folders inside `protect`',
      );
    let real: string;
    try {
      real = fs.realpathSync(p);
    } catch (e) {
      throw new ServiceError('LA_ERR_SCAN_PATH', `scan path ${p} cannot be resolved: ${describeError(e).message}`, 'check that it exists', {
        cause: e,
      });
    }
    if (!realRoots.some((r) => inside(real, r)))
      throw new ServiceError(
        'LA_ERR_SCAN_PATH',
        `scan path ${p}${real !== p ? ` (${real})` : ''} is outside the protected trees`,
        `name files or folders inside \`protect\` (${roots.join(', ') || 'none'})`,
      );
    return real;
  });
}

const zero = (): ScanJobCounters => ({ seen: 0, scanned: 0, skipped: 0, infected: 0, errors: 0, bytes: 0 });

export class ScanJobRunner extends EventEmitter<{ change: [ScanJobStatus]; finished: [ScanJobStatus] }> {
  private readonly log = logger('scan-jobs');
  private job: ScanJobStatus | undefined;
  private running: Promise<void> | undefined;
  private cancelled = false;
  private lastEmit = 0;
  private emitTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: ScanJobRunnerOptions) {
    super();
  }

  /** The job running, else the last one (undefined before the first). */
  get current(): ScanJobStatus | undefined {
    return this.job ? structuredClone(this.job) : undefined;
  }

  get busy(): boolean {
    return this.running !== undefined;
  }

  /** Start a job; throws LA_ERR_SCAN_BUSY while one runs, LA_ERR_SCAN_PATH for a bad path. */
  start(req: ScanJobRequest): ScanJobStatus {
    if (this.running)
      throw new ServiceError(
        'LA_ERR_SCAN_BUSY',
        `scan job ${this.job!.id} (${this.job!.trigger}) is still running`,
        'wait for it (`lightagent scan --daemon --status`) or cancel it (`lightagent scan --daemon --cancel`)',
      );
    const roots = this.o.roots();
    const paths = req.paths && req.paths.length > 0 ? checkJobPaths(req.paths, roots) : [...roots];
    if (paths.length === 0) throw new ServiceError('LA_ERR_SCAN_PATH', 'nothing to scan: no protected trees', 'set `protect:`');
    if (req.id !== undefined && !isScanJobId(req.id))
      throw new ServiceError('LA_ERR_SCAN_PATH', 'a scan job id is 1 to 64 characters of [A-Za-z0-9._-]', 'use another id');
    this.job = {
      id: req.id ?? `${req.trigger}-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`,
      trigger: req.trigger,
      state: 'running',
      paths,
      ...(req.reason ? { reason: req.reason.slice(0, SCAN_JOB_LIMITS.maxReason) } : {}),
      startedAt: new Date().toISOString(),
      counters: zero(),
    };
    this.cancelled = false;
    this.log.info('scan job started', { id: this.job.id, trigger: this.job.trigger, paths, reason: this.job.reason });
    const job = this.job;
    this.running = this.run(job);
    this.emitChange(true);
    return structuredClone(job);
  }

  /** Ask the running job to stop (files in flight finish). Returns false if none runs. */
  cancel(): boolean {
    if (!this.running) return false;
    this.cancelled = true;
    return true;
  }

  /** Resolves when no job runs. */
  async idle(): Promise<void> {
    await this.running;
  }

  /** Cancel and wait (the daemon's teardown). */
  async stop(): Promise<void> {
    this.cancel();
    await this.running;
    clearTimeout(this.emitTimer);
  }

  private async run(job: ScanJobStatus): Promise<void> {
    const c = job.counters;
    let it: AsyncGenerator<WalkEntry> | undefined;
    const concurrency = Math.max(1, Math.min(16, this.o.concurrency ?? 2));
    // Hand files out one at a time from one iterator: the walk never runs ahead of the scans.
    let walkDone = false;
    let pulling: Promise<IteratorResult<WalkEntry>> | undefined;
    const next = async (): Promise<WalkEntry | undefined> => {
      while (pulling) await pulling.catch(() => undefined);
      if (walkDone || this.cancelled) return undefined;
      pulling = it!.next();
      try {
        const r = await pulling;
        if (r.done) walkDone = true;
        return r.done ? undefined : r.value;
      } finally {
        pulling = undefined;
      }
    };
    const worker = async () => {
      for (let e = await next(); e; e = await next()) {
        c.seen++;
        let r: ScanResult;
        try {
          r = await this.o.scan(e);
        } catch (err) {
          c.errors++;
          this.log.warn('scan job could not scan a file', { id: job.id, path: e.path, ...describeError(err) });
          continue;
        }
        c.bytes += r.size;
        if (r.outcome === 'clean') c.scanned++;
        else if (r.outcome === 'infected') {
          c.scanned++;
          c.infected++;
        } else if (r.outcome === 'skipped') c.skipped++;
        else c.errors++;
        this.emitChange();
        // Idle priority inside the process: let the on-access decisions waiting on this thread go first.
        await new Promise<void>((res) => setImmediate(res));
      }
    };
    try {
      it = walkTree(job.paths, {
        ...this.o.walkOptions(),
        onSkip: () => {
          c.skipped++;
          this.emitChange();
        },
      });
      await Promise.all(Array.from({ length: concurrency }, worker));
      job.state = this.cancelled ? 'cancelled' : 'done';
    } catch (e) {
      job.state = 'failed';
      job.error = { code: describeError(e).code, message: describeError(e).message };
      this.log.error('scan job failed', { id: job.id, ...describeError(e) });
    } finally {
      await it?.return(undefined).catch(() => undefined);
    }
    job.finishedAt = new Date().toISOString();
    // Free before anyone hears of the end: a listener may start the next job at once.
    this.running = undefined;
    this.log.info('scan job finished', { id: job.id, trigger: job.trigger, state: job.state, ...c });
    this.emitChange(true);
    this.emit('finished', structuredClone(job));
  }

  /** Progress at most every 500 ms (and at once for a start or an end): a state report listens. */
  private emitChange(now = false): void {
    const t = Date.now();
    if (!now && t - this.lastEmit < 500) {
      if (!this.emitTimer) this.emitTimer = setTimeout(() => this.emitChange(true), 500 - (t - this.lastEmit)).unref();
      return;
    }
    clearTimeout(this.emitTimer);
    this.emitTimer = undefined;
    this.lastEmit = t;
    if (this.job) this.emit('change', structuredClone(this.job));
  }
}
