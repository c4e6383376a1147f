/**
 * Chooses the protection backend, in one place: fanotify when it can run here (root or
 * CAP_SYS_ADMIN, a kernel with permission events), else the portable watcher; logged loudly.
 */
import fs from 'node:fs';
import { describeError, LightagentError } from '../errors.js';
import { logger } from '../log.js';
import { ChokidarWatcher } from './chokidar-watcher.js';
import type { ProtectionBackend } from './protection.js';
import type { AgentConfig } from '../config/agent.js';
import type { FileScanner } from '../scan/file-scanner.js';
import type { OnAccessHandler } from '../scan/on-access.js';
import { startFanotifyProtection } from './fanotify-protection.js';
import { localDiskMounts } from '../platform/linux/mounts.js';
import type { SharedCacheSpec } from '../cache/shared-view.js';
import { WindowsDirectoryWatcher } from './directory-watcher.js';

/**
 * The paths to protect: the configured ones, or by default every local disk filesystem. Only
 * fanotify can cover whole disks cheaply; the watcher costs memory per watched file, so it
 * needs explicit paths.
 */
export function resolveProtect(cfg: AgentConfig, forced: 'fanotify' | 'watcher' | undefined): string[] {
  if (cfg.protect.length > 0) return cfg.protect;
  if (forced === 'watcher' || process.platform !== 'linux') throw new LightagentError('LA_ERR_CONFIG', 'protect: no paths configured, and watcher mode needs explicit paths', 'set `protect:` in the config file or pass --protect PATH');
  const mounts = localDiskMounts();
  logger('protection').info('no protect paths configured: protecting every local disk filesystem', { mounts });
  return mounts;
}

export async function startProtection(cfg: AgentConfig, forced: 'fanotify' | 'watcher' | undefined, handler: OnAccessHandler, scanner: FileScanner, sharedCache?: SharedCacheSpec): Promise<ProtectionBackend> {
  const log = logger('protection');
  for (const p of cfg.protect) {
    if (!fs.existsSync(p)) throw new LightagentError('LA_ERR_CONFIG', `protect: ${p} does not exist`, 'create it or remove it from `protect`');
  }
  const exclude = [...cfg.exclude, cfg.state_dir];
  if (process.platform === 'win32') {
    // Windows: directory change notifications, scan after write (docs/windows.md)
    if (forced === 'fanotify') throw new LightagentError('LA_ERR_CONFIG', '--mode fanotify: fanotify is Linux only', 'leave --mode out on Windows (watcher mode)');
    const w = WindowsDirectoryWatcher.start({
      paths: cfg.protect,
      exclude,
      onWritten: (file) => {
        void handler.written(file, () => scanner.scanPath(file)).catch((e) => log.error('scan after write failed', { file, ...describeError(e) }));
      },
    });
    log.warn('protection mode: watcher (Windows directory notifications; scan after write, opens are not blocked)', { paths: cfg.protect });
    return w;
  }
  if (forced !== 'watcher') {
    try {
      const gate = await startFanotifyProtection(cfg, exclude, handler, scanner, sharedCache);
      log.info('on-access protection by fanotify: opens and executions are checked before they happen', { paths: cfg.protect });
      return gate;
    } catch (e) {
      if (forced === 'fanotify') throw e;
      log.warn('fanotify is not available here; FALLING BACK to the portable watcher: files are scanned after they are written, opens are NOT blocked', describeError(e));
    }
  }
  const watcher = await ChokidarWatcher.start({
    paths: cfg.protect,
    exclude,
    scanExisting: false,
    onWritten: (file) => {
      void handler.written(file, () => scanner.scanPath(file)).catch((e) => log.error('scan after write failed', { file, ...describeError(e) }));
    },
  });
  log.warn('protection mode: watcher (scan after write; opens are not blocked)', { paths: cfg.protect });
  return watcher;
}
