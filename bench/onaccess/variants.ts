/**
 * The three things the workloads run under, each on its own loop mount (so marks never overlap):
 *
 *   none        nothing watches the mount
 *   lightagent  `lightagent run --mode fanotify --protect <mount>` (production Node flags) with
 *               `lightagent-svm` on loopback (builtin engine, memory cache)
 *   clamonacc   ClamAV clamd + clamonacc with OnAccessPrevention on the mount (the setup of
 *               ../shared/peers/clamonacc/run.sh: a tiny offline EICAR database, --fdpass)
 *   floor       floor-listener.c: the same fanotify marks, events and ignore marks as lightagent
 *               with next to nothing done per event in C (fstat, a 4 KiB pread, one string
 *               match): the least any permission-event scanner costs on this machine
 *
 * A protecting variant must block EICAR (`cat` fails) before it is timed: `eicarBlocked()`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { AGENT_NODE_FLAGS, productNode, shSync, SVM_NODE_FLAGS, stopChild, track, waitLine } from '../lib/harness.js';
import type { WindowStats } from '../../src/svm-link/index.js';

export type VariantName = 'none' | 'lightagent' | 'clamonacc' | 'floor';
export const VARIANTS: readonly VariantName[] = ['none', 'lightagent', 'clamonacc', 'floor'];

// Split so that no file of this repository is itself an EICAR file.
export const EICAR = 'X5O!P%@AP[4\\PZX54(P^)7CC)7}$' + 'EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*';
export const TOKEN = 'bench-token';

const CLI = new URL('../../src/cli/lightagent.js', import.meta.url).pathname;
const SVM_CLI = new URL('../../src/cli/lightagent-svm.js', import.meta.url).pathname;

export interface Variant {
  readonly name: VariantName;
  /** The mount this variant runs on. */
  readonly root: string;
  /** Start (again) with empty caches. */
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Processes that make up the protection (for CPU and RSS); empty for `none`. */
  pids(): number[];
}

let canarySeq = 0;
/** Write a new EICAR file on the variant's mount and `cat` it: null if blocked, else why not. */
export async function eicarCheck(v: Variant): Promise<{ blocked: boolean; detail: string }> {
  const dir = path.join(v.root, 'canary');
  const f = path.join(dir, `eicar-${++canarySeq}.com`);
  // Written and read by child processes: this process never opens a file on a watched mount.
  spawnSync('bash', ['-c', `mkdir -p '${dir}' && printf '%s' "$1" > '${f}'`, 'x', EICAR], { timeout: 10_000 });
  let last = '';
  for (let i = 0; i < 50; i++) {
    const r = spawnSync('cat', [f], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) return { blocked: true, detail: `cat ${f}: exit ${r.status}: ${r.stderr.trim()}` };
    last = `cat ${f}: exit 0, read ${r.stdout.length} bytes`;
    if (v.name === 'none') break;
    await new Promise((r) => setTimeout(r, 200));
  }
  return { blocked: false, detail: `${last} (not blocked within 10 s)` };
}

export class NoAgent implements Variant {
  readonly name = 'none';
  constructor(readonly root: string) {}
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  pids(): number[] {
    return [];
  }
}

export class LightAgent implements Variant {
  readonly name = 'lightagent';
  svm?: ChildProcess;
  agent?: ChildProcess;
  url = '';
  metricsUrl = '';
  constructor(
    readonly root: string,
    readonly stateDir: string,
    readonly logFile: string,
    /** SIGKILL each agent started this long after its start, from a separate process (startAgent's watchdog). */
    readonly watchdogMs?: number,
  ) {}

  async start(): Promise<void> {
    await this.stop();
    this.svm = startSvm(`${this.logFile}.svm`);
    const svm = this.svm;
    const line = await svmUrls(svm);
    this.url = line.url;
    this.metricsUrl = line.metrics;
    this.agent = await startAgent({
      url: this.url,
      protect: this.root,
      stateDir: this.stateDir,
      logFile: this.logFile,
      ...(this.watchdogMs ? { watchdogMs: this.watchdogMs } : {}),
    });
  }

  async stop(): Promise<void> {
    await stopChild(this.agent);
    await stopChild(this.svm);
    this.agent = this.svm = undefined;
  }

  pids(): number[] {
    return [this.agent?.pid, this.svm?.pid].filter((p): p is number => p !== undefined);
  }

  /** The agent's status (SIGUSR2 writes <state_dir>/status.json). */
  status(): Promise<AgentStatus> {
    return agentStatus(this.agent!, this.stateDir);
  }
}

/** `lightagent-svm` on loopback (builtin engine, memory cache); its log lines go to `logFile`. */
export function startSvm(logFile: string): ChildProcess {
  const fd = fs.openSync(logFile, 'a');
  const svm = spawn(
    productNode().path,
    [...SVM_NODE_FLAGS, SVM_CLI, '--listen', '127.0.0.1:0', '--token', TOKEN, '--json', '--log-level', 'warn'],
    {
      stdio: ['ignore', 'pipe', fd],
    },
  );
  fs.closeSync(fd);
  return track(svm, 'lightagent-svm');
}

/** Its ws:// URL and metrics URL, from its start-up line. */
export async function svmUrls(svm: ChildProcess): Promise<{ url: string; metrics: string }> {
  return JSON.parse(await waitLine(svm, /\{.*"url".*\}/, 20_000)) as { url: string; metrics: string };
}

/** `lightagent run` on `protect` with a fresh state dir, production Node flags; resolves once it protects. */
export async function startAgent(o: {
  url: string;
  protect: string;
  stateDir: string;
  logFile: string;
  fresh?: boolean;
  command?: readonly string[];
  config?: string;
  /** How long to wait for its "started" line (default 30 s; a boot storm of many agents needs longer). */
  startTimeoutMs?: number;
  /**
   * SIGKILL the agent after this long from a separate process (a stuck permission listener
   * freezes every process that opens a file on its mount, the bench included).
   */
  watchdogMs?: number;
}): Promise<ChildProcess> {
  if (o.fresh !== false) fs.rmSync(o.stateDir, { recursive: true, force: true });
  // `command`: what runs `run ...` (default: the product's Node, productNode(), with the production flags and the compiled CLI).
  const [cmd, ...pre] = o.command ?? [productNode().path, ...AGENT_NODE_FLAGS, CLI];
  // `config`: a config file under the flags (the flags win where both set something).
  const child = spawn(
    cmd!,
    [
      ...pre,
      'run',
      ...(o.config ? ['--config', o.config] : []),
      '--svm',
      o.url,
      '--token',
      TOKEN,
      '--protect',
      o.protect,
      '--state-dir',
      o.stateDir,
      '--mode',
      'fanotify',
      '--log-file',
      o.logFile,
      '--json',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  track(child, 'lightagent');
  if (o.watchdogMs) watchdog(child, o.watchdogMs);
  await waitLine(child, /"event":"started"/, o.startTimeoutMs ?? 30_000);
  return child;
}

/**
 * A separate process that SIGKILLs `child` after `ms` unless `child` exits first (then the
 * watchdog is ended by its pid): it works even when this process is frozen or killed.
 */
export function watchdog(child: ChildProcess, ms: number): void {
  const w = spawn('bash', ['-c', `sleep ${Math.ceil(ms / 1000)}; kill -KILL ${child.pid} 2>/dev/null`], {
    stdio: 'ignore',
    detached: true,
  });
  w.unref();
  track(w, `watchdog of ${child.pid}`, true);
  child.once('exit', () => {
    try {
      process.kill(-w.pid!, 'SIGKILL'); // its group: bash and its sleep
    } catch {
      // already gone
    }
  });
}

/** The fields of the agent's status.json the bench reads; the others as written. */
export interface AgentStatus {
  deferredQueue?: number;
  backend?: { open?: number; exec?: number; [field: string]: unknown };
  counts?: Record<string, number | undefined>;
  svm?: { window?: WindowStats & { raised: number }; [field: string]: unknown };
  [field: string]: unknown;
}

export async function agentStatus(agent: ChildProcess, stateDir: string): Promise<AgentStatus> {
  const f = path.join(stateDir, 'status.json');
  fs.rmSync(f, { force: true });
  agent.kill('SIGUSR2');
  for (let i = 0; i < 100 && !fs.existsSync(f); i++) await new Promise((r) => setTimeout(r, 50));
  return JSON.parse(fs.readFileSync(f, 'utf8')) as AgentStatus;
}

/** One counter from a Prometheus text page. */
export async function metric(url: string, name: string): Promise<number> {
  return metricIn(await metricsText(url), name);
}

/** The SVM's /metrics page. */
export async function metricsText(url: string): Promise<string> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return res.text();
}

/** The first series of `name` in a /metrics page (NaN when absent). */
export function metricIn(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

export class ClamOnAcc implements Variant {
  readonly name = 'clamonacc';
  clamd?: ChildProcess;
  onacc?: ChildProcess;
  readonly conf: string;
  readonly run: string;
  constructor(
    readonly root: string,
    readonly work: string,
  ) {
    const db = path.join(work, 'db');
    this.run = path.join(work, 'run');
    this.conf = path.join(work, 'clamd.conf');
    fs.mkdirSync(db, { recursive: true });
    fs.mkdirSync(this.run, { recursive: true });
    // The peer's offline database: EICAR by MD5 (.hdb) and by bytes (.ndb).
    fs.writeFileSync(path.join(db, 'custom.hdb'), '44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature\n');
    fs.writeFileSync(
      path.join(db, 'custom.ndb'),
      `Eicar-Test-Signature-NDB:0:*:${Buffer.from('EICAR-STANDARD-ANTIVIRUS-TEST-FILE').toString('hex')}\n`,
    );
    shSync(`chown -R clamav:clamav '${db}' '${this.run}'`);
    // OnAccessMountPath would mark the whole mount, but clamonacc does not block with it (it
    // reports only; tried): OnAccessIncludePath with prevention, as the peer does.
    fs.writeFileSync(
      this.conf,
      [
        `LocalSocket ${this.run}/clamd.sock`,
        'LocalSocketMode 666',
        'FixStaleSocket yes',
        `DatabaseDirectory ${db}`,
        'Foreground yes',
        `LogFile ${this.run}/clamd.log`,
        'User clamav',
        `TemporaryDirectory ${this.run}`,
        'SelfCheck 0',
        'MaxThreads 10',
        `OnAccessIncludePath ${root}`,
        'OnAccessPrevention yes',
        'OnAccessExcludeUname clamav',
        'OnAccessMaxFileSize 5M',
        '',
      ].join('\n'),
      { mode: 0o644 },
    );
  }

  static installed(): string | undefined {
    for (const b of ['/usr/sbin/clamd', '/usr/sbin/clamonacc'])
      if (!fs.existsSync(b)) return `${b} is not installed (Debian: apt-get install clamav-daemon)`;
    return undefined;
  }

  async start(): Promise<void> {
    await this.stop();
    const sock = path.join(this.run, 'clamd.sock');
    fs.rmSync(sock, { force: true });
    const clamd = spawn('/usr/sbin/clamd', [`--config-file=${this.conf}`], { stdio: ['ignore', 'ignore', 'ignore'] });
    this.clamd = track(clamd, 'clamd');
    for (let i = 0; i < 300 && !fs.existsSync(sock); i++) {
      if (clamd.exitCode !== null) throw new Error(`clamd exited with ${clamd.exitCode}; see ${this.run}/clamd.log`);
      await new Promise((r) => setTimeout(r, 100));
    }
    if (!fs.existsSync(sock)) throw new Error(`clamd did not open ${sock} within 30 s; see ${this.run}/clamd.log`);
    const onacc = spawn(
      '/usr/sbin/clamonacc',
      [`--config-file=${this.conf}`, '--foreground', '--fdpass', `--log=${this.run}/clamonacc.log`],
      { stdio: ['ignore', 'ignore', 'ignore'] },
    );
    this.onacc = track(onacc, 'clamonacc');
    // Ready when a canary deep in the tree is blocked (clamonacc adds its marks directory by directory).
    const dir = path.join(this.root, 'canary/a/b/c');
    spawnSync('bash', ['-c', `mkdir -p '${dir}' && [ -f '${dir}/ready.com' ] || printf '%s' "$1" > '${dir}/ready.com'`, 'x', EICAR], {
      timeout: 10_000,
    });
    for (let i = 0; i < 600; i++) {
      if (onacc.exitCode !== null) throw new Error(`clamonacc exited with ${onacc.exitCode}; see ${this.run}/clamonacc.log`);
      if (spawnSync('cat', [path.join(dir, 'ready.com')], { stdio: 'ignore', timeout: 10_000 }).status !== 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`clamonacc does not block ${dir}/ready.com after 60 s; see ${this.run}/clamonacc.log`);
  }

  async stop(): Promise<void> {
    await stopChild(this.onacc, 5000);
    await stopChild(this.clamd, 5000);
    this.onacc = this.clamd = undefined;
  }

  pids(): number[] {
    return [this.clamd?.pid, this.onacc?.pid].filter((p): p is number => p !== undefined);
  }
}

const FLOOR_SRC = new URL('../../../bench/onaccess/floor-listener.c', import.meta.url).pathname;

/** The floor (floor-listener.c), compiled with the system's C compiler into `work`. */
export class FloorListener implements Variant {
  readonly name = 'floor';
  listener?: ChildProcess;
  private readonly bin: string;
  constructor(
    readonly root: string,
    readonly work: string,
    /** false: no ignore marks, every open is an event (--no-marks). */
    readonly marks = true,
  ) {
    this.bin = path.join(work, 'floor-listener');
  }

  /** Why it cannot run here, or undefined. */
  static missing(): string | undefined {
    if (spawnSync('cc', ['--version'], { stdio: 'ignore' }).status !== 0)
      return 'no C compiler to build bench/onaccess/floor-listener.c (Debian: apt-get install gcc)';
    return undefined;
  }

  async start(): Promise<void> {
    await this.stop();
    if (!fs.existsSync(this.bin)) {
      fs.mkdirSync(this.work, { recursive: true });
      shSync(`cc -O2 -Wall -o '${this.bin}' '${FLOOR_SRC}'`, { timeoutS: 120 });
    }
    const l = spawn(this.bin, [...(this.marks ? [] : ['--no-marks']), this.root], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.listener = track(l, 'floor-listener');
    await waitLine(l, /ready/, 10_000);
  }

  async stop(): Promise<void> {
    await stopChild(this.listener, 5000);
    this.listener = undefined;
  }

  pids(): number[] {
    return this.listener?.pid === undefined ? [] : [this.listener.pid];
  }
}
