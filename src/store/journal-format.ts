/**
 * The journal's on-disk format, pure (no I/O), so it can be tested and fuzzed on buffers.
 *
 *   header  16 bytes: "LAJOURNL" | u32 LE format version (1) | u32 LE crc32 of the 12 bytes before it
 *   record  u32 LE payload length | u32 LE crc32(length bytes + payload) | payload
 *   payload UTF-8 JSON array of ops, applied atomically: ["p", key, value] | ["d", key]
 *
 * The checksum covers the length too, so a flipped length bit is caught as corruption rather
 * than read as a huge torn record. CRC-32 (zlib.crc32, Node >= 20.15) detects torn and flipped
 * bytes, which is its job here; it is not a defence against someone who can write the file
 * (root only, 0600 in a 0700 directory).
 */
import zlib from 'node:zlib';

const MAGIC = Buffer.from('LAJOURNL', 'latin1');
const FORMAT_VERSION = 1;
export const JOURNAL_HEADER_BYTES = 16;
export const RECORD_HEAD_BYTES = 8;

export type JournalOp<V> = { op: 'put'; key: string; value: V } | { op: 'delete'; key: string };

export function headerBytes(): Buffer {
  const h = Buffer.alloc(JOURNAL_HEADER_BYTES);
  MAGIC.copy(h, 0);
  h.writeUInt32LE(FORMAT_VERSION, 8);
  h.writeUInt32LE(zlib.crc32(h.subarray(0, 12)), 12);
  return h;
}

export function encodeRecord(payload: Buffer): Buffer {
  const rec = Buffer.allocUnsafe(RECORD_HEAD_BYTES + payload.length);
  rec.writeUInt32LE(payload.length, 0);
  payload.copy(rec, RECORD_HEAD_BYTES);
  rec.writeUInt32LE(zlib.crc32(payload, zlib.crc32(rec.subarray(0, 4))), 4);
  return rec;
}

export function encodeOps<V>(ops: readonly JournalOp<V>[]): Buffer {
  return Buffer.from(JSON.stringify(ops.map((o) => (o.op === 'put' ? ['p', o.key, o.value] : ['d', o.key]))), 'utf8');
}

/** What a put of `key` costs once compacted (one record per live key): the unit of live bytes. */
export function putCost(key: string, value: unknown): number {
  return RECORD_HEAD_BYTES + Buffer.byteLength(JSON.stringify([['p', key, value]]), 'utf8');
}

function parseOps<V>(payload: Buffer): JournalOp<V>[] | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  if (!Array.isArray(raw)) return undefined;
  const ops: JournalOp<V>[] = [];
  for (const o of raw) {
    if (!Array.isArray(o) || typeof o[1] !== 'string') return undefined;
    if (o[0] === 'p' && o.length === 3) ops.push({ op: 'put', key: o[1], value: o[2] as V });
    else if (o[0] === 'd' && o.length === 2) ops.push({ op: 'delete', key: o[1] });
    else return undefined;
  }
  return ops;
}

export interface Decoded<V> {
  /** The ops of each good record, in file order. */
  batches: JournalOp<V>[][];
  /** Offset just past the last good record: where the file is cut and appends continue. */
  end: number;
  /** Why decoding stopped before the end of `data`, if it did. */
  problem?: string;
  /** True for damage inside a complete record (not a torn append at the end). */
  corrupt: boolean;
}

/** Decode the records of a whole journal file whose header has been checked. Never throws. */
export function decodeRecords<V>(data: Buffer, maxRecordBytes: number): Decoded<V> {
  const batches: JournalOp<V>[][] = [];
  let off = JOURNAL_HEADER_BYTES;
  const stop = (problem: string, corrupt: boolean): Decoded<V> => ({ batches, end: off, problem, corrupt });
  while (off < data.length) {
    if (data.length - off < RECORD_HEAD_BYTES) return stop('torn record header', false);
    const len = data.readUInt32LE(off);
    // A zero length is what a crash leaves when the size grew but the data never reached disk.
    if (len < 2 || len > maxRecordBytes) return stop(`impossible record length ${len}`, len !== 0);
    if (data.length - off - RECORD_HEAD_BYTES < len) return stop('torn record', false);
    const payload = data.subarray(off + RECORD_HEAD_BYTES, off + RECORD_HEAD_BYTES + len);
    if (zlib.crc32(payload, zlib.crc32(data.subarray(off, off + 4))) !== data.readUInt32LE(off + 4)) return stop('checksum mismatch', true);
    const ops = parseOps<V>(payload);
    if (!ops) return stop('record is not valid journal ops', true);
    batches.push(ops);
    off += RECORD_HEAD_BYTES + len;
  }
  return { batches, end: off, corrupt: false };
}
