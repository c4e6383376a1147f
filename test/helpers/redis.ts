/**
 * A real redis-server (Debian redis-server) for tests and benchmarks: loopback only, a free port,
 * no persistence (`--save '' --appendonly no`), its working dir in a temp dir; run through
 * startServer (server-process.ts): a watchdog, killed when the test process exits.
 *
 *   const skip = needRedis();                // undefined, or a skip reason (a loud note); throws under CI=true
 *   const r = await startRedis();            // r.url = redis://127.0.0.1:PORT
 *   await r.kill(); await r.start();         // down and back on the same port
 *   r.pause(); r.resume();                   // SIGSTOP / SIGCONT: connected but never answering
 *   await r.stop();
 */
import net from 'node:net';
import { after } from 'node:test';
import { findBinary, needPackage, tempDir } from './procs.js';
import { freePort, startServer } from './server-process.js';

const CANDIDATES = ['/usr/bin/redis-server', '/usr/local/bin/redis-server', '/usr/sbin/redis-server'];

export function redisBinary(): string | undefined {
  return findBinary('redis-server', CANDIDATES);
}

/** Skip reason when redis-server is not installed (after a loud note), else undefined. Under CI=true: throws. */
export function needRedis(): string | undefined {
  return needPackage(redisBinary(), 'redis-server', 'the Redis verdict cache tests');
}

export interface RedisProc {
  port: number;
  url: string;
  dir: string;
  pid(): number | undefined;
  /** One command in RESP, the raw reply (e.g. command(['DBSIZE']) -> ':3\r\n'). */
  command(args: string[], timeoutMs?: number): Promise<string>;
  pause(): void;
  resume(): void;
  kill(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  output(): string;
}

export function respCommand(port: number, args: string[], timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ host: '127.0.0.1', port });
    let buf = '';
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`redis did not answer ${args[0]} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    s.on('data', (d) => {
      buf += d.toString();
      if (buf.endsWith('\r\n')) {
        clearTimeout(t);
        s.destroy();
        resolve(buf);
      }
    });
    s.on('connect', () => s.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`));
  });
}

export async function startRedis(o: { watchdogMs?: number; startTimeoutMs?: number } = {}): Promise<RedisProc> {
  const bin = redisBinary();
  if (!bin) throw new Error('redis-server is not installed (apt-get install -y redis-server)');
  const dir = tempDir('la-redis-');
  const port = await freePort();
  const server = await startServer({
    name: 'redis-server',
    bin,
    args: [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--daemonize',
      'no',
      '--loglevel',
      'warning',
    ],
    ready: async () => (await respCommand(port, ['PING'], 1000)).startsWith('+PONG'),
    startTimeoutMs: o.startTimeoutMs ?? 20_000,
    pollMs: 50,
    watchdogMs: o.watchdogMs ?? 600_000,
    dir,
  });
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    pid: server.pid,
    command: (args, ms) => respCommand(port, args, ms),
    pause: server.pause,
    resume: server.resume,
    kill: server.kill,
    start: server.start,
    stop: server.stop,
    output: server.output,
  };
}

/**
 * One redis-server for a whole test file, started by the first test that asks and stopped after the
 * file; `prefix(tag)` gives each caller its own key space (`<tag><pid>-<n>:`). `skip` as needRedis().
 */
export function redisPerFile(): { skip: string | undefined; redis: () => Promise<RedisProc>; prefix: (tag: string) => string } {
  const skip = needRedis();
  let shared: Promise<RedisProc> | undefined;
  after(async () => {
    if (shared) await (await shared).stop();
  });
  let n = 0;
  return { skip, redis: () => (shared ??= startRedis()), prefix: (tag) => `${tag}${process.pid}-${++n}:` };
}
