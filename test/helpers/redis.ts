/**
 * A real redis-server (Debian redis-server) for tests and benchmarks: loopback only, a free port,
 * no persistence (`--save '' --appendonly no`), its working dir in a temp dir, a watchdog, killed
 * when the test process exits.
 *
 *   const skip = needRedis();                // undefined, or a skip reason (a loud note); throws under CI=true
 *   const r = await startRedis();            // r.url = redis://127.0.0.1:PORT
 *   await r.kill(); await r.start();         // down and back on the same port
 *   r.pause(); r.resume();                   // SIGSTOP / SIGCONT: connected but never answering
 *   await r.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { findBinary, needPackage } from './procs.js';

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

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const p = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(p));
    });
  });
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
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'la-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let out = '';
  const start = async () => {
    const c = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--loglevel', 'warning'], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    live.add(c);
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const watchdog = setTimeout(() => c.kill('SIGKILL'), o.watchdogMs ?? 600_000);
    watchdog.unref();
    c.once('exit', () => {
      clearTimeout(watchdog);
      live.delete(c);
    });
    const end = Date.now() + (o.startTimeoutMs ?? 20_000);
    for (;;) {
      if (c.exitCode !== null || c.signalCode !== null) throw new Error(`redis-server exited (${c.exitCode ?? c.signalCode}) while starting:\n${out.slice(-3000)}`);
      try {
        if ((await respCommand(port, ['PING'], 1000)).startsWith('+PONG')) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > end) {
        c.kill('SIGKILL');
        throw new Error(`redis-server did not answer PING in time:\n${out.slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const kill = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGCONT');
    c.kill('SIGKILL');
    await gone;
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    dir,
    pid: () => child?.pid,
    command: (args, ms) => respCommand(port, args, ms),
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
    kill,
    start,
    stop: async () => {
      await kill();
      fs.rmSync(dir, { recursive: true, force: true });
    },
    output: () => out,
  };
}
