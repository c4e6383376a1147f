/**
 * The SVM server: one HTTP server on one port for the agents' WebSocket (`lightagent/1`, rules in
 * session.ts), Prometheus text at GET /metrics and health at GET /healthz.
 *
 * The server owns the engine and the cache it is given: `close()` closes them.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { createSecureContext as tlsCreateSecureContext, type TLSSocket } from 'node:tls';
import os from 'node:os';
import { WebSocketServer, type WebSocket } from 'ws';
import { ConfigError, LightagentError } from '../errors.js';
import { AdminTokenStore, type AdminToken } from './admin/auth.js';
import { createAdminApi, type SvmInfo } from './admin/api.js';
import { Inventory, type InventoryOptions } from './inventory/inventory.js';
import { MemoryInventoryStore } from './inventory/memory-store.js';
import type { InventoryStore } from './inventory/types.js';
import { logger } from '../log.js';
import { CHUNK_HEADER, CloseCode, FEATURES, FRAME_LIMITS, PROTOCOL } from '../protocol/index.js';
import { SvmCore, type CoreOptions } from './core.js';
import type { ScanEngine } from './engines/engine.js';
import type { MetricsSnapshot } from './metrics.js';
import { PolicyBook } from './policies.js';
import { Reporter } from './reports.js';
import { SignatureWatcher, watchedSignaturePaths } from './signature-watch.js';
import { AgentSession } from './session.js';
import { SiemExport, type SiemDestination, type SiemExportOptions } from './siem/export.js';
import type { TenantToken } from './tokens.js';
import { ScanCommands } from './scan-commands.js';
import type { SharedVerdictCache } from './verdict-cache.js';

/**
 * TLS for the agents' connections (wss://) and /metrics, /healthz (https://). With `ca` and
 * `requestCert`, mutual TLS: an agent must present a certificate signed by `ca`, or the TLS
 * handshake fails before any lightagent/1 frame is read.
 */
export interface SvmTlsOptions {
  /** PEM certificate chain of the SVM. */
  cert: string | Buffer;
  /** PEM private key of `cert`. */
  key: string | Buffer;
  /** PEM CA certificate(s) that sign agent certificates. */
  ca?: string | Buffer;
  /** Ask agents for a certificate and refuse those without one valid under `ca`. */
  requestCert?: boolean;
}

export interface SvmOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 7443; 0 picks a free port (read it back from `address`). */
  port?: number;
  /** Tenant tokens in clear (kept only as SHA-256 hashes). */
  tokens: readonly TenantToken[];
  engine: ScanEngine;
  cache: SharedVerdictCache;
  /** Reported in `welcome`; default `<hostname>-<6 hex>`. */
  svmId?: string;
  maxFileSize?: number;
  /** Largest chunk payload accepted; capped at the protocol's FRAME_LIMITS.maxChunk. */
  maxChunk?: number;
  maxInFlight?: number;
  uploadTimeoutMs?: number;
  helloTimeoutMs?: number;
  uploadMemory?: number;
  /** Upload bytes one agent may hold (default max(maxFileSize, uploadMemory / 8)). */
  uploadMemoryPerAgent?: number;
  /** Upload bytes one tenant's agents may hold together (default uploadMemory / 2 with several tenants). */
  uploadMemoryPerTenant?: number;
  /** Uploads one agent may have receiving at once (default 16). */
  uploadsPerAgent?: number;
  /** An upload with no chunk for this long is dropped (default 5000). */
  uploadStallMs?: number;
  /** A lookup that misses makes lookups of the same content wait this long for its upload (default 500; 0: never). */
  coalesceMs?: number;
  /** Bytes of one tenant's frames handled per event-loop turn while other tenants are active (default 256 KiB; 0: off). */
  fairReadBytes?: number;
  /** Interval of load/generation reports to agents; default 2000, never under 1000. */
  reportIntervalMs?: number;
  /** How long close() waits for agents to finish the close handshake before dropping them. */
  closeGraceMs?: number;
  /** Per agent: requests (lookups + scans) per second and burst; default 500/s, burst 1000. */
  rateLimit?: { perSecond: number; burst: number };
  /** Engine scans at once, all agents together (default 8). */
  scanConcurrency?: number;
  /** Per agent: engine scans waiting for a slot (default 16). */
  agentQueue?: number;
  /** Serve wss:// (and https:// for /metrics, /healthz); plain ws:// without it. */
  tls?: SvmTlsOptions;
  /** Signatures older than this are stale: /healthz degraded, event `signatures-stale` (default 7 days). */
  maxSignatureAgeMs?: number;
  /** How often the generation and the age are checked for events (default 10 s). */
  signatureCheckMs?: number;
  /**
   * Reload when the builtin signature files or the YARA rules change (fs.watch, and polling every
   * `pollMs`); a change is loaded once the files stay unchanged for `settleMs`. Off by default.
   */
  watchSignatures?: boolean | { pollMs?: number; settleMs?: number };
  /** SIEM export destinations (config `siem:`, docs/siem.md); their TLS files are read at start. */
  siem?: readonly SiemDestination[];
  /** How long close() gives the SIEM export to deliver what is queued. */
  siemFlushMs?: number;
  /** Reconnect backoff, connect timeout, HOSTNAME of the SIEM export (tests shorten the backoff). */
  siemExport?: SiemExportOptions;
  /** The agent inventory (docs/console.md): default a memory store without a file; false: none (no state-report). */
  inventory?: InventorySetup | false;
  /** Tokens of the admin API at /api/ (kept as SHA-256); none: every request there is 401. */
  adminTokens?: readonly AdminToken[];
  /** Reported by GET /api/svm. */
  version?: string;
  /** `policies:` of the config as written and validated (src/svm/policies.ts); sent to agents (feature policy). */
  policies?: Record<string, unknown>;
}

/** The inventory's settings; `store` defaults to memory without persistence. */
export type InventorySetup = Omit<InventoryOptions, 'svmId' | 'store'> & { store?: InventoryStore };

export const SVM_DEFAULTS = {
  host: '127.0.0.1',
  port: 7443,
  maxFileSize: 64 * 1024 * 1024,
  maxChunk: FRAME_LIMITS.maxChunk,
  maxInFlight: 32,
  uploadTimeoutMs: 30_000,
  helloTimeoutMs: 5_000,
  uploadMemory: 512 * 1024 * 1024,
  uploadsPerAgent: 16,
  uploadStallMs: 5_000,
  coalesceMs: 500,
  reportIntervalMs: 2_000,
  closeGraceMs: 2_000,
  siemFlushMs: 3_000,
  rateLimit: { perSecond: 5000, burst: 20_000 },
  scanConcurrency: 8,
  agentQueue: 16,
} as const;

/**
 * A part of the SVM's HTTP surface beside /metrics and /healthz (the admin API, the console):
 * asked first for every request whose path starts with `prefix`. It answers the request itself
 * (status, headers, body) and must never throw; the server answers 500 if it does.
 */
export interface HttpRoute {
  /** Path prefix, e.g. `/api/` or `/console`. */
  readonly prefix: string;
  handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL): void | Promise<void>;
}

/** What a signature reload did: the engine's answer, the generation before it, and how many agents were told. */
export type SignatureReload = { generation: string; previous: string; agentsTold: number; [k: string]: unknown };

export interface SvmHealth {
  status: 'ok' | 'degraded' | 'unhealthy';
  svmId: string;
  protocol: string;
  engine: string;
  engineHealthy: boolean;
  generation: string;
  cache: { kind: string; healthy: boolean; entries: number };
  agents: number;
  /** Freshness of the signatures in force; `stale` makes the status `degraded`. */
  signatures: { generation: string; ageSeconds: number | null; stale: boolean; maxAgeSeconds: number; source: string; madeAt?: string };
}

export class SvmServer {
  private readonly sessions = new Set<AgentSession>();
  private readonly routes: HttpRoute[] = [];
  private readonly reporter: Reporter;
  private readonly signatureTimer: NodeJS.Timeout;
  private watcher: SignatureWatcher | undefined;
  private reloading: Promise<SignatureReload> | undefined;
  private closing: Promise<void> | undefined;
  /** Set by start(): the SIEM export of core.events (no destination: metric families only). */
  siem!: SiemExport;
  private bound = { host: '', port: 0 };
  private readonly log = logger('svm');
  /** The agent inventory, unless started with `inventory: false`. */
  readonly inventory: Inventory | undefined;
  /** Scan commands to agents (feature scan-command), with the inventory. */
  readonly scanCommands: ScanCommands | undefined;
  private readonly admins: AdminTokenStore;
  private readonly startedAt = Date.now();

  private constructor(
    private readonly httpServer: http.Server | https.Server,
    private readonly wss: WebSocketServer,
    readonly core: SvmCore,
    private readonly opts: SvmOptions,
  ) {
    this.reporter = new Reporter(core, () => this.sessions, opts.reportIntervalMs ?? SVM_DEFAULTS.reportIntervalMs);
    core.features.push(FEATURES.signatureAge, FEATURES.lookupBatch, FEATURES.policy);
    core.policies = new PolicyBook(opts.policies ?? {});
    core.checkSignatures();
    this.signatureTimer = setInterval(() => core.checkSignatures(), Math.max(100, opts.signatureCheckMs ?? 10_000));
    this.signatureTimer.unref();
    const w = opts.watchSignatures;
    if (w) {
      const paths = watchedSignaturePaths(core.engine);
      if (paths)
        this.watcher = new SignatureWatcher(paths, () => void this.reloadSignatures('changed').catch(() => undefined), {
          ...(typeof w === 'object' ? w : {}),
        });
    }
    this.admins = new AdminTokenStore(opts.adminTokens ?? []);
    if (opts.inventory !== false) {
      const { store, ...rest } = opts.inventory ?? {};
      this.inventory = new Inventory({ ...rest, store: store ?? new MemoryInventoryStore(), svmId: core.opts.svmId }, core.events);
      this.inventory.attach(core);
      // Scan commands report back through state reports: only with an inventory (docs/scans.md).
      this.scanCommands = new ScanCommands(() => this.sessions);
      this.scanCommands.attach(core);
      this.addRoute(
        createAdminApi({
          inventory: this.inventory,
          admins: this.admins,
          agentTokens: core.tokens,
          generation: () => core.generation(),
          svm: () => this.svmInfo(),
          policyFor: (tenant, agentId, host) => core.policies.resolve(tenant, agentId, host),
          policies: (tenant) =>
            (tenant === undefined ? core.policies.tenants : [tenant]).flatMap((t) =>
              core.policies.list(t).map((p) => ({ tenant: t, ...p })),
            ),
          scans: this.scanCommands,
        }),
      );
    }
  }

  static async start(o: SvmOptions): Promise<SvmServer> {
    const d = SVM_DEFAULTS;
    const coreOpts: CoreOptions = {
      svmId: o.svmId ?? `${os.hostname()}-${crypto.randomBytes(3).toString('hex')}`,
      tokens: o.tokens,
      maxFileSize: o.maxFileSize ?? d.maxFileSize,
      maxChunk: Math.min(o.maxChunk ?? d.maxChunk, FRAME_LIMITS.maxChunk),
      maxInFlight: o.maxInFlight ?? d.maxInFlight,
      uploadTimeoutMs: o.uploadTimeoutMs ?? d.uploadTimeoutMs,
      helloTimeoutMs: o.helloTimeoutMs ?? d.helloTimeoutMs,
      uploadMemory: o.uploadMemory ?? d.uploadMemory,
      uploadMemoryPerAgent: o.uploadMemoryPerAgent,
      uploadMemoryPerTenant: o.uploadMemoryPerTenant,
      uploadsPerAgent: o.uploadsPerAgent ?? d.uploadsPerAgent,
      uploadStallMs: o.uploadStallMs ?? d.uploadStallMs,
      coalesceMs: o.coalesceMs ?? d.coalesceMs,
      fairReadBytes: o.fairReadBytes,
      rateLimit: o.rateLimit ?? d.rateLimit,
      scanConcurrency: o.scanConcurrency ?? d.scanConcurrency,
      agentQueue: o.agentQueue ?? d.agentQueue,
      maxSignatureAgeMs: o.maxSignatureAgeMs,
    };
    const core = new SvmCore(coreOpts, o.engine, o.cache);
    const siem = new SiemExport(o.siem ?? [], core.events, core.metrics, o.siemExport);
    const httpServer = o.tls ? https.createServer(tlsServerOptions(o.tls)) : http.createServer();
    if (o.tls) {
      // A failed handshake (no or bad client certificate, wrong CA on the agent) never reaches ws.
      httpServer.on('tlsClientError', (e: Error, socket: TLSSocket) => {
        core.metrics.tlsFailures.inc();
        self.log.warn('TLS handshake with a client failed', { remote: `${socket.remoteAddress}:${socket.remotePort}`, message: e.message });
      });
    }
    // Binary frames are a 12-byte header plus at most maxChunk; text frames are bounded by the
    // codec (64 KiB), which must still fit when max_chunk is configured small.
    const maxPayload = Math.max(CHUNK_HEADER + coreOpts.maxChunk, FRAME_LIMITS.maxTextFrame);
    // permessage-deflate off: it costs ~10x throughput on file content (DESIGN.md, wire protocol).
    const wss = new WebSocketServer({ server: httpServer, perMessageDeflate: false, maxPayload });
    const self = new SvmServer(httpServer, wss, core, o);
    self.siem = siem;
    httpServer.on('request', (req, res) => self.onHttp(req, res));
    wss.on('connection', (ws, req) => self.onConnection(ws, req));
    wss.on('error', (e) => self.log.error('websocket server error', { message: e.message }));
    const host = o.host ?? d.host;
    const port = o.port ?? d.port;
    await new Promise<void>((resolve, reject) => {
      httpServer.once('error', reject);
      httpServer.listen(port, host, () => {
        httpServer.off('error', reject);
        resolve();
      });
    }).catch((e: NodeJS.ErrnoException) => {
      throw new LightagentError(
        'LA_ERR_LISTEN',
        `cannot listen on ${host}:${port}: ${e.code ?? e.message}`,
        e.code === 'EADDRINUSE'
          ? 'another process uses that port: stop it or choose another `listen`'
          : 'check the `listen` address (is it an address of this machine?)',
        { cause: e },
      );
    });
    siem.start();
    self.log.info('SVM listening', {
      url: self.url,
      engine: o.engine.name,
      generation: core.generation(),
      cache: o.cache.kind,
      svmId: coreOpts.svmId,
    });
    return self;
  }

  /** Where it listens (still answered after close()). */
  get address(): { host: string; port: number } {
    const a = this.httpServer.address() as AddressInfo | null;
    if (a) this.bound = { host: a.address, port: a.port };
    return this.bound;
  }

  /** The agents' URL, e.g. ws://127.0.0.1:7443 (wss:// with TLS). */
  get url(): string {
    const { host, port } = this.address;
    return `${this.opts.tls ? 'wss' : 'ws'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  /** The base URL of /metrics and /healthz, e.g. http://127.0.0.1:7443 (https:// with TLS). */
  get httpUrl(): string {
    return this.url.replace(/^ws/, 'http');
  }

  /** Is TLS on, and are agents asked for a client certificate? */
  get tls(): { enabled: boolean; mutual: boolean } {
    return { enabled: !!this.opts.tls, mutual: !!this.opts.tls?.requestCert };
  }

  /**
   * Replace the certificate, key and client CA for new connections (SIGHUP after a certificate
   * renewal); connected agents keep their sessions. Only when the server was started with TLS.
   */
  reloadTls(tls: SvmTlsOptions): void {
    if (!this.opts.tls || !(this.httpServer instanceof https.Server))
      throw new LightagentError(
        'LA_ERR_TLS',
        'this SVM was started without TLS; a restart is needed to turn it on',
        'restart lightagent-svm with tls.cert and tls.key',
      );
    if (!!tls.requestCert !== !!this.opts.tls.requestCert)
      throw new LightagentError('LA_ERR_TLS', 'turning mutual TLS on or off needs a restart', 'restart lightagent-svm');
    this.httpServer.setSecureContext(tlsServerOptions(tls));
  }

  /** Every metric by its Prometheus name, as plain numbers, now. */
  get metrics(): MetricsSnapshot {
    return this.core.metrics.snapshot();
  }

  health(): SvmHealth {
    const engineHealthy = this.core.engine.healthy();
    const cacheHealthy = this.core.cache.healthy();
    const signatures = this.core.signatures();
    return {
      status: !engineHealthy ? 'unhealthy' : cacheHealthy && !signatures.stale ? 'ok' : 'degraded',
      svmId: this.core.opts.svmId,
      protocol: PROTOCOL,
      engine: this.core.engine.name,
      engineHealthy,
      generation: this.core.generation(),
      cache: { kind: this.core.cache.kind, healthy: cacheHealthy, entries: this.core.cache.stats().entries },
      agents: this.core.agents.size,
      signatures,
    };
  }

  /** What GET /api/svm answers. */
  svmInfo(): SvmInfo {
    const h = this.health();
    const age = h.signatures.ageSeconds;
    const stale = h.signatures.stale;
    return {
      svmId: h.svmId,
      version: this.opts.version ?? 'unknown',
      engine: h.engine,
      engineHealthy: h.engineHealthy,
      generation: h.generation,
      signatureAgeSeconds: typeof age === 'number' && Number.isFinite(age) ? Math.round(age) : null,
      signaturesStale: stale === true,
      cache: h.cache,
      load: this.core.load(),
      queue: this.core.queue(),
      agentsConnected: h.agents,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      status: h.status,
    };
  }

  /** Replace the admin API's tokens (SIGHUP). */
  reloadAdminTokens(tokens: readonly AdminToken[]): number {
    this.admins.replace(tokens);
    return tokens.length;
  }

  /**
   * Replace the tenant tokens (SIGHUP): new agents are checked against the new list; connected
   * agents stay unless their token was removed or has expired (closed with 4001).
   */
  reloadTokens(tokens: readonly TenantToken[]): { tokens: number; agentsDropped: number } {
    this.core.tokens.replace(tokens);
    let dropped = 0;
    for (const s of this.sessions) if (s.checkToken()) dropped++;
    this.log.info('tenant tokens reloaded', { tokens: tokens.length, agentsDropped: dropped });
    return { tokens: tokens.length, agentsDropped: dropped };
  }

  /**
   * Replace the policies (SIGHUP; `raw` already validated by the config schema): every connected
   * agent whose policy changed is sent the new one at once; a `policy` event per tenant policy
   * set, changed or removed. Returns how many agents were sent a policy.
   */
  reloadPolicies(raw: Record<string, unknown>): { policies: number; agentsSent: number } {
    const before = this.core.policies;
    const next = new PolicyBook(raw);
    this.core.policies = next;
    let sent = 0;
    for (const s of this.sessions) if (s.sendPolicy()) sent++;
    const time = new Date().toISOString();
    // One event per policy (a tenant's own and each group's) set, changed or removed.
    for (const tenant of new Set([...before.tenants, ...next.tenants])) {
      const was = new Map(before.list(tenant).map((p) => [p.name, p.version]));
      const now = new Map(next.list(tenant).map((p) => [p.name, p.version]));
      for (const [policy, version] of now)
        if (was.get(policy) !== version) this.core.events.publish({ kind: 'policy', time, tenant, policy, change: 'set', version });
      for (const policy of was.keys())
        if (!now.has(policy)) this.core.events.publish({ kind: 'policy', time, tenant, policy, change: 'removed' });
    }
    this.log.info('policies reloaded', { tenants: next.tenants, agentsSent: sent });
    return { policies: next.tenants.length, agentsSent: sent };
  }

  /** Tell every agent about a new signature generation (call after an engine reload). Returns how many were told. */
  announceGeneration(): number {
    return this.reporter.announceGeneration();
  }

  /**
   * Reload the engine's signatures (SIGHUP, or a watched signature file changed), then tell the
   * agents the new generation and publish the events. A failed reload keeps the signatures in
   * force (the engines guarantee it), is logged with its reason and counted, and rejects. One at
   * a time: a call while a reload runs waits for it and gets its outcome.
   */
  reloadSignatures(why: 'sighup' | 'changed' = 'sighup'): Promise<SignatureReload> {
    this.reloading ??= this.doReload(why).finally(() => (this.reloading = undefined));
    return this.reloading;
  }

  private async doReload(why: 'sighup' | 'changed'): Promise<SignatureReload> {
    const engine = this.core.engine;
    const previous = engine.generation();
    try {
      const r = (await engine.reload?.()) ?? { generation: engine.generation() };
      this.core.signatureReloads.ok++;
      const agentsTold = this.announceGeneration();
      this.core.checkSignatures();
      this.log.info('signatures reloaded', { why, engine: engine.name, generation: r.generation, previous, agentsTold });
      return { ...r, previous, agentsTold };
    } catch (e) {
      this.core.signatureReloads.failed++;
      const err = e as LightagentError;
      this.log.error('signature reload failed; the previous signatures stay in force', {
        why,
        engine: engine.name,
        code: err.code,
        message: err.message,
        ...(e instanceof ConfigError ? { issues: e.issues.slice(0, 20) } : {}),
        generation: engine.generation(),
      });
      throw e;
    }
  }

  /** Close every agent with 4010 (they fail over or retry), then the server, the engine and the cache. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    this.reporter.stop();
    clearInterval(this.signatureTimer);
    this.watcher?.close();
    const sessions = [...this.sessions];
    for (const s of sessions) s.close(CloseCode.SHUTDOWN, 'SVM shutting down');
    const grace = this.opts.closeGraceMs ?? SVM_DEFAULTS.closeGraceMs;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(sessions.map((s) => s.done)), new Promise<void>((r) => (timer = setTimeout(r, grace)))]);
    clearTimeout(timer);
    for (const s of this.sessions) s.terminate();
    await new Promise<void>((r) => this.wss.close(() => r()));
    await new Promise<void>((r) => {
      this.httpServer.close(() => r());
      this.httpServer.closeAllConnections();
    });
    // After the agents: their last detections still go out.
    await this.siem.close(this.opts.siemFlushMs ?? SVM_DEFAULTS.siemFlushMs);
    // After the sessions: their disconnects are recorded (and the memory store's file written).
    await this.inventory?.close().catch((e: unknown) => this.log.error('inventory close failed', { message: (e as Error).message }));
    await this.core.engine.close();
    await this.core.cache.close();
    this.log.info('SVM stopped', { agentsClosed: sessions.length });
  }

  private onConnection(ws: WebSocket, req: http.IncomingMessage): void {
    if (this.closing) {
      ws.close(CloseCode.SHUTDOWN, 'SVM shutting down');
      return;
    }
    const s = new AgentSession(ws, req, this.core, this.log);
    this.sessions.add(s);
    void s.done.then(() => this.sessions.delete(s));
    this.reporter.wake();
  }

  /**
   * Serve `route` on the SVM's HTTP port (same TLS as the agents' port); the longest prefix wins.
   * A route with the prefix of an earlier one replaces it (e.g. the built-in admin API at /api/).
   */
  addRoute(route: HttpRoute): void {
    const same = this.routes.findIndex((r) => r.prefix === route.prefix);
    if (same >= 0) this.routes.splice(same, 1);
    this.routes.push(route);
    this.routes.sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** The agent sessions past hello (for the inventory and the admin API). */
  get agentSessions(): Iterable<AgentSession> {
    return [...this.sessions].filter((s) => s.ready);
  }

  private onHttp(req: http.IncomingMessage, res: http.ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0]!;
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    // The SVM's HTTP root is the console, when it is served (lightagent-svm mounts it).
    if (path === '/' && (req.method === 'GET' || req.method === 'HEAD') && this.routes.some((r) => r.prefix === '/console')) {
      res.writeHead(302, { location: '/console/', 'cache-control': 'no-store' });
      return void res.end();
    }
    const route = this.routes.find((r) => path.startsWith(r.prefix));
    if (route) {
      const fail = (e: unknown) => {
        this.log.error('an HTTP route failed', { prefix: route.prefix, path: path.slice(0, 200), message: (e as Error).message });
        if (!res.headersSent) send(500, 'text/plain; charset=utf-8', 'internal error; see the SVM log\n');
        else res.destroy();
      };
      let url: URL;
      try {
        url = new URL(req.url ?? '/', 'http://svm.invalid');
      } catch {
        return send(400, 'text/plain; charset=utf-8', 'bad request URL\n');
      }
      try {
        const r = route.handle(req, res, url);
        if (r) r.catch(fail);
      } catch (e) {
        fail(e);
      }
      return;
    }
    if (path !== '/metrics' && path !== '/healthz') return send(404, 'text/plain; charset=utf-8', 'not found: try /metrics or /healthz\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain; charset=utf-8', 'method not allowed\n');
    if (path === '/metrics') {
      this.core.metrics.render().then(
        (text) => send(200, this.core.metrics.contentType, text),
        (e: unknown) => {
          this.log.error('cannot render /metrics', { message: (e as Error).message });
          send(500, 'text/plain; charset=utf-8', 'metrics could not be collected; see the SVM log\n');
        },
      );
      return;
    }
    const h = this.health();
    return send(h.status === 'unhealthy' ? 503 : 200, 'application/json', `${JSON.stringify(h)}\n`);
  }
}

export const startSvm = (o: SvmOptions): Promise<SvmServer> => SvmServer.start(o);

function tlsServerOptions(t: SvmTlsOptions): https.ServerOptions {
  const mutual = !!t.requestCert;
  if (mutual && !t.ca)
    throw new LightagentError('LA_ERR_TLS', 'mutual TLS needs the CA that signs agent certificates', 'set tls.client_ca (--tls-client-ca)');
  try {
    // Creating the context here checks cert, key and CA now, with a clear error, not at the first agent.
    const opts: https.ServerOptions = {
      cert: t.cert,
      key: t.key,
      minVersion: 'TLSv1.2',
      ...(t.ca ? { ca: t.ca } : {}),
      requestCert: mutual,
      rejectUnauthorized: mutual,
    };
    tlsCreateSecureContext(opts);
    return opts;
  } catch (e) {
    throw new LightagentError(
      'LA_ERR_TLS',
      `cannot use the TLS certificate, key or CA: ${(e as Error).message}`,
      'check that tls.cert and tls.key are a matching PEM certificate and key, and tls.client_ca a PEM CA certificate',
      { cause: e },
    );
  }
}
