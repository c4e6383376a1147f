/**
 * The SVM server: one HTTP server on one port for the agents' WebSocket (`lightagent/1`),
 * Prometheus text at GET /metrics and health at GET /healthz.
 */
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { WebSocketServer } from 'ws';
import { logger } from '../log.js';
import { CloseCode, FRAME_LIMITS, PROTOCOL } from '../protocol/index.js';
import { SvmCore, type CoreOptions } from './core.js';
import type { ScanEngine } from './engines/engine.js';
import { AgentSession } from './session.js';
import type { SharedVerdictCache } from './verdict-cache.js';

export interface SvmOptions extends Partial<Omit<CoreOptions, 'tokens'>> {
  host?: string;
  port?: number;
  tokens: CoreOptions['tokens'];
  engine: ScanEngine;
  cache: SharedVerdictCache;
}

export const SVM_DEFAULTS = {
  maxFileSize: 64 * 1024 * 1024,
  maxChunk: FRAME_LIMITS.maxChunk,
  maxInFlight: 32,
  uploadTimeoutMs: 30_000,
  helloTimeoutMs: 5_000,
  uploadMemory: 512 * 1024 * 1024,
} as const;

export class SvmServer {
  private loadTimer: NodeJS.Timeout | undefined;
  private lastLoad = -1;
  private lastGeneration: string;

  private constructor(
    private readonly http: http.Server,
    private readonly wss: WebSocketServer,
    readonly core: SvmCore,
  ) {
    this.lastGeneration = core.generation();
  }

  static async start(o: SvmOptions): Promise<SvmServer> {
    const log = logger('svm');
    const core = new SvmCore(
      {
        svmId: o.svmId ?? `${os.hostname()}-${crypto.randomBytes(3).toString('hex')}`,
        tokens: o.tokens,
        maxFileSize: o.maxFileSize ?? SVM_DEFAULTS.maxFileSize,
        maxChunk: Math.min(o.maxChunk ?? SVM_DEFAULTS.maxChunk, FRAME_LIMITS.maxChunk),
        maxInFlight: o.maxInFlight ?? SVM_DEFAULTS.maxInFlight,
        uploadTimeoutMs: o.uploadTimeoutMs ?? SVM_DEFAULTS.uploadTimeoutMs,
        helloTimeoutMs: o.helloTimeoutMs ?? SVM_DEFAULTS.helloTimeoutMs,
        uploadMemory: o.uploadMemory ?? SVM_DEFAULTS.uploadMemory,
      },
      o.engine,
      o.cache,
    );
    const server = http.createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(core.metrics.render());
      } else if (req.method === 'GET' && req.url === '/healthz') {
        const ok = core.engine.healthy();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ status: ok ? 'ok' : 'unhealthy', svmId: core.opts.svmId, protocol: PROTOCOL, engine: core.engine.name, engineHealthy: ok, generation: core.generation(), cache: { kind: core.cache.kind, healthy: core.cache.healthy() }, agents: core.sessions.size }));
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('not found\n');
      }
    });
    const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: core.opts.maxChunk + 12 + 64 });
    wss.on('connection', (ws, req) => {
      const s = new AgentSession(ws, req, core, log);
      core.sessions.add(s);
      self.ensureLoadTimer();
    });
    wss.on('error', (e) => log.error('websocket server error', { message: e.message }));
    const self = new SvmServer(server, wss, core);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port ?? 7443, o.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    log.info('SVM listening', { url: self.url, engine: o.engine.name, generation: core.generation(), cache: o.cache.kind });
    return self;
  }

  get address(): { host: string; port: number } {
    const a = this.http.address() as AddressInfo;
    return { host: a.address, port: a.port };
  }

  get url(): string {
    const { host, port } = this.address;
    return `ws://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  get metrics() {
    return this.core.metrics;
  }

  /** Tell every agent about a new signature generation (after an engine reload). */
  announceGeneration(): void {
    const g = this.core.generation();
    if (g === this.lastGeneration) return;
    this.lastGeneration = g;
    for (const s of this.core.sessions) if (s.ready) s.send({ t: 'generation', generation: g });
  }

  /** Load reports every 2 s, only while agents are connected and only when the figure changed. */
  private ensureLoadTimer(): void {
    if (this.loadTimer) return;
    this.loadTimer = setInterval(() => {
      if (this.core.sessions.size === 0) {
        clearInterval(this.loadTimer);
        this.loadTimer = undefined;
        return;
      }
      const load = this.core.load();
      if (load === this.lastLoad) return;
      this.lastLoad = load;
      for (const s of this.core.sessions) if (s.ready) s.send({ t: 'load', load, queue: 0 });
    }, 2000);
    this.loadTimer.unref();
  }

  /** Close every agent with 4010 (they fail over or retry), then the server. */
  async close(): Promise<void> {
    clearInterval(this.loadTimer);
    for (const s of this.core.sessions) s.close(CloseCode.SHUTDOWN, 'SVM shutting down');
    await new Promise<void>((r) => this.wss.close(() => r()));
    await new Promise<void>((r) => {
      this.http.close(() => r());
      this.http.closeAllConnections();
    });
    await this.core.engine.close();
    await this.core.cache.close();
  }
}

export const startSvm = (o: SvmOptions): Promise<SvmServer> => SvmServer.start(o);
