/**
 * `lightagent service install|uninstall|run` (Windows): the agent as a Windows service.
 *
 *   install    registers the service "lightagent" (auto start, LocalSystem, restart on failure)
 *              with sc.exe, pointing at this executable with `service run --config F`, and the
 *              event log source. The MSI does the same through its ServiceInstall table.
 *   uninstall  stops and deletes the service and the event log source.
 *   run        what the SCM starts: connects to the dispatcher (src/platform/windows/service.ts),
 *              runs the daemon, logs to the config's log.file (default <state_dir>\agent.log)
 *              and the event log (start, stop, failures, detections).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import YAML from 'yaml';
import path from 'node:path';
import { err, fail, out } from '../output.js';
import { ConfigError, describeError } from '../../errors.js';
import { closeLogging, configureLogging, logger } from '../../log.js';
import { loadAgentConfig, type AgentConfig } from '../../config/agent.js';
import { Daemon, type ServiceEvent } from '../../agent/daemon.js';
import { defineCommand } from '../command.js';
import { isSea } from '../../platform/private-dir.js';

export const WINDOWS_CONFIG = 'C:\\ProgramData\\lightagent\\agent.yaml';

function sc(args: string[], okCodes: number[] = [0]): { ok: boolean; text: string; status: number | null } {
  const r = spawnSync('sc.exe', args, { encoding: 'utf8', timeout: 60_000, windowsHide: true });
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  return { ok: r.status !== null && okCodes.includes(r.status), text, status: r.status };
}

const EVENT_KEY = 'HKLM\\SYSTEM\\CurrentControlSet\\Services\\EventLog\\Application\\lightagent';

async function install(configFile: string, start: boolean): Promise<number> {
  if (process.platform !== 'win32') {
    err('lightagent service: Windows only (on Linux: installers/linux/install.sh)');
    return 2;
  }
  if (!isSea()) {
    err('lightagent service install: run it from lightagent-win-x64.exe (the service starts that executable)');
    return 2;
  }
  const exe = process.execPath;
  const bin = `"${exe}" service run --config "${configFile}"`;
  const c = sc(['create', 'lightagent', 'binPath=', bin, 'start=', 'auto', 'DisplayName=', 'lightagent protection agent']);
  if (!c.ok) {
    err(`lightagent service install: sc create failed (${c.status}): ${c.text}`);
    return 2;
  }
  sc(['description', 'lightagent', 'Scans files written to the protected folders through the Security VM and quarantines infected ones.']);
  sc(['failure', 'lightagent', 'reset=', '86400', 'actions=', 'restart/5000/restart/30000//']);
  spawnSync('reg.exe', ['add', EVENT_KEY, '/v', 'EventMessageFile', '/t', 'REG_EXPAND_SZ', '/d', exe, '/f'], {
    timeout: 30_000,
    windowsHide: true,
  });
  spawnSync('reg.exe', ['add', EVENT_KEY, '/v', 'TypesSupported', '/t', 'REG_DWORD', '/d', '7', '/f'], {
    timeout: 30_000,
    windowsHide: true,
  });
  out(`lightagent: service "lightagent" installed (${bin})`);
  if (start) {
    const s = sc(['start', 'lightagent']);
    if (!s.ok) {
      err(`lightagent service install: sc start failed (${s.status}): ${s.text}`);
      return 2;
    }
    out('lightagent: service started');
  }
  return 0;
}

async function uninstall(): Promise<number> {
  if (process.platform !== 'win32') {
    err('lightagent service: Windows only');
    return 2;
  }
  sc(['stop', 'lightagent']);
  const d = sc(['delete', 'lightagent']);
  spawnSync('reg.exe', ['delete', EVENT_KEY, '/f'], { timeout: 30_000, windowsHide: true });
  if (!d.ok) {
    err(`lightagent service uninstall: sc delete failed (${d.status}): ${d.text}`);
    return 2;
  }
  out('lightagent: service "lightagent" removed');
  return 0;
}

export interface ConfigureValues {
  svm?: string | undefined;
  token?: string | undefined;
  ca?: string | undefined;
  failClosed?: string | undefined;
  protect?: string | undefined;
}

/** The config the MSI's properties make, merged over an existing file (only non-empty values change it). */
export function mergeConfig(existing: Record<string, unknown>, v: ConfigureValues, dir: string): Record<string, unknown> {
  const c: Record<string, unknown> = { ...existing };
  const given = (s: string | undefined) => (s !== undefined && s.trim() !== '' ? s.trim() : undefined);
  if (given(v.svm)) c.svm = given(v.svm);
  if (given(v.token)) c.token = given(v.token);
  if (given(v.ca)) c.ca = given(v.ca);
  const fc = given(v.failClosed);
  if (fc !== undefined) c.on_svm_unavailable = /^(1|true|yes)$/i.test(fc) ? 'deny' : 'allow';
  if (given(v.protect))
    c.protect = given(v.protect)!
      .split(';')
      .map((p) => p.trim())
      .filter((p) => p.length > 0);
  if (typeof c.svm === 'string' && c.svm.startsWith('ws://') && c.allow_plain_ws === undefined) {
    // plain ws:// only for a loopback SVM (tests, a local SVM); anything else needs wss://
    const host = new URL(c.svm).hostname;
    if (host === '127.0.0.1' || host === 'localhost' || host === '[::1]') c.allow_plain_ws = true;
  }
  c.state_dir ??= dir;
  return c;
}

function restrictDir(dir: string): string | undefined {
  // SYSTEM and Administrators only, inherited by everything below (config with the token, cache, quarantine)
  const r = spawnSync('icacls.exe', [dir, '/inheritance:r', '/grant:r', '*S-1-5-18:(OI)(CI)F', '*S-1-5-32-544:(OI)(CI)F'], {
    encoding: 'utf8',
    timeout: 60_000,
    windowsHide: true,
  });
  return r.status === 0
    ? undefined
    : `icacls ${dir} failed (${r.status ?? r.error?.message}): ${(r.stdout ?? '') + (r.stderr ?? '')}`.trim();
}

async function configure(file: string, v: ConfigureValues): Promise<number> {
  const dir = path.win32.dirname(file);
  let existing: Record<string, unknown> = {};
  try {
    if (fs.existsSync(file)) {
      const parsed: unknown = YAML.parse(fs.readFileSync(file, 'utf8'));
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) existing = parsed as Record<string, unknown>;
    }
  } catch (e) {
    err(`lightagent service configure: ${file} cannot be read (${(e as Error).message}); it is replaced`);
  }
  const merged = mergeConfig(existing, v, dir);
  fs.mkdirSync(dir, { recursive: true });
  const problem = process.platform === 'win32' ? restrictDir(dir) : undefined;
  if (problem) err(`lightagent service configure: WARNING ${problem}; restrict ${dir} to SYSTEM and Administrators by hand`);
  const tmp = `${file}.new`;
  fs.writeFileSync(tmp, `# written by lightagent service configure (the MSI's properties)\n${YAML.stringify(merged)}`, { mode: 0o600 });
  try {
    const cfg = loadAgentConfig({ file: tmp, flags: {}, env: {} });
    // The service cannot start without these: refuse here, where the MSI shows (and logs) this
    // custom action's failure and rolls back, rather than leave a service that fails at start.
    const missing = [
      ...(cfg.svm || cfg.svm_discovery
        ? []
        : ['svm: no SVM; give the MSI SVM_URL=wss://HOST:PORT (or --svm URL), or set `svm:` or `svm_discovery:` in the file']),
      ...(cfg.token ? [] : ['token: no tenant token; give the MSI TOKEN=... (or --token T), or set `token:` in the file']),
    ];
    if (missing.length > 0) throw new ConfigError(`${file} as configured`, missing);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    return fail(e, 'lightagent service configure');
  }
  fs.renameSync(tmp, file);
  out(`lightagent: configuration written to ${file}`);
  return 0;
}

async function cleanup(file: string): Promise<number> {
  const dir = path.win32.dirname(file);
  let kept = 0;
  const left: string[] = [];
  // A service process that is still shutting down may hold or recreate a file for a moment
  // (seen under Wine): Node retries EBUSY/ENOTEMPTY/EPERM, and what still fails is named, not
  // fatal: a failed custom action would roll the whole uninstall back.
  const remove = (p: string) => {
    try {
      fs.rmSync(p, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    } catch (e) {
      left.push(`${p} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
  };
  for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
    if (name === 'quarantine') {
      kept++;
      continue;
    }
    remove(path.join(dir, name));
  }
  if (kept === 0 && left.length === 0) remove(dir);
  out(`lightagent: removed the configuration and state in ${dir}${kept ? ' (the quarantine stays)' : ''}`);
  if (left.length) err(`lightagent: could not remove ${left.join(', ')}; delete it by hand once no lightagent process runs`);
  return 0;
}

async function runAsService(configFile: string): Promise<number> {
  const { runService, EventLog, EVENTLOG_ERROR_TYPE, EVENTLOG_INFORMATION_TYPE, EVENTLOG_WARNING_TYPE } =
    await import('../../platform/windows/service.js');
  const load = (): AgentConfig => loadAgentConfig({ file: configFile, flags: {} });
  let cfg: AgentConfig;
  const events = new EventLog();
  try {
    cfg = load();
  } catch (e) {
    events.report(EVENTLOG_ERROR_TYPE, `lightagent: cannot start: ${describeError(e).message}`);
    return fail(e, 'lightagent service run');
  }
  const logFile = cfg.log.file ?? path.join(cfg.state_dir, 'agent.log');
  configureLogging({ level: cfg.log.level, file: logFile });
  const log = logger('service');
  let daemon: Daemon | undefined;
  const types = { info: EVENTLOG_INFORMATION_TYPE, warn: EVENTLOG_WARNING_TYPE, error: EVENTLOG_ERROR_TYPE } as const;
  try {
    return await runService({
      log(level, message) {
        log[level](message);
        events.report(types[level], `lightagent: ${message}`);
      },
      async start() {
        // The same daemon and service steps as `lightagent run`; what they report goes to the
        // log and the event log (a service has no terminal).
        const report = (e: ServiceEvent) => {
          if (e.event === 'reloaded') log.info('configuration reloaded', { ...e.result });
          else if (e.event === 'reload-failed')
            events.report(
              EVENTLOG_WARNING_TYPE,
              `lightagent: reload failed, the running configuration stays: ${describeError(e.error).message}`,
            );
          else if (e.event === 'stopping') log.info('stopping', { signal: e.signal });
          else log.warn(e.message);
        };
        daemon = await Daemon.start({ config: cfg, reloadConfig: load, service: { report } });
        log.info('protecting', { paths: daemon.protectedPaths(), mode: daemon.mode, log: logFile });
        daemon.subscribe({
          detection: (d) => events.report(EVENTLOG_WARNING_TYPE, `lightagent: ${JSON.stringify(d)}`, 2),
          state: (s) =>
            events.report(
              s.state === 'protected' ? EVENTLOG_INFORMATION_TYPE : EVENTLOG_WARNING_TYPE,
              `lightagent: protection ${s.state}${s.reasons.length ? `: ${s.reasons.join(', ')}` : ''}`,
              3,
            ),
        });
      },
      async stop() {
        await daemon?.stop();
      },
    });
  } catch (e) {
    log.error('service failed', describeError(e));
    events.report(EVENTLOG_ERROR_TYPE, `lightagent: ${describeError(e).message}`);
    await closeLogging();
    return fail(e, 'lightagent service run');
  } finally {
    await closeLogging();
  }
}

export const serviceCommand = defineCommand({
  name: 'service',
  summary: 'the agent as a Windows service: install, uninstall, run, configure, cleanup',
  hidden: true,
  usage: 'install|uninstall|run|configure|cleanup [options]',
  description: `The agent as a Windows service named "lightagent" (LocalSystem, automatic start).

  install     register the service (sc.exe) and the event log source; --start starts it too
  uninstall   stop and remove the service and the event log source
  run         what the Service Control Manager starts (not for a console: use \`lightagent run\`)
  configure   write the config file (the MSI runs this with its properties): --svm URL
              --token T --ca FILE --fail-closed 0|1 --protect "DIR;DIR"; empty values keep
              what the file has (upgrades); the result is validated before it replaces the file
              (an SVM and a token are required, from the values or the file), and the
              directory is restricted to SYSTEM and Administrators (icacls)
  cleanup     (MSI uninstall) remove the config, cache, queue and logs; the quarantine stays`,
  options: {
    config: { type: 'string', arg: 'F', help: `agent config file (default ${WINDOWS_CONFIG})` },
    start: { type: 'boolean', help: '(install) start the service after registering it' },
    svm: { type: 'string', arg: 'URL', help: '(configure) the SVM' },
    token: { type: 'string', arg: 'T', help: '(configure) the tenant token' },
    ca: { type: 'string', arg: 'FILE', help: "(configure) the SVM's CA certificate" },
    'fail-closed': { type: 'string', arg: '0|1', help: '(configure) deny opens that cannot be judged in time' },
    protect: { type: 'string', arg: '"DIR;DIR"', help: '(configure) the folders to protect' },
  },
  positionals: true,
  footer: 'Exit status: 0 done, 2 failure (the message says which step).',
  async handler({ values: o, positionals, usage }) {
    const sub = positionals[0];
    if (!sub) return usage('name a subcommand: install, uninstall, run, configure or cleanup');
    const config = path.win32.isAbsolute(o.config ?? '') ? o.config! : WINDOWS_CONFIG;
    switch (sub) {
      case 'install':
        return install(config, o.start);
      case 'uninstall':
        return uninstall();
      case 'run':
        return runAsService(config);
      case 'configure':
        return configure(config, { svm: o.svm, token: o.token, ca: o.ca, failClosed: o['fail-closed'], protect: o.protect });
      case 'cleanup':
        return cleanup(config);
      default:
        return usage(`unknown subcommand ${JSON.stringify(sub).slice(0, 60)}`);
    }
  },
});
