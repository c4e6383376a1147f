/**
 * A crash-safe key -> JSON value store as an append-only journal: the deferred-scan queue and
 * the quarantine index live in one each. A write is acknowledged (its promise resolves) only
 * after its record is on disk (fdatasync), so a power cut or SIGKILL loses nothing acknowledged.
 * Why not an embedded database: docs/quarantine.md, "Journal format".
 *
 * Format (journal-format.ts has it byte by byte): a 16-byte versioned header, then records
 * `[u32 length][u32 crc32][JSON array of put/delete ops]`, one record per atomic write.
 * Replay applies records in order and stops at the first one that is short (a torn append),
 * has a bad length or checksum, or is not valid JSON ops. The file is truncated there, so later
 * appends continue cleanly; a complete record with a bad checksum (corruption, not a torn
 * write) and everything after it is first copied aside to `<file>.corrupt-<ms>` for forensics.
 * A file whose header is not ours is renamed `<file>.unreadable-<ms>` and a new one is started:
 * never crash on a format we do not know, never destroy it either.
 *
 * Compaction rewrites the live entries to `<file>.tmp`, fsyncs it, renames it over the journal
 * and fsyncs the directory (a crash leaves either the old or the new file, both complete). It
 * runs when garbage (replaced or deleted entries) exceeds both `compactMinGarbageBytes` and the
 * live size, or when an append would pass `maxBytes`. Writes whose live data would not fit in
 * `maxBytes` are refused with LA_ERR_JOURNAL_FULL.
 *
 * Concurrent writes are group-committed: everything queued while one write+fdatasync runs goes
 * into the next one. After a failed fsync the journal refuses every further write: the kernel
 * may have dropped the dirty pages, so retrying could report success for data that is gone
 * (PostgreSQL's "fsyncgate", https://lwn.net/Articles/752063/). Reopen it to go on.
 * A full disk (ENOSPC, EDQUOT) while writing, before any fsync, is different: what was
 * acknowledged is on disk, so the journal cuts the file back to its last acknowledged byte,
 * replays it (memory drops the refused ops) and takes the next write as if nothing happened;
 * writes work again as soon as space is freed. A journal that cannot even be created for lack
 * of space opens empty in that state, so a daemon starting on a full /var still protects.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { JournalError } from '../errors.js';
import { logger } from '../log.js';
import { acquireLock } from './lock-file.js';
import { JOURNAL_HEADER_BYTES, decodeRecords, encodeOps, encodeRecord, headerBytes, putCost, type JournalOp } from './journal-format.js';

export { JOURNAL_HEADER_BYTES, type JournalOp } from './journal-format.js';

export interface JournalOptions<V> {
  /** Largest the file may grow to (default 64 MiB). */
  maxBytes?: number;
  /** Largest payload of one record (default 1 MiB); a bigger length in the file is corruption. */
  maxRecordBytes?: number;
  /** Compact only once at least this much is garbage (default 1 MiB). */
  compactMinGarbageBytes?: number;
  /** Checks each replayed value; a put whose value fails is skipped with a warning. */
  validate?: (key: string, value: unknown) => value is V;
  /** Replay only: no lock, no truncation, no writes (a reader beside a live writer). */
  readOnly?: boolean;
  /** How long to wait for another process's lock (default 0: fail at once). */
  lockWaitMs?: number;
}

export interface JournalStats {
  fileBytes: number;
  liveBytes: number;
  entries: number;
  compactions: number;
  /** Bytes dropped at open because of a torn or corrupt tail. */
  droppedTailBytes: number;
}

interface Pending {
  buf: Buffer;
  /** Rewrite the file with the live entries instead of appending (an explicit compact()). */
  compact?: boolean;
  resolve: () => void;
  reject: (e: Error) => void;
}

/** Out of space or quota: the write never reached the disk, nothing acknowledged is at risk. */
function noSpace(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

async function fsyncDir(dir: string): Promise<void> {
  if (process.platform === 'win32') return; // a directory cannot be opened for fsync there; NTFS journals renames itself
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class Journal<V> {
  private readonly map = new Map<string, V>();
  private readonly cost = new Map<string, number>();
  private liveBytes = 0;
  private fileBytes = JOURNAL_HEADER_BYTES;
  private compactions = 0;
  private droppedTailBytes = 0;
  private fh: fsp.FileHandle | undefined;
  private releaseLock: (() => Promise<void>) | undefined;
  private pending: Pending[] = [];
  private flushing: Promise<void> | undefined;
  private failure: Error | undefined;
  /** The failure was a full disk before any fsync: the next write cuts back, replays and retries. */
  private recoverable = false;
  private recovering: Promise<void> | undefined;
  private closed = false;
  private readonly log;
  private readonly maxBytes: number;
  private readonly maxRecordBytes: number;
  private readonly compactMinGarbageBytes: number;

  private constructor(
    readonly file: string,
    private readonly opts: JournalOptions<V>,
  ) {
    this.log = logger('journal', { file });
    this.maxBytes = opts.maxBytes ?? 64 * 1024 * 1024;
    this.maxRecordBytes = opts.maxRecordBytes ?? 1024 * 1024;
    this.compactMinGarbageBytes = opts.compactMinGarbageBytes ?? 1024 * 1024;
  }

  /** Open (creating the file, and its directory 0700, if needed) and replay. */
  static async open<V>(file: string, opts: JournalOptions<V> = {}): Promise<Journal<V>> {
    const j = new Journal<V>(path.resolve(file), opts);
    await j.init();
    return j;
  }

  get size(): number {
    return this.map.size;
  }
  get(key: string): V | undefined {
    return this.map.get(key);
  }
  has(key: string): boolean {
    return this.map.has(key);
  }
  /** Live entries in the order their keys were first put (a re-put keeps its place). */
  entries(): IterableIterator<[string, V]> {
    return this.map.entries();
  }
  keys(): IterableIterator<string> {
    return this.map.keys();
  }
  stats(): JournalStats {
    return {
      fileBytes: this.fileBytes,
      liveBytes: this.liveBytes,
      entries: this.map.size,
      compactions: this.compactions,
      droppedTailBytes: this.droppedTailBytes,
    };
  }

  put(key: string, value: V): Promise<void> {
    return this.write([{ op: 'put', key, value }]);
  }
  /** Resolves false (and writes nothing) when the key is not there. */
  async delete(key: string): Promise<boolean> {
    if (!this.map.has(key)) return false;
    await this.write([{ op: 'delete', key }]);
    return true;
  }

  /**
   * Apply `ops` atomically (one record: all or none survive a crash) and resolve once they are
   * on disk. Memory is updated at once, so reads see the ops before the promise resolves.
   */
  write(ops: readonly JournalOp<V>[]): Promise<void> {
    if (this.failure) return this.afterRecovery(() => this.write(ops));
    if (this.closed || this.opts.readOnly)
      return Promise.reject(
        new JournalError('LA_ERR_JOURNAL', this.file, this.closed ? 'journal is closed' : 'journal was opened read-only'),
      );
    if (ops.length === 0) return Promise.resolve();
    const payload = encodeOps(ops);
    if (payload.length > this.maxRecordBytes) {
      return Promise.reject(
        new JournalError('LA_ERR_JOURNAL', this.file, `record of ${payload.length} bytes is over the ${this.maxRecordBytes}-byte limit`),
      );
    }
    // Refuse before touching memory if the live data would not fit even after compaction.
    let live = this.liveBytes;
    const seen = new Map<string, number>();
    for (const o of ops) {
      const before = seen.get(o.key) ?? this.cost.get(o.key) ?? 0;
      const after = o.op === 'put' ? putCost(o.key, o.value) : 0;
      live += after - before;
      seen.set(o.key, after);
    }
    if (JOURNAL_HEADER_BYTES + live > this.maxBytes) {
      return Promise.reject(
        new JournalError(
          'LA_ERR_JOURNAL_FULL',
          this.file,
          `live data would reach ${JOURNAL_HEADER_BYTES + live} bytes, over the ${this.maxBytes}-byte bound`,
          'remove entries, or raise the bound',
        ),
      );
    }
    for (const o of ops) this.applyOp(o);
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ buf: encodeRecord(payload), resolve, reject });
      this.flushing ??= this.flushLoop();
    });
  }

  /** Rewrite the file with only the live entries now (normally automatic). */
  compact(): Promise<void> {
    if (this.failure) return this.afterRecovery(() => this.compact());
    if (this.closed || this.opts.readOnly)
      return Promise.reject(new JournalError('LA_ERR_JOURNAL', this.file, 'journal is closed or read-only'));
    // Queued like a write, so it never runs beside an append.
    return new Promise<void>((resolve, reject) => {
      this.pending.push({ buf: Buffer.alloc(0), compact: true, resolve, reject });
      this.flushing ??= this.flushLoop();
    });
  }

  /** Wait for queued writes, then close the file and release the lock. Safe to call twice. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.flushing || this.recovering) await (this.flushing ?? this.recovering);
    await this.fh?.close();
    this.fh = undefined;
    await this.releaseLock?.();
  }

  /** Run `retry` once a recoverable failure is mended; otherwise reject with the failure. */
  private afterRecovery(retry: () => Promise<void>): Promise<void> {
    const failure = this.failure!;
    if (!this.recoverable || this.closed) return Promise.reject(failure);
    return this.recover().then(retry, () => Promise.reject(this.failure ?? failure));
  }

  /**
   * After a full disk: cut the file back to the last acknowledged byte (dropping a partial
   * append), replay it so memory holds exactly what is on disk, and reopen. Shared by every
   * caller while it runs; on failure the journal stays failed and the next write tries again.
   */
  private recover(): Promise<void> {
    this.recovering ??= (async () => {
      try {
        while (this.flushing) await this.flushing;
        if (this.failure) await this.cutBack();
      } finally {
        this.recovering = undefined;
      }
    })();
    return this.recovering;
  }

  /** The body of recover(), also run by the flush loop itself before it rejects a batch. */
  private async cutBack(): Promise<void> {
    try {
      const good = this.fileBytes;
      const old = this.fh;
      this.fh = undefined;
      if (old) {
        try {
          await old.truncate(good);
        } finally {
          await old.close();
        }
      }
      this.map.clear();
      this.cost.clear();
      this.liveBytes = 0;
      this.fileBytes = JOURNAL_HEADER_BYTES;
      await fsp.rm(`${this.file}.tmp`, { force: true });
      await this.replay();
      this.fh = await fsp.open(this.file, 'r+');
      this.log.info('journal cut back to its acknowledged records after a full disk', {
        fileBytes: this.fileBytes,
        entries: this.map.size,
      });
      this.failure = undefined;
      this.recoverable = false;
    } catch (e) {
      if (!noSpace(e)) {
        this.recoverable = false;
        this.failure = new JournalError(
          'LA_ERR_JOURNAL',
          this.file,
          `cannot recover after a full disk: ${(e as Error).message}`,
          undefined,
          { cause: e },
        );
      }
      throw e;
    }
  }

  private applyOp(o: JournalOp<V>): void {
    const before = this.cost.get(o.key) ?? 0;
    if (o.op === 'put') {
      const c = putCost(o.key, o.value);
      this.map.set(o.key, o.value);
      this.cost.set(o.key, c);
      this.liveBytes += c - before;
    } else if (this.map.delete(o.key)) {
      this.cost.delete(o.key);
      this.liveBytes -= before;
    }
  }

  private async init(): Promise<void> {
    const dir = path.dirname(this.file);
    if (!this.opts.readOnly) {
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      const st = await fsp.stat(dir);
      if (process.platform !== 'win32' && st.mode & 0o077)
        this.log.warn('journal directory is open to other users; it should be 0700', { dir, mode: (st.mode & 0o777).toString(8) });
      this.releaseLock = await acquireLock(`${this.file}.lock`, this.opts.lockWaitMs ?? 0);
    }
    try {
      await this.replay();
      if (!this.opts.readOnly) {
        await fsp.rm(`${this.file}.tmp`, { force: true }); // a compaction cut short by a crash
        this.fh = await fsp.open(this.file, 'r+');
        await this.fh.chmod(0o600);
      }
    } catch (e) {
      if (!this.opts.readOnly && noSpace(e)) {
        // Start anyway (what the file held is in memory, or it is new and empty): a daemon
        // booting on a full disk must still protect. Writes fail until space is freed.
        await this.fh?.close();
        this.fh = undefined;
        this.failure = new JournalError(
          'LA_ERR_JOURNAL',
          this.file,
          `cannot write (disk full): ${(e as Error).message}`,
          'free space in the state directory; writes resume by themselves',
          { cause: e },
        );
        this.recoverable = true;
        this.log.error('journal opened without write access: the disk is full; writes are refused until space is freed', {
          code: (e as NodeJS.ErrnoException).code,
          entries: this.map.size,
        });
        return;
      }
      await this.fh?.close();
      await this.releaseLock?.();
      throw e instanceof JournalError
        ? e
        : new JournalError('LA_ERR_JOURNAL', this.file, `cannot open: ${(e as Error).message}`, undefined, { cause: e });
    }
  }

  private async replay(): Promise<void> {
    let data: Buffer;
    try {
      data = await fsp.readFile(this.file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      if (!this.opts.readOnly) await this.createFresh();
      return;
    }
    const expected = headerBytes();
    if (data.length < JOURNAL_HEADER_BYTES || !data.subarray(0, JOURNAL_HEADER_BYTES).equals(expected)) {
      if (this.opts.readOnly) throw new JournalError('LA_ERR_JOURNAL', this.file, 'not a lightagent journal (or another format version)');
      const aside = `${this.file}.unreadable-${Date.now()}`;
      await fsp.rename(this.file, aside);
      this.log.error('journal header not recognised: moved aside, starting a new journal', { aside, bytes: data.length });
      await this.createFresh();
      return;
    }
    const { batches, end: off, problem, corrupt } = decodeRecords<V>(data, this.maxRecordBytes);
    let skipped = 0;
    for (const ops of batches) {
      for (const o of ops) {
        if (o.op === 'put' && this.opts.validate && !this.opts.validate(o.key, o.value)) skipped++;
        else this.applyOp(o);
      }
    }
    this.fileBytes = off;
    if (skipped) this.log.warn('skipped journal entries that failed validation', { skipped });
    if (problem === undefined) return;
    this.droppedTailBytes = data.length - off;
    this.log.warn('journal tail dropped at replay', {
      offset: off,
      droppedBytes: this.droppedTailBytes,
      problem,
      keptEntries: this.map.size,
    });
    if (this.opts.readOnly) return;
    if (corrupt) {
      const aside = `${this.file}.corrupt-${Date.now()}`;
      await fsp.writeFile(aside, data.subarray(off), { mode: 0o600 });
      this.log.warn('corrupt journal tail copied aside', { aside });
    }
    const fh = await fsp.open(this.file, 'r+');
    try {
      await fh.truncate(off);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /** A new journal is written whole to a temp file and renamed in: no half-written header ever. */
  private async createFresh(): Promise<void> {
    await this.writeAtomically([headerBytes()]);
    this.fileBytes = JOURNAL_HEADER_BYTES;
  }

  private async writeAtomically(chunks: Iterable<Buffer>): Promise<number> {
    const tmp = `${this.file}.tmp`;
    await fsp.rm(tmp, { force: true });
    const fh = await fsp.open(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600);
    let size = 0;
    try {
      await fh.chmod(0o600);
      let batch: Buffer[] = [];
      let batchBytes = 0;
      for (const c of chunks) {
        batch.push(c);
        batchBytes += c.length;
        if (batchBytes >= 1024 * 1024) {
          await fh.writev(batch);
          size += batchBytes;
          batch = [];
          batchBytes = 0;
        }
      }
      if (batch.length) await fh.writev(batch);
      size += batchBytes;
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, this.file);
    await fsyncDir(path.dirname(this.file));
    return size;
  }

  private async flushLoop(): Promise<void> {
    let syncing = false;
    try {
      while (this.pending.length > 0) {
        const batch = this.pending;
        this.pending = [];
        try {
          if (this.failure) throw this.failure;
          const bytes = batch.reduce((n, p) => n + p.buf.length, 0);
          const garbage = this.fileBytes + bytes - JOURNAL_HEADER_BYTES - this.liveBytes;
          const compactNow =
            batch.some((p) => p.compact) ||
            this.fileBytes + bytes > this.maxBytes ||
            (garbage > this.compactMinGarbageBytes && garbage > this.liveBytes);
          if (compactNow) {
            await this.rewrite(); // memory already holds the batch, so the rewrite includes it
          } else {
            const fh = this.fh!;
            const bufs = batch.map((p) => p.buf);
            let written = 0;
            while (written < bytes) {
              const r = await fh.writev(written === 0 ? bufs : [Buffer.concat(bufs).subarray(written)], this.fileBytes + written);
              written += r.bytesWritten;
            }
            syncing = true;
            await fh.datasync();
            syncing = false;
            this.fileBytes += bytes;
          }
          for (const p of batch) p.resolve();
        } catch (e) {
          if (!this.failure) {
            // A compaction writes a temp file and fsyncs that, never the journal: its failure
            // leaves the journal as it was. An fsync of the journal itself is never retried.
            this.recoverable = noSpace(e) && !syncing;
            this.failure = this.recoverable
              ? new JournalError(
                  'LA_ERR_JOURNAL',
                  this.file,
                  `write failed, disk full: ${(e as Error).message}`,
                  'free space in the state directory; writes resume by themselves',
                  { cause: e },
                )
              : new JournalError(
                  'LA_ERR_JOURNAL',
                  this.file,
                  `write failed, journal now refuses writes until reopened: ${(e as Error).message}`,
                  undefined,
                  { cause: e },
                );
          }
          syncing = false;
          const refused = batch.concat(this.pending);
          this.pending = [];
          const failure = this.failure;
          if (this.recoverable) {
            // Memory holds the refused ops (and those queued behind them): put it back to what
            // is on disk before anyone hears of the refusal.
            await this.cutBack().catch(() => undefined);
          }
          for (const p of refused) p.reject(failure);
        }
      }
    } finally {
      this.flushing = undefined;
    }
  }

  private async rewrite(): Promise<void> {
    const map = this.map;
    function* records(): Generator<Buffer> {
      yield headerBytes();
      for (const [k, v] of map) yield encodeRecord(encodeOps([{ op: 'put', key: k, value: v }]));
    }
    const before = this.fileBytes;
    const size = await this.writeAtomically(records());
    const old = this.fh;
    this.fh = undefined;
    await old?.close();
    this.fh = await fsp.open(this.file, 'r+');
    this.fileBytes = size;
    this.compactions++;
    this.log.info('journal compacted', { beforeBytes: before, afterBytes: size, entries: this.map.size });
  }
}
