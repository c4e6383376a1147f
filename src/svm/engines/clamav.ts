/**
 * The clamav engine: a client of a running clamd (Debian clamav-daemon) over its unix socket or
 * TCP, speaking clamd's null-terminated protocol.
 *
 * - A pool of up to `poolSize` connections, each in an IDSESSION (several commands on one
 *   connection), one command at a time per connection. Scans beyond the pool wait for a free
 *   connection; the per-scan timeout counts from the request, waiting included.
 * - A scan is `zINSTREAM`: the content in chunks of `chunkSize` bytes, each with a 4-byte
 *   big-endian length, then a zero length. Answers: `stream: OK`, `stream: NAME FOUND`, or
 *   `INSTREAM size limit exceeded. ERROR` when the content is over clamd's StreamMaxLength (clamd
 *   closes the connection then). That is an EngineLimitError (LA_ERR_ENGINE_LIMIT), not a
 *   verdict; the size is remembered and larger content fails fast without being sent.
 * - Any other ERROR, a timeout, a closed or refused connection: an EngineError (LA_ERR_ENGINE)
 *   and that connection is dropped. A pooled connection clamd closed while idle (IdleTimeout,
 *   restart) is retried once on a fresh one. When clamd restarts, the next scans connect again.
 * - Generation: from `zVERSION`, `ClamAV 1.4.6/27461/Mon Nov 25 08:24:02 2024` gives
 *   `clamav-27461-20241125082402` (the database version and date). clamd loaded with only custom
 *   databases answers `ClamAV 1.4.6` with no database part: then the generation is a hash of the
 *   files in `databaseDir` (names, sizes, modification times) when it is given, else of the
 *   version string alone (changes to custom files are then not noticed: set databaseDir). A
 *   changed fingerprint is taken at the periodic look only when the next look (one interval
 *   later) still sees it: clamd reloads the files some moments after they are written (freshclam
 *   NotifyClamd, SelfCheck), and a generation announced before that would have agents re-judge
 *   files against the old database under the new generation. (reload() takes it at once.)
 *   VERSION is asked every `versionIntervalMs` (and every second while clamd is unreachable);
 *   health is the outcome of the last exchange with clamd.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { logger } from '../../log.js';
import { EngineError, EngineLimitError, type EngineResult, type ScanEngine } from './engine.js';

export interface ClamavOptions {
  /** `/run/clamav/clamd.ctl`, `unix:/path`, `tcp://host:3310` or `host:3310`. */
  address: string;
  /** Connections to clamd at most (default 8; clamd's MaxThreads should be at least this). */
  poolSize?: number;
  /** Per scan, waiting for a connection included (default 30 s). */
  timeoutMs?: number;
  /** Connecting to clamd (default 2 s). */
  connectTimeoutMs?: number;
  /** INSTREAM chunk size (default 256 KiB). */
  chunkSize?: number;
  /** How often VERSION is asked (generation, health); default 30 s. */
  versionIntervalMs?: number;
  /** clamd's DatabaseDirectory, to notice changes of custom databases (see above). */
  databaseDir?: string;
  /** clamd's StreamMaxLength when known: larger content fails fast, unsent. */
  streamMaxLength?: number;
}

export const CLAMAV_DEFAULTS = {
  poolSize: 8,
  timeoutMs: 30_000,
  connectTimeoutMs: 2_000,
  chunkSize: 256 * 1024,
  versionIntervalMs: 30_000,
} as const;

/** The files of a clamd DatabaseDirectory that hold signatures (freshclam.dat, *.tmp and the like do not). */
export const CLAMD_DATABASE_FILE =
  /\.(c[vl]d|cud|hdb|hsb|hdu|hsu|mdb|msb|mdu|msu|ndb|ndu|ldb|ldu|db|fp|sfp|ign2?|ftm|cdb|crb|cat|pdb|gdb|wdb|yara?|idb|cbc|info)$/i;

/** Replies are short lines; a longer one means we are not talking to clamd. */
const MAX_REPLY = 64 * 1024;

type Target = { path: string } | { host: string; port: number };

export function parseClamdAddress(address: string): Target {
  const a = address.trim();
  if (a.startsWith('unix:')) return { path: a.slice(5) };
  if (a.startsWith('/')) return { path: a };
  const m = /^(?:tcp:\/\/)?(?:\[([0-9a-fA-F:]+)\]|([^:/]+)):(\d{1,5})$/.exec(a);
  if (m && Number(m[3]) <= 65535) return { host: (m[1] ?? m[2])!, port: Number(m[3]) };
  throw new EngineError(
    `clamd address ${JSON.stringify(address)} is neither a socket path nor HOST:PORT`,
    'give a unix socket path (/run/clamav/clamd.ctl) or tcp://HOST:PORT',
  );
}

/** The generation from a VERSION reply, or undefined when it has no database part. */
export function generationFromVersion(version: string): string | undefined {
  const m = /^ClamAV [^/]+\/(\d+)\/(.+)$/.exec(version.trim());
  if (!m) return undefined;
  const t = Date.parse(`${m[2]!.trim()} UTC`);
  const date = Number.isFinite(t) ? new Date(t).toISOString().replace(/[-:T]/g, '').slice(0, 14) : m[2]!.replace(/[^0-9A-Za-z]+/g, '');
  return `clamav-${m[1]}-${date}`;
}

/** One clamd connection in an IDSESSION. */
class Conn {
  private buf: Buffer = Buffer.alloc(0);
  private pending: { resolve: (line: string) => void; reject: (e: Error) => void } | undefined;
  private nextId = 1;
  closed = false;
  uses = 0;
  private closeError: Error | undefined;

  constructor(
    readonly socket: net.Socket,
    private readonly where: string,
  ) {
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('error', (e) => (this.closeError ??= e));
    socket.on('close', () => {
      this.closed = true;
      const p = this.pending;
      this.pending = undefined;
      p?.reject(
        new EngineError(
          `clamd at ${where} closed the ` +
            `connection${this.closeError ? ` (${(this.closeError as NodeJS.ErrnoException).code ?? this.closeError.message})` : ''}`,
        ),
      );
    });
  }

  private onData(d: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
    const end = this.buf.indexOf(0);
    if (end < 0) {
      if (this.buf.length > MAX_REPLY)
        this.fail(new EngineError(`clamd at ${this.where} sent a reply over ${MAX_REPLY} bytes; is it clamd?`));
      return;
    }
    const line = this.buf.subarray(0, end).toString('utf8');
    this.buf = this.buf.subarray(end + 1);
    const p = this.pending;
    this.pending = undefined;
    if (!p) return this.fail(new EngineError(`clamd at ${this.where} sent an unasked reply: ${line.slice(0, 200)}`));
    p.resolve(line);
  }

  fail(e: Error): void {
    const p = this.pending;
    this.pending = undefined;
    this.closed = true;
    this.socket.destroy();
    p?.reject(e);
  }

  /** Send one command (and its payload); resolve with the reply line, session id removed. */
  exchange(write: (s: net.Socket) => void): Promise<string> {
    if (this.closed) return Promise.reject(new EngineError(`clamd at ${this.where}: connection closed`));
    const id = this.nextId++;
    this.uses++;
    return new Promise<string>((resolve, reject) => {
      this.pending = {
        resolve: (line) => {
          const m = /^(\d+): (.*)$/s.exec(line);
          if (!m || Number(m[1]) !== id) {
            this.fail(new EngineError(`clamd at ${this.where} answered out of turn: ${line.slice(0, 200)}`));
            reject(new EngineError(`clamd at ${this.where} answered out of turn`));
            return;
          }
          resolve(m[2]!);
        },
        reject,
      };
      write(this.socket);
    });
  }
}

export class ClamavEngine implements ScanEngine {
  readonly name = 'clamav';
  private readonly target: Target;
  private readonly where: string;
  /** A custom-database generation seen once by the periodic look, not taken yet. */
  private seen: string | undefined;
  private readonly o: Required<Omit<ClamavOptions, 'databaseDir' | 'streamMaxLength'>> &
    Pick<ClamavOptions, 'databaseDir' | 'streamMaxLength'>;
  private readonly idle: Conn[] = [];
  private readonly waiting: Array<(c: Conn | undefined) => void> = [];
  private open = 0;
  private gen = 'clamav-unknown';
  private version = '';
  private ok = false;
  private state: 'unknown' | 'up' | 'down' = 'unknown';
  private closed = false;
  private timer: NodeJS.Timeout | undefined;
  /** Smallest content size clamd refused as over StreamMaxLength (or the configured limit). */
  private tooLarge: number;
  private readonly log = logger('engine-clamav');

  private constructor(opts: ClamavOptions) {
    this.target = parseClamdAddress(opts.address);
    this.where = 'path' in this.target ? this.target.path : `${this.target.host}:${this.target.port}`;
    this.o = {
      ...CLAMAV_DEFAULTS,
      ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)),
      address: opts.address,
    } as ClamavEngine['o'];
    if (!(this.o.poolSize >= 1 && this.o.poolSize <= 256)) throw new RangeError('poolSize must be 1..256');
    if (!(this.o.chunkSize >= 4096 && this.o.chunkSize <= 16 << 20)) throw new RangeError('chunkSize must be 4 KiB..16 MiB');
    this.tooLarge = opts.streamMaxLength !== undefined ? opts.streamMaxLength + 1 : Infinity;
  }

  /**
   * Connect: asks VERSION once. Unreachable clamd is not fatal: the engine starts unhealthy
   * (/healthz answers 503, scans fail with LA_ERR_ENGINE) and keeps asking every second.
   */
  static async create(opts: ClamavOptions): Promise<ClamavEngine> {
    const e = new ClamavEngine(opts);
    await e.refresh();
    e.schedule();
    return e;
  }

  generation(): string {
    return this.gen;
  }

  healthy(): boolean {
    return this.ok && !this.closed;
  }

  /** What clamd said to VERSION last. */
  get clamdVersion(): string {
    return this.version;
  }

  get address(): string {
    return this.where;
  }

  /** clamd's DatabaseDirectory when configured (clamd.database_dir). */
  get databaseDir(): string | undefined {
    return this.o.databaseDir;
  }

  /** Ask clamd to reload its databases (RELOAD), then take the generation anew. */
  async reload(): Promise<{ generation: string; clamd: string }> {
    // With ConcurrentDatabaseReload no, clamd waits for every open session before reloading:
    // let go of the idle ones.
    for (const c of this.idle.splice(0)) {
      this.open--;
      c.socket.end('zEND\0');
    }
    const reply = await this.oneShot('zRELOAD\0');
    if (reply.trim() !== 'RELOADING')
      throw new EngineError(`clamd at ${this.where} answered RELOAD with ${JSON.stringify(reply.slice(0, 200))}`);
    await this.refresh();
    return { generation: this.gen, clamd: this.version };
  }

  async scan(content: Buffer): Promise<EngineResult> {
    if (this.closed) throw new EngineError('the clamav engine is closed');
    if (content.length >= this.tooLarge) throw this.limitError(content.length);
    const deadline = Date.now() + this.o.timeoutMs;
    for (let attempt = 0; ; attempt++) {
      const conn = await this.acquire(deadline);
      const reused = conn.uses > 0;
      let reply: string;
      try {
        reply = await this.withTimeout(
          conn.exchange((s) => this.writeInstream(s, content)),
          deadline,
          conn,
        );
      } catch (e) {
        this.release(conn, false);
        // A pooled connection clamd closed while it sat idle: once more on a fresh one.
        if (reused && attempt === 0 && !(e instanceof TimeoutSignal)) continue;
        this.markDown(e as Error);
        if (e instanceof TimeoutSignal)
          throw new EngineError(
            `clamd at ${this.where} did not answer a scan of ${content.length} bytes within ${this.o.timeoutMs} ms`,
            'clamd is overloaded or stuck: check it (clamdscan --ping), raise clamd.timeout, or add capacity',
          );
        throw e;
      }
      this.markUp();
      const r = reply.trim();
      if (r === 'stream: OK') {
        this.release(conn, true);
        return { infected: false };
      }
      const found = /^stream: (.+) FOUND$/.exec(r);
      if (found) {
        this.release(conn, true);
        return { infected: true, threat: found[1]!.slice(0, 200) };
      }
      this.release(conn, false); // clamd ends the session after an error
      if (/size limit exceeded/i.test(r)) {
        this.tooLarge = Math.min(this.tooLarge, content.length);
        this.log.warn('content over clamd StreamMaxLength', { size: content.length, clamd: this.where });
        throw this.limitError(content.length);
      }
      throw new EngineError(`clamd at ${this.where} could not scan ${content.length} bytes: ${r.slice(0, 300)}`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    for (const w of this.waiting.splice(0)) w(undefined);
    for (const c of this.idle.splice(0)) {
      c.socket.end('zEND\0');
      c.socket.destroySoon();
    }
  }

  private limitError(size: number): EngineLimitError {
    const known = Number.isFinite(this.tooLarge) ? ` (clamd refused ${this.tooLarge} bytes or more: its StreamMaxLength)` : '';
    return new EngineLimitError(`${size} bytes is over what clamd at ${this.where} accepts in one stream${known}`);
  }

  private writeInstream(s: net.Socket, content: Buffer): void {
    s.cork();
    s.write('zINSTREAM\0');
    const step = this.o.chunkSize;
    for (let off = 0; off < content.length; off += step) {
      const part = content.subarray(off, Math.min(content.length, off + step));
      const len = Buffer.allocUnsafe(4);
      len.writeUInt32BE(part.length, 0);
      s.write(len);
      s.write(part);
    }
    s.write(Buffer.alloc(4));
    s.uncork();
  }

  private withTimeout<T>(p: Promise<T>, deadline: number, conn: Conn): Promise<T> {
    const ms = deadline - Date.now();
    if (ms <= 0) {
      conn.fail(new TimeoutSignal());
      return Promise.reject(new TimeoutSignal());
    }
    let t: NodeJS.Timeout | undefined;
    return Promise.race([
      p,
      new Promise<T>((_, reject) => {
        t = setTimeout(() => {
          conn.fail(new TimeoutSignal()); // the connection is in an unknown state: drop it
          reject(new TimeoutSignal());
        }, ms);
      }),
    ]).finally(() => clearTimeout(t));
  }

  private async acquire(deadline: number): Promise<Conn> {
    for (;;) {
      if (this.closed) throw new EngineError('the clamav engine is closed');
      const c = this.idle.pop();
      if (c) {
        if (!c.closed) return c;
        this.open--;
        continue;
      }
      if (this.open < this.o.poolSize) {
        this.open++;
        try {
          return await this.connect(true);
        } catch (e) {
          this.open--;
          this.wakeOne();
          this.markDown(e as Error);
          throw e;
        }
      }
      const ms = deadline - Date.now();
      if (ms <= 0)
        throw new EngineError(
          `no free clamd connection within the scan timeout (${this.o.timeoutMs} ms; pool of ${this.o.poolSize})`,
          'clamd is slower than the scan load: raise clamd.pool and clamd MaxThreads, or add capacity',
        );
      const got = await new Promise<Conn | undefined>((resolve) => {
        const t = setTimeout(() => {
          const i = this.waiting.indexOf(w);
          if (i >= 0) this.waiting.splice(i, 1);
          resolve(undefined);
        }, ms);
        const w = (conn: Conn | undefined) => {
          clearTimeout(t);
          resolve(conn);
        };
        this.waiting.push(w);
      });
      if (got) return got;
    }
  }

  /** Give a connection back (ok) or drop it; hand it, or a free slot, to a waiting scan. */
  private release(c: Conn, ok: boolean): void {
    if (!ok || c.closed || this.closed) {
      if (!c.closed) c.fail(new EngineError('dropped'));
      this.open--;
      this.wakeOne();
      return;
    }
    const w = this.waiting.shift();
    if (w) w(c);
    else this.idle.push(c);
  }

  /** A slot freed: a waiting scan tries again (it will connect). */
  private wakeOne(): void {
    const w = this.waiting.shift();
    w?.(undefined);
  }

  private connect(session: boolean): Promise<Conn> {
    return new Promise((resolve, reject) => {
      const s =
        'path' in this.target
          ? net.createConnection({ path: this.target.path })
          : net.createConnection({ host: this.target.host, port: this.target.port });
      s.setNoDelay(true);
      const t = setTimeout(() => {
        s.destroy();
        reject(new EngineError(`cannot connect to clamd at ${this.where}: no answer within ${this.o.connectTimeoutMs} ms`));
      }, this.o.connectTimeoutMs);
      s.once('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(t);
        reject(
          new EngineError(
            `cannot connect to clamd at ${this.where}: ${e.code ?? e.message}`,
            'start clamd (systemctl start clamav-daemon) and check clamd.address against its LocalSocket or TCPSocket',
            { cause: e },
          ),
        );
      });
      s.once('connect', () => {
        clearTimeout(t);
        s.removeAllListeners('error');
        const c = new Conn(s, this.where);
        if (session) s.write('zIDSESSION\0');
        resolve(c);
      });
    });
  }

  /** One command on its own connection (VERSION, RELOAD): the reply line. */
  private async oneShot(cmd: string): Promise<string> {
    const s = await this.connect(false);
    return new Promise<string>((resolve, reject) => {
      let buf: Buffer = Buffer.alloc(0);
      const t = setTimeout(
        () => done(new EngineError(`clamd at ${this.where} did not answer ${cmd.slice(1, -1)} within ${this.o.connectTimeoutMs} ms`)),
        this.o.connectTimeoutMs,
      );
      const done = (e?: Error, line?: string) => {
        clearTimeout(t);
        s.socket.destroy();
        if (e) reject(e);
        else resolve(line!);
      };
      s.socket.removeAllListeners('data');
      s.socket.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        const end = buf.indexOf(0);
        if (end >= 0) done(undefined, buf.subarray(0, end).toString('utf8'));
        else if (buf.length > MAX_REPLY) done(new EngineError(`clamd at ${this.where} sent an oversized reply`));
      });
      s.socket.on('close', () =>
        done(new EngineError(`clamd at ${this.where} closed the connection before answering ${cmd.slice(1, -1)}`)),
      );
      s.socket.write(cmd);
    });
  }

  /**
   * Ask VERSION: generation and health. Never throws. `settle` (the periodic look): a changed
   * custom-database fingerprint is taken only when the next look still sees it.
   */
  async refresh(settle = false): Promise<void> {
    if (this.closed) return;
    try {
      const v = (await this.oneShot('zVERSION\0')).trim();
      if (!/^ClamAV /.test(v))
        throw new EngineError(`clamd at ${this.where} answered VERSION with ${JSON.stringify(v.slice(0, 200))}; is it clamd?`);
      const fromVersion = generationFromVersion(v);
      const gen = fromVersion ?? `clamav-custom-${this.customFingerprint(v)}`;
      if (settle && fromVersion === undefined && this.gen.startsWith('clamav-custom-') && gen !== this.gen && gen !== this.seen) {
        // The files changed, but clamd may not have reloaded them yet (freshclam's NotifyClamd
        // does so within moments): taken at the next look, one interval later. Announced now,
        // agents would re-judge files against the old database under the new generation.
        this.seen = gen;
        this.markUp();
        return;
      }
      this.seen = undefined;
      if (gen !== this.gen)
        this.log.info('clamd signature generation', { clamd: this.where, version: v, generation: gen, previous: this.gen });
      this.version = v;
      this.gen = gen;
      this.markUp();
    } catch (e) {
      this.markDown(e as Error);
    }
  }

  private customFingerprint(version: string): string {
    const h = crypto.createHash('sha256').update(version.replace(/\/.*$/, ''));
    const dir = this.o.databaseDir;
    if (dir) {
      try {
        for (const name of fs.readdirSync(dir).sort()) {
          if (!CLAMD_DATABASE_FILE.test(name)) continue;
          const st = fs.statSync(path.join(dir, name));
          h.update(`\n${name}\0${st.size}\0${st.mtimeMs}`);
        }
      } catch (e) {
        this.log.warn('cannot read the clamd database directory; generation from the clamd version only', {
          dir,
          message: (e as Error).message,
        });
      }
    }
    return h.digest('hex').slice(0, 16);
  }

  private markUp(): void {
    if (this.state !== 'up')
      this.log.info(this.state === 'down' ? 'clamd answers again' : 'clamd reachable', { clamd: this.where, version: this.version });
    this.state = 'up';
    this.ok = true;
  }

  /** Logged once per outage, not per failed scan. */
  private markDown(e: Error): void {
    if (this.state !== 'down')
      this.log.warn('clamd unreachable or failing; scans fail until it answers again', { clamd: this.where, message: e.message });
    this.state = 'down';
    this.ok = false;
  }

  private schedule(): void {
    if (this.closed) return;
    this.timer = setTimeout(
      () => {
        void this.refresh(true).finally(() => this.schedule());
      },
      this.ok ? this.o.versionIntervalMs : Math.min(1000, this.o.versionIntervalMs),
    );
    this.timer.unref();
  }
}

/** Internal: the per-scan deadline passed. */
class TimeoutSignal extends Error {
  constructor() {
    super('timeout');
  }
}
