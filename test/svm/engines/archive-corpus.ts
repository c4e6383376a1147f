/**
 * Containers built at run time for the engine tests (no binary blobs in the tree): a small zip
 * writer (stored, deflate, bzip2, zip64, the encrypted flag, entries that share bytes), tar
 * through tar-stream, newc cpio, gzip, bzip2 (the bzip2 program), MIME mail.
 */
import { spawnSync } from 'node:child_process';
import zlib from 'node:zlib';
import tar from 'tar-stream';
import { EICAR_BYTES as EICAR } from '../../helpers/fixtures.js';

export interface ZipEntry {
  name: string;
  data: Buffer;
  method?: 0 | 8 | 12;
  encrypted?: boolean;
  /** Already compressed bytes (with `size` the unpacked size): for bombs. */
  raw?: { bytes: Buffer; size: number };
}

const u16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};
const u64 = (n: number) => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
};

export function bzip2(data: Buffer): Buffer {
  const r = spawnSync('bzip2', ['-c', '-9'], { input: data, maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(`bzip2 failed: ${r.stderr.toString()}`);
  return r.stdout;
}

/** A zip. `share` makes the last entry's directory record point at the first entry's local record (overlap). */
export function zip(entries: readonly ZipEntry[], opts: { share?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  const central: Buffer[] = [];
  let off = 0;
  const offsets: number[] = [];
  for (const e of entries) {
    const method = e.raw ? 8 : (e.method ?? 8);
    const packed = e.raw ? e.raw.bytes : method === 0 ? e.data : method === 12 ? bzip2(e.data) : zlib.deflateRawSync(e.data);
    const size = e.raw ? e.raw.size : e.data.length;
    const crc = e.raw ? 0 : zlib.crc32(e.data);
    const name = Buffer.from(e.name, 'utf8');
    const big = size >= 0xffffffff || packed.length >= 0xffffffff;
    const flags = (e.encrypted ? 1 : 0) | 0x800;
    const extra = big ? Buffer.concat([u16(1), u16(16), u64(size), u64(packed.length)]) : Buffer.alloc(0);
    const s32 = (n: number) => (big ? 0xffffffff : n);
    const local = Buffer.concat([
      u32(0x04034b50),
      u16(big ? 45 : 20),
      u16(flags),
      u16(method),
      u16(0),
      u16(0x21),
      u32(crc),
      u32(s32(packed.length)),
      u32(s32(size)),
      u16(name.length),
      u16(extra.length),
      name,
      extra,
    ]);
    offsets.push(off);
    central.push(
      Buffer.concat([
        u32(0x02014b50),
        u16(0x031e),
        u16(big ? 45 : 20),
        u16(flags),
        u16(method),
        u16(0),
        u16(0x21),
        u32(crc),
        u32(s32(packed.length)),
        u32(s32(size)),
        u16(name.length),
        u16(extra.length),
        u16(0),
        u16(0),
        u16(0),
        u32(0o100644 << 16),
        u32(off),
        name,
        extra,
      ]),
    );
    parts.push(local, packed);
    off += local.length + packed.length;
  }
  if (opts.share && central.length > 1) central[central.length - 1]!.writeUInt32LE(offsets[0]!, 42);
  const cd = Buffer.concat(central);
  const n = entries.length;
  const tail: Buffer[] = [];
  if (n >= 0xffff) {
    // zip64 end of central directory record and locator: the plain record's 16-bit count cannot hold n.
    const z64 = Buffer.concat([u32(0x06064b50), u64(44), u16(45), u16(45), u32(0), u32(0), u64(n), u64(n), u64(cd.length), u64(off)]);
    tail.push(z64, Buffer.concat([u32(0x07064b50), u32(0), u64(off + cd.length), u32(1)]));
  }
  const c16 = Math.min(n, 0xffff);
  tail.push(Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(c16), u16(c16), u32(cd.length), u32(off), u16(0)]));
  return Buffer.concat([...parts, cd, ...tail]);
}

/**
 * A zip cut just before its central directory (what a truncated download leaves). `descriptors`:
 * its local records say bit 3 and carry no sizes or CRC, as a streaming zip writer makes them.
 */
export function withoutDirectory(z: Buffer, descriptors = false): Buffer {
  const out = Buffer.from(z.subarray(0, z.indexOf(Buffer.from('PK\x01\x02', 'latin1'))));
  for (let at = out.indexOf(Buffer.from('PK\x03\x04', 'latin1')); descriptors && at >= 0;) {
    out.writeUInt16LE(out.readUInt16LE(at + 6) | 0x08, at + 6);
    const packed = out.readUInt32LE(at + 18);
    out.fill(0, at + 14, at + 26);
    at = out.indexOf(Buffer.from('PK\x03\x04', 'latin1'), at + 30 + out.readUInt16LE(at + 26) + out.readUInt16LE(at + 28) + packed);
  }
  return out;
}

/** Raw deflate of `mib` MiB of zeros, built from one fully flushed 1 MiB block repeated: ~1 KB per MiB, made in milliseconds. */
export function deflatedZeros(mib: number): Buffer {
  const block = zlib.deflateRawSync(Buffer.alloc(1 << 20), { finishFlush: zlib.constants.Z_FULL_FLUSH, level: 9 });
  const end = zlib.deflateRawSync(Buffer.alloc(0));
  const out = Buffer.allocUnsafe(block.length * mib + end.length);
  for (let i = 0; i < mib; i++) block.copy(out, i * block.length);
  end.copy(out, block.length * mib);
  return out;
}

export async function tarOf(files: ReadonlyArray<{ name: string; data: Buffer }>): Promise<Buffer> {
  const p = tar.pack();
  for (const f of files) p.entry({ name: f.name, size: f.data.length }, f.data);
  p.finalize();
  const chunks: Buffer[] = [];
  for await (const c of p) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export function cpioOf(files: ReadonlyArray<{ name: string; data: Buffer }>): Buffer {
  const out: Buffer[] = [];
  let len = 0;
  const push = (b: Buffer) => {
    out.push(b);
    len += b.length;
  };
  const pad = () => {
    if (len % 4) push(Buffer.alloc(4 - (len % 4)));
  };
  const entry = (name: string, mode: number, data: Buffer) => {
    const hex = (n: number) => n.toString(16).padStart(8, '0');
    const nameBuf = Buffer.from(`${name}\0`, 'latin1');
    push(Buffer.from(`070701${[1, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBuf.length, 0].map(hex).join('')}`, 'latin1'));
    push(nameBuf);
    pad();
    push(data);
    pad();
  };
  for (const f of files) entry(f.name, 0o100644, f.data);
  entry('TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(out);
}

export function mail(parts: { base64?: Buffer; qp?: string; name: string }): Buffer {
  const b = 'BOUNDARY-42';
  const body = parts.base64
    ? `Content-Type: application/octet-stream; name="${parts.name}"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="${parts.name}"\r\n\r\n${parts.base64.toString('base64').replace(/.{76}/g, '$&\r\n')}\r\n`
    : `Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: quoted-printable\r\nContent-Disposition: attachment; filename="${parts.name}"\r\n\r\n${parts.qp}\r\n`;
  return Buffer.from(
    `From: a@example.com\r\nTo: b@example.com\r\nSubject: invoice\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="${b}"\r\n\r\n--${b}\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--${b}\r\n${body}--${b}--\r\n`,
    'latin1',
  );
}

/** EICAR quoted-printable: `=` is written =3D, and the line is soft-broken, so the raw mail does not hold EICAR. */
export function eicarQp(): string {
  const q = EICAR.toString('latin1').replace(/=/g, '=3D');
  return `${q.slice(0, 30)}=\r\n${q.slice(30)}`;
}

/** Nest `data` in `levels` zips, one inside the other. */
export function nestedZips(data: Buffer, levels: number): Buffer {
  let cur = zip([{ name: 'eicar.com', data }]);
  for (let i = 1; i < levels; i++) cur = zip([{ name: `level${levels - i}.zip`, data: cur }]);
  return cur;
}

/** The named corpus every engine runs (conformance): what each holds, and whether it is a threat by itself. */
export async function detectionCorpus(): Promise<Array<{ name: string; content: Buffer; threat: boolean }>> {
  const filler = Buffer.alloc(100_000, 0x41);
  return [
    {
      name: 'zip (deflate)',
      content: zip([
        { name: 'docs/readme.txt', data: filler },
        { name: 'docs/report.exe', data: EICAR },
      ]),
      threat: true,
    },
    { name: 'zip (stored)', content: zip([{ name: 'a.com', data: EICAR, method: 0 }]), threat: true },
    { name: 'zip (bzip2, method 12)', content: zip([{ name: 'a.com', data: EICAR, method: 12 }]), threat: true },
    { name: 'gzip', content: zlib.gzipSync(EICAR), threat: true },
    { name: 'bzip2', content: bzip2(EICAR), threat: true },
    { name: 'tar', content: await tarOf([{ name: 'x/eicar.com', data: EICAR }]), threat: true },
    {
      name: 'tar.gz',
      content: zlib.gzipSync(
        await tarOf([
          { name: 'x/a.txt', data: filler },
          { name: 'x/eicar.com', data: EICAR },
        ]),
      ),
      threat: true,
    },
    { name: 'tar.bz2', content: bzip2(await tarOf([{ name: 'x/eicar.com', data: EICAR }])), threat: true },
    { name: 'cpio (newc)', content: cpioOf([{ name: 'bin/eicar', data: EICAR }]), threat: true },
    { name: 'mail, base64 attachment', content: mail({ base64: EICAR, name: 'invoice.com' }), threat: true },
    { name: 'mail, quoted-printable part', content: mail({ qp: eicarQp(), name: 'note.txt' }), threat: true },
    {
      name: 'mail with a zip attachment',
      content: mail({ base64: zip([{ name: 'in/eicar.com', data: EICAR }]), name: 'invoice.zip' }),
      threat: true,
    },
    { name: 'zip nested 10 deep', content: nestedZips(EICAR, 10), threat: true },
    { name: 'clean zip', content: zip([{ name: 'a.txt', data: filler }]), threat: false },
    { name: 'clean tar.gz', content: zlib.gzipSync(await tarOf([{ name: 'a.txt', data: filler }])), threat: false },
    { name: 'clean mail', content: mail({ base64: filler, name: 'a.bin' }), threat: false },
  ];
}
