/**
 * The client side of the local sockets (local-sockets.ts): one request and its reply, or a
 * `watch` stream. Used by `lightagent status` and the tray; both run without privilege.
 * Whatever the daemon sends is bounded too (line length), so a confused peer cannot grow us.
 */
import net from 'node:net';
import { ServiceError } from '../errors.js';

const MAX_REPLY_LINE = 8 * 1024 * 1024;

export interface ReplyError {
  code: string;
  message: string;
  hint?: string;
}

function unavailable(socketPath: string, e: NodeJS.ErrnoException): ServiceError {
  const why =
    e.code === 'ENOENT' || e.code === 'ECONNREFUSED'
      ? 'the agent is not running (no one listens there)'
      : e.code === 'EACCES'
        ? 'permission denied'
        : e.message;
  return new ServiceError(
    'LA_ERR_CONTROL_UNAVAILABLE',
    `cannot reach the agent at ${socketPath}: ${why}`,
    process.platform === 'win32'
      ? 'start it (sc start lightagent, or lightagent run)'
      : 'start it (systemctl start lightagent), or pass --socket-dir / --state-dir as the daemon was started with',
    { cause: e },
  );
}

/** Split a byte stream into JSON lines; a line past the bound or bad JSON is an error. */
function lineReader(onLine: (msg: Record<string, unknown>) => void, onError: (e: Error) => void): (d: Buffer) => void {
  let buf = '';
  return (d) => {
    buf += d.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      try {
        const v = JSON.parse(line) as unknown;
        if (typeof v === 'object' && v !== null && !Array.isArray(v)) onLine(v as Record<string, unknown>);
      } catch (e) {
        onError(new Error(`the agent sent a line that is not JSON: ${(e as Error).message}`));
        return;
      }
    }
    if (buf.length > MAX_REPLY_LINE) onError(new Error(`the agent sent a line longer than ${MAX_REPLY_LINE} bytes`));
  };
}

/** Send one request; resolve with the reply object (`ok: false` replies reject with a ServiceError-like error). */
export function request(socketPath: string, req: Record<string, unknown>, timeoutMs = 10_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(socketPath);
    const done = (fn: () => void) => {
      clearTimeout(t);
      sock.destroy();
      fn();
    };
    const t = setTimeout(
      () =>
        done(() =>
          reject(
            new ServiceError(
              'LA_ERR_CONTROL_UNAVAILABLE',
              `the agent at ${socketPath} did not answer within ${timeoutMs} ms`,
              'check the agent log',
            ),
          ),
        ),
      timeoutMs,
    );
    sock.on('error', (e: NodeJS.ErrnoException) => done(() => reject(unavailable(socketPath, e))));
    // A pipe libuv could open for reading only (Windows, a non-admin client under the default
    // pipe DACL) is not writable: the status pipe then sends the status by itself (the reply to
    // {"cmd":"watch"}, whose first line has the shape of the "status" reply).
    sock.on('connect', () => {
      if (sock.writable) sock.write(`${JSON.stringify(req)}\n`);
    });
    sock.on(
      'data',
      lineReader(
        (msg) => done(() => (msg.ok === false ? reject(replyError(msg)) : resolve(msg))),
        (e) => done(() => reject(e)),
      ),
    );
    sock.on('close', () =>
      done(() =>
        reject(
          new ServiceError(
            'LA_ERR_CONTROL_UNAVAILABLE',
            `the agent at ${socketPath} closed the connection without an answer`,
            'check the agent log',
          ),
        ),
      ),
    );
  });
}

export function replyError(msg: Record<string, unknown>): ServiceError {
  const e = (msg.error ?? {}) as Partial<ReplyError>;
  const code = typeof e.code === 'string' && e.code.startsWith('LA_') ? e.code : 'LA_ERR_CONTROL_REQUEST';
  return new ServiceError(
    code as ServiceError['code'],
    String(e.message ?? 'the agent refused the request'),
    typeof e.hint === 'string' ? e.hint : undefined,
  );
}

export interface WatchHandlers {
  /** The first reply: the full status. */
  onStatus(status: Record<string, unknown>): void;
  /** Each pushed event line. */
  onEvent(ev: Record<string, unknown>): void;
  /** The stream ended (daemon stopped, error); not called after `close()`. */
  onEnd(err: Error | undefined): void;
}

/** Subscribe to the status socket's event stream. Returns a function that closes it. */
export function watch(socketPath: string, h: WatchHandlers): () => void {
  const sock = net.connect(socketPath);
  let closed = false;
  let ended = false;
  const end = (e: Error | undefined) => {
    if (ended) return;
    ended = true;
    sock.destroy();
    if (!closed) h.onEnd(e);
  };
  let first = true;
  sock.on('error', (e: NodeJS.ErrnoException) => end(unavailable(socketPath, e)));
  sock.on('connect', () => {
    if (sock.writable) sock.write('{"cmd":"watch"}\n'); // else the status pipe sends the watch stream by itself
  });
  sock.on(
    'data',
    lineReader(
      (msg) => {
        if (first) {
          first = false;
          if (msg.ok === false) return end(replyError(msg));
          h.onStatus((msg.status ?? {}) as Record<string, unknown>);
        } else if (typeof msg.event === 'string') h.onEvent(msg);
      },
      (e) => end(e),
    ),
  );
  sock.on('close', () => end(undefined));
  return () => {
    closed = true;
    end(undefined);
  };
}
