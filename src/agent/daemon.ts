/**
 * The guest daemon: the composition root. Start-up is an ordered list of steps (steps.ts); each
 * part it starts has a teardown that always runs.
 *
 *   state-dir -> lock (one daemon per state directory) -> svm-link -> cache -> quarantine +
 *   deferred queue -> scanner + handler -> protection backend (fanotify, else the watcher)
 *   -> deferred re-scan -> service (protection state, status and control sockets)
 *
 * `reload()` (SIGHUP, the control socket) is make-before-break: the new protection backend is
 * running before the old one stops, so there is no moment without a gate.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describeError, JournalError, ServiceError } from '../errors.js';
import { logger } from '../log.js';
import type { SvmClient } from '../svm-link/index.js';
import type { ProtectionBackend, ProtectionMode } from '../watchers/protection.js';
import type { AgentConfig } from '../config/agent.js';
import { DetectionLog, type Detection } from '../store/detections.js';
import { FileScanner } from '../scan/file-scanner.js';
import { openLocalCache, type LocalCache } from './local-cache.js';
import { OnAccessHandler } from '../scan/on-access.js';
import { ProcessMonitor, processSettings } from '../processes/process-monitor.js';
import { DeferredQueue } from '../store/deferred-queue.js';
import { Quarantine } from '../store/quarantine.js';
import { resolveProtect, startProtection } from '../watchers/backend.js';
import { StepRunner, type Step } from './steps.js';
import { svmLinkFor } from './svm-connection.js';
import { acquireLock, readPid } from '../store/lock-file.js';
import { AGENT_VERSION } from './identity.js';
import { hostInfo } from '../platform/host-info.js';
import { ProtectionState, type ProtectionSnapshot } from '../control/protection-state.js';
import { LocalSockets, socketDirFor, WINDOWS_STATUS_PIPE } from '../control/local-sockets.js';

export interface DaemonOptions {
  config: AgentConfig;
  /** Force a backend (tests, `--mode`); default: fanotify when it can run, else the watcher. */
  mode?: 'fanotify' | 'watcher' | undefined;
  /** Read the configuration again (SIGHUP, `reload` on the control socket). */
  reloadConfig?: (() => AgentConfig) | undefined;
  /** Open the status and control sockets (default true). */
  sockets?: boolean;
}

/** What a reload applied, and what it could not (those settings need a restart). */
export interface ReloadResult {
  applied: string[];
  needRestart: string[];
  mode: ProtectionMode;
  protect: string[];
}

/** Settings a reload applies; every other change needs a restart. */
const RELOADABLE = ['protect', 'exclude', 'deadline', 'on_svm_unavailable', 'max_file_size'] as const;

export interface DaemonStatus {
  version: string;
  /** src/platform/host-info.ts: kvm, qemu, vmware, hyper-v, xen...; absent on bare metal. */
  hypervisor?: string | undefined;
  pid: number;
  startedAt: string;
  mode: ProtectionMode;
  protection: ProtectionSnapshot;
  protect: string[];
  exclude: string[];
  reloads: number;
  /** Times the protection backend stopped on its own and was started again. */
  recoveries: number;
  svm: { url: string; state: string; svmId?: string | undefined; generation?: string | undefined; load: number; latencyMs: number };
  cache: Record<string, number> | undefined;
  deferredQueue: number;
  detections: { total: number; recent: ReturnType<DetectionLog['recent']> };
  counts: OnAccessHandler['counts'];
  backend: Record<string, number>;
  /** KiB: the whole process's resident set (every thread); the main thread's V8 heap in use. */
  memory: { rssKb: number; heapUsedKb: number };
}

interface Ctx {
  cfg: AgentConfig;
  opts: DaemonOptions;
  link?: SvmClient;
  cache?: LocalCache;
  quarantine?: Quarantine;
  deferred?: DeferredQueue;
  detections?: DetectionLog;
  scanner?: FileScanner;
  handler?: OnAccessHandler;
  backend?: ProtectionBackend;
  processes?: ProcessMonitor;
  state?: ProtectionState;
  sockets?: LocalSockets;
  daemon: Daemon;
}

export class Daemon {
  private readonly log = logger('daemon');
  private readonly runner = new StepRunner<Ctx>(logger('steps'));
  private readonly ctx: Ctx;
  private stopping: Promise<void> | undefined;
  private reloadChain: Promise<unknown> = Promise.resolve();
  private reloads = 0;
  private recoveries = 0;
  private readonly startedAt = new Date().toISOString();
  private readonly hypervisor = hostInfo().hypervisor;

  private constructor(opts: DaemonOptions) {
    this.ctx = { cfg: opts.config, opts, daemon: this };
  }

  static async start(opts: DaemonOptions): Promise<Daemon> {
    const d = new Daemon(opts);
    await d.runner.start(STEPS, d.ctx);
    d.log.info('protecting', { mode: d.ctx.backend!.mode, paths: d.protectedPaths(), svm: opts.config.svm });
    return d;
  }

  get mode(): ProtectionMode {
    return this.ctx.backend?.mode ?? 'off';
  }
  get detections(): DetectionLog {
    return this.ctx.detections!;
  }
  get handler(): OnAccessHandler {
    return this.ctx.handler!;
  }

  protectedPaths(): string[] {
    return this.ctx.cfg.protect;
  }

  /** Where status.sock and control.sock are. */
  get socketDir(): string {
    return socketDirFor(this.ctx.cfg);
  }

  get protection(): ProtectionSnapshot {
    return this.ctx.state?.evaluate() ?? { state: this.mode === 'off' ? 'off' : 'protected', reasons: [], since: this.startedAt };
  }

  status(): DaemonStatus {
    const { link, cache, deferred, detections, handler, backend } = this.ctx;
    return {
      version: AGENT_VERSION,
      hypervisor: this.hypervisor,
      pid: process.pid,
      startedAt: this.startedAt,
      mode: this.mode,
      protection: this.protection,
      protect: this.protectedPaths(),
      exclude: this.ctx.cfg.exclude,
      reloads: this.reloads,
      recoveries: this.recoveries,
      svm: { url: link!.url, state: link!.state, svmId: link!.welcome?.svmId, generation: link!.generation, load: link!.load, latencyMs: Math.round(link!.lastLatencyMs * 100) / 100 },
      cache: cache?.stats(),
      deferredQueue: deferred?.size ?? 0,
      detections: { total: detections!.count, recent: detections!.recent(10) },
      counts: { ...handler!.counts },
      backend: backend?.stats() ?? {},
      memory: memoryKb(),
    };
  }

  /** Scan files now (as after a write): infected ones are quarantined and reported. Returns a summary. */
  async rescan(paths: string[]): Promise<string> {
    const results = await Promise.all(paths.map((p) => this.ctx.handler!.written(p, () => this.ctx.scanner!.scanPath(p))));
    return results.map((r) => `${r.outcome}${r.threat ? ` (${r.threat})` : ''}`).join(', ');
  }

  /**
   * Apply a new configuration (default: `reloadConfig()`): protect, exclude, deadline,
   * on_svm_unavailable and max_file_size take effect; other changed settings are reported in
   * `needRestart` and left as they were. The new backend starts (same mode) before the old one
   * stops, so every open is checked throughout. If anything fails, the old setup stays.
   */
  reload(next?: AgentConfig): Promise<ReloadResult> {
    const run = this.reloadChain.then(() => this.applyConfig(next));
    this.reloadChain = run.catch(() => undefined);
    return run;
  }

  private async applyConfig(next: AgentConfig | undefined): Promise<ReloadResult> {
    const ctx = this.ctx;
    if (this.stopping) throw new ServiceError('LA_ERR_RELOAD', 'the daemon is stopping', 'start it again');
    let cfg: AgentConfig;
    try {
      cfg = next ?? ctx.opts.reloadConfig?.() ?? ctx.opts.config;
    } catch (e) {
      throw new ServiceError('LA_ERR_RELOAD', `reload refused, the running configuration stays: ${describeError(e).message}`, 'fix the configuration and reload again', { cause: e });
    }
    const old = ctx.cfg;
    const key = (c: AgentConfig, k: string) => JSON.stringify((c as Record<string, unknown>)[k]);
    const needRestart = Object.keys({ ...old, ...cfg }).filter((k) => !(RELOADABLE as readonly string[]).includes(k) && key(old, k) !== key(cfg, k));
    // protect [] means "every local disk": compare what it resolves to.
    const mode = this.mode === 'off' ? ctx.opts.mode : this.mode;
    const candidate: AgentConfig = { ...old };
    for (const k of RELOADABLE) (candidate as Record<string, unknown>)[k] = cfg[k];
    candidate.protect = resolveProtect(candidate, mode);
    const applied = RELOADABLE.filter((k) => key(old, k) !== key(candidate, k));
    // A backend that stopped on its own is started again by a reload even if nothing changed.
    if (applied.length > 0 || this.mode === 'off') {
      const { scanner, handler } = buildHandler(candidate, ctx);
      const backend = await startProtection(candidate, mode, handler, scanner, ctx.cache!.cache.sharedSpec());
      const previous = ctx.backend!;
      ctx.backend = backend;
      ctx.scanner = scanner;
      // Counters carry on across reloads (status shows totals since start).
      Object.assign(handler.counts, ctx.handler!.counts);
      ctx.handler = handler;
      ctx.cfg = candidate;
      await previous.stop(); // answers what it still holds; the new backend already gates
    }
    this.reloads++;
    const result: ReloadResult = { applied, needRestart, mode: this.mode, protect: this.protectedPaths() };
    this.log.info('configuration reloaded', { ...result });
    if (needRestart.length > 0) this.log.warn('changed settings that need a restart were NOT applied', { settings: needRestart });
    return result;
  }

  /**
   * Start protection again after its backend stopped on its own (the fanotify worker died: the
   * kernel then intercepts nothing): the same settings and the same mode choice (`--mode`, else
   * fanotify with the watcher as fallback). Runs in the reload chain; does nothing if the backend
   * runs or the daemon is stopping. Rejects if the new backend cannot start (the caller retries).
   */
  recover(): Promise<void> {
    const run = this.reloadChain.then(async () => {
      const ctx = this.ctx;
      if (this.stopping || this.mode !== 'off') return;
      const backend = await startProtection(ctx.cfg, ctx.opts.mode, ctx.handler!, ctx.scanner!, ctx.cache!.cache.sharedSpec());
      const previous = ctx.backend;
      ctx.backend = backend;
      this.recoveries++;
      this.log.warn('protection restarted after its backend stopped', { mode: backend.mode, recoveries: this.recoveries });
      await previous?.stop(); // already gone: releases what is left of it
    });
    this.reloadChain = run.catch(() => undefined);
    return run;
  }

  /** Detections and protection state changes, for the status socket. Returns the unsubscribe function. */
  subscribe(on: { detection(d: Detection): void; state(now: ProtectionSnapshot, before: ProtectionSnapshot): void }): () => void {
    const { detections, state } = this.ctx;
    detections!.on('detection', on.detection);
    state?.on('change', on.state);
    return () => {
      detections!.off('detection', on.detection);
      state?.off('change', on.state);
    };
  }

  /** Stop everything; safe to call twice. */
  stop(): Promise<void> {
    // A reload in progress finishes first (bounded), so its new backend is stopped too.
    const settled = Promise.race([this.reloadChain, new Promise((r) => setTimeout(r, 5000).unref())]);
    this.stopping ??= settled.then(() => this.runner.stop());
    return this.stopping;
  }
}

const STEPS: ReadonlyArray<Step<Ctx>> = [
  {
    name: 'state-dir',
    run({ cfg }) {
      fs.mkdirSync(cfg.state_dir, { recursive: true, mode: 0o700 });
      fs.chmodSync(cfg.state_dir, 0o700);
    },
  },
  {
    // One daemon per state directory: a second `lightagent run` stops here, before touching
    // the cache, the journals or the kernel. A lock left by a SIGKILLed daemon is taken over.
    name: 'lock',
    async run({ cfg }) {
      const lockPath = path.join(cfg.state_dir, 'agent.lock');
      try {
        return await acquireLock(lockPath, 0);
      } catch (e) {
        if (!(e instanceof JournalError) || e.code !== 'LA_ERR_JOURNAL_LOCKED') throw e;
        const pid = await readPid(lockPath);
        throw new ServiceError(
          'LA_ERR_ALREADY_RUNNING',
          `another lightagent daemon${pid !== undefined ? ` (pid ${pid})` : ''} is running on the state directory ${cfg.state_dir} (lock ${lockPath})`,
          'stop it first (systemctl stop lightagent); only one daemon may use a state directory',
        );
      }
    },
  },
  {
    name: 'svm-link',
    run(ctx) {
      ctx.link = svmLinkFor(ctx.cfg);
      // Protection starts whether or not the SVM answers: the policy covers the gap.
      ctx.link.connect().catch((e) => logger('daemon').warn('SVM not reachable at start; protecting by policy until it is', describeError(e)));
      return () => ctx.link!.close();
    },
  },
  {
    name: 'cache',
    async run(ctx) {
      // Shared: the fanotify worker answers clean identity hits from it directly.
      // Until an SVM answers, the persisted generation stands (its clean verdicts stay fresh).
      const cache = await openLocalCache(ctx.cfg, undefined, ctx.link!.generation, true);
      ctx.cache = cache;
      ctx.link!.on('connected', (w) => cache.setGeneration(w.generation));
      ctx.link!.on('generation', (g) => cache.setGeneration(g));
      const timer = setInterval(() => void cache.save(), Math.max(1000, ctx.cfg.cache.save_interval));
      timer.unref();
      return async () => {
        clearInterval(timer);
        await cache.close();
      };
    },
  },
  {
    name: 'quarantine',
    async run(ctx) {
      ctx.quarantine = new Quarantine({ stateDir: ctx.cfg.state_dir });
      const fixed = await ctx.quarantine.recover();
      if (fixed.completed + fixed.dropped + fixed.orphans > 0) logger('daemon').warn('finished quarantine moves a crash interrupted', fixed);
      ctx.deferred = await DeferredQueue.open({ file: DeferredQueue.defaultFile(ctx.cfg.state_dir) });
      return async () => {
        await ctx.deferred!.close();
        await ctx.quarantine!.close();
      };
    },
  },
  {
    // Before the scanner: the handler attributes denials and detections through it.
    name: 'processes',
    async run(ctx) {
      ctx.processes = await ProcessMonitor.start(processSettings(ctx.cfg));
      return () => ctx.processes!.stop();
    },
  },
  {
    name: 'scanner',
    run(ctx) {
      const link = ctx.link!;
      ctx.detections = new DetectionLog(200, (d) => link.report(d));
      ctx.detections.on('detection', (d) => ctx.processes?.recordDetection(d));
      Object.assign(ctx, buildHandler(ctx.cfg, ctx));
      // Windows: each new process's image through the same scanner and response (the handler
      // and scanner of the moment: a reload replaces them).
      ctx.processes?.checkNewProcesses((image, pid) => ctx.handler!.started(image, pid, () => ctx.scanner!.scanPath(image)));
    },
  },
  {
    name: 'protection',
    async run(ctx) {
      ctx.cfg = { ...ctx.cfg, protect: resolveProtect(ctx.cfg, ctx.opts.mode) };
      ctx.backend = await startProtection(ctx.cfg, ctx.opts.mode, ctx.handler!, ctx.scanner!, ctx.cache!.cache.sharedSpec());
      // New signatures (announced, or found on reconnecting): every kernel clean mark goes. The
      // cache step's listeners ran first, so the cache already counts old verdicts as stale.
      let generation = ctx.cache!.cache.generation;
      const onGeneration = (g: string) => {
        if (g === generation) return;
        generation = g;
        ctx.backend!.flushCleanMarks();
      };
      ctx.link!.on('connected', (w) => onGeneration(w.generation));
      ctx.link!.on('generation', onGeneration);
      return () => ctx.backend!.stop();
    },
  },
  {
    name: 'deferred-rescan',
    run(ctx) {
      const log = logger('deferred');
      let running = false;
      const drain = async () => {
        if (running || ctx.link!.state !== 'connected' || ctx.deferred!.size === 0) return;
        running = true;
        try {
          const n = await ctx.deferred!.drain(async (p) => {
            const r = await ctx.handler!.written(p, () => ctx.scanner!.scanPath(p));
            // Keep it queued only if the SVM could not judge it (it is re-added by `written`).
            return r.outcome !== 'error';
          });
          if (n > 0) log.info('scanned files allowed while the SVM was unavailable', { files: n });
        } catch (e) {
          log.error('deferred re-scan failed', describeError(e));
        } finally {
          running = false;
        }
      };
      ctx.link!.on('connected', () => void drain());
      // A slow safety net for files queued while connected (deadline answers): every 30 s.
      const timer = setInterval(() => void drain(), 30_000);
      timer.unref();
      void drain();
      return () => clearInterval(timer);
    },
  },
  {
    name: 'service',
    async run(ctx) {
      const state = new ProtectionState(() => ({ mode: ctx.backend?.mode ?? 'off', svmConnected: ctx.link!.state === 'connected', queued: ctx.deferred!.size }));
      ctx.state = state;
      const log = logger('daemon');
      state.on('change', (now, before) => {
        if (now.state === 'protected') log.info('protection recovered', { from: before.state, was: before.reasons });
        else log.warn('protection degraded', { state: now.state, reasons: now.reasons });
        if (now.state === 'off') recover();
      });
      // The backend stopped on its own (state off while the daemon runs): start it again at
      // once, then after 1, 2, 4... s (at most a minute apart) for as long as that fails.
      let retry: NodeJS.Timeout | undefined;
      let attempting = false;
      let delayMs = 1000;
      let stopped = false;
      const attempt = () => {
        retry = undefined;
        if (stopped) return;
        attempting = true;
        ctx.daemon.recover().then(
          () => {
            attempting = false;
            delayMs = 1000;
            state.evaluate();
          },
          (e: unknown) => {
            attempting = false;
            log.error('could not restart protection; on-access protection stays OFF until it starts', { ...describeError(e), retryInMs: delayMs });
            if (!stopped) retry = setTimeout(attempt, delayMs);
            delayMs = Math.min(delayMs * 2, 60_000);
          },
        );
      };
      const recover = () => {
        if (retry || attempting || stopped) return;
        retry = setTimeout(attempt, 0);
      };
      const stopRecovery = () => {
        stopped = true;
        clearTimeout(retry);
      };
      const recheck = () => state.evaluate();
      ctx.link!.on('connected', recheck);
      ctx.link!.on('disconnected', recheck);
      state.start();
      if (ctx.opts.sockets === false)
        return () => {
          stopRecovery();
          state.stop();
        };
      const windows = process.platform === 'win32';
      const d = ctx.daemon;
      const q = ctx.quarantine!;
      // Windows: the status server on \\.\pipe\lightagent-status, no control pipe (local-sockets.ts says why)
      ctx.sockets = await LocalSockets.start(socketDirFor(ctx.cfg), {
        status: () => d.status() as unknown as Record<string, unknown>,
        subscribe: (on) => d.subscribe(on),
        reload: async () => ({ ...(await d.reload()) }),
        rescan: (paths) => d.rescan(paths),
        quarantineList: () => q.list(),
        quarantineRestore: (id, opts) => q.restore(id, opts),
        quarantineDelete: (id) => q.delete(id),
      }, { windowsPipe: windows ? WINDOWS_STATUS_PIPE : undefined });
      if (windows) log.info('status pipe ready (no control pipe on Windows: docs/windows.md)', { status: ctx.sockets.status.path });
      else log.info('local sockets ready', { status: ctx.sockets.status.path, control: ctx.sockets.control?.path });
      return async () => {
        stopRecovery();
        state.stop();
        await ctx.sockets!.close();
        if (windows) return;
        // The derived <state_dir>.run directory is ours alone: leave nothing behind.
        if (!ctx.cfg.socket_dir && ctx.daemon.socketDir.endsWith('.run')) {
          try {
            fs.rmdirSync(ctx.daemon.socketDir);
          } catch {
            /* not empty (someone else's file): leave it */
          }
        }
      };
    },
  },
];

/** The scanner and on-access handler for one configuration (start-up, and each reload). */
function buildHandler(cfg: AgentConfig, ctx: Ctx): { scanner: FileScanner; handler: OnAccessHandler } {
  const scanner = new FileScanner({ link: ctx.link!, cache: ctx.cache!.store, maxFileSize: cfg.max_file_size, deadlineMs: cfg.deadline });
  const handler = new OnAccessHandler({
    scanner,
    detections: ctx.detections!,
    deferred: ctx.deferred!,
    quarantine: ctx.quarantine!,
    // A little under the gate's own deadline, so the policy answer (which also queues the
    // file) normally wins over the worker's backstop answer.
    deadlineMs: Math.max(50, cfg.deadline - Math.min(250, cfg.deadline / 4)),
    onSvmUnavailable: cfg.on_svm_unavailable,
    maxFileSize: cfg.max_file_size,
    processes: ctx.processes,
  });
  return { scanner, handler };
}

function memoryKb(): DaemonStatus['memory'] {
  const m = process.memoryUsage();
  return { rssKb: Math.round(m.rss / 1024), heapUsedKb: Math.round(m.heapUsed / 1024) };
}
