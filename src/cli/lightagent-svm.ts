#!/usr/bin/env -S node --max-semi-space-size=1 --single-threaded-gc --no-separate-gc-phases
/**
 * `lightagent-svm` — the Security VM server. Prints one line on stdout once it listens (JSON with
 * --json: {event, url, metrics, healthz, engine, generation, pid}), then runs until SIGINT or
 * SIGTERM and closes gracefully (agents get 4010 and fail over). Exit 2 on a config error.
 */
import { AGENT_VERSION } from '../agent/identity.js';
import { closeLogging, configureLogging, logger } from '../log.js';
import { applySvmRuntimeFlags, missingNodeFlags, SVM_NODE_FLAGS } from '../node-flags.js';
import { MemoryInventoryStore } from '../svm/inventory/memory-store.js';
import type { InventoryStore } from '../svm/inventory/types.js';
import { loadSvmConfig, readTlsFiles, type SvmConfig } from '../svm/config.js';
import { consoleRoute } from '../svm/console/console-route.js';
import { BuiltinEngine } from '../svm/engines/builtin.js';
import { ClamavEngine } from '../svm/engines/clamav.js';
import type { ScanEngine } from '../svm/engines/engine.js';
import { YaraEngine } from '../svm/engines/yara.js';
import { MemoryVerdictCache } from '../svm/memory-verdict-cache.js';
import { redactUrl, type SharedVerdictCache } from '../svm/verdict-cache.js';
import { SvmServer } from '../svm/server.js';
import { defineCommand, type OptionSpec, type Values } from './command.js';
import { err, exitAfterFlush, fail, out } from './output.js';
import { backupCommand, restoreCommand } from './svm-backup.js';

const SVM_OPTIONS = {
  config: { type: 'string', arg: 'F', help: 'config file (YAML or JSON)' },
  listen: { type: 'string', arg: 'HOST:PORT', help: 'where to listen (default 127.0.0.1:7443; port 0 picks a free port)' },
  token: {
    type: 'string',
    multiple: true,
    arg: 'T',
    help:
      'accept this token, tenant "default" (repeatable; replaces the config\nfile\'s tokens; LIGHTAGENT_SVM_TOKEN adds ' +
      "one to the file's)",
  },
  'token-file': {
    type: 'string',
    arg: 'F',
    help: "a YAML/JSON list of tokens like the config's tokens (with tenant and\nexpires); re-read on SIGHUP (config token_file)",
  },
  engine: {
    type: 'string',
    arg: 'E',
    help:
      'builtin (signatures in this process) | clamav (a running clamd) |\nyara (YARA rules, YARA-X in this process; ' +
      'needs npm @litko/yara-x-linux-x64-gnu)',
  },
  'yara-rules': {
    type: 'string',
    arg: 'PATH',
    help:
      'a .yar file or a directory of .yar/.yara files (engine yara; config\nyara_rules; reloaded on SIGHUP, a rule ' +
      'error keeps the previous rules)',
  },
  clamd: {
    type: 'string',
    arg: 'ADDR',
    help: "clamd's socket path or tcp://HOST:PORT (engine clamav; config\nclamd.address, default /run/clamav/clamd.ctl)",
  },
  cache: {
    type: 'string',
    arg: 'C',
    help: 'memory | redis://HOST:PORT: verdicts shared with every SVM on that Redis\n(config cache.store; Redis down: the memory tier answers, nothing waits)',
  },
  signatures: {
    type: 'string',
    multiple: true,
    arg: 'FILE',
    help: 'load a .hdb, .hsb or .ndb signature file (repeatable; engine builtin)',
  },
  'max-file-size': { type: 'string', arg: 'SZ', help: 'largest upload accepted (default 64 MiB)' },
  'tls-cert': { type: 'string', arg: 'F', help: 'PEM certificate of the SVM: agents connect with wss:// (config tls.cert)' },
  'tls-key': { type: 'string', arg: 'F', help: 'PEM private key of --tls-cert (config tls.key)' },
  'tls-client-ca': {
    type: 'string',
    arg: 'F',
    help: 'mutual TLS: refuse agents without a certificate signed by this CA\n(config tls.client_ca)',
  },
  'admin-token': {
    type: 'string',
    multiple: true,
    arg: 'T',
    help:
      'accept this token (role admin) on the admin API at /api/ (repeatable;\n' +
      "added to the config's admin_tokens; never an agent token)",
  },
  'state-dir': { type: 'string', arg: 'DIR', help: 'where the memory inventory is kept (config state_dir)' },
  'log-file': { type: 'string', arg: 'F', help: 'JSON-lines log file (default: JSON lines on stderr)' },
  'log-level': { type: 'string', arg: 'L', help: 'error | warn | info | debug' },
  json: { type: 'boolean', help: 'print the listening line as JSON' },
} as const satisfies Record<string, OptionSpec>;

const svmCommand = defineCommand({
  program: 'lightagent-svm',
  summary: 'the Security VM server',
  usage: '[options] | backup --out FILE | restore FILE',
  description: `Run the Security VM server: agents connect over WebSocket (lightagent/1); GET /metrics and
GET /healthz on the same port.

  lightagent-svm backup --out FILE   back up the config, the files it names and state_dir (--help)
  lightagent-svm restore FILE        restore them from such a backup (--help)`,
  options: SVM_OPTIONS,
  footer: `Plain ws:// is allowed only on a loopback address, unless insecure_plain_ws: true.

Signals: SIGHUP reloads the signatures (builtin files; clamd RELOAD; yara rules), agents are
told the new generation (builtin files and yara rules are also reloaded when they change, unless
watch_signatures: false); re-reads the config file and token file: tokens (connected agents stay unless their
token was removed or expired), policies (agents whose policy changed get it at once; a bad policy
refuses the whole reload) and the TLS certificate, key and client CA (new connections);
SIGINT/SIGTERM stop gracefully.

Example config (YAML):
  listen: 127.0.0.1:7443
  tokens: [a-long-random-token, {tenant: acme, token: another-token}]
  signatures: [/etc/lightagent/local.hdb, /etc/lightagent/local.ndb]
  max_file_size: 64 MiB
  upload_memory: 512 MiB
  log: {file: /var/log/lightagent-svm/svm.log, level: info}`,
  handler: ({ values }) => serve(values),
});

async function serve(o: Values<typeof SVM_OPTIONS>): Promise<number> {
  // Before anything is loaded: V8's heap limits for a process that receives uploads (node-flags.ts).
  const v8Runtime = applySvmRuntimeFlags();
  let cfg: SvmConfig;
  const load = () =>
    loadSvmConfig({
      file: o.config,
      flags: {
        listen: o.listen,
        tokens: o.token,
        signatures: o.signatures,
        engine: o.engine,
        'clamd.address': o.clamd,
        yara_rules: o['yara-rules'],
        'cache.store': o.cache,
        max_file_size: o['max-file-size'],
        'tls.cert': o['tls-cert'],
        'tls.key': o['tls-key'],
        'tls.client_ca': o['tls-client-ca'],
        'log.file': o['log-file'],
        'log.level': o['log-level'],
        token_file: o['token-file'],
        admin_token: o['admin-token'],
        state_dir: o['state-dir'],
      },
    });
  try {
    cfg = load();
  } catch (e) {
    return fail(e, 'lightagent-svm');
  }
  configureLogging({ level: cfg.log.level, ...(cfg.log.file ? { file: cfg.log.file } : { stderr: true }) });
  let server: SvmServer;
  let engine: ScanEngine;
  try {
    engine = await makeEngine(cfg);
    server = await SvmServer.start({
      host: cfg.listen.host,
      port: cfg.listen.port,
      tokens: cfg.tokens,
      engine,
      cache: await makeCache(cfg),
      maxFileSize: cfg.max_file_size,
      maxChunk: cfg.max_chunk,
      maxInFlight: cfg.max_in_flight,
      uploadTimeoutMs: cfg.upload_timeout,
      helloTimeoutMs: cfg.hello_timeout,
      uploadMemory: cfg.upload_memory,
      uploadMemoryPerAgent: cfg.upload_memory_per_agent,
      uploadMemoryPerTenant: cfg.upload_memory_per_tenant,
      uploadsPerAgent: cfg.uploads_per_agent,
      uploadStallMs: cfg.upload_stall_timeout,
      coalesceMs: cfg.lookup_coalesce,
      fairReadBytes: cfg.fair_read_bytes,
      rateLimit: { perSecond: cfg.rate_limit.per_second, burst: cfg.rate_limit.burst },
      scanConcurrency: cfg.scan_concurrency,
      agentQueue: cfg.agent_queue,
      maxSignatureAgeMs: cfg.max_signature_age,
      watchSignatures: cfg.watch_signatures,
      siem: cfg.siem,
      version: AGENT_VERSION,
      adminTokens: cfg.admin_tokens,
      policies: cfg.policies,
      inventory: {
        store: await makeInventoryStore(cfg),
        silentAfterMs: cfg.inventory.silent_after,
        maxAgents: cfg.inventory.max_agents,
        maxAgentsPerTenant: cfg.inventory.max_agents_per_tenant,
      },
      ...(cfg.tls ? { tls: readTlsFiles(cfg.tls, o.config ?? 'the command line') } : {}),
    });
  } catch (e) {
    return fail(e, 'lightagent-svm');
  }
  // The web console (static pages over the admin API): scanning goes on without it.
  let consoleUp = false;
  try {
    server.addRoute(consoleRoute());
    consoleUp = true;
  } catch (e) {
    logger('svm').warn('the web console is off', { message: (e as Error).message });
  }
  // V8 flags cannot be set once running: say so when the process was not started with them.
  const missing = missingNodeFlags(SVM_NODE_FLAGS);
  if (missing.length > 0)
    logger('svm').warn('started without the V8 flags the SVM runs with; a flooding tenant then costs others longer pauses', {
      missing,
      hint: `start the lightagent-svm bin or the single binary (both set them), or node ${missing.join(' ')} .../lightagent-svm.js`,
    });
  const http = server.httpUrl;
  const line = {
    event: 'listening',
    url: server.url,
    tls: server.tls.enabled,
    mutualTls: server.tls.mutual,
    metrics: `${http}/metrics`,
    healthz: `${http}/healthz`,
    ...(consoleUp ? { console: `${http}/console/` } : {}),
    engine: engine.name,
    engineHealthy: engine.healthy(),
    v8Runtime,
    cache: redactUrl(cfg.cache.store),
    cacheHealthy: server.core.cache.healthy(),
    generation: engine.generation(),
    ...(engine instanceof BuiltinEngine ? { signatures: engine.signatureCount } : {}),
    ...(engine instanceof ClamavEngine ? { clamd: engine.address } : {}),
    ...(engine instanceof YaraEngine ? { yaraRules: engine.rulesPath, rules: engine.ruleCount } : {}),
    pid: process.pid,
  };
  const what =
    engine instanceof BuiltinEngine
      ? `${engine.signatureCount} signatures`
      : engine instanceof ClamavEngine
        ? `clamd at ${engine.address}${engine.healthy() ? '' : ', NOT REACHABLE yet'}`
        : engine instanceof YaraEngine
          ? `${engine.ruleCount} YARA rules from ${engine.rulesPath}`
          : '';
  process.on('SIGHUP', () => {
    void (async () => {
      // Each part on its own: a bad token file does not keep new signatures out, and so on.
      let tokens: { tokens: number; agentsDropped: number } | undefined;
      let policies: { policies: number; agentsSent: number } | undefined;
      try {
        // A config with a bad policy is refused whole (every problem listed): nothing of it applies.
        const next = load();
        tokens = server.reloadTokens(next.tokens);
        server.reloadAdminTokens(next.admin_tokens);
        policies = server.reloadPolicies(next.policies);
        if (next.tls) server.reloadTls(readTlsFiles(next.tls, o.config ?? 'the command line'));
      } catch (e) {
        fail(e, 'lightagent-svm: reload of the configuration (tokens, policies, TLS) failed, keeping the previous ones');
      }
      try {
        const r = await server.reloadSignatures('sighup');
        const { previous: _previous, agentsTold: told, ...rest } = r;
        out(
          o.json
            ? JSON.stringify({ event: 'reloaded', ...rest, agentsTold: told, ...(tokens ?? {}), ...(policies ?? {}) })
            : `lightagent-svm: signatures reloaded (generation ${r.generation}` +
                `${typeof r.errors === 'number' ? `, ${r.errors} bad lines skipped` : ''})` +
                `${tokens ? `; ${tokens.tokens} tokens, ${tokens.agentsDropped} agents dropped` : ''}` +
                `${policies ? `; ${policies.policies} tenant policies, sent to ${policies.agentsSent} agents` : ''}`,
        );
      } catch (e) {
        fail(e, 'lightagent-svm: reload failed, keeping the previous signatures');
      }
    })();
  });
  const stopped = new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  // Said only once every signal has its handler: a reload or a stop sent the moment this line is
  // read must not meet the default action (a SIGHUP that did was the SVM's end).
  out(
    o.json
      ? JSON.stringify(line)
      : `lightagent-svm: listening on ${line.url} (engine ${line.engine}, ${what}, generation ${line.generation}); metrics ` +
          `at ${line.metrics}${consoleUp ? `; console at ${http}/console/` : ''}`,
  );
  const signal = await stopped;
  // A second signal while closing: stop at once.
  const force = () => exitAfterFlush(1);
  process.once('SIGINT', force);
  process.once('SIGTERM', force);
  await server.close();
  if (o.json) out(JSON.stringify({ event: 'stopped', signal }));
  await closeLogging();
  return 0;
}

async function makeCache(cfg: SvmConfig): Promise<SharedVerdictCache> {
  const c = cfg.cache;
  if (c.store === 'memory') return new MemoryVerdictCache(c.entries);
  // Loaded only for a Redis store: ioredis is ~5 MB of the executable's memory (docs/svm.md).
  const { RedisVerdictCache } = await import('../svm/redis-verdict-cache.js');
  return RedisVerdictCache.connect({ url: c.store, entries: c.entries, ttlMs: c.ttl, timeoutMs: c.timeout, keyPrefix: c.key_prefix });
}

async function makeInventoryStore(cfg: SvmConfig): Promise<InventoryStore> {
  const c = cfg.cache;
  // Under the shipped unit, systemd's StateDirectory= (STATE_DIRECTORY) keeps it without a setting.
  const stateDir = cfg.state_dir ?? process.env.STATE_DIRECTORY?.split(':')[0];
  if (c.store === 'memory') return new MemoryInventoryStore({ stateDir: stateDir || undefined });
  const { RedisInventoryStore } = await import('../svm/inventory/redis-store.js');
  return RedisInventoryStore.connect({ url: c.store, timeoutMs: Math.max(1000, c.timeout), keyPrefix: c.key_prefix });
}

async function makeEngine(cfg: SvmConfig): Promise<ScanEngine> {
  if (cfg.engine === 'clamav') {
    return ClamavEngine.create({
      address: cfg.clamd.address,
      poolSize: cfg.clamd.pool,
      timeoutMs: cfg.clamd.timeout,
      ...(cfg.clamd.database_dir ? { databaseDir: cfg.clamd.database_dir } : {}),
      ...(cfg.clamd.stream_max_length !== undefined ? { streamMaxLength: cfg.clamd.stream_max_length } : {}),
    });
  }
  if (cfg.engine === 'yara') return YaraEngine.create({ rules: cfg.yara_rules!, maxFileSize: cfg.max_file_size });
  return new BuiltinEngine({ signatureFiles: cfg.signatures, archives: cfg.archives });
}

const argv = process.argv.slice(2);
const command = argv[0] === 'backup' ? backupCommand : argv[0] === 'restore' ? restoreCommand : svmCommand;
command.run(command === svmCommand ? argv : argv.slice(1)).then(
  (code) => exitAfterFlush(code),
  (e: unknown) => {
    err(`lightagent-svm: internal error: ${(e as Error)?.stack ?? String(e)}`);
    exitAfterFlush(2);
  },
);
