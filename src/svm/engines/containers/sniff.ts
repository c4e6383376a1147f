/**
 * Which container a buffer is, from its first bytes (and, for zip, its last 64 KiB: a zip's
 * directory is at its end, so self-extracting and prefixed zips are found too). A few byte
 * compares for a file that is none: the cost a non-archive pays.
 */
import { readBzip2, readGzip } from './compressed.js';
import { readCpio } from './cpio.js';
import { looksLikeMail, readMime } from './mime.js';
import { looksLikeTar, readTar } from './tar.js';
import type { ContainerReader } from './types.js';
import { readZip } from './zip.js';

export interface ContainerFormat {
  name: 'zip' | 'gzip' | 'bzip2' | 'tar' | 'cpio' | 'mime';
  read: ContainerReader;
}

const ZIP_EOCD = Buffer.from('PK\x05\x06', 'latin1');
/** End of central directory record (22 bytes) plus the longest comment (65535). */
const EOCD_WINDOW = 22 + 0xffff;
const BZIP2_BLOCK = Buffer.from([0x31, 0x41, 0x59, 0x26, 0x53, 0x59]);
const BZIP2_EOS = Buffer.from([0x17, 0x72, 0x45, 0x38, 0x50, 0x90]);

export const FORMATS = {
  zip: { name: 'zip', read: readZip },
  gzip: { name: 'gzip', read: readGzip },
  bzip2: { name: 'bzip2', read: readBzip2 },
  tar: { name: 'tar', read: readTar },
  cpio: { name: 'cpio', read: readCpio },
  mime: { name: 'mime', read: readMime },
} as const satisfies Record<string, ContainerFormat>;

export function sniffContainer(buf: Buffer): ContainerFormat | undefined {
  if (buf.length < 4) return undefined;
  const b0 = buf[0]!;
  const b1 = buf[1]!;
  if (b0 === 0x1f && b1 === 0x8b && buf[2] === 8) return FORMATS.gzip;
  if (b0 === 0x50 && b1 === 0x4b) {
    const b2 = buf[2]!;
    if ((b2 === 3 && buf[3] === 4) || (b2 === 5 && buf[3] === 6) || (b2 === 7 && buf[3] === 8)) return FORMATS.zip;
  }
  if (b0 === 0x42 && b1 === 0x5a && buf[2] === 0x68 && buf.length >= 10 && buf[3]! >= 0x31 && buf[3]! <= 0x39) {
    const magic = buf.subarray(4, 10);
    if (magic.equals(BZIP2_BLOCK) || magic.equals(BZIP2_EOS)) return FORMATS.bzip2;
  }
  if (b0 === 0x30 && b1 === 0x37 && /^07070[127]$/.test(buf.toString('latin1', 0, 6))) return FORMATS.cpio;
  if (looksLikeTar(buf)) return FORMATS.tar;
  if (looksLikeMail(buf)) return FORMATS.mime;
  // On the tail only: lastIndexOf from an offset searches back to the buffer's start (64 MiB: 15 ms).
  if (buf.length >= 22 && buf.subarray(Math.max(0, buf.length - EOCD_WINDOW)).lastIndexOf(ZIP_EOCD) >= 0) return FORMATS.zip;
  return undefined;
}
