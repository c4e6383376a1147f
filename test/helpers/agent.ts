/**
 * A real `lightagent run` for integration tests: its settings in a config file written here, the
 * compiled CLI or the release binary (LIGHTAGENT_TEST_BINARY, through spawnNode), a watchdog, and
 * a handle that reads status the way a user does, from the daemon's status socket.
 *
 *   const a = await startAgent({ svm: svm.url, protect: mnt.dir, mode: 'fanotify', settings: { deadline: '1s' } });
 *   (await a.status()).backend.ignoreMarks; a.logs(); await a.stop();   // SIGTERM: exit code
 */
import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { DaemonStatus } from '../../src/agent/daemon.js';
import { request } from '../../src/control/client.js';
import { socketDirFor, statusEndpoint } from '../../src/control/local-sockets.js';
import { CLI, run, spawnNode, tempDir, waitFor, type Proc } from './procs.js';

export interface StartAgentOptions {
  /** `svm:` (a ws:// URL); leave it out to give it in `settings` or `args`. */
  svm?: string;
  /** `token:` (default test-token, what startSvmProcess accepts). */
  token?: string;
  /** `protect:` */
  protect?: string | readonly string[];
  /** `state_dir:` (default: a new temp dir, removed at exit). */
  stateDir?: string;
  /** `--mode` (default: the daemon's own choice). */
  mode?: 'fanotify' | 'watcher';
  /** More of the config file, e.g. { deadline: '1s', exclude: [dir], cache: { save_interval: '1s' } }. */
  settings?: Record<string, unknown>;
  /** Flags after `run` (they win over the file, as in production). */
  args?: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** SIGKILL after this long whatever happens (default 180 s). */
  watchdogMs?: number;
  /** How long it may take to protect (default 30 s). */
  startTimeoutMs?: number;
  /** false: return as soon as it is spawned (for a daemon that is expected to fail). */
  wait?: boolean;
}

export interface Agent extends Proc {
  stateDir: string;
  /** Where status.sock and control.sock are. */
  socketDir: string;
  /** The config file it runs with: rewrite it (or reconfigure()) and send SIGHUP to reload. */
  configFile: string;
  /** The daemon's status, asked over status.sock (`{"cmd":"status"}`). */
  status(timeoutMs?: number): Promise<DaemonStatus>;
  /** Rewrite the config file with the settings it started with plus `settings` (no reload by itself). */
  reconfigure(settings: Record<string, unknown>): void;
  /** Send a fatal `signal` (default SIGKILL) and resolve with the exit code once it has exited. */
  kill(signal?: NodeJS.Signals): Promise<number | null>;
  /** The exit code, once it has exited (at once if it already has). */
  exited(): Promise<number | null>;
  /** Everything it wrote on stdout and stderr (its JSON event lines and log). */
  logs(): string;
}

export async function startAgent(o: StartAgentOptions = {}): Promise<Agent> {
  const stateDir = o.stateDir ?? tempDir('la-state-');
  const base: Record<string, unknown> = {
    ...(o.svm !== undefined ? { svm: o.svm } : {}),
    token: o.token ?? 'test-token',
    ...(o.protect !== undefined ? { protect: typeof o.protect === 'string' ? [o.protect] : [...o.protect] } : {}),
    state_dir: stateDir,
    ...o.settings,
  };
  // Not in the state dir: a test may wipe or inspect that, and the file outlives one daemon.
  const configFile = path.join(tempDir('la-agent-config-'), 'agent.yaml');
  const write = (settings: Record<string, unknown>) => fs.writeFileSync(configFile, YAML.stringify({ ...base, ...settings }));
  write({});
  const p = spawnNode(CLI, ['run', '--config', configFile, '--json', ...(o.mode ? ['--mode', o.mode] : []), ...(o.args ?? [])], {
    watchdogMs: o.watchdogMs ?? 180_000,
    env: o.env ?? {},
  });
  const exit = new Promise<number | null>((r) =>
    p.child.exitCode !== null || p.child.signalCode !== null ? r(p.child.exitCode) : p.child.once('exit', (code) => r(code)),
  );
  // The sockets are up before the daemon says it started; the line names their directory.
  let socketDir = socketDirFor({ state_dir: stateDir });
  if (o.wait !== false) {
    const started = await waitFor(p, /\{"event":"started"[^\n]*\}/, o.startTimeoutMs ?? 30_000);
    try {
      socketDir = (JSON.parse(started[0]) as { sockets?: string }).sockets ?? socketDir;
    } catch {
      /* a log line written into the middle of ours: socketDirFor gives the same place */
    }
  }
  return {
    ...p,
    stateDir,
    socketDir,
    configFile,
    status: async (timeoutMs = 10_000) => {
      const reply = await request(statusEndpoint(socketDir), { cmd: 'status' }, timeoutMs);
      return reply.status as DaemonStatus;
    },
    reconfigure: write,
    kill: async (signal = 'SIGKILL') => {
      p.child.kill(signal);
      return exit;
    },
    exited: () => exit,
    logs: p.output,
  };
}

export interface QuarantineItem {
  id: string;
  originalPath: string;
  threat: string;
}

/** `lightagent quarantine list --json` on a state directory (the daemon may be running or not). */
export function quarantineList(stateDir: string, timeoutMs = 20_000): QuarantineItem[] {
  const r = run(process.execPath, [CLI, 'quarantine', 'list', '--json', '--state-dir', stateDir], timeoutMs);
  if (r.status !== 0) throw new Error(`quarantine list failed (status ${r.status}, ${r.ms.toFixed(0)} ms): ${r.stderr}`);
  return JSON.parse(r.stdout) as QuarantineItem[];
}
