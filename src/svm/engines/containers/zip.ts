/**
 * Zip through yauzl (central directory, zip64, name decoding). yauzl reads the directory and the
 * local headers; the member bytes are decoded here, straight from the buffer (stored members are
 * not even copied), so every method goes through the same bounded decoders: stored (0), deflate
 * (8), bzip2 (12). Others (deflate64, LZMA, zstd, PPMd...) have no well-kept JS decoder: such a
 * member is skipped, which docs/svm.md states.
 *
 * A zip whose central directory is missing or damaged (cut short in transit, or on purpose) is
 * read from its local records instead, front to back, as clamd and unzip's recovery do: see
 * walkLocalHeaders.
 *
 * Entries whose bytes overlap (one local record claimed by several entries, or data running into
 * the next record) are what "better zip bombs" are made of, never what a zip tool writes:
 * `Heuristics.Zip.OverlappingFiles`, clamd's name for it.
 */
import yauzl from 'yauzl';
import { ArchiveTimeoutError } from '../engine.js';
import { LimitExceeded, HeuristicHit } from './limits.js';
import { bunzip2Bounded, inflateBounded, type Decoded } from './decompress.js';
import type { ContainerReader, Member, ReadContext } from './types.js';

interface Located {
  entry: yauzl.Entry;
  start: number;
  dataStart: number;
  end: number;
}

export const readZip: ContainerReader = async function* (buf, ctx) {
  const { budget } = ctx;
  let zip: yauzl.ZipFile;
  try {
    // validateEntrySizes off: sizes are bounded here, by the budget, and a lying size must not stop the read of the rest.
    zip = await yauzl.fromBufferPromise(buf, { lazyEntries: true, decodeStrings: true, validateEntrySizes: false, strictFileNames: false });
  } catch {
    yield* walkLocalHeaders(buf, ctx); // no readable central directory: the local records
    return;
  }
  // The directory says how many entries follow: a file of too many fails here, before any is read.
  if (budget.members + zip.entryCount > budget.limits.maxMembers) throw new LimitExceeded('MaxFiles', ctx.pathOf(''));
  const located: Located[] = [];
  try {
    for await (const entry of zip.eachEntry()) {
      budget.checkTime();
      const fileDataStart = localDataStart(buf, entry.relativeOffsetOfLocalHeader);
      if (fileDataStart < 0) continue; // no local record there: nothing to read for this entry
      located.push({
        entry,
        start: entry.relativeOffsetOfLocalHeader,
        dataStart: fileDataStart,
        end: fileDataStart + entry.compressedSize,
      });
    }
  } catch (e) {
    if (e instanceof ArchiveTimeoutError) throw e;
    // A damaged directory: the local records hold every entry, those before the damage included.
    yield* walkLocalHeaders(buf, ctx);
    return;
  }
  const byOffset = [...located].sort((a, b) => a.start - b.start);
  for (let i = 1; i < byOffset.length; i++) {
    if (byOffset[i]!.start < byOffset[i - 1]!.end)
      throw new HeuristicHit('Heuristics.Zip.OverlappingFiles', ctx.pathOf(byOffset[i]!.entry.fileName));
  }
  for (const { entry, dataStart, end } of located) {
    const name = entry.fileName;
    if (name.endsWith('/') && entry.uncompressedSize === 0) continue;
    const where = ctx.pathOf(name);
    budget.member(where);
    budget.checkTime();
    if (entry.isEncrypted()) {
      ctx.encrypted(name, 'Zip');
      continue;
    }
    if (end > buf.length) continue; // yauzl checks this too; a damaged entry is skipped, not trusted
    const d = await decode(entry.compressionMethod, buf.subarray(dataStart, end), where, ctx);
    if (!d) continue;
    budget.take(d.data.length, where);
    yield { name, data: d.data };
  }
};

/** One member's packed bytes through the bounded decoder of its method; undefined for a method not read here. */
async function decode(method: number, packed: Buffer, where: string, ctx: ReadContext): Promise<Decoded | undefined> {
  const { budget } = ctx;
  if (method === 0) {
    const cap = budget.cap(false);
    if (packed.length > cap.bytes) throw new LimitExceeded(cap.kind, where);
    return { data: packed, damaged: false };
  }
  if (method === 8) return inflateBounded(packed, 'raw', budget.cap(true), where);
  if (method === 12) return bunzip2Bounded(packed, budget.cap(true), where, budget);
  return undefined;
}

const LOCAL_SIG = Buffer.from('PK\x03\x04', 'latin1');
const PK = Buffer.from('PK', 'latin1');

/** The next record signature (local header, central directory header, data descriptor) at or after `from`, or -1. */
function nextRecord(buf: Buffer, from: number): number {
  for (let at = buf.indexOf(PK, from); at >= 0 && at + 4 <= buf.length; at = buf.indexOf(PK, at + 1)) {
    const a = buf[at + 2];
    const b = buf[at + 3];
    if ((a === 3 && b === 4) || (a === 1 && b === 2) || (a === 7 && b === 8)) return at;
  }
  return -1;
}

/** The packed size a local record's zip64 extra field (0x0001: unpacked, then packed size) gives, or undefined. */
function zip64Packed(buf: Buffer, at: number, len: number): number | undefined {
  for (let i = at; i + 4 <= at + len;) {
    const id = buf.readUInt16LE(i);
    const n = buf.readUInt16LE(i + 2);
    if (id === 1 && n >= 16 && i + 20 <= at + len) return Number(buf.readBigUInt64LE(i + 12));
    i += 4 + n;
  }
  return undefined;
}

/**
 * The recovery read of a zip without a usable central directory: each local record in turn, from
 * the first `PK\3\4`, its bytes through the same bounded decoders and budget as a directory read.
 * A member whose size its record does not give (bit 3, a data descriptor after it) ends where its
 * deflate stream ends, or, stored or bzip2, at the next record signature; a member cut short by
 * the file's end is decoded as far as it goes (so a payload before the cut is found). The walk
 * only moves forward and every byte is searched once: linear in the file, never a copy of it.
 */
async function* walkLocalHeaders(buf: Buffer, ctx: ReadContext): AsyncGenerator<Member, void, undefined> {
  const { budget } = ctx;
  for (let at = buf.indexOf(LOCAL_SIG); at >= 0 && at + 30 <= buf.length;) {
    budget.checkTime();
    const flags = buf.readUInt16LE(at + 6);
    const method = buf.readUInt16LE(at + 8);
    let packedSize = buf.readUInt32LE(at + 18);
    const size = buf.readUInt32LE(at + 22);
    const nameLen = buf.readUInt16LE(at + 26);
    const extraLen = buf.readUInt16LE(at + 28);
    const nameAt = at + 30;
    const dataStart = nameAt + nameLen + extraLen;
    if (dataStart > buf.length) return; // cut inside the record itself
    if (packedSize === 0xffffffff) packedSize = zip64Packed(buf, nameAt + nameLen, extraLen) ?? packedSize;
    const sized = !(flags & 0x08) && packedSize !== 0xffffffff;
    let end: number;
    if (sized) end = Math.min(buf.length, dataStart + packedSize);
    else if (method === 8)
      end = buf.length; // inflate stops at its stream's end: `consumed` says where that was
    else {
      const r = nextRecord(buf, dataStart);
      end = r < 0 ? buf.length : r;
    }
    let next = end;
    const name = buf.toString(flags & 0x800 ? 'utf8' : 'latin1', nameAt, nameAt + nameLen);
    if (!(name.endsWith('/') && sized && packedSize === 0 && size === 0)) {
      const where = ctx.pathOf(name);
      budget.member(where);
      if (flags & 0x01) {
        ctx.encrypted(name, 'Zip');
      } else {
        const d = await decode(method, buf.subarray(dataStart, end), where, ctx);
        // Unsized and damaged: look for the next record from the data's start; the output, not
        // the search, is what the budget bounds, so a resync cannot be made to cost more than it.
        if (!sized && method === 8) next = d?.consumed !== undefined ? dataStart + d.consumed : dataStart;
        if (d) {
          budget.take(d.data.length, where);
          yield { name, data: d.data };
        }
      }
    }
    at = buf.indexOf(LOCAL_SIG, Math.max(next, at + 4));
  }
}

/**
 * Where an entry's bytes start: after its local record (30 bytes, name, extra field). Read here
 * rather than through yauzl's readLocalFileHeader, an async round trip per entry that made a
 * 100k-entry zip take 15 s instead of ~2.
 */
function localDataStart(buf: Buffer, at: number): number {
  if (at + 30 > buf.length || buf.readUInt32LE(at) !== 0x04034b50) return -1;
  return at + 30 + buf.readUInt16LE(at + 26) + buf.readUInt16LE(at + 28);
}
