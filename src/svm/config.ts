/**
 * The SVM's configuration: a YAML/JSON file, then LIGHTAGENT_SVM_TOKEN (added to the file's
 * tokens, tenant `default`), then flags (`--token` replaces the list). Every problem is reported
 * at once with its key path.
 *
 *   listen: 127.0.0.1:7443          # HOST:PORT; plain ws only on loopback unless tls or insecure_plain_ws
 *   tls: {cert: /etc/lightagent/svm.crt, key: /etc/lightagent/svm.key, client_ca: /etc/lightagent/agents-ca.crt}
 *                                   # wss://; with client_ca, mutual TLS (agents need a certificate signed by it)
 *   tokens: [secret-token, {tenant: acme, token: other-secret, expires: 2026-12-31}]
 *   token_file: /etc/lightagent/svm-tokens.yaml   # a YAML/JSON list like `tokens`, re-read on SIGHUP
 *   rate_limit: {per_second: 5000, burst: 20000}  # per agent: lookups + scans; over it: LA_ERR_RATE_LIMITED
 *                                    # (one guest reading a tree cold asks ~2 per file; the agent backs off and retries)
 *   scan_concurrency: 8              # engine scans at once, all agents; waiting scans are served round-robin by agent
 *   agent_queue: 16                  # per agent: scans waiting for the engine; more: LA_ERR_RATE_LIMITED
 *   engine: builtin                 # or clamav: a running clamd judges the files; or yara: YARA-X in this process
 *   yara_rules: /etc/lightagent/yara  # engine yara: a .yar file or a directory of .yar/.yara files
 *   signatures: [/etc/lightagent/sigs/local.hdb, /etc/lightagent/sigs/local.ndb]   # builtin only
 *   max_signature_age: 7d           # older signatures are stale: /healthz degraded, event signatures-stale
 *   watch_signatures: true          # builtin/yara: reload when the signature files change (no SIGHUP needed)
 *   archives: {enabled: true, max_depth: 16, max_members: 10000, max_unpacked: 256 MiB,
 *              max_member_size: 256 MiB, max_ratio: 250, timeout: 30s, alert_encrypted: true}
 *                                   # builtin only: what it unpacks from one file (zip, gzip, bzip2, tar,
 *                                   # cpio, mail); past a limit: detection Heuristics.Limits.Exceeded.*
 *   clamd: /run/clamav/clamd.ctl    # or {address: tcp://10.0.0.5:3310, pool: 8, timeout: 30s,
 *                                   #     database_dir: /var/lib/clamav, stream_max_length: 25 MiB}
 *   max_file_size: 64 MiB
 *   max_chunk: 1 MiB                # 4 KiB .. 1 MiB
 *   max_in_flight: 32
 *   upload_timeout: 30s
 *   hello_timeout: 5s
 *   upload_memory: 512 MiB          # upload bytes held at once, all agents together
 *   upload_memory_per_agent: 64 MiB # one agent's share (default: max(max_file_size, upload_memory / 8))
 *   upload_memory_per_tenant: 256 MiB # one tenant's share (default: upload_memory / 2 with several tenants)
 *   uploads_per_agent: 16           # uploads receiving at once per agent; more: LA_ERR_BUSY
 *   upload_stall_timeout: 5s        # an upload with no data for this long is dropped
 *   fair_read_bytes: 256 KiB        # one tenant's frames per event-loop turn while others are active; 0: off
 *   lookup_coalesce: 500ms          # longest wait of a lookup for another agent's upload of it
 *   cache: memory                   # or redis://10.0.0.9:6379: verdicts shared by every SVM using it
 *   # cache: {store: redis://10.0.0.9:6379, entries: 1000000, ttl: 7d, timeout: 250ms, key_prefix: 'lightagent:v1:'}
 *   #   entries: the memory tier (in front of redis); ttl: expiry in redis; timeout: per redis command
 *   log: {file: /var/log/lightagent-svm/svm.log, level: info}
 *   siem:                           # SIEM export (docs/siem.md): syslog RFC 5424 (JSON body) or CEF, up to 16
 *     - address: tls://siem.example:6514   # udp:// (one datagram each), tcp:// or tls:// (RFC 5425 framing)
 *       ca: /etc/lightagent/siem-ca.crt    # tls: pinned CA of the receiver; cert/key: our client certificate
 *       format: rfc5424                    # or cef
 *       events: [detection, protection, agent-silent, policy, signatures]   # default: all
 *       tenants: [acme]                    # only these tenants' events (default: all)
 *       name: siem-main                    # metric label (default host:port)
 *       buffer: {events: 10000, bytes: 8 MiB}   # queued while the receiver is down; past it the busiest tenant's oldest go
 *       facility: local0                   # app_name: lightagent-svm; max_message: 8 KiB (udp 2 KiB)
 *   # The agent inventory and the admin API (docs/console.md):
 *   state_dir: /var/lib/lightagent-svm  # what the SVM keeps: the memory inventory in <state_dir>/inventory.json;
 *                                   # default: systemd's $STATE_DIRECTORY under the unit, else none (not kept);
 *                                   # `lightagent-svm backup` takes all of it
 *   inventory: {silent_after: 15m, max_agents: 20000, max_agents_per_tenant: 10000}
 *   admin_tokens: [{token: a-long-admin-token, role: admin}, {token: another, role: viewer, tenant: acme}]
 *   admin_token_file: /etc/lightagent/svm-admin-tokens.yaml   # a YAML/JSON list like admin_tokens, re-read on SIGHUP
 *   policies:                       # central agent settings per tenant, groups by host glob or agent id (docs/policies.md)
 *     acme: {deadline: 3s, exclude: {paths: [/srv/cache/**]}, groups: [{name: build, hosts: [build-*], deadline: 10s}]}
 */
import fs from 'node:fs';
import * as z from 'zod';
import { ConfigError } from '../errors.js';
import { duration, override, parseConfig, readConfigFile, size } from '../config/load.js';
import { FRAME_LIMITS } from '../protocol/index.js';
import { DEFAULT_ARCHIVE_LIMITS as A } from './engines/containers/limits.js';
import type { SiemDestination } from './siem/export.js';
import { FACILITIES, SIEM_EVENT_CLASSES } from './siem/format.js';
import { checkPolicies, policiesBlock } from './policies.js';

const archives = z
  .object({
    enabled: z.boolean().default(A.enabled),
    max_depth: z.number().int().min(1).max(64).default(A.maxDepth),
    max_members: z.number().int().min(1).max(10_000_000).default(A.maxMembers),
    max_unpacked: size()
      .refine((n) => n >= 1024 * 1024, 'must be at least 1 MiB')
      .default(A.maxUnpacked),
    max_member_size: size()
      .refine((n) => n >= 64 * 1024, 'must be at least 64 KiB')
      .default(A.maxMemberSize),
    max_ratio: z.number().min(10).max(100_000).default(A.maxRatio),
    timeout: duration()
      .refine((ms) => ms >= 100, 'must be at least 100ms')
      .default(A.timeoutMs),
    alert_encrypted: z.boolean().default(A.alertEncrypted),
  })
  .strict()
  .transform((a) => ({
    enabled: a.enabled,
    maxDepth: a.max_depth,
    maxMembers: a.max_members,
    maxUnpacked: a.max_unpacked,
    maxMemberSize: a.max_member_size,
    maxRatio: a.max_ratio,
    timeoutMs: a.timeout,
    alertEncrypted: a.alert_encrypted,
  }));

const listen = z.string().transform((v, ctx) => {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):(\d{1,5})$/.exec(v.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `${JSON.stringify(v)} is not HOST:PORT (examples: 127.0.0.1:7443, 0.0.0.0:7443, [::1]:7443)` });
    return z.NEVER;
  }
  return { host: (m[1] ?? m[2])!, port };
});

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

// A plain string is a token of tenant `default`.
const token = z.preprocess(
  (v) => (typeof v === 'string' ? { tenant: 'default', token: v } : v),
  z
    .object({
      tenant: z
        .string()
        .min(1)
        .max(64)
        .regex(/^[A-Za-z0-9._-]+$/, 'a tenant name has letters, digits, . _ - only'),
      token: z.string().min(8, 'a token must have at least 8 characters').max(1024),
      expires: z
        .string()
        .refine((v) => Number.isFinite(Date.parse(v)), 'must be a date, e.g. 2026-12-31 or 2026-12-31T00:00:00Z')
        .optional(),
    })
    .strict()
    .transform(({ expires, ...t }) => (expires ? { ...t, expiresAt: Date.parse(expires) } : t)),
);

// --- SIEM export (docs/siem.md; src/svm/siem/) ---
const SIEM_DEFAULT_PORT = { udp: 514, tcp: 514, tls: 6514 } as const;
const siemDestination = z
  .object({
    address: z.string().transform((v, ctx) => {
      const m = /^(udp|tcp|tls):\/\/(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+))(?::(\d{1,5}))?$/.exec(v.trim());
      const protocol = m?.[1] as keyof typeof SIEM_DEFAULT_PORT | undefined;
      const port = m?.[4] ? Number(m[4]) : protocol ? SIEM_DEFAULT_PORT[protocol] : NaN;
      if (!m || !protocol || port < 1 || port > 65535) {
        ctx.addIssue({
          code: 'custom',
          message: `${JSON.stringify(v)} is not a syslog address (examples: tls://siem.example:6514, tcp://10.0.0.7:514, udp://[::1]:514)`,
        });
        return z.NEVER;
      }
      return { protocol, host: (m[2] ?? m[3])!, port };
    }),
    name: z
      .string()
      .regex(/^[A-Za-z0-9._:[\]-]{1,64}$/, 'a destination name has 1 to 64 letters, digits, . _ : - [ ] (it is a metric label)')
      .optional(),
    format: z.enum(['rfc5424', 'cef']).default('rfc5424'),
    events: z
      .array(z.enum(SIEM_EVENT_CLASSES))
      .min(1)
      .default([...SIEM_EVENT_CLASSES]),
    tenants: z.array(z.string().min(1).max(64)).min(1).optional(),
    ca: z.string().min(1).optional(),
    cert: z.string().min(1).optional(),
    key: z.string().min(1).optional(),
    buffer: z
      .object({
        events: z.number().int().min(1).max(10_000_000).default(10_000),
        bytes: size()
          .refine((n) => n >= 64 * 1024 && n <= 4 * 1024 * 1024 * 1024, 'must be from 64 KiB to 4 GiB')
          .default(8 * 1024 * 1024),
      })
      .strict()
      .default({ events: 10_000, bytes: 8 * 1024 * 1024 }),
    facility: z
      .union([z.enum(FACILITIES), z.number().int().min(0).max(23)], {
        error: 'must be a facility name (local0 .. local7, daemon, auth, security, ...) or its number 0 .. 23',
      })
      .default('local0')
      .transform((f) => (typeof f === 'number' ? f : FACILITIES.indexOf(f))),
    app_name: z
      .string()
      .regex(/^[\x21-\x7e]{1,48}$/, 'an APP-NAME is 1 to 48 printable ASCII characters, no space (RFC 5424)')
      .default('lightagent-svm'),
    // RFC 5426: UDP receivers should take 2048 bytes; rsyslog takes 8 KiB by default.
    max_message: size()
      .refine((n) => n >= 480 && n <= 65_507, 'must be from 480 to 65507 bytes')
      .optional(),
  })
  .strict()
  .superRefine((d, ctx) => {
    const tls = d.address.protocol === 'tls';
    if (tls && !d.ca)
      ctx.addIssue({
        code: 'custom',
        path: ['ca'],
        message: "tls:// needs ca: the PEM CA that signed the receiver's certificate (pinned)",
      });
    for (const k of ['ca', 'cert', 'key'] as const)
      if (!tls && d[k]) ctx.addIssue({ code: 'custom', path: [k], message: `${k} is for tls:// destinations only` });
    if (!d.cert !== !d.key) ctx.addIssue({ code: 'custom', path: [d.cert ? 'key' : 'cert'], message: 'cert and key go together' });
    if (d.max_message !== undefined && d.max_message > d.buffer.bytes)
      ctx.addIssue({ code: 'custom', path: ['max_message'], message: 'must not exceed buffer.bytes' });
  })
  .transform((d): SiemDestination => {
    const { protocol, host, port } = d.address;
    return {
      name: d.name ?? `${host.includes(':') ? `[${host}]` : host}:${port}`,
      protocol,
      host,
      port,
      format: d.format,
      events: d.events,
      tenants: d.tenants,
      ca: d.ca,
      cert: d.cert,
      key: d.key,
      buffer: d.buffer,
      facility: d.facility,
      appName: d.app_name,
      maxMessage: d.max_message ?? (protocol === 'udp' ? 2048 : 8192),
    };
  });
const siem = z
  .array(siemDestination)
  .max(16)
  .default([])
  .superRefine((list, ctx) => {
    const seen = new Set<string>();
    list.forEach((d, i) => {
      if (seen.has(d.name))
        ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `two destinations are named ${d.name}: give each its own name` });
      seen.add(d.name);
    });
  });
// --- end SIEM export ---
// ---- inventory and admin API (docs/console.md): state_dir, inventory, admin_tokens, admin_token_file ----
const adminToken = z.preprocess(
  (v) => (typeof v === 'string' ? { token: v, role: 'admin' } : v),
  z
    .object({
      token: z.string().min(16, 'an admin token must have at least 16 characters').max(1024),
      role: z.enum(['admin', 'viewer']),
      tenant: z
        .string()
        .min(1)
        .max(64)
        .regex(/^[A-Za-z0-9._-]+$/, 'a tenant name has letters, digits, . _ - only')
        .optional(),
    })
    .strict()
    .superRefine((t, ctx) => {
      if (t.role === 'viewer' && !t.tenant)
        ctx.addIssue({ code: 'custom', path: ['tenant'], message: 'a viewer token needs the tenant it may see' });
      if (t.role === 'admin' && t.tenant)
        ctx.addIssue({ code: 'custom', path: ['tenant'], message: 'an admin token sees every tenant; use role: viewer for one tenant' });
    }),
);
const inventorySettings = z
  .object({
    silent_after: duration()
      .refine((ms) => ms >= 1000 && ms <= 30 * 24 * 3600 * 1000, 'must be from 1s to 30d')
      .default(15 * 60_000),
    max_agents: z.number().int().min(1).max(1_000_000).default(20_000),
    max_agents_per_tenant: z.number().int().min(1).max(1_000_000).default(10_000),
  })
  .strict();
const inventoryKeys = {
  state_dir: z.string().min(1).optional(),
  inventory: z.preprocess((v) => v ?? {}, inventorySettings),
  admin_tokens: z.array(adminToken).max(1000).default([]),
  admin_token_file: z.string().min(1).optional(),
};
/** An admin token that is also an agent token: refused, naming the key. */
function checkAdminTokens(
  c: { tokens: ReadonlyArray<{ token: string }>; admin_tokens: ReadonlyArray<{ token: string }> },
  ctx: z.RefinementCtx,
): void {
  const agent = new Set(c.tokens.map((t) => t.token));
  c.admin_tokens.forEach((t, i) => {
    if (agent.has(t.token))
      ctx.addIssue({
        code: 'custom',
        path: ['admin_tokens', i],
        message: 'this admin token is also an agent token (tokens); an agent must never read the admin API: give each its own',
      });
  });
}
// ---- end of inventory and admin API ----

export const svmConfigSchema = z
  .object({
    listen: listen.default({ host: '127.0.0.1', port: 7443 }),
    tokens: z.array(token).min(1, 'at least one tenant token is needed (flag --token, LIGHTAGENT_SVM_TOKEN, or token_file)'),
    token_file: z.string().min(1).optional(),
    rate_limit: z
      .object({
        per_second: z.number().min(1).max(1_000_000).default(5000),
        burst: z.number().int().min(1).max(10_000_000).default(20_000),
      })
      .strict()
      .default({ per_second: 5000, burst: 20_000 }),
    scan_concurrency: z.number().int().min(1).max(1024).default(8),
    agent_queue: z.number().int().min(0).max(100_000).default(16),
    engine: z.enum(['builtin', 'clamav', 'yara']).default('builtin'),
    yara_rules: z.string().min(1).optional(),
    // A plain string is the clamd address.
    clamd: z.preprocess(
      (v) => (typeof v === 'string' ? { address: v } : v),
      z
        .object({
          address: z.string().min(1).default('/run/clamav/clamd.ctl'),
          pool: z.number().int().min(1).max(256).default(8),
          timeout: duration()
            .refine((ms) => ms >= 100, 'must be at least 100ms')
            .default(30_000),
          database_dir: z.string().min(1).optional(),
          stream_max_length: size().optional(),
        })
        .strict()
        .default({ address: '/run/clamav/clamd.ctl', pool: 8, timeout: 30_000 }),
    ),
    signatures: z.array(z.string().min(1)).default([]),
    // Signature freshness and updates (docs/svm.md, "Signature updates"): one block.
    max_signature_age: duration()
      .refine((ms) => ms >= 60_000 && ms <= 3650 * 86_400_000, 'must be from 1m to 3650d')
      .default(7 * 86_400_000),
    watch_signatures: z.boolean().default(true),
    archives: z.preprocess((v) => v ?? {}, archives),
    max_file_size: size().default(64 * 1024 * 1024),
    max_chunk: size()
      .refine((n) => n >= 4096 && n <= FRAME_LIMITS.maxChunk, `must be from 4 KiB to ${FRAME_LIMITS.maxChunk} bytes`)
      .default(FRAME_LIMITS.maxChunk),
    max_in_flight: z.number().int().min(1).max(1024).default(32),
    upload_timeout: duration()
      .refine((ms) => ms >= 100, 'must be at least 100ms')
      .default(30_000),
    hello_timeout: duration()
      .refine((ms) => ms >= 100, 'must be at least 100ms')
      .default(5_000),
    upload_memory: size().default(512 * 1024 * 1024),
    // Fairness of uploads (docs/svm.md): shares of upload_memory, per agent and per tenant.
    upload_memory_per_agent: size().optional(),
    upload_memory_per_tenant: size().optional(),
    uploads_per_agent: z.number().int().min(1).max(1024).default(16),
    upload_stall_timeout: duration()
      .refine((ms) => ms >= 100, 'must be at least 100ms')
      .default(5_000),
    // The longest a lookup of content another agent is uploading waits for its verdict (coalesce.ts).
    // One tenant's frames handled per event-loop turn while other tenants are active (read-gate.ts).
    fair_read_bytes: size()
      .refine((n) => n === 0 || n >= 64 * 1024, 'must be 0 (off) or at least 64 KiB')
      .default(256 * 1024),
    lookup_coalesce: duration()
      .refine((ms) => ms <= 10_000, 'must be at most 10s')
      .default(500),
    // A plain string is the store: `memory` or a redis:// URL.
    cache: z.preprocess(
      (v) => (typeof v === 'string' ? { store: v } : v),
      z
        .object({
          store: z
            .string()
            .refine(
              (v) => v === 'memory' || /^rediss?:\/\/[^\s]+$/.test(v),
              'must be memory or a redis://HOST:PORT (rediss:// for TLS) URL',
            )
            .default('memory'),
          entries: z.number().int().min(1).max(100_000_000).default(1_000_000),
          ttl: duration()
            .refine((ms) => ms >= 1000, 'must be at least 1s')
            .default(7 * 24 * 3600 * 1000),
          timeout: duration()
            .refine((ms) => ms >= 10 && ms <= 10_000, 'must be from 10ms to 10s')
            .default(250),
          key_prefix: z.string().max(64).default('lightagent:v1:'),
        })
        .strict()
        .default({ store: 'memory', entries: 1_000_000, ttl: 7 * 24 * 3600 * 1000, timeout: 250, key_prefix: 'lightagent:v1:' }),
    ),
    ...inventoryKeys,
    insecure_plain_ws: z.boolean().default(false),
    tls: z
      .object({
        cert: z.string().min(1),
        key: z.string().min(1),
        client_ca: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
    siem,
    policies: z.preprocess((v) => v ?? {}, policiesBlock),
    log: z
      .object({ file: z.string().optional(), level: z.enum(['error', 'warn', 'info', 'debug']).default('info') })
      .strict()
      .default({ level: 'info' }),
  })
  .strict()
  .superRefine((c, ctx) => {
    // Plain ws carries tokens and file content in clear: only on loopback unless explicitly allowed.
    if (!isLoopback(c.listen.host) && !c.insecure_plain_ws && !c.tls) {
      ctx.addIssue({
        code: 'custom',
        path: ['listen'],
        message:
          `${c.listen.host} is not a loopback address, and plain ws would carry tokens and file content in clear: ` +
          `set tls.cert and tls.key (--tls-cert, --tls-key), listen on 127.0.0.1, or set insecure_plain_ws: true on a network you trust`,
      });
    }
    if (c.upload_memory < c.max_file_size) {
      ctx.addIssue({
        code: 'custom',
        path: ['upload_memory'],
        message:
          `${c.upload_memory} bytes is less than max_file_size (${c.max_file_size}): the largest files would always ` +
          `be refused as busy; raise upload_memory or lower max_file_size`,
      });
    }
    for (const k of ['upload_memory_per_agent', 'upload_memory_per_tenant'] as const) {
      const v = c[k];
      if (v !== undefined && v < c.max_file_size)
        ctx.addIssue({
          code: 'custom',
          path: [k],
          message:
            `${v} bytes is less than max_file_size (${c.max_file_size}): the largest files could never be uploaded; ` +
            `raise ${k} or lower max_file_size`,
        });
    }
    if (c.engine === 'yara' && !c.yara_rules)
      ctx.addIssue({
        code: 'custom',
        path: ['yara_rules'],
        message: 'engine yara needs its rules: a .yar file or a directory of .yar/.yara files (flag --yara-rules)',
      });
    const seen = new Map<string, string>();
    c.tokens.forEach((t, i) => {
      const other = seen.get(t.token);
      if (other !== undefined && other !== t.tenant)
        ctx.addIssue({
          code: 'custom',
          path: ['tokens', i],
          message: `the same token is given for tenants ${other} and ${t.tenant}; each tenant needs its own`,
        });
      seen.set(t.token, t.tenant);
    });
    checkAdminTokens(c, ctx);
    checkPolicies(c.policies, new Set(c.tokens.map((t) => t.tenant)), (path, message) =>
      ctx.addIssue({ code: 'custom', path: ['policies', ...path], message }),
    );
  });

export type SvmConfig = z.output<typeof svmConfigSchema>;

/** Read the PEM files named by `tls` (a ConfigError naming the file and key when one cannot be read). */
export function readTlsFiles(
  tls: NonNullable<SvmConfig['tls']>,
  source = 'the SVM configuration',
): { cert: Buffer; key: Buffer; ca?: Buffer; requestCert: boolean } {
  const issues: string[] = [];
  const read = (key: string, file: string): Buffer => {
    try {
      const b = fs.readFileSync(file);
      if (b.length > 1 << 20) issues.push(`tls.${key}: ${file} is over 1 MiB; is it really a PEM file?`);
      else if (!b.includes('-----BEGIN ')) issues.push(`tls.${key}: ${file} is not PEM (no -----BEGIN line)`);
      return b;
    } catch (e) {
      issues.push(`tls.${key}: ${file}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      return Buffer.alloc(0);
    }
  };
  const cert = read('cert', tls.cert);
  const key = read('key', tls.key);
  const ca = tls.client_ca ? read('client_ca', tls.client_ca) : undefined;
  if (issues.length) throw new ConfigError(source, issues);
  return { cert, key, ...(ca ? { ca } : {}), requestCert: !!ca };
}

/** admin_token_file (or the flag) adds its list to admin_tokens; --admin-token (flag admin_token) adds role-admin tokens. */
function readAdminTokenFile(raw: Record<string, unknown>, flags: Record<string, unknown> | undefined): void {
  raw.admin_tokens ??= [];
  const file =
    (flags?.admin_token_file as string | undefined) ?? (typeof raw.admin_token_file === 'string' ? raw.admin_token_file : undefined);
  if (file) {
    const list = readConfigFile(file);
    if (!Array.isArray(list))
      throw new ConfigError(file, [
        '(top level): an admin token file is a list: `- {token: X, role: admin}` or `- {token: X, role: viewer, tenant: T}`',
      ]);
    if (Array.isArray(raw.admin_tokens)) raw.admin_tokens = [...(raw.admin_tokens as unknown[]), ...list];
  }
  const flag = flags?.admin_token as string[] | string | undefined;
  if (flag !== undefined && Array.isArray(raw.admin_tokens))
    raw.admin_tokens = [
      ...(raw.admin_tokens as unknown[]),
      ...(Array.isArray(flag) ? flag : [flag]).map((token) => ({ token, role: 'admin' })),
    ];
}

export function loadSvmConfig(src: { file?: string | undefined; env?: NodeJS.ProcessEnv; flags?: Record<string, unknown> }): SvmConfig {
  const env = src.env ?? process.env;
  let raw: Record<string, unknown> = {};
  let source = 'the command line';
  if (src.file) {
    const doc = readConfigFile(src.file);
    if (typeof doc !== 'object' || doc === null || Array.isArray(doc))
      throw new ConfigError(src.file, ['(top level): must be a mapping of settings']);
    raw = { ...(doc as Record<string, unknown>) };
    source = src.file;
  }
  raw.tokens ??= [];
  const tokenFile = (src.flags?.token_file as string | undefined) ?? (typeof raw.token_file === 'string' ? raw.token_file : undefined);
  if (tokenFile) {
    const list = readConfigFile(tokenFile);
    if (!Array.isArray(list))
      throw new ConfigError(tokenFile, [
        '(top level): a token file is a list of tokens: `- token` or `- {tenant: T, token: X, expires: 2026-12-31}`',
      ]);
    if (Array.isArray(raw.tokens)) raw.tokens = [...(raw.tokens as unknown[]), ...list];
  }
  readAdminTokenFile(raw, src.flags);
  // Not a list: left as is for the schema to report.
  if (env.LIGHTAGENT_SVM_TOKEN && Array.isArray(raw.tokens)) raw.tokens = [...(raw.tokens as unknown[]), env.LIGHTAGENT_SVM_TOKEN];
  for (const [k, v] of Object.entries(src.flags ?? {})) if (k !== 'admin_token') override(raw, k, v);
  return parseConfig(svmConfigSchema, raw, source);
}
