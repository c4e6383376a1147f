/** tar (ustar, pax, GNU long names) through tar-stream. Regular files only; links and devices carry no bytes. */
import tar from 'tar-stream';
import { ArchiveTimeoutError } from '../engine.js';
import { checkStored } from './compressed.js';
import { HeuristicHit } from './limits.js';
import type { ContainerReader, Member } from './types.js';

export const readTar: ContainerReader = async function* (buf, ctx) {
  // Both options exist in extract.js; the package's own types leave them out.
  const extract = tar.extract({ allowUnknownFormat: true, filenameEncoding: 'latin1' } as Parameters<typeof tar.extract>[0]);
  extract.end(buf);
  const it = extract[Symbol.asyncIterator]();
  try {
    for (;;) {
      let member: Member | undefined;
      try {
        const next = await it.next();
        if (next.done) break;
        const entry = next.value;
        const h = entry.header;
        if (h.type !== 'file' && h.type !== 'contiguous-file') {
          entry.resume();
          continue;
        }
        const where = ctx.pathOf(h.name);
        ctx.budget.member(where);
        ctx.budget.checkTime();
        checkStored(h.size ?? 0, where, ctx);
        const chunks: Buffer[] = [];
        let n = 0;
        for await (const c of entry as AsyncIterable<Buffer>) {
          chunks.push(c);
          n += c.length;
        }
        ctx.budget.take(n, where);
        member = { name: h.name, data: Buffer.concat(chunks, n) };
      } catch (e) {
        if (e instanceof HeuristicHit || e instanceof ArchiveTimeoutError) throw e;
        return; // damaged or cut short: what came before was judged
      }
      yield member;
    }
  } finally {
    extract.destroy();
  }
};

/** A tar header block: ustar magic, or (old v7 tar) a header checksum that adds up. */
export function looksLikeTar(buf: Buffer): boolean {
  if (buf.length < 512) return false;
  if (buf.toString('latin1', 257, 262) === 'ustar') return true;
  const field = buf
    .toString('latin1', 148, 156)
    .replace(/[\0 ]+$/, '')
    .trim();
  if (!/^[0-7]{1,7}$/.test(field) || buf[0] === 0) return false;
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : buf[i]!;
  return sum === parseInt(field, 8);
}
