/**
 * A real clamd (Debian clamav-daemon) for tests and benchmarks, on a small offline database made
 * here — never the internet one, no freshclam:
 *
 *   EICAR_SIGNATURES (fixtures.ts): EICAR alone by MD5, and EICAR anywhere in a file,
 *   plus any files given in `extraDb`.
 *
 * Everything (config, socket, database, temp files, log) lives in one temp dir. clamd runs in the
 * foreground through startServer (server-process.ts): a watchdog, killed when the test exits.
 *
 *   const skip = needClamd();               // undefined, or a skip reason (a loud note); throws under CI=true
 *   const c = await startClamd({ streamMaxLength: '4M' });
 *   ... c.socket ...
 *   await c.restart(); c.pause(); c.resume(); await c.stop();
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { EICAR_SIGNATURES } from './fixtures.js';
import { findBinary, needPackage, tempDir } from './procs.js';
import { freePort, startServer } from './server-process.js';

const CANDIDATES = ['/usr/sbin/clamd', '/usr/local/sbin/clamd', '/usr/bin/clamd'];

/** Path of the clamd binary, or undefined. */
export function clamdBinary(): string | undefined {
  return findBinary('clamd', CANDIDATES);
}

/** Skip reason when clamd is not installed (after a loud note), else undefined. Under CI=true: throws. */
export function needClamd(): string | undefined {
  return needPackage(clamdBinary(), 'clamav-daemon', 'the clamav engine tests');
}

export interface ClamdOptions {
  /** clamd StreamMaxLength (e.g. '4M'); default 25M, clamd's own default. */
  streamMaxLength?: string;
  /** MaxThreads (default 8). */
  maxThreads?: number;
  /** Extra database files: name -> content (e.g. {'local.ndb': 'Name:0:*:6869'}). */
  extraDb?: Record<string, string>;
  /** Also listen on TCP 127.0.0.1:PORT (a free port is picked when 0). */
  tcp?: boolean;
  /** Milliseconds to wait for clamd to answer PING (default 60 s: loading is slow on a busy machine). */
  startTimeoutMs?: number;
  /** Kill clamd after this long whatever happens (default 10 min). */
  watchdogMs?: number;
}

export interface Clamd {
  dir: string;
  dbDir: string;
  socket: string;
  /** 127.0.0.1:PORT when `tcp` was asked for. */
  tcpAddress: string | undefined;
  conf: string;
  pid(): number | undefined;
  /** Ask clamd something over its socket (a `z` command without the z and the NUL), e.g. 'VERSION'. */
  command(cmd: string, timeoutMs?: number): Promise<string>;
  /** Write (or replace) a database file. clamd sees it after `command('RELOAD')` or a restart. */
  writeDb(name: string, content: string): void;
  /** SIGSTOP / SIGCONT: a clamd that accepts connections but never answers. */
  pause(): void;
  resume(): void;
  /** Kill (SIGKILL) and start again on the same socket. */
  restart(): Promise<void>;
  /** Kill and remove the temp dir. */
  stop(): Promise<void>;
  /** Kill only (the socket stops answering); `start()` brings it back. */
  kill(): Promise<void>;
  start(): Promise<void>;
  log(): string;
}

/** One clamd command over a unix socket: the reply without its NUL. */
export function clamdCommand(socket: string, cmd: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path: socket });
    let buf = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`clamd did not answer ${cmd} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    s.on('data', (d) => {
      buf += d.toString();
      const i = buf.indexOf('\0');
      if (i >= 0) {
        clearTimeout(t);
        s.destroy();
        resolve(buf.slice(0, i));
      }
    });
    s.on('connect', () => s.write(`z${cmd}\0`));
  });
}

export async function startClamd(o: ClamdOptions = {}): Promise<Clamd> {
  const bin = clamdBinary();
  if (!bin) throw new Error('clamd is not installed (apt-get install -y clamav-daemon)');
  // A temp dir removed at exit even when start-up fails (LIGHTAGENT_KEEP_TEST_DIRS=1 keeps it, with clamd.log).
  const dir = tempDir('la-clamd-');
  const dbDir = path.join(dir, 'db');
  const tmp = path.join(dir, 'tmp');
  fs.mkdirSync(dbDir);
  fs.mkdirSync(tmp);
  const socket = path.join(dir, 'clamd.sock');
  const logFile = path.join(dir, 'clamd.log');
  const conf = path.join(dir, 'clamd.conf');
  const port = o.tcp ? await freePort() : undefined;
  const writeDb = (name: string, content: string) => {
    // Write then rename: clamd never reads half a file.
    const f = path.join(dbDir, name);
    fs.writeFileSync(`${f}.tmp`, content.endsWith('\n') ? content : `${content}\n`);
    fs.renameSync(`${f}.tmp`, f);
  };
  for (const [name, content] of Object.entries({ ...EICAR_SIGNATURES, ...o.extraDb })) writeDb(name, content);
  fs.writeFileSync(
    conf,
    [
      'Foreground yes',
      `LocalSocket ${socket}`,
      'LocalSocketMode 600',
      ...(port ? [`TCPSocket ${port}`, 'TCPAddr 127.0.0.1'] : []),
      `DatabaseDirectory ${dbDir}`,
      `TemporaryDirectory ${tmp}`,
      `LogFile ${logFile}`,
      'LogTime yes',
      `StreamMaxLength ${o.streamMaxLength ?? '25M'}`,
      `MaxThreads ${o.maxThreads ?? 8}`,
      'MaxQueue 200',
      'SelfCheck 3600',
      'Bytecode no',
      // clamd's default: with `no`, a reload waits for every open session (pooled connections) to end.
      'ConcurrentDatabaseReload yes',
      'ExitOnOOM yes',
      '',
    ].join('\n'),
  );
  const server = await startServer({
    name: 'clamd',
    bin,
    args: ['-c', conf],
    ready: async () => (await clamdCommand(socket, 'PING', 2000)) === 'PONG',
    startTimeoutMs: o.startTimeoutMs ?? 60_000,
    watchdogMs: o.watchdogMs ?? 600_000,
    beforeStart: () => fs.rmSync(socket, { force: true }),
    dir,
  });
  return {
    dir,
    dbDir,
    socket,
    tcpAddress: port ? `127.0.0.1:${port}` : undefined,
    conf,
    pid: server.pid,
    command: (cmd, ms) => clamdCommand(socket, cmd, ms),
    writeDb,
    pause: server.pause,
    resume: server.resume,
    restart: async () => {
      await server.kill();
      await server.start();
    },
    kill: server.kill,
    start: server.start,
    stop: server.stop,
    log: () => `${server.output()}${fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : ''}`,
  };
}
