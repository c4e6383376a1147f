/**
 * cpio, "newc" (070701/070702) and portable "odc" (070707) forms: what initramfs images and RPM
 * payloads use. Hand-written: no maintained npm package reads cpio, and the format is a fixed
 * ASCII header, a name and the bytes (ASCII hex or octal sizes, checked before use). Members are
 * views into the buffer, not copies.
 */
import { checkStored } from './compressed.js';
import type { ContainerReader } from './types.js';

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;

interface CpioHeader {
  size: number;
  nameSize: number;
  mode: number;
  headerLen: number;
  align: number;
}

function field(buf: Buffer, at: number, len: number, radix: 8 | 16): number {
  const s = buf.toString('latin1', at, at + len);
  if (!(radix === 16 ? /^[0-9a-fA-F]+$/ : /^[0-7]+$/).test(s)) return NaN;
  return parseInt(s, radix);
}

function header(buf: Buffer, at: number): CpioHeader | undefined {
  const magic = buf.toString('latin1', at, at + 6);
  if ((magic === '070701' || magic === '070702') && at + 110 <= buf.length) {
    const f = (i: number) => field(buf, at + 6 + i * 8, 8, 16);
    return { mode: f(1), size: f(6), nameSize: f(11), headerLen: 110, align: 4 };
  }
  if (magic === '070707' && at + 76 <= buf.length) {
    return {
      mode: field(buf, at + 18, 6, 8),
      nameSize: field(buf, at + 59, 6, 8),
      size: field(buf, at + 65, 11, 8),
      headerLen: 76,
      align: 1,
    };
  }
  return undefined;
}

const pad = (n: number, a: number) => (a === 1 ? n : (n + a - 1) & ~(a - 1));

export const readCpio: ContainerReader = async function* (buf, ctx) {
  let at = 0;
  for (;;) {
    const h = header(buf, at);
    if (!h || !Number.isFinite(h.size) || !Number.isFinite(h.nameSize) || !Number.isFinite(h.mode) || h.nameSize < 1) return;
    const nameAt = at + h.headerLen;
    const dataAt = pad(nameAt + h.nameSize, h.align);
    const end = dataAt + h.size;
    if (end > buf.length) return; // cut short
    const name = buf.toString('latin1', nameAt, nameAt + h.nameSize - 1);
    if (name === 'TRAILER!!!') return;
    if ((h.mode & S_IFMT) === S_IFREG) {
      const where = ctx.pathOf(name);
      ctx.budget.member(where);
      ctx.budget.checkTime();
      checkStored(h.size, where, ctx);
      ctx.budget.take(h.size, where);
      yield { name, data: buf.subarray(dataAt, end) };
    }
    at = pad(end, h.align);
  }
};
