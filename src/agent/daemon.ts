/**
 * The guest daemon: the composition root. Start-up is an ordered list of steps (steps.ts); each
 * part it starts has a teardown that always runs.
 *
 *   state-dir -> lock -> cache -> svm-link -> quarantine + deferred queue -> scanner + handler
 *   -> protection backend (fanotify, else the watcher) -> deferred re-scan -> periodic cache save
 */
import fs from 'node:fs';
import { describeError } from '../errors.js';
import { logger } from '../log.js';
import type { SvmClient } from '../svm-link/index.js';
import type { ProtectionBackend, ProtectionMode } from '../watchers/protection.js';
import type { AgentConfig } from './config.js';
import { DetectionLog } from './detections.js';
import { FileScanner } from './file-scanner.js';
import { openLocalCache, type LocalCache } from './local-cache.js';
import { OnAccessHandler } from './on-access.js';
import { DeferredQueue } from './deferred-queue.js';
import { Quarantine } from './quarantine.js';
import { resolveProtect, startProtection } from './protection.js';
import { StepRunner, type Step } from './steps.js';
import { svmLinkFor } from './svm-connection.js';

export interface DaemonOptions {
  config: AgentConfig;
  /** Force a backend (tests, `--mode`); default: fanotify when it can run, else the watcher. */
  mode?: 'fanotify' | 'watcher' | undefined;
}

export interface DaemonStatus {
  mode: ProtectionMode;
  protect: string[];
  svm: { url: string; state: string; svmId?: string | undefined; generation?: string | undefined; load: number; latencyMs: number };
  cache: Record<string, number> | undefined;
  deferredQueue: number;
  detections: { total: number; recent: ReturnType<DetectionLog['recent']> };
  counts: OnAccessHandler['counts'];
  backend: Record<string, number>;
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
}

export class Daemon {
  private readonly log = logger('daemon');
  private readonly runner = new StepRunner<Ctx>(logger('steps'));
  private readonly ctx: Ctx;
  private stopping: Promise<void> | undefined;

  private constructor(opts: DaemonOptions) {
    this.ctx = { cfg: opts.config, opts };
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

  status(): DaemonStatus {
    const { link, cache, deferred, detections, handler, backend } = this.ctx;
    return {
      mode: this.mode,
      protect: this.protectedPaths(),
      svm: { url: link!.url, state: link!.state, svmId: link!.welcome?.svmId, generation: link!.generation, load: link!.load, latencyMs: Math.round(link!.lastLatencyMs * 100) / 100 },
      cache: cache?.stats(),
      deferredQueue: deferred?.size ?? 0,
      detections: { total: detections!.count, recent: detections!.recent(10) },
      counts: { ...handler!.counts },
      backend: backend?.stats() ?? {},
    };
  }

  /** Scan files now (as after a write): infected ones are quarantined and reported. Returns a summary. */
  async rescan(paths: string[]): Promise<string> {
    const results = await Promise.all(paths.map((p) => this.ctx.handler!.written(p, () => this.ctx.scanner!.scanPath(p))));
    return results.map((r) => `${r.outcome}${r.threat ? ` (${r.threat})` : ''}`).join(', ');
  }

  /** Stop everything; safe to call twice. */
  stop(): Promise<void> {
    this.stopping ??= this.runner.stop();
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
    name: 'scanner',
    run(ctx) {
      const { cfg, link } = ctx;
      ctx.detections = new DetectionLog(200, (d) => link!.report(d));
      ctx.scanner = new FileScanner({ link: link!, cache: ctx.cache!.store, maxFileSize: cfg.max_file_size, deadlineMs: cfg.deadline });
      ctx.handler = new OnAccessHandler({
        scanner: ctx.scanner,
        detections: ctx.detections,
        deferred: ctx.deferred!,
        quarantine: ctx.quarantine!,
        // A little under the gate's own deadline, so the policy answer (which also queues the
        // file) normally wins over the worker's backstop answer.
        deadlineMs: Math.max(50, cfg.deadline - Math.min(250, cfg.deadline / 4)),
        onSvmUnavailable: cfg.on_svm_unavailable,
        maxFileSize: cfg.max_file_size,
      });
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
];
