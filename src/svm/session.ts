/**
 * One agent connection on the SVM. The rules, enforced here:
 *
 * - The first frame must be a valid `hello` within `helloTimeoutMs` (else close 4004). Its token
 *   must be one of the configured tokens (compared by SHA-256; wrong or missing: an `error`
 *   frame LA_ERR_AUTH, then close 4001, logged with the remote address, never the token).
 *   A version other than ours: close 4002. Then `welcome`.
 * - `lookup {id, sha256, size}`: the shared cache's verdict (`cached: true`) or `unknown`.
 * - `scan {id, size}` then binary chunks 0,1,2.. in order, at least one, the last flagged, total
 *   bytes == size. Too large for `maxFileSize`: verdict error LA_ERR_UPLOAD_TOO_LARGE (the
 *   connection stays). Upload memory budget exhausted: verdict error LA_ERR_BUSY. Not complete
 *   within `uploadTimeoutMs`: verdict error LA_ERR_UPLOAD_TIMEOUT. A chunk for an unknown id, out
 *   of order, past the size, a last flag too early, a duplicate id, or more than `maxInFlight`
 *   requests at once: protocol error -> `error` frame and close 4000 (this connection only).
 * - The SVM hashes what it received itself and never trusts the agent's hash; agents cannot
 *   write verdicts. `cancel {id}` drops an upload.
 * - Any malformed frame: typed ProtocolError -> error frame + close; never thrown further.
 */
import crypto from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { WebSocket } from 'ws';
import { ProtocolError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  CloseCode,
  PROTOCOL_VERSION,
  decodeAgentMessage,
  decodeChunk,
  encodeMessage,
  type Hello,
  type SvmMessage,
  type VerdictMsg,
} from '../protocol/index.js';
import type { SvmCore } from './core.js';

interface Upload {
  id: number;
  size: number;
  received: number;
  nextIndex: number;
  buf: Buffer;
  hash: crypto.Hash;
  timer: NodeJS.Timeout;
  /** Already answered with an error verdict: chunks are validated and discarded, no memory held. */
  refused: boolean;
}

/** Ids of uploads dropped (timeout, cancel) whose late chunks are ignored, not protocol errors. */
const DROPPED_MEMORY = 256;

export class AgentSession {
  private hello: Hello | undefined;
  private tenant = '';
  private readonly uploads = new Map<number, Upload>();
  /** Request ids being worked on (lookups and uploads awaiting their verdict). */
  private readonly busy = new Set<number>();
  private readonly dropped = new Set<number>();
  private readonly helloTimer: NodeJS.Timeout;
  private closed = false;
  readonly remote: string;

  constructor(
    private readonly ws: WebSocket,
    req: IncomingMessage,
    private readonly core: SvmCore,
    private readonly log: Logger,
  ) {
    this.remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    this.helloTimer = setTimeout(() => this.close(CloseCode.HELLO_TIMEOUT, 'no hello in time'), core.opts.helloTimeoutMs);
    ws.on('message', (data, isBinary) => {
      try {
        if (isBinary) this.onBinary(data as Buffer);
        else this.onText(data as Buffer);
      } catch (e) {
        this.onError(e);
      }
    });
    ws.on('close', () => this.cleanup());
    ws.on('error', (e) => this.log.debug('socket error', { remote: this.remote, message: e.message }));
  }

  get ready(): boolean {
    return this.hello !== undefined;
  }
  get info(): { agentId: string; host: string; tenant: string } | undefined {
    return this.hello ? { agentId: this.hello.agentId, host: this.hello.host, tenant: this.tenant } : undefined;
  }

  send(msg: SvmMessage): void {
    if (this.closed || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(encodeMessage(msg));
  }

  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.ws.close(code, reason.slice(0, 120));
    } catch {
      this.ws.terminate();
    }
    this.cleanup();
  }

  private onError(e: unknown): void {
    if (e instanceof ProtocolError) {
      this.core.metrics.protocolErrors.inc();
      this.log.warn('protocol error; closing the connection', { remote: this.remote, agent: this.hello?.agentId, code: e.code, message: e.message });
      this.send({ t: 'error', code: e.code, message: e.message });
      this.close(e.code === 'LA_ERR_PROTO_OVERSIZED' ? CloseCode.OVERSIZED : CloseCode.PROTOCOL, e.code);
      return;
    }
    this.log.error('internal error handling a frame; closing the connection', { remote: this.remote, ...describeError(e) });
    this.close(CloseCode.PROTOCOL, 'internal error');
  }

  private onText(data: Buffer): void {
    const msg = decodeAgentMessage(data);
    if (!this.hello) {
      if (msg.t !== 'hello') throw new ProtocolError('LA_ERR_PROTO_UNEXPECTED', `expected hello first, got ${msg.t}`);
      this.onHello(msg);
      return;
    }
    switch (msg.t) {
      case 'hello':
        throw new ProtocolError('LA_ERR_PROTO_UNEXPECTED', 'hello sent twice');
      case 'lookup':
        this.begin(msg.id);
        void this.core.lookup(this.tenant, msg.sha256).then(
          (v) => this.answer({ t: 'verdict', id: msg.id, ...v }),
          (e) => this.answerError(msg.id, e),
        );
        return;
      case 'scan':
        this.startUpload(msg.id, msg.size);
        return;
      case 'cancel':
        this.dropUpload(msg.id);
        return;
      case 'event':
        this.core.metrics.agentEvents.inc();
        this.log.warn('agent reported a detection', { agent: this.hello.agentId, host: this.hello.host, tenant: this.tenant, path: msg.path, threat: msg.threat, action: msg.action, sha256: msg.sha256, process: msg.process });
        return;
    }
  }

  private onHello(h: Hello): void {
    clearTimeout(this.helloTimer);
    const tenant = this.core.tenantOf(h.token);
    if (tenant === undefined) {
      this.core.metrics.authFailures.inc();
      this.log.warn('agent refused: missing or unknown token', { remote: this.remote, agent: h.agentId, host: h.host });
      this.send({ t: 'error', code: 'LA_ERR_AUTH', message: 'unknown tenant token' });
      this.close(CloseCode.AUTH, 'unknown token');
      return;
    }
    if (h.v !== PROTOCOL_VERSION) {
      this.send({ t: 'error', code: 'LA_ERR_PROTO_VERSION', message: `this SVM speaks protocol ${PROTOCOL_VERSION}` });
      this.close(CloseCode.VERSION, 'version');
      return;
    }
    this.hello = h;
    this.tenant = tenant;
    this.log.info('agent connected', { remote: this.remote, agent: h.agentId, host: h.host, os: h.os, hypervisor: h.hypervisor, tenant, version: h.agentVersion });
    const o = this.core.opts;
    this.send({ t: 'welcome', v: PROTOCOL_VERSION, svmId: o.svmId, generation: this.core.generation(), load: this.core.load(), limits: { maxFileSize: o.maxFileSize, maxChunk: o.maxChunk, maxInFlight: o.maxInFlight } });
  }

  private begin(id: number): void {
    if (this.busy.has(id)) throw new ProtocolError('LA_ERR_PROTO_UPLOAD', `request id ${id} is already in use`);
    if (this.busy.size >= this.core.opts.maxInFlight) throw new ProtocolError('LA_ERR_PROTO_UPLOAD', `more than ${this.core.opts.maxInFlight} requests in flight`);
    this.busy.add(id);
  }

  private answer(v: VerdictMsg): void {
    if (!this.busy.delete(v.id)) return; // cancelled meanwhile
    this.send(v);
  }

  private answerError(id: number, e: unknown): void {
    const d = describeError(e);
    this.core.metrics.scanErrors.inc();
    this.log.error('request failed', { agent: this.hello?.agentId, id, ...d });
    this.answer({ t: 'verdict', id, verdict: 'error', code: d.code.startsWith('LA_') ? d.code : 'LA_ERR_ENGINE', message: d.message.slice(0, 500) });
  }

  private startUpload(id: number, size: number): void {
    this.begin(id);
    const o = this.core.opts;
    if (size > o.maxFileSize) {
      this.uploads.set(id, this.sink(id, size)); // swallow its chunks, then answer
      this.core.metrics.scanErrors.inc();
      this.answer({ t: 'verdict', id, verdict: 'error', code: 'LA_ERR_UPLOAD_TOO_LARGE', message: `${size} bytes is over this SVM's max_file_size of ${o.maxFileSize}` });
      return;
    }
    if (!this.core.reserve(size)) {
      this.uploads.set(id, this.sink(id, size));
      this.core.metrics.scanErrors.inc();
      this.answer({ t: 'verdict', id, verdict: 'error', code: 'LA_ERR_BUSY', message: 'upload memory budget in use; retry shortly' });
      return;
    }
    const timer = setTimeout(() => {
      if (!this.uploads.has(id)) return;
      this.dropUpload(id);
      this.core.metrics.scanErrors.inc();
      this.send({ t: 'verdict', id, verdict: 'error', code: 'LA_ERR_UPLOAD_TIMEOUT', message: `upload not complete within ${o.uploadTimeoutMs} ms` });
    }, o.uploadTimeoutMs);
    this.uploads.set(id, { id, size, received: 0, nextIndex: 0, buf: Buffer.allocUnsafe(size), hash: crypto.createHash('sha256'), timer, refused: false });
  }

  /** An upload we already answered (refused): its chunks are validated and discarded. */
  private sink(id: number, size: number): Upload {
    const timer = setTimeout(() => this.uploads.delete(id), this.core.opts.uploadTimeoutMs);
    return { id, size, received: 0, nextIndex: 0, buf: Buffer.alloc(0), hash: crypto.createHash('sha256'), timer, refused: true };
  }

  private dropUpload(id: number): void {
    const u = this.uploads.get(id);
    if (!u) return;
    this.uploads.delete(id);
    clearTimeout(u.timer);
    if (!u.refused) this.core.release(u.size);
    this.busy.delete(id);
    this.dropped.add(id);
    if (this.dropped.size > DROPPED_MEMORY) this.dropped.delete(this.dropped.values().next().value as number);
  }

  private onBinary(frame: Buffer): void {
    if (!this.hello) throw new ProtocolError('LA_ERR_PROTO_UNEXPECTED', 'binary frame before hello');
    const c = decodeChunk(frame, this.core.opts.maxChunk);
    const u = this.uploads.get(c.id);
    if (!u) {
      // A chunk that arrives after we timed out or the agent cancelled is not a protocol error.
      if (this.dropped.has(c.id)) return;
      throw new ProtocolError('LA_ERR_PROTO_UPLOAD', `chunk for unknown request id ${c.id}`);
    }
    if (c.index !== u.nextIndex) throw new ProtocolError('LA_ERR_PROTO_UPLOAD', `chunk ${c.index} of request ${c.id} arrived out of order (expected ${u.nextIndex})`);
    if (u.received + c.payload.length > u.size) throw new ProtocolError('LA_ERR_PROTO_UPLOAD', `request ${c.id} sent more than its announced ${u.size} bytes`);
    const complete = u.received + c.payload.length === u.size;
    if (c.last !== complete) throw new ProtocolError('LA_ERR_PROTO_UPLOAD', c.last ? `request ${c.id} ended after ${u.received + c.payload.length} of ${u.size} bytes` : `request ${c.id} sent all its bytes without a last flag`);
    u.nextIndex++;
    if (u.refused) {
      u.received += c.payload.length;
      if (c.last) {
        clearTimeout(u.timer);
        this.uploads.delete(u.id);
      }
      return;
    }
    c.payload.copy(u.buf, u.received);
    u.hash.update(c.payload);
    u.received += c.payload.length;
    this.core.metrics.bytesReceived.inc(c.payload.length);
    if (!c.last) return;
    clearTimeout(u.timer);
    this.uploads.delete(u.id);
    this.core.metrics.uploads.inc();
    const sha256 = u.hash.digest('hex');
    void this.core
      .scan(this.tenant, sha256, u.buf)
      .then(
        (v) => this.answer({ t: 'verdict', id: u.id, ...v }),
        (e) => this.answerError(u.id, e),
      )
      .finally(() => this.core.release(u.size));
  }

  private cleanup(): void {
    clearTimeout(this.helloTimer);
    for (const id of [...this.uploads.keys()]) this.dropUpload(id);
    this.busy.clear();
    this.core.sessionClosed(this);
  }
}
