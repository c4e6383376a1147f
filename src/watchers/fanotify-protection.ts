/**
 * The daemon's on-access wiring of the fanotify gate: decisions from OnAccessHandler, background
 * scans after close-write through the event fd.
 */
import { describeError } from '../errors.js';
import { logger } from '../log.js';
import { FanotifyGate } from './fanotify-gate.js';
import type { AgentConfig } from '../config/agent.js';
import type { FileScanner } from '../scan/file-scanner.js';
import type { OnAccessHandler } from '../scan/on-access.js';
import type { SharedCacheSpec } from '../cache/shared-view.js';

export async function startFanotifyProtection(cfg: AgentConfig, exclude: string[], handler: OnAccessHandler, scanner: FileScanner, sharedCache?: SharedCacheSpec): Promise<FanotifyGate> {
  const log = logger('protection');
  return FanotifyGate.start({
    mounts: cfg.protect,
    protect: cfg.protect,
    exclude,
    // The handler answers by policy at `deadline`; the worker is the backstop if this thread stalls.
    deadlineMs: cfg.deadline,
    onDeadline: cfg.on_svm_unavailable,
    decide: (ev) => handler.decide(ev),
    sharedCache,
    // A clean verdict for what was just written earns the kernel mark at once (see FanotifyGate).
    // A local hit comes back synchronously: no promise per file in a burst of copies.
    onCloseWrite: (ev) => {
      const r = handler.writtenNow(ev.path, () => scanner.scanFdNow(ev.fd, ev.path, ev.stat), ev.pid);
      if (!(r instanceof Promise)) return { clean: r.outcome === 'clean' };
      return r.then((x) => ({ clean: x.outcome === 'clean' })).catch((e) => log.error('scan after close-write failed', { path: ev.path, ...describeError(e) }));
    },
  });
}
