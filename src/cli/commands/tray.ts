/**
 * `lightagent tray` — the desktop user's tray icon and notifications (Linux: StatusNotifierItem
 * and org.freedesktop.Notifications on the session bus; Windows: Shell_NotifyIconW icon and
 * balloons, src/tray/windows.ts). Started per user by the XDG autostart entry
 * (installers/xdg/lightagent-tray.desktop) or the MSI's Run value. No privilege: it only reads
 * the status socket (on Windows the named pipe \\.\pipe\lightagent-status).
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { STATUS_SOCKET, WINDOWS_STATUS_PIPE } from '../../control/local-sockets.js';
import { closeLogging, configureLogging } from '../../log.js';
import type { TrayPresenter } from '../../tray/presenter.js';
import { TrayApp } from '../../tray/tray-app.js';
import { err, fail, out } from '../output.js';
import { clientSocketDir } from './status.js';

export const TRAY_HELP = `Usage: lightagent tray [options]

Show the agent's state as a tray icon (protected / degraded / threat blocked / not running) and
a desktop notification for each blocked threat (at most --rate, then one "N more threats
blocked" summary) and for protection going degraded and back. Run it as the desktop user (the
XDG autostart entry does; on Windows the MSI's Run value, with a notification-area icon and
balloons); it needs no privilege and refuses to run as root.

Options:
  --socket-dir DIR     (Linux) where the daemon's sockets are (default from the config file, else
                       /run/lightagent)
  --state-dir DIR      the daemon's --state-dir (its sockets are then in <DIR>.run)
  --pipe NAME          Windows: the status pipe (default ${WINDOWS_STATUS_PIPE})
  --config F           agent config file to find socket_dir / state_dir in
  --rate N/SECONDS     threat notifications per window before a summary (default 3/10)
  --threat-icon S      seconds the icon shows "threat blocked" after a detection (default 60)
  --allow-root         run even as root (not recommended; for test rigs)
  --log-file F         JSON-lines log file (default: JSON lines on stderr)
  --json               print the start-up line as JSON
  -h, --help           show this help`;

export async function trayCommand(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        'socket-dir': { type: 'string' },
        'state-dir': { type: 'string' },
        pipe: { type: 'string' },
        config: { type: 'string' },
        rate: { type: 'string' },
        'threat-icon': { type: 'string' },
        'allow-root': { type: 'boolean', default: false },
        'log-file': { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    err(`lightagent tray: ${(e as Error).message}\n\n${TRAY_HELP}`);
    return 2;
  }
  const o = args.values;
  if (o.help) {
    out(TRAY_HELP);
    return 0;
  }
  const m = /^(\d{1,3})\/(\d{1,5}(?:\.\d+)?)$/.exec(o.rate ?? '3/10');
  const rate = m ? { max: Number(m[1]), windowMs: Number(m[2]) * 1000 } : undefined;
  if (!rate || rate.max < 1 || rate.windowMs <= 0) {
    err('lightagent tray: --rate must be N/SECONDS, e.g. 3/10');
    return 2;
  }
  const threatIconS = Number(o['threat-icon'] ?? 60);
  if (!Number.isFinite(threatIconS) || threatIconS < 0 || threatIconS > 86_400) {
    err('lightagent tray: --threat-icon must be seconds (0 to 86400)');
    return 2;
  }
  const pipe = windowsPipeName(o.pipe);
  if (!pipe) {
    err('lightagent tray: --pipe must be \\\\.\\pipe\\NAME (letters, digits, . _ -)');
    return 2;
  }
  if (process.getuid?.() === 0 && !o['allow-root']) {
    err('lightagent tray: refusing to run as root: the tray needs no privilege; run it as the desktop user (or pass --allow-root)');
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
    return fail(e, 'lightagent tray');
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
  out(o.json ? JSON.stringify({ event: 'tray-stopped', ...app.counts }) : `lightagent tray: stopped (${app.counts.detections} detections, ${app.counts.notifications} notifications)`);
  await closeLogging();
  return 0;
}

/** The status pipe's name on Windows (`\\.\pipe\` and 1 to 200 safe characters), or undefined when malformed. */
export function windowsPipeName(given: string | undefined): string | undefined {
  const name = given ?? WINDOWS_STATUS_PIPE;
  return /^\\\\\.\\pipe\\[A-Za-z0-9._-]{1,200}$/.test(name) ? name : undefined;
}
