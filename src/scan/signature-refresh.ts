/**
 * SignatureRefresh — after a new signature generation, bring the local cache's clean verdicts up
 * to date in the background, so that the next opens are local hits again (docs/cache.md,
 * "Signature refresh").
 *
 *   1. lookups: the cache's stale clean entries (clean under an older generation), their SHA-256s
 *      sent 512 to a frame (feature lookup-batch, background class of the window). Known clean to
 *      the SVM under the new generation: the entry is promoted, no file read (the identity key
 *      binds it to its content, as for any identity hit). Known infected: one single lookup for
 *      the threat name, then the entry records it (pinned), so the next open is denied.
 *      Unknown: left stale.
 *   2. walk (only when 1. left something, or kernel marks are to be given back): the protected
 *      trees, an lstat per file, the cache asked without counting (`peekIdentity`):
 *        - fresh clean: its kernel ignore mark back (the backend checks the identity again);
 *        - infected: judged through the daemon's background path (`judge`: quarantine, report);
 *        - still stale: read and uploaded by FileScanner.scanPath (lookup, then upload) through
 *          `judge`, at most `uploadsAtOnce` at a time, background class.
 *
 * Nothing here changes what an open gets meanwhile: a stale entry is a miss for the gate worker and
 * is re-checked by the scanner's own foreground lookup, exactly as before the refresh existed; a
 * promotion is one write under the cache's seqlock. A newer generation or stop() cancels a run.
 */
import type fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Backoff } from '../backoff.js';
import { describeError, LightagentError } from '../errors.js';
import { logger } from '../log.js';
import { FEATURES, LOOKUP_BATCH_LIMITS } from '../protocol/index.js';
import type { SvmClient } from '../svm-link/index.js';
import type { LocalHit, ScanResult } from './file-scanner.js';
import { walkTree } from './tree-walker.js';

/** What the refresh needs of the local verdict cache (src/cache/verdict-cache.ts). */
export interface RefreshableCache {
  readonly generation: string;
  countStaleClean(): number;
  staleClean(from: number, maxHashes: number): { hashes: Map<string, number[]>; next: number; done: boolean };
  promote(e: number, sha256: string, generation: string, verdict: 'clean' | 'infected', threat?: string): boolean;
  peekIdentity(st: fs.BigIntStats): LocalHit | undefined;
}

export interface SignatureRefreshOptions {
  cache: RefreshableCache;
  link: SvmClient;
  /** Scan one file found in the walk (FileScanner.scanPath with the walk's lstat, background). */
  scan: (path: string, st: fs.BigIntStats) => Promise<ScanResult>;
  /** Act on a scan's result as any background scan does (the daemon: OnAccessHandler.written: quarantine, report). */
  judge: (path: string, scan: () => Promise<ScanResult>) => Promise<ScanResult>;
  /** The trees to walk (the daemon's `protect`), read when a walk starts. */
  roots: () => readonly string[];
  /** Folders not to walk (the state dir, literal exclusions), read when a walk starts. */
  exclude?: () => readonly string[];
  /** Files the walk leaves alone (exclusions by glob and extension), read when a walk starts. */
  excludeFile?: () => (path: string) => boolean;
  /** Give a kernel ignore mark back (FanotifyGate.markUnchanged); absent without kernel marks. */
  mark?: ((path: string, st: fs.BigIntStats) => boolean) | undefined;
  /** Hashes per `lookups` frame (default and most: LOOKUP_BATCH_LIMITS.maxEntries). */
  batchSize?: number;
  /** Files read and uploaded at once in the walk (default 2). */
  uploadsAtOnce?: number;
  /** Pause between two batches, ms (default 10): the refresh yields to everything else. */
  pauseMs?: number;
  /** The walk yields to the event loop after this many files (default 64). */
  walkSlice?: number;
  /** Deadline of one batch, ms (default 10,000). */
  deadlineMs?: number;
}

export type RefreshState = 'idle' | 'running' | 'done' | 'cancelled' | 'failed' | 'unsupported';

/** `lightagent status` -> refresh. */
export interface RefreshStatus {
  state: RefreshState;
  /** The generation the run brings verdicts up to. */
  generation?: string | undefined;
  phase?: 'lookups' | 'walk' | undefined;
  /** Stale clean entries when the run started, and those answered by the SVM so far. */
  total: number;
  done: number;
  /** Entries brought to the new generation without reading the file. */
  promoted: number;
  /** Entries whose content the SVM now knows infected (recorded: the next open is denied). */
  infected: number;
  /** Entries whose content the SVM did not know: read and uploaded when the walk finds the file. */
  unknown: number;
  /** `lookups` frames sent. */
  batches: number;
  /** Files looked at by the walk; files uploaded, and their bytes; kernel marks given back. */
  walked: number;
  uploaded: number;
  bytes: number;
  marks: number;
  /** Files of the walk the scan could not judge (left for their next open). */
  errors: number;
  startedAt?: string | undefined;
  finishedAt?: string | undefined;
  durationMs?: number | undefined;
  error?: string | undefined;
}

const RETRYABLE = new Set(['LA_ERR_BUSY', 'LA_ERR_RATE_LIMITED']);
/** Hashes remembered clean within one run (~100 B each): copies further on in the cache are promoted without asking again. */
const CLEAN_SEEN_MAX = 65_536;

export class SignatureRefresh {
  private readonly o: Required<Omit<SignatureRefreshOptions, 'mark' | 'exclude' | 'excludeFile'>> &
    Pick<SignatureRefreshOptions, 'mark' | 'exclude' | 'excludeFile'>;
  private st: RefreshStatus = blank('idle');
  private run: { cancelled: boolean; done: Promise<void> } | undefined;
  private readonly log = logger('refresh');

  constructor(options: SignatureRefreshOptions) {
    this.o = {
      batchSize: LOOKUP_BATCH_LIMITS.maxEntries,
      uploadsAtOnce: 2,
      pauseMs: 10,
      walkSlice: 64,
      deadlineMs: 10_000,
      ...options,
    };
    this.o.batchSize = Math.max(1, Math.min(LOOKUP_BATCH_LIMITS.maxEntries, this.o.batchSize));
  }

  status(): RefreshStatus {
    return { ...this.st };
  }

  /** The run in progress, if any (tests and benchmarks wait on it). */
  get running(): Promise<void> | undefined {
    return this.run?.done;
  }

  /**
   * Start a run for the cache's generation now, cancelling one in progress. Nothing to do (no
   * stale clean entry) leaves the status as it was. Returns the run's promise (never rejects).
   */
  start(): Promise<void> {
    this.cancel();
    if (this.o.cache.countStaleClean() === 0) return Promise.resolve();
    const token = { cancelled: false, done: Promise.resolve() };
    token.done = this.execute(token);
    this.run = token;
    return token.done;
  }

  /** Stop the run in progress (a newer generation, shutdown); it ends at its next step. */
  cancel(): void {
    if (this.run) this.run.cancelled = true;
    this.run = undefined;
  }

  /** Cancel, and wait a little (at most `waitMs`) for the step in progress to end: a batch in flight is not waited for. */
  async stop(waitMs = 2000): Promise<void> {
    const r = this.run;
    this.cancel();
    if (!r) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([r.done, new Promise<void>((res) => (timer = setTimeout(res, waitMs)))]);
    clearTimeout(timer);
  }

  private async execute(token: { cancelled: boolean }): Promise<void> {
    const { cache, link } = this.o;
    const generation = cache.generation;
    const t0 = performance.now();
    const s: RefreshStatus = (this.st = { ...blank('running'), generation, phase: 'lookups', startedAt: new Date().toISOString() });
    s.total = cache.countStaleClean();
    const gone = () => token.cancelled || cache.generation !== generation;
    const end = (state: RefreshState, error?: string) => {
      s.state = state;
      s.phase = undefined;
      s.finishedAt = new Date().toISOString();
      s.durationMs = Math.round(performance.now() - t0);
      if (error) s.error = error;
      const figures = { ...s };
      if (state === 'done') this.log.info('signature refresh done', figures);
      else if (state === 'failed') this.log.warn('signature refresh failed; stale verdicts are re-checked at their next open', figures);
      else this.log.info(`signature refresh ${state}`, figures);
    };
    this.log.info('signature refresh started', { generation, stale: s.total });
    try {
      const toFind = await this.lookups(generation, gone);
      if (toFind === undefined) return end(link.speaks(FEATURES.lookupBatch) || gone() ? 'cancelled' : 'unsupported');
      if (gone()) return end('cancelled');
      if (toFind > 0 || (this.o.mark && s.promoted > 0)) {
        s.phase = 'walk';
        if (!(await this.walk(generation, toFind, gone))) return end('cancelled');
      }
      end('done');
    } catch (e) {
      end('failed', describeError(e).message);
    }
  }

  /**
   * Phase 1. Returns how many entries the walk has to find (unknown or infected), or undefined
   * when cancelled or when the SVM does not speak lookup-batch.
   */
  private async lookups(generation: string, gone: () => boolean): Promise<number | undefined> {
    const { cache, link } = this.o;
    const s = this.st;
    let toFind = 0;
    const cleanSeen = new Set<string>();
    for (let from = 0; ;) {
      if (gone()) return undefined;
      if (!link.speaks(FEATURES.lookupBatch)) {
        if (link.state === 'connected') return undefined;
        await link.waitConnected(this.o.deadlineMs).catch(() => sleep(1000));
        continue;
      }
      const { hashes, next, done } = cache.staleClean(from, this.o.batchSize);
      // A hash answered clean in an earlier batch (a copy recorded further on) is not asked again.
      for (const [sha, entries] of hashes) {
        if (!cleanSeen.has(sha)) continue;
        for (const e of entries) if (cache.promote(e, sha, generation, 'clean')) s.promoted++;
        s.done += entries.length;
        hashes.delete(sha);
      }
      if (hashes.size > 0) {
        const shas = [...hashes.keys()];
        const results = await this.ask(shas, gone);
        if (results === undefined) return undefined;
        if (results.generation !== generation) return undefined; // the SVM moved on: its event restarts us
        for (let i = 0; i < shas.length; i++) {
          const sha = shas[i]!;
          const entries = hashes.get(sha)!;
          const r = results.results[i];
          if (r === 'c') {
            for (const e of entries) if (cache.promote(e, sha, generation, 'clean')) s.promoted++;
            if (cleanSeen.size < CLEAN_SEEN_MAX) cleanSeen.add(sha);
          } else if (r === 'i') {
            const threat = await this.threatOf(sha);
            if (gone()) return undefined;
            if (threat === undefined) {
              // The single lookup no longer says infected (the SVM's cache moved): judged in the walk.
              s.unknown += entries.length;
              toFind += entries.length;
            } else
              for (const e of entries)
                if (cache.promote(e, sha, generation, 'infected', threat)) {
                  s.infected++;
                  toFind++;
                }
          } else {
            s.unknown += entries.length;
            toFind += entries.length;
          }
          s.done += entries.length;
        }
      }
      if (done) return toFind;
      from = next;
      await sleep(this.o.pauseMs);
    }
  }

  /** One batch, asked again after a jittered pause while the SVM says busy or over our rate. */
  private async ask(shas: string[], gone: () => boolean): Promise<{ generation: string; results: string } | undefined> {
    const backoff = new Backoff(100, 5000);
    for (;;) {
      const a = await this.o.link.lookupBatch(
        shas.map((sha256) => ({ sha256, size: 0 })),
        this.o.deadlineMs,
        'background',
      );
      this.st.batches++;
      if (a.t === 'lookups') return a;
      if (!RETRYABLE.has(a.code ?? ''))
        throw new LightagentError(a.code ?? 'LA_ERR_SCAN', a.message ?? 'the SVM could not answer a lookup batch');
      if (gone()) return undefined;
      await sleep(backoff.next());
    }
  }

  /** The threat name of content the SVM knows infected (one single lookup: a batch does not carry names). */
  private async threatOf(sha256: string): Promise<string | undefined> {
    const v = await this.o.link.lookup(sha256, 0, this.o.deadlineMs, 'background');
    return v.verdict === 'infected' ? (v.threat ?? 'Unknown-Threat') : undefined;
  }

  /** Phase 2. False when cancelled. */
  private async walk(generation: string, toFind: number, gone: () => boolean): Promise<boolean> {
    const { cache, mark } = this.o;
    const s = this.st;
    const flying = new Set<Promise<void>>();
    const judge = (path: string, st: fs.BigIntStats) => {
      const p = this.o
        .judge(path, () => this.o.scan(path, st))
        .then(
          (r) => {
            if (r.uploaded > 0) {
              s.uploaded++;
              s.bytes += r.uploaded;
            }
            if (r.outcome === 'error') s.errors++;
            else if (r.outcome === 'clean' && mark && !gone()) this.markIfClean(path, st);
          },
          () => void s.errors++,
        )
        .finally(() => flying.delete(p));
      flying.add(p);
    };
    let n = 0;
    try {
      const excludeFile = this.o.excludeFile?.();
      for await (const f of walkTree(this.o.roots(), {
        exclude: this.o.exclude?.() ?? [],
        // A mount mark covers the root's mount: never /proc, /sys or another disk under a root of `/`.
        oneFileSystem: true,
        ...(excludeFile ? { excludeFile } : {}),
      })) {
        if (++n % this.o.walkSlice === 0) {
          await new Promise((r) => setImmediate(r));
          if (gone()) return false;
        }
        s.walked++;
        const hit = cache.peekIdentity(f.stat);
        if (!hit) continue; // never judged: its first open judges it, as always
        if (hit.verdict === 'clean' && !hit.stale) {
          if (mark) this.markIfClean(f.path, f.stat);
          continue;
        }
        toFind--;
        while (flying.size >= this.o.uploadsAtOnce) await Promise.race(flying);
        if (gone()) return false;
        judge(f.path, f.stat);
        if (toFind <= 0 && !mark) break;
      }
      await Promise.all(flying);
    } finally {
      await Promise.allSettled(flying);
    }
    return !gone() && cache.generation === generation;
  }

  /** The mark goes back only on a fresh clean verdict for exactly this identity. */
  private markIfClean(path: string, st: fs.BigIntStats): void {
    const hit = this.o.cache.peekIdentity(st);
    if (hit && hit.verdict === 'clean' && !hit.stale && this.o.mark!(path, st)) this.st.marks++;
  }
}

function blank(state: RefreshState): RefreshStatus {
  return {
    state,
    total: 0,
    done: 0,
    promoted: 0,
    infected: 0,
    unknown: 0,
    batches: 0,
    walked: 0,
    uploaded: 0,
    bytes: 0,
    marks: 0,
    errors: 0,
  };
}
