/**
 * cache.v1 — the persisted verdict cache. Little-endian:
 *
 *   "LACACHE1" | u32 version=1 | u64 seed check (xxh64 of a constant under the seed)
 *   u32 n generations, each u16 length + UTF-8 | u32 current generation index
 *   u32 n threats, each u16 length + UTF-8
 *   u32 n identities, each u64 key + u64 fingerprint
 *   u32 n contents, each u64 fingerprint + 32 bytes SHA-256 + u32 meta
 *   32 bytes SHA-256 of everything before
 *
 * Written atomically: a temp file in the same directory (0600), fsync, rename, fsync of the
 * directory. A file that is short, corrupt, of another version or made under another seed is
 * set aside and the cache starts empty: it is only a cache.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { logger } from '../log.js';
import { CONTENT_WIDTH, ID_WIDTH, type VerdictCache } from './verdict-cache.js';

const MAGIC = Buffer.from('LACACHE1', 'latin1');
const VERSION = 1;
const SEED_CHECK = new TextEncoder().encode('lightagent cache seed check v1');

function seedCheck(c: VerdictCache): bigint {
  const { xx, seed } = c.tablesForPersist();
  return xx.h64Raw(SEED_CHECK, seed);
}

class Writer {
  private chunks: Buffer[] = [];
  private cur = Buffer.allocUnsafe(1 << 20);
  private off = 0;
  private ensure(n: number) {
    if (this.off + n <= this.cur.length) return;
    this.chunks.push(this.cur.subarray(0, this.off));
    this.cur = Buffer.allocUnsafe(Math.max(1 << 20, n));
    this.off = 0;
  }
  u16(v: number) { this.ensure(2); this.cur.writeUInt16LE(v, this.off); this.off += 2; }
  u32(v: number) { this.ensure(4); this.cur.writeUInt32LE(v >>> 0, this.off); this.off += 4; }
  u64(v: bigint) { this.ensure(8); this.cur.writeBigUInt64LE(v, this.off); this.off += 8; }
  bytes(b: Uint8Array) { this.ensure(b.length); this.cur.set(b, this.off); this.off += b.length; }
  str(s: string) { const b = Buffer.from(s, 'utf8').subarray(0, 0xffff); this.u16(b.length); this.bytes(b); }
  done(): Buffer[] { this.chunks.push(this.cur.subarray(0, this.off)); return this.chunks; }
}

export async function saveCacheFile(file: string, c: VerdictCache): Promise<void> {
  const t = c.tablesForPersist();
  const w = new Writer();
  w.bytes(MAGIC);
  w.u32(VERSION);
  w.u64(seedCheck(c));
  w.u32(t.gens.length);
  for (const g of t.gens) w.str(g);
  w.u32(t.currentGen);
  w.u32(t.threats.length);
  for (const s of t.threats) w.str(s);
  const ids = c.identities;
  w.u32(ids.size);
  for (const i of ids.occupied()) {
    w.u64(ids.keys[i]!);
    w.u32(ids.words[i * ID_WIDTH]!);
    w.u32(ids.words[i * ID_WIDTH + 1]!);
  }
  const cs = c.contents;
  w.u32(cs.size);
  for (const i of cs.occupied()) {
    w.u64(cs.keys[i]!);
    for (let k = 0; k < CONTENT_WIDTH; k++) w.u32(cs.words[i * CONTENT_WIDTH + k]!);
  }
  const chunks = w.done();
  const h = crypto.createHash('sha256');
  for (const ch of chunks) h.update(ch);
  chunks.push(h.digest());

  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  const fh = await fs.promises.open(tmp, 'w', 0o600);
  try {
    await fh.writev(chunks);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.promises.rename(tmp, file);
  const dfd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(dfd);
  } finally {
    fs.closeSync(dfd);
  }
}

class Reader {
  off = 0;
  constructor(readonly b: Buffer, readonly end: number) {}
  need(n: number) { if (this.off + n > this.end) throw new Error(`truncated at byte ${this.off}`); }
  u16() { this.need(2); const v = this.b.readUInt16LE(this.off); this.off += 2; return v; }
  u32() { this.need(4); const v = this.b.readUInt32LE(this.off); this.off += 4; return v; }
  u64() { this.need(8); const v = this.b.readBigUInt64LE(this.off); this.off += 8; return v; }
  str() { const n = this.u16(); this.need(n); const s = this.b.toString('utf8', this.off, this.off + n); this.off += n; return s; }
}

/** Load `file` into `c` (which must be empty). Returns entries loaded; 0 with a warning on any problem. */
export function loadCacheFile(file: string, c: VerdictCache): number {
  const log = logger('cache');
  let b: Buffer;
  try {
    b = fs.readFileSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') log.warn('cannot read the verdict cache; starting empty', { file, message: (e as Error).message });
    return 0;
  }
  try {
    if (b.length < MAGIC.length + 4 + 8 + 32) throw new Error('too short');
    if (!b.subarray(0, 8).equals(MAGIC)) throw new Error('not a lightagent cache file');
    const version = b.readUInt32LE(8);
    if (version !== VERSION) throw new Error(`version ${version}, this agent reads ${VERSION}`);
    const body = b.length - 32;
    const sum = crypto.createHash('sha256').update(b.subarray(0, body)).digest();
    if (!sum.equals(b.subarray(body))) throw new Error('checksum mismatch (truncated or corrupt)');
    const r = new Reader(b, body);
    r.off = 12;
    if (r.u64() !== seedCheck(c)) throw new Error('made under another seed');
    const nGens = r.u32();
    if (nGens > 0x3fff) throw new Error('too many generations');
    const gens: string[] = [];
    for (let i = 0; i < nGens; i++) gens.push(r.str());
    const current = r.u32();
    const nThreats = r.u32();
    if (nThreats > 0xffff) throw new Error('too many threat names');
    const threats: string[] = [];
    for (let i = 0; i < nThreats; i++) threats.push(r.str());
    c.restoreTables(gens, threats, gens[current] ?? '');
    const nIds = r.u32();
    r.need(nIds * 16);
    for (let i = 0; i < nIds; i++) {
      const slot = c.identities.upsert(r.u64() || 1n);
      c.identities.words[slot * ID_WIDTH] = r.u32();
      c.identities.words[slot * ID_WIDTH + 1] = r.u32();
    }
    const nContents = r.u32();
    r.need(nContents * (8 + CONTENT_WIDTH * 4));
    for (let i = 0; i < nContents; i++) {
      const key = r.u64() || 1n;
      const slot = c.contents.upsert(key);
      for (let k = 0; k < CONTENT_WIDTH; k++) c.contents.words[slot * CONTENT_WIDTH + k] = r.u32();
      const meta = c.contents.words[slot * CONTENT_WIDTH + 8]!;
      if (((meta >>> 2) & 0x3fff) >= nGens && nGens > 0) c.contents.words[slot * CONTENT_WIDTH + 8] = meta & ~0xfffc; // unknown generation: stale
      c.contents.setPinned(slot, (meta & 3) === 2);
    }
    if (r.off !== body) throw new Error('trailing bytes');
    return nIds;
  } catch (e) {
    const aside = `${file}.bad-${Date.now()}`;
    try {
      fs.renameSync(file, aside);
    } catch {
      /* leave it */
    }
    c.identities.clear();
    c.contents.clear();
    log.warn('the verdict cache file is unusable; set aside, starting empty', { file, setAside: aside, reason: (e as Error).message });
    return 0;
  }
}
