/**
 * Syslog transports: UDP (RFC 5426: one message per datagram), TCP with octet-counting framing
 * (RFC 6587 section 3.4.1: `LEN SP MSG`, so a newline inside a message never splits it), and TLS
 * (RFC 5425: the same framing over TLS 1.2+, the receiver's certificate checked against a pinned
 * CA and its name, optionally our client certificate). One open connection per destination.
 */
import dgram from 'node:dgram';
import dns from 'node:dns/promises';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import { LightagentError } from '../../errors.js';

export type SiemProtocol = 'udp' | 'tcp' | 'tls';

export interface SiemTarget {
  protocol: SiemProtocol;
  host: string;
  port: number;
  /** PEM contents; `ca` is pinned: the system's CAs are not trusted. */
  tls?: { ca: Buffer; cert?: Buffer | undefined; key?: Buffer | undefined } | undefined;
}

/** The largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP). */
export const MAX_DATAGRAM = 65_507;

export interface SiemConnection extends EventEmitter<{ drain: []; close: [Error | undefined] }> {
  /**
   * Hand one message to the kernel; `done` runs once it is written (or failed). Returns false
   * when the caller should wait for `drain` before sending more.
   */
  send(msg: Buffer, done: (err?: Error | null) => void): boolean;
  /** Flush what was written, then close; `close` is emitted. */
  end(): void;
  destroy(): void;
}

/** `LEN SP MSG` (RFC 6587 section 3.4.1, RFC 5425 section 4.3). */
export function octetCount(msg: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${msg.length} `, 'ascii'), msg]);
}

class StreamConnection extends EventEmitter<{ drain: []; close: [Error | undefined] }> implements SiemConnection {
  private error: Error | undefined;
  constructor(private readonly socket: net.Socket) {
    super();
    socket.setKeepAlive(true, 30_000);
    // A syslog receiver has nothing to say; whatever it sends is read and dropped, never buffered.
    socket.on('data', () => {});
    socket.on('drain', () => this.emit('drain'));
    socket.on('error', (e) => (this.error ??= e));
    // The receiver went away (FIN): anything written now would be lost; close and reconnect.
    socket.on('end', () => socket.destroy());
    socket.once('close', () => this.emit('close', this.error));
  }
  send(msg: Buffer, done: (err?: Error | null) => void): boolean {
    return this.socket.write(octetCount(msg), done);
  }
  end(): void {
    this.socket.end();
  }
  destroy(): void {
    this.socket.destroy();
  }
}

class DatagramConnection extends EventEmitter<{ drain: []; close: [Error | undefined] }> implements SiemConnection {
  private closed = false;
  constructor(private readonly socket: dgram.Socket) {
    super();
    // ECONNREFUSED from an ICMP port unreachable arrives on a later send: reported there, not fatal.
    socket.on('error', () => {});
    socket.once('close', () => {
      this.closed = true;
      this.emit('close', undefined);
    });
  }
  send(msg: Buffer, done: (err?: Error | null) => void): boolean {
    if (this.closed) {
      done(new Error('socket closed'));
      return true;
    }
    this.socket.send(msg, (e) => done(e));
    return true;
  }
  end(): void {
    this.destroy();
  }
  destroy(): void {
    if (!this.closed) this.socket.close();
  }
}

function unavailable(where: string, detail: string, cause?: unknown): LightagentError {
  return new LightagentError(
    'LA_ERR_SIEM_UNAVAILABLE',
    `cannot reach the SIEM receiver at ${where}: ${detail}`,
    'check that the syslog receiver runs and listens there (siem.address); events queue up to siem.buffer meanwhile',
    { cause },
  );
}

function tlsRefused(where: string, detail: string, cause?: unknown): LightagentError {
  return new LightagentError(
    'LA_ERR_SIEM_TLS',
    `TLS with the SIEM receiver at ${where} failed: ${detail}`,
    "check siem.ca (the CA that signed the receiver's certificate), that the certificate names the host in " +
      'siem.address, and siem.cert/siem.key if the receiver asks for a client certificate',
    { cause },
  );
}

/** Open a connection to `t` within `timeoutMs`; rejects with LA_ERR_SIEM_UNAVAILABLE or LA_ERR_SIEM_TLS. */
export function connect(t: SiemTarget, timeoutMs: number): Promise<SiemConnection> {
  const where = `${t.protocol}://${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
  if (t.protocol === 'udp') return connectUdp(t, where);
  return new Promise((resolve, reject) => {
    const socket =
      t.protocol === 'tls'
        ? tls.connect({
            host: t.host,
            port: t.port,
            ...(net.isIP(t.host) ? {} : { servername: t.host }),
            ca: t.tls?.ca,
            ...(t.tls?.cert && t.tls.key ? { cert: t.tls.cert, key: t.tls.key } : {}),
            minVersion: 'TLSv1.2',
            rejectUnauthorized: true,
          })
        : net.connect({ host: t.host, port: t.port });
    const timer = setTimeout(() => socket.destroy(new Error(`no connection within ${timeoutMs} ms`)), timeoutMs);
    const fail = (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      const tlsFailure =
        t.protocol === 'tls' && (/CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|ERR_SSL/.test(e.code ?? '') || /certificate|altname/i.test(e.message));
      reject(tlsFailure ? tlsRefused(where, e.message, e) : unavailable(where, e.code ?? e.message, e));
    };
    socket.once('error', fail);
    socket.once(t.protocol === 'tls' ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.off('error', fail);
      resolve(new StreamConnection(socket));
    });
  });
}

async function connectUdp(t: SiemTarget, where: string): Promise<SiemConnection> {
  let family = net.isIP(t.host);
  if (!family) {
    try {
      family = (await dns.lookup(t.host)).family;
    } catch (e) {
      throw unavailable(where, (e as NodeJS.ErrnoException).code ?? (e as Error).message, e);
    }
  }
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
    const fail = (e: Error) => {
      socket.close();
      reject(unavailable(where, (e as NodeJS.ErrnoException).code ?? e.message, e));
    };
    socket.once('error', fail);
    socket.connect(t.port, t.host, () => {
      socket.off('error', fail);
      resolve(new DatagramConnection(socket));
    });
  });
}
