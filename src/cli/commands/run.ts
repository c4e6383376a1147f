/**
 * `lightagent run` — the guest daemon in the foreground (systemd runs it the same way, as a
 * Type=notify service: READY=1 once protecting, WATCHDOG=1 pings, RELOADING=1/STOPPING=1).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadAgentConfig, type AgentConfig } from '../../config/agent.js';
import { Daemon } from '../../agent/daemon.js';
import { describeError, LightagentError } from '../../errors.js';
import { SdNotify, watchdogIntervalMs } from '../../platform/linux/sd-notify.js';
import { closeLogging, configureLogging } from '../../log.js';
import { err, fail, out } from '../output.js';

export const RUN_HELP = `Usage: lightagent run [options]

Run the protection daemon in the foreground until SIGINT or SIGTERM (SIGTERM answers every
open still waiting for a verdict, then exits). SIGHUP re-reads the config file: protect,
exclude, deadline, on_svm_unavailable and max_file_size change without a moment unprotected
(flags given here still override the file). Under systemd (NOTIFY_SOCKET) it reports
READY=1, WATCHDOG=1 (WatchdogSec=), RELOADING=1 and STOPPING=1.
Status for any user: \`lightagent status\`; the sockets are in --socket-dir.
Exit codes: 0 stopped, 2 bad config or start-up failure, 3 another daemon already runs on
this state directory.

Options:
  --config F           agent config file (default /etc/lightagent/agent.yaml if it exists)
  --svm URL            SVM (ws:// or wss://); overrides the config file and LIGHTAGENT_SVM_URL
  --token T            tenant token; overrides the config file and LIGHTAGENT_TOKEN
  --protect PATH       protect PATH (repeatable); overrides \`protect\` in the config file.
                       Default: every local disk filesystem (not /proc, /sys, /dev, /run,
                       network or memory filesystems, the state directory or exclusions)
  --exclude PATH       do not scan under PATH (repeatable)
  --state-dir DIR      cache, queue and quarantine (default /var/lib/lightagent)
  --socket-dir DIR     status.sock and control.sock (default /run/lightagent, or
                       <state-dir>.run with a non-default --state-dir)
  --deadline DUR       answer every open within DUR (default 2s)
  --fail-closed        deny opens that cannot be judged in time (on_svm_unavailable: deny)
  --mode M             fanotify | watcher (default: fanotify when it can run, else watcher)
  --log-file F         JSON-lines log file (default: JSON lines on stderr)
  --json               print the start-up line as JSON
  -h, --help           show this help`;

export async function runCommand(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' },
        svm: { type: 'string' },
        token: { type: 'string' },
        protect: { type: 'string', multiple: true },
        exclude: { type: 'string', multiple: true },
        'state-dir': { type: 'string' },
        'socket-dir': { type: 'string' },
        deadline: { type: 'string' },
        'fail-closed': { type: 'boolean', default: false },
        mode: { type: 'string' },
        'log-file': { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    err(`lightagent run: ${(e as Error).message}\n\n${RUN_HELP}`);
    return 2;
  }
  const o = args.values;
  if (o.help) {
    out(RUN_HELP);
    return 0;
  }
  if (o.mode !== undefined && o.mode !== 'fanotify' && o.mode !== 'watcher') {
    err('lightagent run: --mode must be fanotify or watcher');
    return 2;
  }
  const load = (): AgentConfig =>
    loadAgentConfig({
      file: o.config,
      flags: {
        svm: o.svm,
        token: o.token,
        protect: o.protect,
        exclude: o.exclude,
        state_dir: o['state-dir'],
        deadline: o.deadline,
        on_svm_unavailable: o['fail-closed'] ? 'deny' : undefined,
        'log.file': o['log-file'],
        socket_dir: o['socket-dir'],
      },
    });
  let cfg: AgentConfig;
  try {
    cfg = load();
  } catch (e) {
    return fail(e, 'lightagent run');
  }
  configureLogging({ level: cfg.log.level, ...(cfg.log.file ? { file: cfg.log.file } : { stderr: true }) });

  const notify = new SdNotify(process.env.NOTIFY_SOCKET, (m) => err(`lightagent run: ${m}`));
  let daemon: Daemon;
  try {
    daemon = await Daemon.start({ config: cfg, mode: o.mode as 'fanotify' | 'watcher' | undefined, reloadConfig: load });
  } catch (e) {
    const code = e instanceof LightagentError && e.code === 'LA_ERR_ALREADY_RUNNING' ? 3 : 2;
    fail(e, 'lightagent run');
    notify.send(`STATUS=start-up failed: ${describeError(e).message.split('\n')[0]}\nERRNO=${code}`);
    return code;
  }
  // SIGUSR2: write a status snapshot to <state_dir>/status.json (root-only, for debugging and
  // older tests). The interface for people and the tray is the status socket (`lightagent status`).
  const statusFile = path.join(cfg.state_dir, 'status.json');
  const onUsr2 = () => {
    try {
      fs.writeFileSync(`${statusFile}.tmp`, JSON.stringify(daemon.status(), null, 2), { mode: 0o600 });
      fs.renameSync(`${statusFile}.tmp`, statusFile);
    } catch (e) {
      err(`lightagent run: cannot write ${statusFile}: ${(e as Error).message}`);
    }
  };
  process.on('SIGUSR2', onUsr2);

  // SIGHUP: reload, one at a time (Daemon.reload serializes), never fatal.
  const onHup = () => {
    notify.send('RELOADING=1');
    daemon.reload().then(
      (r) => {
        out(o.json ? JSON.stringify({ event: 'reloaded', ...r }) : `lightagent: configuration reloaded (changed: ${r.applied.join(', ') || 'nothing'}${r.needRestart.length ? `; needs a restart, NOT applied: ${r.needRestart.join(', ')}` : ''})`);
        notify.send(`READY=1\nSTATUS=protecting (${daemon.mode}), reloaded`);
      },
      (e: unknown) => {
        if (o.json) out(JSON.stringify({ event: 'reload-failed', error: describeError(e) }));
        fail(e, 'lightagent run: reload failed, the running configuration stays');
        notify.send(`READY=1\nSTATUS=reload failed: ${describeError(e).message.split('\n')[0]}`);
      },
    );
  };
  process.on('SIGHUP', onHup);
  // The watchdog pings come from the main event loop: if it stalls, systemd sees it (WatchdogSec=).
  const wdMs = watchdogIntervalMs();
  const wdTimer = wdMs !== undefined && notify.enabled ? setInterval(() => notify.send('WATCHDOG=1'), Math.max(100, wdMs / 2)) : undefined;
  notify.send(`READY=1\nMAINPID=${process.pid}\nSTATUS=protecting ${daemon.protectedPaths().join(', ')} (mode ${daemon.mode})`);
  const line = { event: 'started', pid: process.pid, mode: daemon.mode, protect: daemon.protectedPaths(), svm: cfg.svm, sockets: daemon.socketDir };
  out(o.json ? JSON.stringify(line) : `lightagent: protecting ${line.protect.join(', ')} (mode ${daemon.mode}, SVM ${typeof cfg.svm === 'string' ? cfg.svm : JSON.stringify(cfg.svm ?? cfg.svm_discovery)}); pid ${process.pid}`);

  await new Promise<void>((resolve) => {
    const onSignal = (sig: NodeJS.Signals) => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      out(o.json ? JSON.stringify({ event: 'stopping', signal: sig }) : `lightagent: ${sig}, stopping`);
      resolve();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  process.off('SIGUSR2', onUsr2);
  process.off('SIGHUP', onHup);
  clearInterval(wdTimer);
  notify.send('STOPPING=1\nSTATUS=stopping: answering pending opens');
  await daemon.stop();
  notify.close();
  await closeLogging();
  return 0;
}
