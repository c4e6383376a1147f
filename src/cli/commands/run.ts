/**
 * `lightagent run` — the guest daemon in the foreground (systemd runs it the same way, as a
 * Type=notify service). Signals, sd_notify and the watchdog are the daemon's service steps
 * (src/agent/steps/notify.ts, signals.ts, ready.ts); this command shows what they report.
 */
import { loadAgentConfig, type AgentConfig } from '../../config/agent.js';
import { Daemon, startFailureCode, type ServiceEvent } from '../../agent/daemon.js';
import { describeError } from '../../errors.js';
import { closeLogging, configureLogging } from '../../log.js';
import { defineCommand } from '../command.js';
import { err, fail, out } from '../output.js';

export const runCommand = defineCommand({
  name: 'run',
  summary: 'run the protection daemon (on-access protection of the configured paths)',
  usage: '[options]',
  description: `Run the protection daemon in the foreground until SIGINT or SIGTERM (SIGTERM answers every
open still waiting for a verdict, then exits). SIGHUP re-reads the config file: protect,
exclude, deadline, on_svm_unavailable, max_file_size and on_detect change without a moment
unprotected (flags given here still override the file). A policy from the SVM sets exclude,
deadline, on_svm_unavailable, max_file_size and on_detect over the file, unless the file lists
them in local_keys; the last one is kept in <state-dir>/policy.json (docs/policies.md).
SIGUSR2 writes a status snapshot to <state-dir>/status.json. Under systemd (NOTIFY_SOCKET) it
reports READY=1, WATCHDOG=1 (WatchdogSec=), RELOADING=1 and STOPPING=1.
Status for any user: \`lightagent status\`; the sockets are in --socket-dir.
Exit codes: 0 stopped, 2 bad config or start-up failure, 3 another daemon already runs on
this state directory.`,
  options: {
    config: { type: 'string', arg: 'F', help: 'agent config file (default /etc/lightagent/agent.yaml if it exists)' },
    svm: { type: 'string', arg: 'URL', help: 'SVM (ws:// or wss://); overrides the config file and LIGHTAGENT_SVM_URL' },
    token: { type: 'string', arg: 'T', help: 'tenant token; overrides the config file and LIGHTAGENT_TOKEN' },
    protect: {
      type: 'string',
      multiple: true,
      arg: 'PATH',
      help:
        'protect PATH (repeatable); overrides `protect` in the config file.\nDefault: every local disk filesystem (not ' +
        '/proc, /sys, /dev, /run,\nnetwork or memory filesystems, the state directory or exclusions)',
    },
    exclude: { type: 'string', multiple: true, arg: 'PATH', help: 'do not scan under PATH (repeatable)' },
    'state-dir': { type: 'string', arg: 'DIR', help: 'cache, queue and quarantine (default /var/lib/lightagent)' },
    'socket-dir': {
      type: 'string',
      arg: 'DIR',
      help: 'status.sock and control.sock (default /run/lightagent, or\n<state-dir>.run with a non-default --state-dir)',
    },
    // The config's own duration syntax (a bare number there is seconds): checked when it loads.
    deadline: { type: 'string', arg: 'DUR', help: 'answer every open within DUR (default 2s)' },
    'fail-closed': { type: 'boolean', help: 'deny opens that cannot be judged in time (on_svm_unavailable: deny)' },
    mode: {
      type: 'string',
      arg: 'M',
      choices: ['fanotify', 'watcher'],
      help: 'fanotify | watcher (default: fanotify when it can run, else watcher)',
    },
    'log-file': { type: 'string', arg: 'F', help: 'JSON-lines log file (default: JSON lines on stderr)' },
    json: { type: 'boolean', help: 'print the start-up line (and reloads, stopping) as JSON' },
  },
  async handler({ values: o, prefix }) {
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
    const cfg = load();
    configureLogging({ level: cfg.log.level, ...(cfg.log.file ? { file: cfg.log.file } : { stderr: true }) });

    const report = (e: ServiceEvent) => {
      switch (e.event) {
        case 'reloaded': {
          const r = e.result;
          out(
            o.json
              ? JSON.stringify({ event: 'reloaded', ...r })
              : `lightagent: configuration reloaded (changed: ${r.applied.join(', ') || 'nothing'}` +
                  `${r.needRestart.length ? `; needs a restart, NOT applied: ${r.needRestart.join(', ')}` : ''})`,
          );
          break;
        }
        case 'reload-failed':
          if (o.json) out(JSON.stringify({ event: 'reload-failed', error: describeError(e.error) }));
          fail(e.error, `${prefix}: reload failed, the running configuration stays`);
          break;
        case 'stopping':
          out(o.json ? JSON.stringify({ event: 'stopping', signal: e.signal }) : `lightagent: ${e.signal}, stopping`);
          break;
        case 'problem':
          err(`${prefix}: ${e.message}`);
          break;
      }
    };
    let daemon: Daemon;
    try {
      daemon = await Daemon.start({
        config: cfg,
        mode: o.mode as 'fanotify' | 'watcher' | undefined,
        reloadConfig: load,
        service: { report },
      });
    } catch (e) {
      fail(e, prefix);
      await closeLogging();
      return startFailureCode(e);
    }
    const line = {
      event: 'started',
      pid: process.pid,
      mode: daemon.mode,
      protect: daemon.protectedPaths(),
      svm: cfg.svm,
      sockets: daemon.socketDir,
    };
    out(
      o.json
        ? JSON.stringify(line)
        : `lightagent: protecting ${line.protect.join(', ')} (mode ${daemon.mode}, SVM ` +
            `${typeof cfg.svm === 'string' ? cfg.svm : JSON.stringify(cfg.svm ?? cfg.svm_discovery)}); pid ${process.pid}`,
    );
    // SIGINT/SIGTERM stop it (the signals step).
    await daemon.whenStopped();
    await closeLogging();
    return 0;
  },
});
