/**
 * The protection backend, chosen and built in one place: fanotify when it can run here (root or
 * CAP_SYS_ADMIN, a kernel with permission events), else the portable watcher (chokidar on Linux,
 * directory notifications on Windows); a fallback is logged loudly. protection.ts is the seam.
 */
import fs from 'node:fs';
import { describeError, LightagentError } from '../errors.js';
import { logger } from '../log.js';
import type { AgentConfig } from '../config/agent.js';
import type { FileScanner } from '../scan/file-scanner.js';
import type { OnAccessHandler } from '../scan/on-access.js';
import type { SharedCacheSpec } from '../cache/shared-view.js';
import { localDiskMounts } from '../platform/linux/mounts.js';
import type { ChangeSource } from './directory-watcher.js';
import { FanotifyGate } from './fanotify-gate.js';
import type { BackendKind, ProtectionBackend, ProtectionHandler, WrittenResult } from './protection.js';

/**
 * The paths to protect: the configured ones, or by default every local disk filesystem. Only
 * fanotify can cover whole disks cheaply; the watcher costs memory per watched file, so it
 * needs explicit paths.
 */
export function resolveProtect(cfg: AgentConfig, forced: 'fanotify' | 'watcher' | undefined): string[] {
  if (cfg.protect.length > 0) return cfg.protect;
  if (forced === 'watcher' || process.platform !== 'linux')
    throw new LightagentError(
      'LA_ERR_CONFIG',
      'protect: no paths configured, and watcher mode needs explicit paths',
      'set `protect:` in the config file or pass --protect PATH',
    );
  const mounts = localDiskMounts();
  logger('protection').info('no protect paths configured: protecting every local disk filesystem', { mounts });
  return mounts;
}

export interface BackendOptions {
  /** Absolute paths judged; fanotify marks their mounts. */
  protect: readonly string[];
  /** Absolute paths inside `protect` left alone. */
  exclude: readonly string[];
  /** fanotify: every open is answered within this, by `onDeadline` if no decision came. */
  deadlineMs: number;
  onDeadline: 'allow' | 'deny';
  /** fanotify: the local verdict cache, for the worker's hits. */
  sharedCache?: SharedCacheSpec | undefined;
  /** Watchers: ms a file must be quiet before it is reported. */
  settleMs?: number | undefined;
  /** Windows watcher: where its change records come from (tests feed recorded ones). */
  changeSource?: ChangeSource | undefined;
}

/**
 * Build one backend. Rejects (fanotify: a PlatformError LA_ERR_FANOTIFY_*) if it cannot run here.
 * The watchers load only when chosen: chokidar and its fs.watch machinery cost a fanotify daemon
 * ~0.7 MB of RSS it never used.
 */
export async function createBackend(kind: BackendKind, o: BackendOptions, handler: ProtectionHandler): Promise<ProtectionBackend> {
  switch (kind) {
    case 'fanotify':
      return FanotifyGate.start({
        mounts: [...o.protect],
        protect: [...o.protect],
        exclude: [...o.exclude],
        deadlineMs: o.deadlineMs,
        onDeadline: o.onDeadline,
        sharedCache: o.sharedCache,
        decide: (ev) => handler.decide(ev),
        onCloseWrite: (ev) => handler.written(ev),
      });
    case 'chokidar':
      return (await import('./chokidar-watcher.js')).ChokidarWatcher.start({
        paths: o.protect,
        exclude: o.exclude,
        handler,
        settleMs: o.settleMs,
      });
    case 'windows':
      return (await import('./directory-watcher.js')).WindowsDirectoryWatcher.start({
        paths: o.protect,
        exclude: o.exclude,
        handler,
        settleMs: o.settleMs,
        source: o.changeSource,
      });
  }
}

/**
 * The daemon's handler: decisions from OnAccessHandler; written files scanned through the event
 * fd when the backend has one (a local hit answers synchronously: no promise per file in a burst
 * of copies), else by path.
 */
export function daemonHandler(onAccess: OnAccessHandler, scanner: FileScanner): ProtectionHandler {
  const log = logger('protection');
  const failed =
    (path: string) =>
    (e: unknown): WrittenResult => {
      log.error('scan after write failed', { path, ...describeError(e) });
      return { clean: false };
    };
  return {
    decide: (ev) => onAccess.decide(ev),
    written: (ev) => {
      const { fd, stat } = ev;
      if (fd === undefined || stat === undefined) {
        return onAccess.written(ev.path, () => scanner.scanPath(ev.path)).then((r) => ({ clean: r.outcome === 'clean' }), failed(ev.path));
      }
      const r = onAccess.writtenNow(ev.path, () => scanner.scanFdNow(fd, ev.path, stat), ev.pid);
      if (!(r instanceof Promise)) return { clean: r.outcome === 'clean' };
      return r.then((x) => ({ clean: x.outcome === 'clean' }), failed(ev.path));
    },
  };
}

export async function startProtection(
  cfg: AgentConfig,
  forced: 'fanotify' | 'watcher' | undefined,
  handler: OnAccessHandler,
  scanner: FileScanner,
  sharedCache?: SharedCacheSpec,
): Promise<ProtectionBackend> {
  const log = logger('protection');
  for (const p of cfg.protect) {
    if (!fs.existsSync(p))
      throw new LightagentError('LA_ERR_CONFIG', `protect: ${p} does not exist`, 'create it or remove it from `protect`');
  }
  // The handler answers by policy at `deadline`; the gate's worker is the backstop if the main thread stalls.
  const o: BackendOptions = {
    protect: cfg.protect,
    // Literal folders (and DIR/**) only: answered by the backend itself. Globs, extensions and
    // the other kinds are the handler's (src/scan/exclusions.ts), with the state dir among them.
    exclude: [...handler.exclusions.prefixes, cfg.state_dir],
    deadlineMs: cfg.deadline,
    onDeadline: cfg.on_svm_unavailable,
    sharedCache,
  };
  const h = daemonHandler(handler, scanner);
  if (process.platform === 'win32') {
    // Windows: directory change notifications, scan after write (docs/windows.md)
    if (forced === 'fanotify')
      throw new LightagentError('LA_ERR_CONFIG', '--mode fanotify: fanotify is Linux only', 'leave --mode out on Windows (watcher mode)');
    const w = await createBackend('windows', o, h);
    log.warn('protection mode: watcher (Windows directory notifications; scan after write, opens are not blocked)', { paths: cfg.protect });
    return w;
  }
  if (forced !== 'watcher') {
    try {
      const gate = await createBackend('fanotify', o, h);
      log.info('on-access protection by fanotify: opens and executions are checked before they happen', { paths: cfg.protect });
      return gate;
    } catch (e) {
      if (forced === 'fanotify') throw e;
      log.warn(
        'fanotify is not available here; FALLING BACK to the portable watcher: files are scanned after they are written, ' +
          'opens are NOT blocked',
        describeError(e),
      );
    }
  }
  const watcher = await createBackend('chokidar', o, h);
  log.warn('protection mode: watcher (scan after write; opens are not blocked)', { paths: cfg.protect });
  return watcher;
}
