/**
 * `lightagent tray` — the desktop user's tray icon and notifications (Linux: StatusNotifierItem
 * and org.freedesktop.Notifications on the session bus; Windows: Shell_NotifyIconW icon and
 * balloons, src/tray/windows.ts). Started per user by the XDG autostart entry
 * (installers/xdg/lightagent-tray.desktop) or the MSI's Run value. No privilege: it only reads
 * the status socket (on Windows the named pipe \\.\pipe\lightagent-status).
 */
import path from 'node:path';
import { STATUS_SOCKET, WINDOWS_STATUS_PIPE } from '../../control/local-sockets.js';
import { closeLogging, configureLogging } from '../../log.js';
import type { TrayPresenter } from '../../tray/presenter.js';
import { TrayApp } from '../../tray/tray-app.js';
import { defineCommand } from '../command.js';
import { err, fail, out } from '../output.js';
import { clientSocketDir } from './status.js';

export const trayCommand = defineCommand({
  name: 'tray',
  summary: 'desktop tray icon and notifications (run as the desktop user)',
  usage: '[options]',
  description: `Show the agent's state as a tray icon (protected / degraded / threat blocked / not running) and
a desktop notification for each blocked threat (at most --rate, then one "N more threats
blocked" summary) and for protection going degraded and back. Run it as the desktop user (the
XDG autostart entry does; on Windows the MSI's Run value, with a notification-area icon and
balloons); it needs no privilege and refuses to run as root.`,
  options: {
    'socket-dir': {
      type: 'string',
      arg: 'DIR',
      help: "(Linux) where the daemon's sockets are (default from the config file, else\n/run/lightagent)",
    },
    'state-dir': { type: 'string', arg: 'DIR', help: "the daemon's --state-dir (its sockets are then in <DIR>.run)" },
    pipe: { type: 'string', arg: 'NAME', help: `Windows: the status pipe (default ${WINDOWS_STATUS_PIPE})` },
    config: { type: 'string', arg: 'F', help: 'agent config file to find socket_dir / state_dir in' },
    rate: { type: 'string', arg: 'N/SECONDS', help: 'threat notifications per window before a summary (default 3/10)' },
    'threat-icon': { type: 'string', arg: 'S', help: 'seconds the icon shows "threat blocked" after a detection (default 60)' },
    'allow-root': { type: 'boolean', help: 'run even as root (not recommended; for test rigs)' },
    'log-file': { type: 'string', arg: 'F', help: 'JSON-lines log file (default: JSON lines on stderr)' },
    json: { type: 'boolean', help: 'print the start-up line as JSON' },
  },
  async handler({ values: o, prefix }) {
    const m = /^(\d{1,3})\/(\d{1,5}(?:\.\d+)?)$/.exec(o.rate ?? '3/10');
    const rate = m ? { max: Number(m[1]), windowMs: Number(m[2]) * 1000 } : undefined;
    if (!rate || rate.max < 1 || rate.windowMs <= 0) {
      err(`${prefix}: --rate must be N/SECONDS, e.g. 3/10`);
      return 2;
    }
    const threatIconS = Number(o['threat-icon'] ?? 60);
    if (!Number.isFinite(threatIconS) || threatIconS < 0 || threatIconS > 86_400) {
      err(`${prefix}: --threat-icon must be seconds (0 to 86400)`);
      return 2;
    }
    const pipe = windowsPipeName(o.pipe);
    if (!pipe) {
      err(`${prefix}: --pipe must be \\\\.\\pipe\\NAME (letters, digits, . _ -)`);
      return 2;
    }
    if (process.getuid?.() === 0 && !o['allow-root']) {
      err(`${prefix}: refusing to run as root: the tray needs no privilege; run it as the desktop user (or pass --allow-root)`);
      return 2;
    }
    configureLogging({ level: 'info', ...(o['log-file'] ? { file: o['log-file'] } : { stderr: true }) });
    let presenter: TrayPresenter;
    let socketPath: string;
    /** Windows asks the tray to end through its window (WM_CLOSE from taskkill, logoff). */
    let windowsExit: (() => void) | undefined;
    try {
      if (process.platform === 'win32') {
        socketPath = pipe;
        presenter = await (await import('../../tray/windows.js')).startWindowsTrayPresenter({ onExit: () => windowsExit?.() });
      } else {
        socketPath = path.join(clientSocketDir(o), STATUS_SOCKET);
        presenter = await (await import('../../tray/linux/presenter.js')).LinuxTrayPresenter.start();
      }
    } catch (e) {
      return fail(e, prefix);
    }
    const app = new TrayApp({ socketPath, presenter, rate, threatIconMs: threatIconS * 1000 });
    app.start();
    const line = { event: 'tray-started', pid: process.pid, socket: socketPath };
    out(o.json ? JSON.stringify(line) : `lightagent tray: following ${socketPath}; pid ${process.pid}`);
    await new Promise<void>((resolve) => {
      const onSignal = () => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        windowsExit = undefined;
        resolve();
      };
      windowsExit = onSignal;
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
    });
    await app.stop();
    out(
      o.json
        ? JSON.stringify({ event: 'tray-stopped', ...app.counts })
        : `lightagent tray: stopped (${app.counts.detections} detections, ${app.counts.notifications} notifications)`,
    );
    await closeLogging();
    return 0;
  },
});

/** The status pipe's name on Windows (`\\.\pipe\` and 1 to 200 safe characters), or undefined when malformed. */
export function windowsPipeName(given: string | undefined): string | undefined {
  const name = given ?? WINDOWS_STATUS_PIPE;
  return /^\\\\\.\\pipe\\[A-Za-z0-9._-]{1,200}$/.test(name) ? name : undefined;
}
