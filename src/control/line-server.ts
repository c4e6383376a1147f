/**
 * A local AF_UNIX stream server speaking newline-delimited JSON: one request object per line,
 * one reply object per line (and, for subscribers, pushed event lines). Everything a client
 * sends is hostile: lines are bounded, requests per client are serialized and bounded, bad JSON
 * gets an error reply, and a client that reads too slowly is dropped instead of buffered.
 *
 * Who may talk is decided by the peer's kernel credentials (SO_PEERCRED, peer-cred.ts), checked
 * on every connection; the socket file's mode is a second fence, not the only one.
 * On Windows the same server listens on a named pipe (\\.\pipe\NAME, libuv): there are no peer
 * credentials there, so a `rootOnly` server refuses every client; only the read-only status
 * server is run on a pipe (local-sockets.ts).
 */
import fs from 'node:fs';
import net from 'node:net';
import { describeError, ServiceError, type LightagentError } from '../errors.js';
import { logger } from '../log.js';
import { peerCred, type PeerCred } from './peer-cred.js';

export interface LineClient {
  readonly peer: PeerCred | undefined;
  /** Queue one JSON line. Returns false (and drops the client) if it stopped reading. */
  send(msg: unknown): boolean;
  /** Called once when the connection goes away. */
  onClose(fn: () => void): void;
  close(): void;
}

export type RequestHandler = (req: Record<string, unknown>, client: LineClient) => Promise<unknown> | unknown;

export interface LineServerOptions {
  /** Socket path (its directory must exist). */
  path: string;
  /** chmod of the socket file after bind. */
  mode: number;
  /** Name for logs and errors: "control" or "status". */
  name: string;
  /** Only peers with uid 0 may talk (the control socket). Without peer credentials: refuse. */
  rootOnly: boolean;
  handle: RequestHandler;
  /** Longest request line, bytes (default 64 KiB). */
  maxLineBytes?: number;
  /** Most simultaneous clients (default 64); more are closed at once with an error line. */
  maxClients?: number;
  /** Queued output per client before it is dropped as a slow reader (default 1 MiB). */
  maxQueuedBytes?: number;
  /**
   * A client that sends nothing for this long is served this request, as if it had sent it
   * (default: never). The Windows status pipe uses {"cmd":"watch"}: a client that may only read
   * the pipe (the default pipe DACL gives non-admins read access only) still gets the status.
   */
  silentClient?: { afterMs: number; request: Record<string, unknown> } | undefined;
}

type ResolvedOptions = Required<Omit<LineServerOptions, 'silentClient'>> & Pick<LineServerOptions, 'silentClient'>;

const MAX_PENDING_REQUESTS = 16;

/** An error reply line: `{ ok: false, error: { code, message } }` (plus the request's id). */
export function errorReply(e: unknown, id?: unknown): Record<string, unknown> {
  const { code, message } = describeError(e);
  const hint = (e as LightagentError)?.hint;
  return { ...(id !== undefined ? { id } : {}), ok: false, error: { code, message, ...(hint ? { hint } : {}) } };
}

/** A request id is echoed only if it is a short string or a safe integer. */
function requestId(req: Record<string, unknown>): unknown {
  const id = req.id;
  if ((typeof id === 'string' && id.length <= 64) || Number.isSafeInteger(id)) return id;
  return undefined;
}

export class LineServer {
  private readonly server: net.Server;
  private readonly clients = new Set<net.Socket>();
  private readonly log = logger('control');

  private constructor(private readonly o: ResolvedOptions) {
    this.server = net.createServer((sock) => this.accept(sock));
    this.server.maxConnections = o.maxClients + 8; // the extra ones get the "too many" line below
  }

  /**
   * Bind `o.path`. A live socket already there means another daemon serves it: refused with
   * LA_ERR_ALREADY_RUNNING. A dead one (a crash) is replaced.
   */
  static async listen(opts: LineServerOptions): Promise<LineServer> {
    const o: ResolvedOptions = { maxLineBytes: 64 * 1024, maxClients: 64, maxQueuedBytes: 1 << 20, ...opts };
    const pipe = isNamedPipe(o.path);
    // A named pipe has no file to go stale: it vanishes with its last handle.
    if (!pipe) await removeStaleSocket(o.path, o.name);
    const s = new LineServer(o);
    await new Promise<void>((resolve, reject) => {
      s.server.once('error', reject);
      s.server.listen(o.path, () => {
        s.server.off('error', reject);
        resolve();
      });
    }).catch((e) => {
      if (pipe && (e as NodeJS.ErrnoException).code === 'EADDRINUSE') {
        // libuv creates the first instance with FILE_FLAG_FIRST_PIPE_INSTANCE: someone serves it already
        throw new ServiceError(
          'LA_ERR_ALREADY_RUNNING',
          `another process serves the ${o.name} pipe ${o.path}`,
          'stop the other lightagent (sc stop lightagent) first; if none runs, find who holds the pipe name',
          { cause: e },
        );
      }
      throw new ServiceError(
        'LA_ERR_SOCKET_DIR',
        `cannot listen on the ${o.name} socket ${o.path}: ${(e as Error).message}`,
        'check `socket_dir` and its permissions',
        { cause: e },
      );
    });
    if (!pipe) fs.chmodSync(o.path, o.mode);
    s.server.on('error', (e) => s.log.error('socket server error', { socket: o.path, ...describeError(e) }));
    return s;
  }

  get path(): string {
    return this.o.path;
  }

  get clientCount(): number {
    return this.clients.size;
  }

  async close(): Promise<void> {
    for (const c of this.clients) c.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
    if (!isNamedPipe(this.o.path)) fs.rmSync(this.o.path, { force: true });
  }

  private accept(sock: net.Socket): void {
    const o = this.o;
    const refuse = (e: ServiceError) => {
      sock.end(`${JSON.stringify(errorReply(e))}\n`);
      sock.destroySoon();
      setTimeout(() => sock.destroy(), 1000).unref();
    };
    sock.on('error', () => sock.destroy());
    if (this.clients.size >= o.maxClients) {
      refuse(new ServiceError('LA_ERR_CONTROL_REQUEST', `too many clients on the ${o.name} socket (${o.maxClients})`, 'try again later'));
      return;
    }
    const peer = peerCred(sock);
    if (o.rootOnly && peer?.uid !== 0) {
      this.log.warn('refused a non-root client on the control socket', { socket: o.path, uid: peer?.uid ?? null, pid: peer?.pid ?? null });
      refuse(
        new ServiceError(
          'LA_ERR_CONTROL_DENIED',
          peer
            ? `the ${o.name} socket is for root only (you are uid ${peer.uid})`
            : `the ${o.name} socket could not check who you are (no peer credentials): refused`,
          'run the command as root (sudo); `lightagent status` needs no privilege',
        ),
      );
      return;
    }
    this.clients.add(sock);
    const closers: Array<() => void> = [];
    let closed = false;
    sock.once('close', () => {
      closed = true;
      this.clients.delete(sock);
      for (const fn of closers) {
        try {
          fn();
        } catch {
          /* a subscriber's cleanup must not break the server */
        }
      }
    });
    const client: LineClient = {
      peer,
      send: (msg) => {
        if (closed || sock.destroyed) return false;
        if (sock.writableLength > o.maxQueuedBytes) {
          this.log.warn('dropping a client that does not read its socket', { socket: o.path, pid: peer?.pid ?? null });
          sock.destroy();
          return false;
        }
        sock.write(`${JSON.stringify(msg)}\n`);
        return true;
      },
      onClose: (fn) => {
        if (closed) fn();
        else closers.push(fn);
      },
      close: () => sock.end(),
    };

    let buf: Buffer = Buffer.alloc(0);
    let pending = 0;
    let chain: Promise<void> = Promise.resolve();
    const silent = o.silentClient;
    if (silent) {
      const text = JSON.stringify(silent.request);
      const t = setTimeout(() => {
        if (closed) return;
        pending++;
        chain = chain.then(async () => {
          try {
            await this.serve(text, client);
          } finally {
            pending--;
          }
        });
      }, silent.afterMs);
      t.unref();
      sock.once('data', () => clearTimeout(t));
      sock.once('close', () => clearTimeout(t));
    }
    sock.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      for (;;) {
        const nl = buf.indexOf(0x0a);
        if (nl < 0) break;
        const line = buf.subarray(0, nl);
        buf = buf.subarray(nl + 1);
        if (line.length > o.maxLineBytes) return this.oversized(sock, client);
        if (line.length === 0 || (line.length === 1 && line[0] === 0x0d)) continue;
        if (++pending > MAX_PENDING_REQUESTS) {
          client.send(
            errorReply(
              new ServiceError(
                'LA_ERR_CONTROL_REQUEST',
                `more than ${MAX_PENDING_REQUESTS} requests waiting on one connection`,
                'wait for the replies before sending more',
              ),
            ),
          );
          sock.destroySoon();
          return;
        }
        const text = line.toString('utf8');
        chain = chain.then(async () => {
          try {
            await this.serve(text, client);
          } finally {
            pending--;
          }
        });
      }
      if (buf.length > o.maxLineBytes) this.oversized(sock, client);
    });
  }

  private oversized(sock: net.Socket, client: LineClient): void {
    client.send(
      errorReply(
        new ServiceError(
          'LA_ERR_CONTROL_REQUEST',
          `request line longer than ${this.o.maxLineBytes} bytes`,
          'send one JSON object per line',
        ),
      ),
    );
    sock.destroySoon();
    sock.pause();
  }

  private async serve(text: string, client: LineClient): Promise<void> {
    let req: unknown;
    try {
      req = JSON.parse(text);
    } catch (e) {
      client.send(
        errorReply(
          new ServiceError(
            'LA_ERR_CONTROL_REQUEST',
            `not JSON: ${(e as Error).message}`,
            'send one JSON object per line, e.g. {"cmd":"status"}',
          ),
        ),
      );
      return;
    }
    if (typeof req !== 'object' || req === null || Array.isArray(req)) {
      client.send(errorReply(new ServiceError('LA_ERR_CONTROL_REQUEST', 'a request must be a JSON object', 'e.g. {"cmd":"status"}')));
      return;
    }
    const r = req as Record<string, unknown>;
    const id = requestId(r);
    try {
      const reply = await this.o.handle(r, client);
      if (reply !== undefined) client.send({ ...(id !== undefined ? { id } : {}), ok: true, ...(reply as object) });
    } catch (e) {
      client.send(errorReply(e, id));
    }
  }
}

/** A Windows named pipe path (\\.\pipe\NAME): no socket file, no mode, no SO_PEERCRED. */
export function isNamedPipe(p: string): boolean {
  return /^\\\\[.?]\\pipe\\/i.test(p);
}

/** A socket file left by a dead daemon is removed; a live one (or a non-socket) is refused. */
async function removeStaleSocket(p: string, name: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return;
  }
  if (!st.isSocket())
    throw new ServiceError('LA_ERR_SOCKET_DIR', `${p} exists and is not a socket`, `remove it, or set another \`socket_dir\``);
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(p);
    const t = setTimeout(() => (c.destroy(), resolve(true)), 1000); // accepted but silent: alive
    c.once('connect', () => (clearTimeout(t), c.destroy(), resolve(true)));
    c.once('error', () => (clearTimeout(t), resolve(false)));
  });
  if (live) {
    throw new ServiceError(
      'LA_ERR_ALREADY_RUNNING',
      `another lightagent daemon serves the ${name} socket ${p}`,
      'stop it first (systemctl stop lightagent), or give this one another `socket_dir` and `state_dir`',
    );
  }
  fs.rmSync(p, { force: true });
}
