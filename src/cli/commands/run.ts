/**
 * `lightagent run` — the guest daemon in the foreground (systemd runs it the same way).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadAgentConfig, type AgentConfig } from '../../agent/config.js';
import { Daemon } from '../../agent/daemon.js';
import { closeLogging, configureLogging } from '../../log.js';
import { err, fail, out } from '../output.js';

export const RUN_HELP = `Usage: lightagent run [options]

Run the protection daemon in the foreground until SIGINT or SIGTERM.

Options:
  --config F           agent config file (default /etc/lightagent/agent.yaml if it exists)
  --svm URL            SVM (ws:// or wss://); overrides the config file and LIGHTAGENT_SVM_URL
  --token T            tenant token; overrides the config file and LIGHTAGENT_TOKEN
  --protect PATH       protect PATH (repeatable); overrides \`protect\` in the config file.
                       Default: every local disk filesystem (not /proc, /sys, /dev, /run,
                       network or memory filesystems, the state directory or exclusions)
  --exclude PATH       do not scan under PATH (repeatable)
  --state-dir DIR      cache, queue and quarantine (default /var/lib/lightagent)
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
  let cfg: AgentConfig;
  try {
    cfg = loadAgentConfig({
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
      },
    });
  } catch (e) {
    return fail(e, 'lightagent run');
  }
  configureLogging({ level: cfg.log.level, ...(cfg.log.file ? { file: cfg.log.file } : { stderr: true }) });

  let daemon: Daemon;
  try {
    daemon = await Daemon.start({ config: cfg, mode: o.mode as 'fanotify' | 'watcher' | undefined });
  } catch (e) {
    return fail(e, 'lightagent run');
  }
  // SIGUSR2: write a status snapshot next to the state (debugging, tests) until the
  // status socket (issue 8) exists.
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
  const line = { event: 'started', pid: process.pid, mode: daemon.mode, protect: daemon.protectedPaths(), svm: cfg.svm };
  out(o.json ? JSON.stringify(line) : `lightagent: protecting ${line.protect.join(', ')} (mode ${daemon.mode}, SVM ${cfg.svm}); pid ${process.pid}`);

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
  await daemon.stop();
  await closeLogging();
  return 0;
}
