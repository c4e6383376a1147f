/**
 * The agent's configuration: one YAML/JSON file (default /etc/lightagent/agent.yaml), then
 * environment overrides for silent installs (LIGHTAGENT_SVM_URL, LIGHTAGENT_TOKEN, LIGHTAGENT_CA),
 * then command-line flags. Every problem is reported at once with its key path.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as z from 'zod';
import { ConfigError } from '../errors.js';
import { duration, override, parseConfig, readConfigFile, size } from './load.js';
import { exclusionsSchema, NO_EXCLUSIONS } from './exclusions.js';
import { POLICY_KEYS } from '../protocol/index.js';
import { scanScheduleSchema } from './scan-schedule.js';

export const DEFAULT_CONFIG_FILE = '/etc/lightagent/agent.yaml';

const wsUrl = z.string().refine((u) => {
  try {
    const p = new URL(u);
    return p.protocol === 'ws:' || p.protocol === 'wss:';
  } catch {
    return false;
  }
}, 'must be a ws:// or wss:// URL, e.g. wss://svm.example:7443');

/** One SVM of a prioritized list: a URL, or {url, priority}; lower priority is preferred (default: its position). */
const svmListEntry = z.union([wsUrl, z.object({ url: wsUrl, priority: z.number().int().min(0).max(1000).optional() }).strict()]);

const httpUrl = z
  .string()
  .max(2048)
  .refine((u) => {
    try {
      const p = new URL(u);
      return p.protocol === 'http:' || p.protocol === 'https:';
    } catch {
      return false;
    }
  }, 'must be an http:// or https:// URL that answers a JSON list of SVMs');

const absPath = z
  .string()
  .min(1)
  .refine((p) => path.isAbsolute(p), 'must be an absolute path');

export const agentConfigSchema = z
  .object({
    /** One SVM URL, or a prioritized list of them (at most 16). */
    svm: z.union([wsUrl, z.array(svmListEntry).min(1, 'must list at least one SVM').max(16, 'at most 16 SVMs')]).optional(),
    /** An http(s) URL answering a JSON list of SVMs, merged with `svm` (the config wins). */
    svm_discovery: httpUrl.optional(),
    svm_discovery_interval: duration().default(300_000),
    /** A recovered preferred SVM must stay up this long before the agent returns to it. */
    svm_hold_down: duration().default(10_000),
    /** State reports to the SVM (feature state-report): a heartbeat this often besides changes; never under 30 s. */
    state_report_interval: duration()
      .refine((ms) => ms >= 30_000, 'must be at least 30s (state reports are never chatty)')
      .default(300_000),
    /** Allow plain ws:// to an SVM on another host (token and file contents in clear). */
    allow_plain_ws: z.boolean().default(false),
    /** PEM client certificate and key for mutual TLS with the SVM. */
    tls_cert: absPath.optional(),
    tls_key: absPath.optional(),
    token: z.string().min(1, 'must not be empty').optional(),
    /** PEM file of the CA that signed the SVM certificate (pinned). */
    ca: absPath.optional(),
    deadline: duration().default(2000),
    max_file_size: size().default(64 * 1024 * 1024),
    on_svm_unavailable: z.enum(['allow', 'deny']).default('allow'),
    /** deny: deny + quarantine; deny-and-kill: also kill the writer / runner of an infected file (docs/processes.md). */
    on_detect: z.enum(['deny', 'deny-and-kill']).default('deny'),
    /** Never killed by on_detect: absolute exe paths, or bare exe file names. */
    protected_processes: z.array(z.string().min(1).max(4096)).max(1000).default([]),
    processes: z
      .object({
        watcher: z.enum(['auto', 'connector', 'proc-poll', 'off']).default('auto'),
        table_entries: z.number().int().min(256).max(1_000_000).default(32_768),
        poll_interval: duration().default(1000),
        events_file_size: size().default(4 * 1024 * 1024),
      })
      .strict()
      .default({ watcher: 'auto', table_entries: 32_768, poll_interval: 1000, events_file_size: 4 * 1024 * 1024 }),
    protect: z.array(absPath).default([]),
    /** Settings of this file that a policy from the SVM does not override (docs/policies.md). */
    local_keys: z.array(z.enum(POLICY_KEYS)).max(POLICY_KEYS.length).default([]),
    /** Scheduled scan jobs of the protected trees: {every, at?, spread?} (src/config/scan-schedule.ts, docs/scans.md). */
    scan_schedule: scanScheduleSchema.optional(),
    /** What is left alone: a list of paths, or {paths, extensions, processes, sha256, threats} (src/config/exclusions.ts). */
    exclude: exclusionsSchema.default(() => ({ ...NO_EXCLUSIONS })),
    state_dir: absPath.default('/var/lib/lightagent'),
    /** status.sock and control.sock; default /run/lightagent (or <state_dir>.run beside a non-default state_dir). */
    socket_dir: absPath.optional(),
    cache: z
      .object({
        entries: z.number().int().min(1024).max(50_000_000).default(1_000_000),
        save_interval: duration().default(300_000),
      })
      .strict()
      .default({ entries: 1_000_000, save_interval: 300_000 }),
    log: z
      .object({
        file: absPath.optional(),
        level: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
      })
      .strict()
      .default({ level: 'info' }),
  })
  .strict();

export type AgentConfig = z.output<typeof agentConfigSchema>;

export interface AgentConfigSources {
  /** Explicit --config; when absent the default file is read only if it exists. */
  file?: string | undefined;
  env?: NodeJS.ProcessEnv;
  /** Flags, by dotted key (`svm`, `token`, `deadline`, `protect`...). Undefined values are ignored. */
  flags?: Record<string, unknown>;
}

export function loadAgentConfig(src: AgentConfigSources = {}): AgentConfig {
  const env = src.env ?? process.env;
  let raw: Record<string, unknown> = {};
  let source = 'defaults';
  const file = src.file ?? env.LIGHTAGENT_CONFIG ?? (fs.existsSync(DEFAULT_CONFIG_FILE) ? DEFAULT_CONFIG_FILE : undefined);
  if (file) {
    const doc = readConfigFile(file);
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
      throw new ConfigError(file, ['(top level): must be a mapping of settings']);
    raw = { ...(doc as Record<string, unknown>) };
    source = file;
  }
  override(raw, 'svm', env.LIGHTAGENT_SVM_URL || undefined);
  override(raw, 'token', env.LIGHTAGENT_TOKEN || undefined);
  override(raw, 'ca', env.LIGHTAGENT_CA || undefined);
  for (const [k, v] of Object.entries(src.flags ?? {})) {
    // --exclude PATH replaces the paths only: the file's other kinds of exclusion stay.
    const ex = raw.exclude;
    if (k === 'exclude' && v !== undefined && typeof ex === 'object' && ex !== null && !Array.isArray(ex))
      raw.exclude = { ...ex, paths: v };
    else override(raw, k, v);
  }
  return parseConfig(agentConfigSchema, raw, source);
}

/** The SVM URL and token are needed by every command that talks to an SVM. */
export function requireSvm(cfg: AgentConfig): { svm: NonNullable<AgentConfig['svm']> | undefined; token: string } {
  const issues: string[] = [];
  if (!cfg.svm && !cfg.svm_discovery)
    issues.push('svm: no SVM URL; pass --svm ws://HOST:PORT, set `svm:` (or `svm_discovery:`) in the config file or LIGHTAGENT_SVM_URL');
  if (!cfg.tls_cert !== !cfg.tls_key) issues.push(`${cfg.tls_cert ? 'tls_key' : 'tls_cert'}: mutual TLS needs both tls_cert and tls_key`);
  if (!cfg.token) issues.push('token: no tenant token; pass --token T, set `token:` in the config file or LIGHTAGENT_TOKEN');
  if (issues.length) throw new ConfigError('the command line', issues);
  return { svm: cfg.svm, token: cfg.token! };
}
