import fs from 'node:fs';
import { LocalSockets, socketDirFor, WINDOWS_STATUS_PIPE } from '../../control/local-sockets.js';
import { logger } from '../../log.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** status.sock for any user and control.sock for root (Windows: the status pipe only). */
export const socketsStep: Step<DaemonContext> = {
  name: 'sockets',
  async run(ctx) {
    if (ctx.opts.sockets === false) return;
    const log = logger('daemon');
    const windows = process.platform === 'win32';
    const d = ctx.daemon;
    const q = ctx.quarantine!;
    // Windows: the status server on \\.\pipe\lightagent-status, no control pipe (local-sockets.ts says why)
    const sockets = await LocalSockets.start(
      socketDirFor(ctx.cfg),
      {
        status: () => d.status() as unknown as Record<string, unknown>,
        subscribe: (on) => d.subscribe(on),
        reload: async () => ({ ...(await d.reload()) }),
        rescan: (paths) => d.rescan(paths),
        quarantineList: () => q.list(),
        quarantineRestore: (id, opts) => q.restore(id, opts),
        quarantineDelete: (id) => q.delete(id),
        scanStart: (paths) => ctx.scanJobs!.start({ trigger: 'manual', paths }),
        scanStatus: () => ctx.scanJobs?.current,
        scanCancel: () => ctx.scanJobs?.cancel() ?? false,
      },
      { windowsPipe: windows ? WINDOWS_STATUS_PIPE : undefined },
    );
    ctx.sockets = sockets;
    if (windows) log.info('status pipe ready (no control pipe on Windows: docs/windows.md)', { status: sockets.status.path });
    else log.info('local sockets ready', { status: sockets.status.path, control: sockets.control?.path });
    return async () => {
      await sockets.close();
      if (windows) return;
      // The derived <state_dir>.run directory is ours alone: leave nothing behind.
      if (!ctx.cfg.socket_dir && d.socketDir.endsWith('.run')) {
        try {
          fs.rmdirSync(d.socketDir);
        } catch {
          /* not empty (someone else's file): leave it */
        }
      }
    };
  },
};
