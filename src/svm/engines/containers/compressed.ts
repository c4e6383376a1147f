/** Single-stream compressors: gzip (node:zlib) and bzip2 (seek-bzip). One member each: the unpacked stream. */
import { LimitExceeded } from './limits.js';
import { bunzip2Bounded, inflateBounded } from './decompress.js';
import type { ContainerReader } from './types.js';

/** The original name a gzip header may carry (FNAME, RFC 1952 2.3.1), or '' (then the stream adds no path segment). */
export function gzipName(buf: Buffer): string {
  const flags = buf[3] ?? 0;
  let at = 10;
  if (flags & 0x04) at += 2 + buf.readUInt16LE(Math.min(at, buf.length - 2));
  if (!(flags & 0x08) || at >= buf.length) return '';
  const end = buf.indexOf(0, at);
  if (end < 0 || end - at > 1024) return '';
  return buf.toString('latin1', at, end);
}

export const readGzip: ContainerReader = async function* (buf, ctx) {
  const name = buf.length >= 18 ? gzipName(buf) : '';
  const where = ctx.pathOf(name);
  ctx.budget.member(where);
  const d = await inflateBounded(buf, 'gzip', ctx.budget.cap(true), where);
  ctx.budget.take(d.data.length, where);
  yield { name, data: d.data };
};

export const readBzip2: ContainerReader = async function* (buf, ctx) {
  const where = ctx.pathOf('');
  ctx.budget.member(where);
  const d = bunzip2Bounded(buf, ctx.budget.cap(true), where, ctx.budget);
  ctx.budget.take(d.data.length, where);
  yield { name: '', data: d.data };
};

/** Stored members (tar, cpio): the declared size is checked against the budget before any byte is copied. */
export function checkStored(size: number, where: string, ctx: Parameters<ContainerReader>[1]): void {
  const cap = ctx.budget.cap(false);
  if (size > cap.bytes) throw new LimitExceeded(cap.kind, where);
}
