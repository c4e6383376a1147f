/**
 * The guest daemon: the composition root. Start-up is an ordered list of steps, one file each in
 * ./steps (run by step-runner.ts); each part a step starts has a teardown that always runs.
 *
 *   [sd-notify] -> state-dir -> lock (one daemon per state directory) -> policy (saved) ->
 *   svm-link -> cache -> quarantine + deferred queue -> processes -> scanner + handler ->
 *   protection backend -> deferred re-scan -> signature refresh -> scan jobs -> scan schedule ->
 *   protection state -> state report (to the SVM) -> policy-push (policies from the SVM) ->
 *   recovery -> sockets ->
 *   [signals] -> heap trim -> [ready]
 *
 * The bracketed steps run for a service only (`lightagent run`, `lightagent service run`).
 * `reload()` (SIGHUP, the control socket) is make-before-break: the new protection backend is
 * running before the old one stops, so there is no moment without a gate.
 */
import { describeError, ServiceError } from '../errors.js';
import { logger } from '../log.js';
import type { AgentConfig } from '../config/agent.js';
import type { PolicySettings } from '../config/policy.js';
import type { Detection, DetectionLog } from '../store/detections.js';
import type { OnAccessHandler } from '../scan/on-access.js';
import { resolveProtect, startProtection } from '../watchers/backend.js';
import type { ProtectionMode } from '../watchers/protection.js';
import { StepRunner, type Step } from './step-runner.js';
import { AGENT_VERSION } from './identity.js';
import { hostInfo } from '../platform/host-info.js';
import type { ProtectionSnapshot } from '../control/protection-state.js';
import { socketDirFor } from '../control/local-sockets.js';
import type { DaemonApi, DaemonContext, DaemonOptions, DaemonStatus, ReloadResult } from './steps/context.js';
import { notifyStep, notifyStartFailure } from './steps/notify.js';
import { stateDirStep } from './steps/state-dir.js';
import { lockStep } from './steps/lock.js';
import { svmLinkStep } from './steps/svm-link.js';
import { cacheStep } from './steps/cache.js';
import { quarantineStep } from './steps/quarantine.js';
import { processesStep } from './steps/processes.js';
import { buildHandler, scannerStep } from './steps/scanner.js';
import { protectionStep } from './steps/protection.js';
import { deferredRescanStep } from './steps/deferred-rescan.js';
import { signatureRefreshStep } from './steps/signature-refresh.js';
import { scanJobsStep } from './steps/scan-jobs.js';
import { scanScheduleStep } from './steps/scan-schedule.js';
import { protectionStateStep } from './steps/protection-state.js';
import { recoveryStep } from './steps/recovery.js';
import { stateReportStep } from './steps/state-report.js';
import { socketsStep } from './steps/sockets.js';
import { signalsStep } from './steps/signals.js';
import { readyStep } from './steps/ready.js';
import { heapTrimStep } from './steps/heap-trim.js';
import type { WindowStats } from '../svm-link/index.js';
import type { PolicyMsg } from '../protocol/index.js';
import { policyStep, policyPushStep } from './steps/policy.js';

export type { DaemonOptions, DaemonStatus, ReloadResult, ServiceEvent, ServiceOptions } from './steps/context.js';
export { startFailureCode } from './steps/notify.js';

/** Settings a reload applies; every other change needs a restart. */
const RELOADABLE = [
  'protect',
  'exclude',
  'deadline',
  'on_svm_unavailable',
  'max_file_size',
  'on_detect',
  'local_keys',
  'scan_schedule',
] as const;

/** In order; the service steps do nothing for an embedded daemon (no `service` option). */
const STEPS: ReadonlyArray<Step<DaemonContext>> = [
  notifyStep,
  stateDirStep,
  lockStep,
  policyStep,
  svmLinkStep,
  cacheStep,
  quarantineStep,
  processesStep,
  scannerStep,
  protectionStep,
  deferredRescanStep,
  signatureRefreshStep,
  scanJobsStep,
  scanScheduleStep,
  protectionStateStep,
  stateReportStep,
  policyPushStep,
  recoveryStep,
  socketsStep,
  signalsStep,
  heapTrimStep,
  readyStep,
];

export class Daemon implements DaemonApi {
  private readonly log = logger('daemon');
  private readonly runner = new StepRunner<DaemonContext>(logger('steps'));
  private readonly ctx: DaemonContext;
  private stopping: Promise<void> | undefined;
  private reloadChain: Promise<unknown> = Promise.resolve();
  private markStopped!: () => void;
  private readonly stopped = new Promise<void>((resolve) => (this.markStopped = resolve));
  private reloads = 0;
  private recoveries = 0;
  private readonly startedAt = new Date().toISOString();
  private readonly hypervisor = hostInfo().hypervisor;

  private constructor(opts: DaemonOptions) {
    this.ctx = { cfg: opts.config, local: opts.config, opts, daemon: this };
  }

  static async start(opts: DaemonOptions): Promise<Daemon> {
    const d = new Daemon(opts);
    try {
      await d.runner.start(STEPS, d.ctx);
    } catch (e) {
      notifyStartFailure(d.ctx.notify, e);
      throw e;
    }
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
      exclude: this.ctx.cfg.exclude.paths,
      // status.sock answers any local user: which executables are excluded is not theirs to know.
      exclusions: {
        paths: this.ctx.cfg.exclude.paths,
        extensions: this.ctx.cfg.exclude.extensions,
        processes: this.ctx.cfg.exclude.processes.length,
        sha256: this.ctx.cfg.exclude.sha256.length,
        threats: this.ctx.cfg.exclude.threats,
      },
      reloads: this.reloads,
      recoveries: this.recoveries,
      svm: {
        url: link!.url,
        state: link!.state,
        svmId: link!.welcome?.svmId,
        generation: link!.generation,
        ...signatureAge(link!.welcome),
        load: link!.load,
        latencyMs: Math.round(link!.lastLatencyMs * 100) / 100,
        window: link!.windowStats ? { ...roundWindow(link!.windowStats), raised: this.ctx.scanner?.raised ?? 0 } : undefined,
      },
      cache: cache?.stats(),
      refresh: this.ctx.refresh?.status(),
      deferredQueue: deferred?.size ?? 0,
      detections: { total: detections!.count, recent: detections!.recent(10) },
      counts: { ...handler!.counts },
      backend: backend?.stats() ?? {},
      processes: this.ctx.processes && this.ctx.processes.mode !== 'off' ? this.ctx.processes.stats() : undefined,
      memory: memoryKb(this.ctx.heapTrim?.trims ?? 0),
      ...(this.ctx.policy ? { policy: this.ctx.policy.status(this.ctx.cfg) } : {}),
      scan: this.ctx.scanJobs?.current,
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

  /**
   * Apply a policy the SVM sent over the local settings, in the reload chain (make-before-break).
   * Refused (a setting fails the agent's checks, or the new setup does not start): logged with
   * the reason, reported (`policy-refused`), and the settings in force stay. Never rejects.
   */
  applyPolicy(msg: PolicyMsg): Promise<void> {
    const run = this.reloadChain.then(async () => {
      const layer = this.ctx.policy;
      if (!layer || this.stopping) return;
      if (layer.isCurrent(msg)) return layer.confirm();
      try {
        const checked = layer.check(msg, this.protectedPaths());
        await this.applyConfig(this.ctx.local, checked?.parsed ?? null);
        layer.commit(checked, this.ctx.local);
      } catch (e) {
        layer.refuse(msg, e);
      }
    });
    this.reloadChain = run.catch(() => undefined);
    return run;
  }

  /** `central`: the policy settings to apply (null: none); default the layer's in force. */
  private async applyConfig(next: AgentConfig | undefined, central?: PolicySettings | null): Promise<ReloadResult> {
    const ctx = this.ctx;
    if (this.stopping) throw new ServiceError('LA_ERR_RELOAD', 'the daemon is stopping', 'start it again');
    let cfg: AgentConfig;
    let local: AgentConfig;
    try {
      local = next ?? ctx.opts.reloadConfig?.() ?? ctx.opts.config;
      // The central layer goes over the local file again (docs/policies.md: central wins unless local_keys).
      cfg = ctx.policy ? ctx.policy.over(local, central === null ? undefined : (central ?? ctx.policy.settings)) : local;
    } catch (e) {
      throw new ServiceError(
        'LA_ERR_RELOAD',
        `reload refused, the running configuration stays: ${describeError(e).message}`,
        'fix the configuration and reload again',
        { cause: e },
      );
    }
    const old = ctx.cfg;
    const key = (c: AgentConfig, k: string) => JSON.stringify((c as Record<string, unknown>)[k]);
    const needRestart = Object.keys({ ...old, ...cfg }).filter(
      (k) => !(RELOADABLE as readonly string[]).includes(k) && key(old, k) !== key(cfg, k),
    );
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
      // The new backend already gates: the old one judges what it still holds, then goes.
      await previous.stop(true);
    }
    ctx.cfg = candidate;
    ctx.local = local;
    if (ctx.processes) ctx.processes.response.policy = candidate.on_detect;
    if (central === undefined) ctx.policy?.localChanged(local);
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
    this.stopping ??= settled.then(() => this.runner.stop()).then(this.markStopped);
    return this.stopping;
  }

  /** Resolves once the daemon has stopped, whoever stopped it (a service: SIGINT or SIGTERM). */
  whenStopped(): Promise<void> {
    return this.stopped;
  }
}

/** The SVM's signature age as the daemon reports it (feature signature-age); nothing when the SVM did not say. */
export function signatureAge(
  w: { signaturesAt?: string | undefined; signaturesMaxAge?: number | undefined } | undefined,
  now = Date.now(),
): Pick<DaemonStatus['svm'], 'signaturesAt' | 'signatureAgeSeconds' | 'signaturesMaxAge' | 'signaturesStale'> {
  if (!w) return {};
  const at = w.signaturesAt ? Date.parse(w.signaturesAt) : NaN;
  const age = Number.isFinite(at) ? Math.max(0, Math.round((now - at) / 1000)) : undefined;
  return {
    ...(age !== undefined ? { signaturesAt: w.signaturesAt, signatureAgeSeconds: age } : {}),
    ...(w.signaturesMaxAge !== undefined ? { signaturesMaxAge: w.signaturesMaxAge } : {}),
    ...(age !== undefined && w.signaturesMaxAge !== undefined ? { signaturesStale: age > w.signaturesMaxAge } : {}),
  };
}

function memoryKb(heapTrims: number): DaemonStatus['memory'] {
  const m = process.memoryUsage();
  return { rssKb: Math.round(m.rss / 1024), heapUsedKb: Math.round(m.heapUsed / 1024), heapTrims };
}

/** The window's counters with ms rounded to 0.1 for status. */
function roundWindow(w: WindowStats): WindowStats {
  const r = (c: WindowStats['foreground']) => ({
    ...c,
    waitedMsTotal: Math.round(c.waitedMsTotal * 10) / 10,
    waitedMsMax: Math.round(c.waitedMsMax * 10) / 10,
  });
  return { ...w, foreground: r(w.foreground), background: r(w.background) };
}
