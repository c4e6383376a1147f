/**
 * FileScanner — one file, one verdict. Shared by `lightagent scan`, the daemon's background scans
 * and the on-access gate, so every path asks the same way:
 *
 *   1. identity (dev, ino, size, mtime, ctime) in the local cache      -> answer, no read
 *   2. read through the fd once: xxh64 fingerprint + SHA-256
 *      fingerprint in the local cache (a copy of a known file)         -> answer, no SVM
 *   3. SVM lookup by SHA-256 (shared verdicts of every guest)          -> answer, no upload
 *   4. upload the content; the SVM hashes it itself and scans it       -> answer
 *
 * Every request to the SVM carries a class: `foreground` when a process is blocked on the answer
 * (the on-access decision), `background` for everything else (close-write scans, rescans, tree
 * scans; the default). The link admits foreground requests first (svm-link/window.ts). An open that
 * joins the background scan of the same content (single flight) raises that scan to foreground.
 *
 * Content is always read through the fd the caller holds (for the gate: the fanotify event fd),
 * never reopened by path: that would race with a swap and deadlock under fanotify.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Backoff } from '../backoff.js';
import { LightagentError, ScanFailedError, describeError } from '../errors.js';
import { sameIdentity } from '../cache/file-identity.js';
import { Priority, type PriorityClass, type SvmClient } from '../svm-link/index.js';
import type { VerdictMsg } from '../protocol/index.js';
import { RTT_TRACE, rttMark } from '../trace.js';

export type Outcome = 'clean' | 'infected' | 'error' | 'skipped';
export type VerdictSource = 'cache-identity' | 'cache-fingerprint' | 'svm-cache' | 'svm-scan' | 'none';

export interface ScanResult {
  path: string;
  outcome: Outcome;
  threat?: string;
  sha256?: string;
  size: number;
  source: VerdictSource;
  /** Bytes of content uploaded to the SVM for this file. */
  uploaded: number;
  /** Bytes read from the file to hash it (0 on an identity hit). */
  read: number;
  error?: { code: string; message: string };
  /**
   * When the SVM was asked: ms waited for a slot in the link's window, ms from the slot to the
   * answer (summed over the lookup and the upload), and the class the scan ended in.
   */
  svmTiming?: { windowWaitMs: number; svmMs: number; requests: number; priority: PriorityClass };
}

/** What the scanner needs of the local verdict cache (src/cache implements it). */
export interface LocalVerdictStore {
  /** Identity hit: the verdict without reading the file. `stale` clean verdicts are re-checked by SHA-256. */
  lookupIdentity(st: fs.BigIntStats): LocalHit | undefined;
  /** Start a content hash (xxh64 seeded with the install secret). */
  createHasher(): { update(b: Uint8Array): void; digest(): bigint };
  lookupFingerprint(fp: bigint): LocalHit | undefined;
  recordIdentity(st: fs.BigIntStats, fp: bigint): void;
  record(st: fs.BigIntStats, fp: bigint, sha256: string, verdict: 'clean' | 'infected', threat?: string): void;
  /** A stale identity hit re-judged by the SVM under the current generation. */
  refreshIdentity(st: fs.BigIntStats, verdict: 'clean' | 'infected', threat?: string): void;
  singleFlight<T>(key: string, fn: () => Promise<T>): Promise<T>;
}

export interface LocalHit {
  verdict: 'clean' | 'infected';
  threat?: string | undefined;
  sha256: string;
  stale: boolean;
}

export interface FileScannerOptions {
  link: SvmClient;
  cache?: LocalVerdictStore | undefined;
  /** Files larger than this are not scanned (outcome `skipped`, reason in `error`). */
  maxFileSize: number;
  /** Deadline of a lookup, ms. Uploads get this plus time for the bytes at `minUploadRate`. */
  deadlineMs: number;
  /** Bytes per second assumed when computing an upload's deadline. */
  minUploadRate?: number;
  /** Files up to this size are kept in memory between hashing and upload (else read twice). */
  inMemoryMax?: number;
}

const READ_BUF = 1024 * 1024;

export class FileScanner {
  private readonly buf = Buffer.allocUnsafe(READ_BUF);
  private readonly opts: Required<Omit<FileScannerOptions, 'cache'>> & Pick<FileScannerOptions, 'cache'>;
  /** The class of each content scan in flight, by single-flight key: an open joining one raises it. */
  private readonly flights = new Map<string, Priority>();
  /** Background scans raised to foreground because a decision joined them. */
  raised = 0;

  constructor(options: FileScannerOptions) {
    this.opts = { minUploadRate: 10 * 1024 * 1024, inMemoryMax: 4 * 1024 * 1024, ...options };
  }

  /**
   * Open `path` without following a final symlink and scan it. Never throws: errors are in the
   * result. With `known` (an lstat the caller just made), an identity hit answers without opening.
   */
  async scanPath(path: string, known?: fs.BigIntStats, priority: PriorityClass = 'background'): Promise<ScanResult> {
    // Looked up once: on a miss, the same identity after open goes straight to the content scan.
    let looked: { hit: LocalHit | undefined } | undefined;
    if (known?.isFile() && this.opts.cache) {
      const hit = this.opts.cache.lookupIdentity(known);
      if (hit && !hit.stale) return fromHit(path, Number(known.size), hit, 'cache-identity', 0);
      looked = { hit };
    }
    let fd: number;
    try {
      fd = fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (err) {
      return errorResult(path, 0, err);
    }
    try {
      const st = fs.fstatSync(fd, { bigint: true });
      if (!st.isFile()) return skippedResult(path, 0, 'LA_SKIP_NOT_REGULAR', 'not a regular file');
      return await (looked && sameIdentity(st, known!)
        ? this.scanMissed(fd, path, st, looked.hit, priority)
        : this.scanFdNow(fd, path, st, priority));
    } catch (err) {
      return errorResult(path, 0, err);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * A local identity hit synchronously (the on-access hot path answers it without a promise or a
   * timer); otherwise the promise of the scan. Never throws.
   */
  scanFdNow(fd: number, path: string, st: fs.BigIntStats, priority: PriorityClass = 'background'): ScanResult | Promise<ScanResult> {
    let hit: LocalHit | undefined;
    try {
      hit = this.opts.cache?.lookupIdentity(st);
    } catch (err) {
      return errorResult(path, Number(st.size), err);
    }
    if (hit && !hit.stale) return fromHit(path, Number(st.size), hit, 'cache-identity', 0);
    const cache = this.opts.cache;
    const size = Number(st.size);
    if (!hit && cache && size <= READ_BUF && size <= this.opts.maxFileSize) {
      // A copy of known content (a fingerprint hit: what a copy or an extract writes) is answered
      // here too, synchronously: no promise, no single-flight key, no deadline timer. Read once;
      // a miss hands the bytes on, so they are not read twice.
      let pre: ReadOnce;
      try {
        pre = this.readFd(fd, size, true);
        const fpHit = pre.fp === undefined ? undefined : cache.lookupFingerprint(pre.fp);
        if (fpHit && !fpHit.stale) {
          cache.recordIdentity(st, pre.fp!);
          return fromHit(path, size, fpHit, 'cache-fingerprint', size);
        }
      } catch (err) {
        return errorResult(path, size, err);
      }
      // The bytes are still a view of the shared read buffer: scanContent copies them out before
      // its first await, as it does its own read (scanMissed reaches it without yielding).
      return this.scanMissed(fd, path, st, undefined, priority, pre);
    }
    return this.scanMissed(fd, path, st, hit, priority);
  }

  /** Scan the open file `fd` (the caller keeps ownership). Never throws. */
  async scanFd(fd: number, path: string, st: fs.BigIntStats, priority: PriorityClass = 'background'): Promise<ScanResult> {
    return this.scanFdNow(fd, path, st, priority);
  }

  /** The file is not (freshly) known by identity: `staleHit` is a clean verdict of an older generation. */
  private async scanMissed(
    fd: number,
    path: string,
    st: fs.BigIntStats,
    staleHit: LocalHit | undefined,
    priority: PriorityClass,
    pre?: ReadOnce,
  ): Promise<ScanResult> {
    const size = Number(st.size);
    if (size > this.opts.maxFileSize) {
      return skippedResult(path, size, 'LA_SKIP_TOO_LARGE', `larger than max_file_size (${this.opts.maxFileSize} bytes)`);
    }
    const cache = this.opts.cache;
    try {
      const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
      // A decision joining a background scan of the same file raises it (it waits on it now).
      const joined = this.flights.get(key);
      // (Only with a cache: without one there is no single flight, nothing is joined.)
      if (cache && joined && priority === 'foreground' && !joined.foreground) {
        joined.raise();
        this.raised++;
      }
      const run = async () => {
        const prio = new Priority(priority);
        this.flights.set(key, prio);
        try {
          const r = await this.scanContent(fd, path, st, size, staleHit, prio, pre);
          if (prio.requests > 0)
            r.svmTiming = {
              windowWaitMs: Math.round(prio.windowWaitMs * 10) / 10,
              svmMs: Math.round(prio.svmMs * 10) / 10,
              requests: prio.requests,
              priority: prio.class,
            };
          return r;
        } finally {
          if (this.flights.get(key) === prio) this.flights.delete(key);
        }
      };
      return cache ? await cache.singleFlight(key, run) : await run();
    } catch (err) {
      return errorResult(path, size, err);
    }
  }

  /** `pre`: the file as scanFdNow already read it (fingerprint, bytes still in the shared buffer). */
  private async scanContent(
    fd: number,
    path: string,
    st: fs.BigIntStats,
    size: number,
    staleHit: LocalHit | undefined,
    prio: Priority,
    pre?: ReadOnce,
  ): Promise<ScanResult> {
    const cache = this.opts.cache;
    // A stale clean identity hit already knows the SHA-256: re-check by lookup, no read at all.
    if (staleHit) {
      const v = await this.backingOff(() => this.opts.link.lookup(staleHit.sha256, size, undefined, prio), this.opts.deadlineMs);
      if (v.verdict === 'clean' || v.verdict === 'infected') {
        cache?.refreshIdentity(st, v.verdict, v.threat);
        return this.finish(path, st, size, undefined, staleHit.sha256, v, 'svm-cache', 0, 0);
      }
    }
    // Pass 1: the local fingerprint only (xxh64, ~7 GB/s); a copy of known content stops here.
    // SHA-256 (~1.6 GB/s) is computed only for content the local cache does not know.
    const { fp, content: read1 } = pre ?? this.readFd(fd, size, cache !== undefined);
    if (cache && fp !== undefined) {
      const fpHit = cache.lookupFingerprint(fp);
      if (fpHit && !fpHit.stale) {
        cache.recordIdentity(st, fp);
        return fromHit(path, size, fpHit, 'cache-fingerprint', size);
      }
    }
    // A file that fit the shared read buffer is still in it: copy it out before the first await
    // (another scan reuses the buffer). Only a miss pays for a copy of its own.
    const content = read1 && read1.buffer === this.buf.buffer ? Buffer.from(read1) : read1;
    const sha256 = content ? crypto.createHash('sha256').update(content).digest('hex') : this.sha256Fd(fd, size);
    if (RTT_TRACE) rttMark('s.hashed', `${path}|${sha256}`);
    const looked = await this.backingOff(() => this.opts.link.lookup(sha256, size, undefined, prio), this.opts.deadlineMs);
    if (looked.verdict === 'clean' || looked.verdict === 'infected')
      return this.finish(path, st, size, fp, sha256, looked, 'svm-cache', 0, size);
    if (looked.verdict === 'error')
      throw new ScanFailedError(looked.code ?? 'LA_ERR_SCAN', looked.message ?? 'the SVM could not answer the lookup');

    const read = content
      ? (off: number, len: number) => content.subarray(off, off + len)
      : (off: number, len: number) => {
          const out = Buffer.allocUnsafe(len);
          const n = fs.readSync(fd, out, 0, len, off);
          return n === len ? out : out.subarray(0, n);
        };
    const uploadDeadline = this.opts.deadlineMs + Math.ceil((size / this.opts.minUploadRate) * 1000);
    const scanned: VerdictMsg | undefined = await this.backingOff(
      () => this.opts.link.scan(size, read, uploadDeadline, path, prio),
      uploadDeadline,
    );
    if (!scanned || scanned.verdict === 'error' || scanned.verdict === 'unknown') {
      throw new ScanFailedError(scanned?.code ?? 'LA_ERR_SCAN', scanned?.message ?? 'the SVM could not scan the file');
    }
    // The SVM hashed what it received; a mismatch means the file changed under us.
    if (scanned.sha256 && scanned.sha256 !== sha256) {
      throw new LightagentError(
        'LA_ERR_FILE_CHANGED',
        'the file changed while it was scanned',
        'it will be scanned again at its next change',
      );
    }
    return this.finish(path, st, size, fp, sha256, scanned, 'svm-scan', size, content ? size : size * 3);
  }

  /**
   * Ask again, after a jittered exponential pause (20 ms doubling to 1 s), while the SVM answers
   * "busy" or "over your request rate" (LA_ERR_BUSY, LA_ERR_RATE_LIMITED), for at most `budgetMs`
   * in all: a burst of first opens must be slowed down by the SVM, not turned into files allowed
   * unscanned.
   */
  private async backingOff(ask: () => Promise<VerdictMsg>, budgetMs: number): Promise<VerdictMsg> {
    const end = performance.now() + budgetMs;
    let backoff: Backoff | undefined; // made at the first refusal: most asks are answered at once
    for (;;) {
      const v = await ask();
      if (!(v.verdict === 'error' && (v.code === 'LA_ERR_BUSY' || v.code === 'LA_ERR_RATE_LIMITED'))) return v;
      const pause = (backoff ??= new Backoff(20, 1000)).next();
      if (performance.now() + pause >= end) return v;
      await new Promise((r) => setTimeout(r, pause));
    }
  }

  private finish(
    path: string,
    st: fs.BigIntStats,
    size: number,
    fp: bigint | undefined,
    sha256: string,
    v: VerdictMsg,
    source: VerdictSource,
    uploaded: number,
    read: number,
  ): ScanResult {
    const verdict = v.verdict === 'infected' ? 'infected' : 'clean';
    const threat = v.threat ?? (verdict === 'infected' ? 'Unknown-Threat' : undefined);
    if (fp !== undefined) this.opts.cache?.record(st, fp, sha256, verdict, threat);
    const r: ScanResult = { path, outcome: verdict, sha256, size, source, uploaded, read };
    if (threat !== undefined) r.threat = threat;
    return r;
  }

  /**
   * Read the file once through `fd`: the local fingerprint (when a cache is used) and the bytes if
   * small. Up to the shared read buffer's size the bytes come back as a view of that buffer (no
   * allocation per file: a fingerprint hit, the common case for copies, needs no copy at all);
   * the caller copies them out before it yields.
   */
  private readFd(fd: number, size: number, fingerprint: boolean): ReadOnce {
    const xx = fingerprint ? this.opts.cache?.createHasher() : undefined;
    const keep = size > this.opts.inMemoryMax ? undefined : size <= READ_BUF ? this.buf.subarray(0, size) : Buffer.allocUnsafe(size);
    if (!xx && !keep) return { fp: undefined, content: undefined };
    let off = 0;
    while (off < size) {
      const target = keep ? keep.subarray(off) : this.buf;
      const n = fs.readSync(fd, target, 0, Math.min(target.length, READ_BUF), off);
      if (n === 0) break;
      xx?.update(target.subarray(0, n));
      off += n;
    }
    if (off !== size) throw changed(off, size);
    return { fp: xx?.digest(), content: keep };
  }

  private sha256Fd(fd: number, size: number): string {
    const sha = crypto.createHash('sha256');
    let off = 0;
    while (off < size) {
      const n = fs.readSync(fd, this.buf, 0, Math.min(READ_BUF, size - off), off);
      if (n === 0) break;
      sha.update(this.buf.subarray(0, n));
      off += n;
    }
    if (off !== size) throw changed(off, size);
    return sha.digest('hex');
  }
}

/** One read of a file: its local fingerprint (with a cache) and its bytes if small. */
interface ReadOnce {
  fp: bigint | undefined;
  content: Buffer | undefined;
}

function changed(got: number, size: number): LightagentError {
  return new LightagentError(
    'LA_ERR_FILE_CHANGED',
    `the file shrank while it was read (${got} of ${size} bytes)`,
    'it will be scanned again at its next change',
  );
}

function fromHit(path: string, size: number, hit: LocalHit, source: VerdictSource, read: number): ScanResult {
  const r: ScanResult = { path, outcome: hit.verdict, sha256: hit.sha256, size, source, uploaded: 0, read };
  if (hit.threat !== undefined) r.threat = hit.threat;
  return r;
}

/** A file left unjudged on purpose (not a regular file, too large, excluded): nothing read, nothing sent. */
export function skippedResult(path: string, size: number, code: string, message: string): ScanResult {
  return { path, outcome: 'skipped', size, source: 'none', uploaded: 0, read: 0, error: { code, message } };
}

function errorResult(path: string, size: number, err: unknown): ScanResult {
  const e = describeError(err);
  const skip = ['ENOENT', 'ELOOP', 'EACCES', 'EPERM', 'ENXIO', 'EISDIR', 'ENOTDIR'].includes(e.code);
  return { path, outcome: skip ? 'skipped' : 'error', size, source: 'none', uploaded: 0, read: 0, error: e };
}
