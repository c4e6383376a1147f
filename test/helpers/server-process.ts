/**
 * A real server (clamd, redis-server) as a child of the test: spawned under a watchdog, ready
 * once it answers its own protocol (not when a socket file appears: clamd creates it long
 * before the database is loaded), killed at exit, and able to die and come back on the same
 * address so tests can take it away mid-run.
 */
import net from 'node:net';
import fs from 'node:fs';
import { spawnWatched, type Proc } from './procs.js';

export interface ServerOptions {
  /** For messages: `clamd`, `redis-server`. */
  name: string;
  bin: string;
  args: readonly string[];
  /** True once the server answers (one PING); a throw counts as "not yet". */
  ready: () => Promise<boolean>;
  /** Milliseconds to wait for `ready` at each start. */
  startTimeoutMs: number;
  /** Between two `ready` probes. */
  pollMs?: number;
  /** Kill the server after this long whatever happens (default 10 min). */
  watchdogMs?: number;
  /** Before each start, e.g. remove a stale socket file. */
  beforeStart?: () => void;
  /** A directory of the server's own (config, database, socket), removed by stop(). */
  dir?: string;
}

export interface ServerProcess {
  pid(): number | undefined;
  /** Start again after kill() (same arguments, so the same address). */
  start(): Promise<void>;
  /** SIGKILL (after SIGCONT, so a paused one dies too); resolves once it is gone. */
  kill(): Promise<void>;
  /** kill() and remove `dir`. */
  stop(): Promise<void>;
  /** SIGSTOP / SIGCONT: a server that accepts connections but never answers. */
  pause(): void;
  resume(): void;
  /** Its stdout and stderr, over every start. */
  output(): string;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
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

const alive = (p: Proc | undefined): boolean => p !== undefined && p.child.exitCode === null && p.child.signalCode === null;

export async function startServer(o: ServerOptions): Promise<ServerProcess> {
  let proc: Proc | undefined;
  let earlier = '';
  const output = () => `${earlier}${proc?.output() ?? ''}`;
  const start = async () => {
    if (proc) earlier = output();
    o.beforeStart?.();
    const p = spawnWatched(o.bin, [...o.args], { watchdogMs: o.watchdogMs ?? 600_000 });
    proc = p;
    const end = Date.now() + o.startTimeoutMs;
    for (;;) {
      if (!alive(p))
        throw new Error(`${o.name} exited (${p.child.exitCode ?? p.child.signalCode}) while starting:\n${output().slice(-3000)}`);
      if (await o.ready().catch(() => false)) return;
      if (Date.now() > end) {
        p.child.kill('SIGKILL');
        throw new Error(`${o.name} did not answer PING within ${o.startTimeoutMs} ms:\n${output().slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, o.pollMs ?? 100));
    }
  };
  const kill = async () => {
    const p = proc;
    if (!p || !alive(p)) return;
    const gone = new Promise((r) => p.child.once('exit', r));
    p.child.kill('SIGCONT');
    p.child.kill('SIGKILL');
    await gone;
  };
  await start();
  return {
    pid: () => proc?.pid,
    start,
    kill,
    stop: async () => {
      await kill();
      if (o.dir) fs.rmSync(o.dir, { recursive: true, force: true });
    },
    pause: () => void proc?.child.kill('SIGSTOP'),
    resume: () => void proc?.child.kill('SIGCONT'),
    output,
  };
}
