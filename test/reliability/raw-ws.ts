/**
 * A WebSocket client written by hand on a TCP socket, so tests can send bytes no library would:
 * bad UTF-8 in text frames, lengths that lie, frames cut in half, 2^63-byte length prefixes.
 */
import crypto from 'node:crypto';
import net from 'node:net';

export const OP = { CONT: 0, TEXT: 1, BINARY: 2, CLOSE: 8, PING: 9 } as const;

/** One client frame (masked, as RFC 6455 requires of clients). `claimLen` puts a lying length in the header. */
export function wsFrame(opcode: number, payload: Buffer, o: { fin?: boolean; claimLen?: bigint; mask?: boolean } = {}): Buffer {
  const fin = o.fin ?? true;
  const mask = o.mask ?? true;
  const len = o.claimLen ?? BigInt(payload.length);
  const head: number[] = [(fin ? 0x80 : 0) | opcode];
  const m = mask ? 0x80 : 0;
  let ext = Buffer.alloc(0);
  if (len < 126n) head.push(m | Number(len));
  else if (len < 65536n) {
    head.push(m | 126);
    ext = Buffer.alloc(2);
    ext.writeUInt16BE(Number(len));
  } else {
    head.push(m | 127);
    ext = Buffer.alloc(8);
    ext.writeBigUInt64BE(len);
  }
  const key = mask ? crypto.randomBytes(4) : Buffer.alloc(0);
  const body = Buffer.from(payload);
  if (mask) for (let i = 0; i < body.length; i++) body[i] = body[i]! ^ key[i & 3]!;
  return Buffer.concat([Buffer.from(head), ext, key, body]);
}

export interface RawSocket {
  sock: net.Socket;
  /** Everything the server sent after the 101 response. */
  received: () => Buffer;
  /** Resolves when the server closes the TCP connection (or it errors). */
  ended: Promise<void>;
  /** Close codes seen in server close frames. */
  closeCodes: () => number[];
}

/** TCP connect + HTTP upgrade; resolves once the server answered 101. */
export function rawConnect(port: number, host = '127.0.0.1'): Promise<RawSocket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, host);
    let head = Buffer.alloc(0);
    let body = Buffer.alloc(0);
    let upgraded = false;
    const ended = new Promise<void>((r) => {
      sock.once('close', () => r());
    });
    sock.on('error', (e) => {
      if (!upgraded) reject(e);
    });
    sock.on('data', (d: Buffer) => {
      if (upgraded) {
        body = Buffer.concat([body, d]);
        return;
      }
      head = Buffer.concat([head, d]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      if (!/^HTTP\/1\.1 101/.test(head.toString('latin1'))) {
        reject(new Error(`upgrade refused: ${head.toString('latin1').split('\r\n')[0]}`));
        sock.destroy();
        return;
      }
      upgraded = true;
      body = head.subarray(end + 4);
      resolve({
        sock,
        received: () => body,
        ended,
        closeCodes: () => {
          const codes: number[] = [];
          // Server frames are unmasked: walk them.
          for (let off = 0; off + 2 <= body.length;) {
            const op = body[off]! & 0x0f;
            let len = body[off + 1]! & 0x7f;
            let p = off + 2;
            if (len === 126) {
              len = body.readUInt16BE(p);
              p += 2;
            } else if (len === 127) {
              len = Number(body.readBigUInt64BE(p));
              p += 8;
            }
            if (op === OP.CLOSE && len >= 2 && p + 2 <= body.length) codes.push(body.readUInt16BE(p));
            off = p + len;
          }
          return codes;
        },
      });
    });
    sock.write(
      `GET / HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
  });
}
