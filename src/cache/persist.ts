/**
 * cache.v1 — the persisted verdict cache. Little-endian (records are the in-memory words as is):
 *
 *   header, 32 bytes:  "LACACHE1" | u32 version = 2 | u32 record bytes = 52
 *                      | u64 seed check = xxh64("lightagent cache seed check v1", seed)
 *                      | u32 record count | u32 capacity when saved (informational)
 *   records:           count x 52 bytes, the EntryStore record layout (entry-store.ts)
 *   trailer:           u32 n generations, each u16 length + UTF-8 | u32 current generation id
 *                      | u32 n threat names, each u16 length + UTF-8
 *   checksum:          32 bytes, SHA-256 of everything before
 *
 * Version 1 was the pre-release two-table layout; such a file is refused like any foreign version.
 * The string tables come after the records so that every id a record uses exists when the tables
 * are written (the save yields between chunks and records keep changing meanwhile).
 *
 * Written atomically: a private temp file (O_EXCL, 0600) in the same directory, 1 MiB chunks
 * with a yield between them (bounded event-loop stalls, bounded memory), fsync, rename, fsync of
 * the directory. Loaded in one streaming pass with one 1 MiB buffer. A file that is short,
 * corrupt, of another version or written under another seed is renamed to `<file>.bad`, a warning
 * is logged and the cache starts empty: it is only a cache.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CacheFileError } from '../errors.js';
import { logger } from '../log.js';
import { CLOCK_PIN, CLOCK_SHARED, MAX_GENERATIONS, MAX_THREATS, REC_BYTES, REC_WORDS, W_META, type EntryStore } from './entry-store.js';

export const MAGIC = Buffer.from('LACACHE1', 'latin1');
export const VERSION = 2;
export const HEADER_BYTES = 32;
const CHUNK_RECORDS = Math.floor((1 << 20) / REC_BYTES);
const MAX_TRAILER = 16 << 20;

/** What the cache hands to the writer and the loader. */
export interface PersistSource {
  store: EntryStore;
  seedCheck: bigint;
  generations(): readonly string[];
  currentGeneration(): number;
  threats(): readonly string[];
  /** Changes when generation ids are renumbered: a save that spans it is abandoned. */
  epoch(): number;
  /** Make entry `e` agree with its content's representative before it is written. */
  normalize(e: number): void;
}

export interface LoadedTables {
  generations: string[];
  currentGeneration: number;
  threats: string[];
}

export async function writeCacheFile(file: string, src: PersistSource): Promise<void> {
  if (os.endianness() !== 'LE') throw new CacheFileError(file, 'not written: cache.v1 is little-endian and this host is not');
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
  const fh = await fs.promises.open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
  try {
    const store = src.store;
    const all = new Uint8Array(store.buffer, 0, store.capacity * REC_BYTES);
    const sum = crypto.createHash('sha256');
    const stage = Buffer.allocUnsafe(CHUNK_RECORDS * REC_BYTES);
    const epoch = src.epoch();
    const count = store.used;
    let pos = 0;
    const put = async (b: Buffer) => {
      sum.update(b);
      for (let off = 0; off < b.length;) {
        const { bytesWritten } = await fh.write(b, off, b.length - off, pos);
        off += bytesWritten;
        pos += bytesWritten;
      }
    };
    const header = Buffer.alloc(HEADER_BYTES);
    MAGIC.copy(header, 0);
    header.writeUInt32LE(VERSION, 8);
    header.writeUInt32LE(REC_BYTES, 12);
    header.writeBigUInt64LE(src.seedCheck, 16);
    header.writeUInt32LE(count, 24);
    header.writeUInt32LE(store.capacity, 28);
    await put(header);
    for (let e0 = 0; e0 < count; e0 += CHUNK_RECORDS) {
      const e1 = Math.min(count, e0 + CHUNK_RECORDS);
      for (let e = e0; e < e1; e++) src.normalize(e);
      // Copy synchronously: the live records may change while the write is in flight.
      stage.set(all.subarray(e0 * REC_BYTES, e1 * REC_BYTES));
      await put(stage.subarray(0, (e1 - e0) * REC_BYTES));
    }
    if (src.epoch() !== epoch) throw new CacheFileError(file, 'generation ids were renumbered during the save; the next save writes it');
    await put(trailer(src.generations(), src.currentGeneration(), src.threats()));
    const digest = sum.digest();
    await fh.write(digest, 0, digest.length, pos);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    fs.rmSync(tmp, { force: true });
    throw e instanceof CacheFileError ? e : new CacheFileError(file, (e as Error).message, { cause: e });
  }
  await fh.close();
  try {
    await fs.promises.rename(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new CacheFileError(file, (e as Error).message, { cause: e });
  }
  if (process.platform === 'win32') return; // no directory fsync there (NTFS journals the rename)
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

function trailer(gens: readonly string[], current: number, threats: readonly string[]): Buffer {
  const parts: Buffer[] = [];
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    parts.push(b);
  };
  const strs = (list: readonly string[]) => {
    u32(list.length);
    for (const s of list) {
      const b = Buffer.from(s, 'utf8').subarray(0, 0xffff);
      const n = Buffer.alloc(2);
      n.writeUInt16LE(b.length);
      parts.push(n, b);
    }
  };
  strs(gens);
  u32(current);
  strs(threats);
  return Buffer.concat(parts);
}

class TrailerReader {
  off = 0;
  constructor(private readonly b: Buffer) {}
  private need(n: number) {
    if (this.off + n > this.b.length) throw new Error('the string tables are cut short');
  }
  u32(): number {
    this.need(4);
    this.off += 4;
    return this.b.readUInt32LE(this.off - 4);
  }
  strs(max: number, what: string): string[] {
    const n = this.u32();
    if (n > max) throw new Error(`${n} ${what}, at most ${max} allowed`);
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      this.need(2);
      const len = this.b.readUInt16LE(this.off);
      this.off += 2;
      this.need(len);
      out.push(this.b.toString('utf8', this.off, this.off + len));
      this.off += len;
    }
    return out;
  }
  get done(): boolean {
    return this.off === this.b.length;
  }
}

/**
 * Load `file` into `src.store` (emptied first). Returns the string tables, or undefined when
 * there is no file or it is unusable (then the store is empty, the file set aside, a warning logged).
 */
export function loadCacheFile(file: string, src: PersistSource): LoadedTables | undefined {
  const log = logger('cache');
  const store = src.store;
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      const err = new CacheFileError(file, `cannot be read (${(e as Error).message}); starting empty`, { cause: e });
      log.warn(err.message, { file, code: err.code });
    }
    return undefined;
  }
  try {
    store.clear();
    return readInto(fd, file, src);
  } catch (e) {
    store.clear();
    const aside = `${file}.bad`;
    let setAside = true;
    try {
      fs.renameSync(file, aside);
    } catch {
      setAside = false;
    }
    const err = new CacheFileError(file, `unusable (${(e as Error).message}); starting with an empty cache`, { cause: e });
    log.warn(err.message, { file, code: err.code, ...(setAside ? { setAside: aside } : {}) });
    return undefined;
  } finally {
    fs.closeSync(fd);
  }
}

function readFull(fd: number, buf: Buffer, len: number, pos: number): void {
  for (let off = 0; off < len;) {
    const n = fs.readSync(fd, buf, off, len - off, pos + off);
    if (n === 0) throw new Error(`truncated at byte ${pos + off}`);
    off += n;
  }
}

function readInto(fd: number, _file: string, src: PersistSource): LoadedTables {
  if (os.endianness() !== 'LE') throw new Error('cache.v1 is little-endian and this host is not');
  const store = src.store;
  const size = fs.fstatSync(fd).size;
  if (size < HEADER_BYTES + 12 + 32) throw new Error(`too short (${size} bytes)`);
  const header = Buffer.alloc(HEADER_BYTES);
  readFull(fd, header, HEADER_BYTES, 0);
  if (!header.subarray(0, 8).equals(MAGIC)) throw new Error('not a lightagent cache file');
  const version = header.readUInt32LE(8);
  if (version !== VERSION) throw new Error(`format version ${version}; this agent reads version ${VERSION}`);
  if (header.readUInt32LE(12) !== REC_BYTES) throw new Error('unexpected record size');
  if (header.readBigUInt64LE(16) !== src.seedCheck) throw new Error('written under another seed');
  const count = header.readUInt32LE(24);
  const bodyEnd = HEADER_BYTES + count * REC_BYTES;
  if (bodyEnd + 12 + 32 > size) throw new Error(`truncated: ${count} records do not fit in ${size} bytes`);
  if (size - bodyEnd > MAX_TRAILER) throw new Error('oversized string tables');
  const sum = crypto.createHash('sha256').update(header);

  const rec = store.rec;
  const bytes = new Uint8Array(store.buffer, 0, store.capacity * REC_BYTES);
  const chunk = Buffer.allocUnsafe(CHUNK_RECORDS * REC_BYTES);
  for (let done = 0; done < count;) {
    const n = Math.min(CHUNK_RECORDS, count - done);
    readFull(fd, chunk, n * REC_BYTES, HEADER_BYTES + done * REC_BYTES);
    sum.update(chunk.subarray(0, n * REC_BYTES));
    done += n;
    // Past capacity (the cache was shrunk) the rest is only checksummed.
    const take = Math.min(n, store.capacity - store.used);
    if (take <= 0) continue;
    const base = store.used;
    store.recHigh = Math.max(store.recHigh, base + take);
    bytes.set(chunk.subarray(0, take * REC_BYTES), base * REC_BYTES);
    for (let k = 0; k < take; k++) ingest(store, base + k);
    rec.fill(0, store.used * REC_WORDS, (base + take) * REC_WORDS);
  }

  const rest = Buffer.allocUnsafe(size - bodyEnd);
  readFull(fd, rest, rest.length, bodyEnd);
  const tail = rest.subarray(0, rest.length - 32);
  if (
    !sum
      .update(tail)
      .digest()
      .equals(rest.subarray(rest.length - 32))
  )
    throw new Error('checksum mismatch (corrupt or cut short)');
  const r = new TrailerReader(tail);
  const generations = r.strs(MAX_GENERATIONS, 'generations');
  const currentGeneration = r.u32();
  const threats = r.strs(MAX_THREATS, 'threat names');
  if (!r.done) throw new Error('trailing bytes after the string tables');
  if (generations.length === 0 || currentGeneration >= generations.length) throw new Error('bad generation table');

  for (let e = 0; e < store.used; e++) {
    const m = rec[e * REC_WORDS + W_META]!;
    const v = m & 3;
    if ((v !== 1 && v !== 2) || ((m >>> 2) & (MAX_GENERATIONS - 1)) >= generations.length || m >>> 16 >= Math.max(1, threats.length))
      throw new Error(`record ${e} is invalid`);
    store.clock[e] = (store.clock[e]! & CLOCK_SHARED) | (v === 2 ? CLOCK_PIN : 0);
  }
  return { generations, currentGeneration, threats: threats.length ? threats : [''] };
}

/** Index the record just copied to slot `src` (== store.used or after it), compacting duplicates. */
function ingest(store: EntryStore, srcSlot: number): void {
  const rec = store.rec;
  const e = store.used;
  store.reserve(e + 1);
  if (srcSlot !== e) rec.copyWithin(e * REC_WORDS, srcSlot * REC_WORDS, (srcSlot + 1) * REC_WORDS);
  const dup = store.insertIdentity(e);
  if (dup >= 0) {
    // The same identity twice (it was re-recorded while the save ran): the later record wins.
    store.dropRepresentative(dup);
    rec.copyWithin(dup * REC_WORDS, e * REC_WORDS, (e + 1) * REC_WORDS);
    rec.fill(0, e * REC_WORDS, (e + 1) * REC_WORDS);
    store.addRepresentative(dup);
    return;
  }
  store.used++;
  store.addRepresentative(e);
}
