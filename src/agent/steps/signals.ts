import fs from 'node:fs';
import path from 'node:path';
import { describeError } from '../../errors.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/**
 * A service's signals: SIGHUP reloads (one at a time, never fatal), SIGUSR2 writes a status
 * snapshot to <state_dir>/status.json (root-only, for debugging and older tests; the interface
 * for people and the tray is the status socket), SIGINT/SIGTERM stop the daemon. Windows has
 * none of these for a service: the Service Control Manager stops it (src/platform/windows/service.ts).
 */
export const signalsStep: Step<DaemonContext> = {
  name: 'signals',
  run(ctx) {
    const service = ctx.opts.service;
    if (!service || process.platform === 'win32') return;
    const { daemon } = ctx;
    const statusFile = path.join(ctx.cfg.state_dir, 'status.json');
    const onUsr2 = () => {
      try {
        fs.writeFileSync(`${statusFile}.tmp`, JSON.stringify(daemon.status(), null, 2), { mode: 0o600 });
        fs.renameSync(`${statusFile}.tmp`, statusFile);
      } catch (e) {
        service.report({ event: 'problem', message: `cannot write ${statusFile}: ${(e as Error).message}` });
      }
    };
    const onHup = () => {
      ctx.notify?.send('RELOADING=1');
      daemon.reload().then(
        (result) => {
          service.report({ event: 'reloaded', result });
          ctx.notify?.send(`READY=1\nSTATUS=protecting (${daemon.mode}), reloaded`);
        },
        (error: unknown) => {
          service.report({ event: 'reload-failed', error });
          ctx.notify?.send(`READY=1\nSTATUS=reload failed: ${describeError(error).message.split('\n')[0]}`);
        },
      );
    };
    // Once: a second SIGINT/SIGTERM while stopping gets the default action (exit at once).
    const onStop = (signal: NodeJS.Signals) => {
      process.off('SIGINT', onStop);
      process.off('SIGTERM', onStop);
      service.report({ event: 'stopping', signal });
      void daemon.stop();
    };
    process.on('SIGUSR2', onUsr2);
    process.on('SIGHUP', onHup);
    process.on('SIGINT', onStop);
    process.on('SIGTERM', onStop);
    return () => {
      process.off('SIGUSR2', onUsr2);
      process.off('SIGHUP', onHup);
      process.off('SIGINT', onStop);
      process.off('SIGTERM', onStop);
    };
  },
};
