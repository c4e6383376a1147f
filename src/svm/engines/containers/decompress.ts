/**
 * Bounded decoders: each stops at its output cap (a LimitExceeded naming the limit) and keeps
 * what it produced before corrupt or truncated input (so a payload before the damage is still
 * judged, as clamd does). None ever holds more than the cap plus one chunk.
 */
import zlib from 'node:zlib';
// seek-bzip is CommonJS without types (src/types/seek-bzip.d.ts); a static import, so the
// single-executable bundle (esbuild) carries it.
import SeekBzipModule from 'seek-bzip';
import { overRatio, type OutputCap, type UnpackBudget } from './budget.js';
import { ArchiveTimeoutError } from '../engine.js';
import { LimitExceeded } from './limits.js';

export interface Decoded {
  data: Buffer;
  /** The input was damaged or cut short: `data` is what came before. */
  damaged: boolean;
  /** Input bytes the decoder consumed up to its stream's end (inflate only, when it reached the end). */
  consumed?: number;
}

/**
 * Raw deflate (zip method 8) or gzip (all members of a multi-member file) on zlib's thread pool,
 * so the event loop keeps serving agents. Z_SYNC_FLUSH as the finish flush returns the output of a
 * truncated stream instead of failing it.
 */
export function inflateBounded(input: Buffer, format: 'raw' | 'gzip', cap: OutputCap, where: string): Promise<Decoded> {
  return new Promise((resolve, reject) => {
    const opts: zlib.ZlibOptions = { finishFlush: zlib.constants.Z_SYNC_FLUSH, chunkSize: 64 * 1024 };
    const z = format === 'gzip' ? zlib.createGunzip(opts) : zlib.createInflateRaw(opts);
    const chunks: Buffer[] = [];
    let n = 0;
    let settled = false;
    const settle = (damaged: boolean, err?: Error, consumed?: number) => {
      if (settled) return;
      settled = true;
      z.destroy();
      if (err) reject(err);
      else resolve({ data: Buffer.concat(chunks, n), damaged, ...(consumed !== undefined ? { consumed } : {}) });
    };
    z.on('data', (c: Buffer) => {
      if (settled) return;
      if (n + c.length > cap.bytes) return settle(false, new LimitExceeded(cap.kind, where));
      chunks.push(c);
      n += c.length;
      // bytesWritten: input zlib has consumed so far, so a bomb is caught after RATIO_FLOOR, not at the cap.
      if (overRatio(cap, n, z.bytesWritten)) settle(false, new LimitExceeded('MaxRatio', where));
    });
    // At the stream's end zlib has counted only the input it consumed: where the next record starts.
    z.on('end', () => settle(false, undefined, z.bytesWritten));
    z.on('error', () => settle(true));
    z.end(input);
  });
}

interface SeekBzip {
  decode(input: unknown, output: unknown, multistream?: boolean): void;
}
// Only decode() is used.
const Bunzip = SeekBzipModule as SeekBzip;

const TRUNCATED = new Error('bzip2 input ends early');

/**
 * bzip2 through seek-bzip (pure JS, synchronous). Its byte-at-a-time output stream is ours, so the
 * cap and the deadline are checked as bytes come out, and reading past the input's end throws
 * instead of decoding the zeros that seek-bzip would otherwise read there.
 */
export function bunzip2Bounded(input: Buffer, cap: OutputCap, where: string, budget: UnpackBudget): Decoded {
  let out = Buffer.allocUnsafe(Math.min(cap.bytes, Math.max(64 * 1024, input.length * 4)));
  let n = 0;
  const inStream = {
    pos: 0,
    readByte(): number {
      if (this.pos >= input.length) throw TRUNCATED;
      return input[this.pos++]!;
    },
    read(dst: Uint8Array, off: number, len: number): number {
      const n = Math.min(len, input.length - this.pos);
      if (n <= 0) return -1;
      dst.set(input.subarray(this.pos, this.pos + n), off);
      this.pos += n;
      return n;
    },
    seek(p: number): void {
      this.pos = p;
    },
    eof(): boolean {
      return this.pos >= input.length;
    },
  };
  const outStream = {
    writeByte(b: number): void {
      if (n === out.length) {
        if (n >= cap.bytes) throw new LimitExceeded(cap.kind, where);
        const bigger = Buffer.allocUnsafe(Math.min(cap.bytes, out.length * 2));
        out.copy(bigger, 0, 0, n);
        out = bigger;
      }
      if ((n & 0xfffff) === 0) {
        budget.checkTime();
        if (overRatio(cap, n, inStream.pos)) throw new LimitExceeded('MaxRatio', where);
      }
      out[n++] = b;
    },
  };
  let damaged = false;
  try {
    Bunzip.decode(inStream, outStream, true);
  } catch (e) {
    if (e instanceof LimitExceeded || e instanceof ArchiveTimeoutError) throw e;
    damaged = true;
  }
  return { data: out.subarray(0, n), damaged };
}
