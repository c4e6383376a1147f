/**
 * One agent connection on the SVM. The protocol rules (lightagent/1), enforced here:
 *
 * - Hello first. The first frame must be a valid `hello` within `helloTimeoutMs`, else close 4004.
 *   Its token must be a configured one (stored as SHA-256, compared with timingSafeEqual).
 *   Wrong, empty or missing token: an `error` frame LA_ERR_AUTH, then close 4001; logged as a
 *   warning with the remote address, never the token. A protocol version other than ours: an
 *   `error` frame LA_ERR_PROTO_VERSION, close 4002. Then `welcome` {svmId, generation, load,
 *   limits {maxFileSize, maxChunk, maxInFlight}}. Nothing else is accepted before that.
 * - `lookup {id, sha256, size}`: the shared cache's verdict (`cached: true`) or `unknown`. Reads
 *   only: agents never write verdicts.
 * - `lookups {id, entries}` (feature lookup-batch, only if this SVM lists it): one `lookups`
 *   answer with a letter per hash, from the cache only (lookup-batch.ts); one request id and
 *   in-flight slot, but as many tokens of the agent's rate as it has hashes.
 * - `scan {id, size}`, then binary chunks of that id, index 0, 1, 2, ... in order, at least one,
 *   the last one flagged, their bytes adding up to `size` exactly.
 *   - size > maxFileSize: verdict error LA_ERR_UPLOAD_TOO_LARGE; the connection stays.
 *   - this agent already receives `uploadsPerAgent` uploads: verdict error LA_ERR_BUSY (the agent
 *     retries); nothing is buffered. Memory is reserved chunk by chunk as bytes arrive; a chunk
 *     past the agent's, its tenant's or the SVM's upload memory ends the upload with LA_ERR_BUSY
 *     (uploads.ts). Either busy answer holds the connection's reads for a while (refusedBusy).
 *   - not complete within `uploadTimeoutMs`, or no chunk for `uploadStallMs`: verdict error
 *     LA_ERR_UPLOAD_TIMEOUT; memory released.
 *   Chunks of a refused or dropped upload that are still in flight are read and discarded.
 *   The SVM hashes the bytes it received (never trusting the agent), answers from the cache under
 *   that hash if it can (another agent uploaded the same content), else runs the engine once per
 *   hash however many agents upload it at the same time, caches, and answers `verdict` {sha256,
 *   engine, generation, threat}.
 * - `cancel {id}` drops an upload still being received; no verdict follows for it (a scan that
 *   already runs still answers). Late chunks of a cancelled upload are discarded.
 * - `event` (a detection on the agent): logged with agent id and host, counted.
 * - `state` (feature state-report, only if this SVM lists it): the agent's protection state and
 *   figures, handed to the observers (the inventory). Unlisted: a protocol error like any unknown type.
 * - Protocol errors: a malformed or oversized frame, an unknown type, a second hello, a chunk for
 *   an unknown id, out of order, beyond the size, a last flag before the size is reached, a
 *   request id already in use, more than maxInFlight requests at once. Each is a typed
 *   ProtocolError: an `error` frame, then close 4000 (4003 for oversized frames), this connection
 *   only. Nothing thrown in a handler leaves it; other connections never notice.
 * - From the SVM, unasked: `load` (at most every 2 s, only when it changed) and `generation`
 *   (after the signatures changed); see server.ts. `policy` (feature policy, only to an agent
 *   that listed it): right after welcome, and when a config reload changes the agent's policy.
 */
import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { WebSocket } from 'ws';
import crypto from 'node:crypto';
import { LightagentError, ProtocolError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import {
  CloseCode,
  FEATURES,
  FRAME_LIMITS,
  PROTOCOL_VERSION,
  decodeAgentMessage,
  decodeChunk,
  encodeMessage,
  type AgentMessage,
  type Hello,
  type SvmMessage,
  type VerdictMsg,
} from '../protocol/index.js';
import type { AgentFacts } from './agent-observer.js';
import type { SvmCore, VerdictFields } from './core.js';
import { lookupBatch } from './lookup-batch.js';
import { signatureFields } from './signature-age.js';
import { TokenBucket } from './fairness.js';
import type { Timing } from './metrics.js';
import { UploadTable, type CompletedUpload } from './uploads.js';
import { ReadHolds } from './read-gate.js';
import { Backoff } from '../backoff.js';
import { RTT_TRACE, rttMark } from '../trace.js';

/**
 * Reads held after a busy refusal: the first time, then doubling while refused again (jittered),
 * to at most a quarter of upload_stall_timeout.
 */
const BUSY_HOLD_MIN_MS = 20;
const BUSY_HOLD_MAX_MS = 1000;

export class AgentSession {
  private hello: Hello | undefined;
  private tenant = '';
  private readonly uploads: UploadTable;
  /** The socket's reads: held by the tenant read gate, or after a busy refusal; read while neither holds. */
  private readonly holds = new ReadHolds({ pause: () => this.ws.pause(), resume: () => this.ws.resume() });
  /** What the tenant read gate pauses; on resume the stall clocks restart (the SVM was not reading). */
  private readonly reads = {
    pause: () => this.holds.hold('turn'),
    resume: () => {
      this.holds.release('turn');
      this.uploads.restartStallClocks();
    },
  };
  /** How long reads are held after a busy refusal: doubles while this agent is refused, back to the start once a chunk is taken. */
  private readonly busyBackoff: Backoff;
  private busyHold: NodeJS.Timeout | undefined;
  /** Request ids accepted and not answered yet (lookups, uploads receiving or being scanned). */
  private readonly busy = new Set<number>();
  private readonly helloTimer: NodeJS.Timeout;
  private readonly bucket: TokenBucket;
  private tokenHash: Buffer | undefined;
  private rateWarned = false;
  private busyWarnedAt = -Infinity;
  private dropWarnedAt = -Infinity;
  private dropsUnwarned = 0;
  private closed = false;
  private facts: AgentFacts | undefined;
  /** Epoch ms of the last frame received (the inventory keeps a connected agent fresh with it). */
  lastHeard = Date.now();
  /** The load figure this agent was last told (welcome or load report). */
  lastLoad = -1;
  /** The generation this agent was last told. */
  lastGeneration = '';
  /** The policy version this agent was last sent (feature policy); undefined before the first. */
  private lastPolicy: string | undefined;
  readonly remote: string;
  /** CN of the agent's TLS client certificate (mutual TLS only). */
  readonly certSubject: string | undefined;
  /** Resolves when the socket is closed, whoever closed it. */
  readonly done: Promise<void>;

  constructor(
    private readonly ws: WebSocket,
    req: IncomingMessage,
    private readonly core: SvmCore,
    private readonly log: Logger,
  ) {
    this.remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    this.bucket = new TokenBucket(core.opts.rateLimit.perSecond, core.opts.rateLimit.burst);
    // Mutual TLS: the agent certificate's subject, for the logs (the handshake already verified it).
    const sock = req.socket as Partial<TLSSocket>;
    if (sock.authorized && typeof sock.getPeerCertificate === 'function') {
      const cn = sock.getPeerCertificate().subject?.CN;
      this.certSubject = typeof cn === 'string' ? cn.slice(0, 200) : undefined;
    }
    const o = core.opts;
    // A hold must not use up an accepted upload's stall time (the SVM is not reading it meanwhile).
    this.busyBackoff = new Backoff(BUSY_HOLD_MIN_MS, Math.max(BUSY_HOLD_MIN_MS, Math.min(BUSY_HOLD_MAX_MS, o.uploadStallMs / 4)));
    this.uploads = new UploadTable({
      // The tenant is known at hello; until then no upload can start (binary frames are refused).
      account: core.budget.account(''),
      timeoutMs: o.uploadTimeoutMs,
      stallMs: o.uploadStallMs,
      maxActive: o.uploadsPerAgent,
      maxRefused: o.maxInFlight,
      onBytes: (n) => {
        core.metrics.bytesReceived.inc(n);
        this.busyBackoff.reset();
      },
      onTimeout: (id, why) => {
        this.core.coalescer.dropped(this, id);
        this.core.metrics.scanErrors.inc();
        const ms = why === 'stalled' ? o.uploadStallMs : o.uploadTimeoutMs;
        // One warning per agent per minute, with the drops since: hundreds of stalling agents must not flood the log.
        const now = Date.now();
        if (now - this.dropWarnedAt >= 60_000) {
          this.log.warn(why === 'stalled' ? 'upload stalled; dropped' : 'upload timed out', {
            remote: this.remote,
            agent: this.hello?.agentId,
            id,
            timeoutMs: ms,
            droppedSinceLastWarning: this.dropsUnwarned,
          });
          this.dropWarnedAt = now;
          this.dropsUnwarned = 0;
        } else this.dropsUnwarned++;
        this.answer({
          t: 'verdict',
          id,
          verdict: 'error',
          code: 'LA_ERR_UPLOAD_TIMEOUT',
          message: why === 'stalled' ? `no upload data for ${ms} ms` : `upload not complete within ${ms} ms`,
        });
      },
      onOverBudget: (id) => {
        this.core.coalescer.dropped(this, id);
        this.core.metrics.scanErrors.inc();
        this.refusedBusy('upload memory share in use; upload dropped', id);
        this.answer({
          t: 'verdict',
          id,
          verdict: 'error',
          code: 'LA_ERR_BUSY',
          message: "this agent's, its tenant's or the SVM's upload memory is in use; retry shortly",
        });
      },
    });
    this.helloTimer = setTimeout(() => {
      this.log.warn('no hello in time; closing', { remote: this.remote, timeoutMs: o.helloTimeoutMs });
      this.close(CloseCode.HELLO_TIMEOUT, 'no hello in time');
    }, o.helloTimeoutMs);
    this.done = new Promise((resolve) => ws.once('close', () => resolve()));
    ws.on('message', (data, isBinary) => {
      if (this.closed) return; // frames that were already on the wire when we closed
      this.lastHeard = Date.now();
      try {
        const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
        if (isBinary) this.onBinary(buf);
        else this.onText(buf);
        if (this.hello) this.core.readGate.account(this.tenant, this.reads, buf.length);
      } catch (e) {
        this.onError(e);
      }
    });
    ws.on('close', () => this.cleanup());
    // ws reports oversized frames (1009) and bad framing here, then closes the socket itself.
    ws.on('error', (e) =>
      this.log.warn('websocket error; connection closed', { remote: this.remote, agent: this.hello?.agentId, message: e.message }),
    );
  }

  get tenantName(): string {
    return this.tenant;
  }

  get ready(): boolean {
    return this.hello !== undefined && !this.closed;
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
      // A peer that never answers the close frame would keep its socket for ws's 30 s close timeout.
      const t = setTimeout(() => this.ws.terminate(), 2000);
      t.unref();
      this.ws.once('close', () => clearTimeout(t));
    } catch {
      this.ws.terminate();
    }
    this.cleanup();
  }

  /**
   * After a token reload, or periodically: an agent whose token was removed or has expired is
   * closed with 4001. Returns true if it was dropped.
   */
  checkToken(now = Date.now()): boolean {
    if (!this.hello || this.closed || !this.tokenHash) return false;
    if (this.core.tokens.stillValid(this.tokenHash, this.tenant, now)) return false;
    this.log.warn('agent dropped: its token was removed or has expired', {
      remote: this.remote,
      agent: this.hello.agentId,
      tenant: this.tenant,
    });
    this.send({ t: 'error', code: 'LA_ERR_AUTH', message: 'the tenant token was revoked or has expired' });
    this.close(CloseCode.AUTH, 'token revoked or expired');
    return true;
  }

  /** Drop the socket without a close handshake (shutdown of a peer that does not answer). */
  terminate(): void {
    this.closed = true;
    this.ws.terminate();
    this.cleanup();
  }

  private onError(e: unknown): void {
    if (e instanceof ProtocolError) {
      this.core.metrics.protocolErrors.inc();
      this.log.warn('protocol error; closing the connection', {
        remote: this.remote,
        agent: this.hello?.agentId,
        code: e.code,
        message: e.message,
      });
      this.send({ t: 'error', code: e.code, message: e.message });
      this.close(e.code === 'LA_ERR_PROTO_OVERSIZED' ? CloseCode.OVERSIZED : CloseCode.PROTOCOL, e.code);
      return;
    }
    this.log.error('internal error handling a frame; closing the connection', {
      remote: this.remote,
      agent: this.hello?.agentId,
      ...describeError(e),
    });
    this.send({ t: 'error', code: 'LA_ERR_INTERNAL', message: 'internal error on the SVM' });
    this.close(CloseCode.PROTOCOL, 'internal error');
  }

  private onText(data: Buffer): void {
    if (!this.hello) {
      this.onFirstFrame(data);
      return;
    }
    const msg = decodeAgentMessage(data);
    switch (msg.t) {
      case 'hello':
        throw new ProtocolError('LA_ERR_PROTO_UNEXPECTED', 'hello sent twice');
      case 'lookup':
        if (RTT_TRACE) rttMark('v.lookup', msg.sha256);
        this.begin(msg.id);
        if (!this.withinRate(msg.id)) return;
        this.reply(msg.id, this.core.lookup(this.tenant, msg.sha256, this, msg.size), this.core.metrics.lookupSeconds);
        return;
      case 'lookups': {
        if (!this.core.features.includes(FEATURES.lookupBatch))
          throw new ProtocolError('LA_ERR_PROTO_UNEXPECTED', 'lookup batches are not spoken by this SVM (feature lookup-batch)');
        this.begin(msg.id);
        if (!this.withinRate(msg.id, msg.entries.length)) return;
        this.replyBatch(msg.id, lookupBatch(this.core, this.tenant, msg.entries));
        return;
      }
      case 'scan':
        if (RTT_TRACE && msg.name !== undefined) rttMark('v.scan', msg.name);
        this.startUpload(msg.id, msg.size);
        return;
      case 'cancel':
        if (this.uploads.drop(msg.id)) {
          this.busy.delete(msg.id);
          this.core.coalescer.dropped(this, msg.id);
        }
        return;
      case 'event':
        this.onEvent(msg);
        return;
      case 'state': {
        if (!this.core.features.includes(FEATURES.stateReport))
          throw new ProtocolError('LA_ERR_PROTO_UNEXPECTED', 'state reports are not spoken by this SVM (feature state-report)');
        this.core.observe('state', this.facts!, msg);
        return;
      }
    }
  }

  private onFirstFrame(data: Buffer): void {
    let msg: AgentMessage;
    try {
      msg = decodeAgentMessage(data);
    } catch (e) {
      // A hello without a usable token is an authentication failure (4001), not a malformed frame.
      if (e instanceof ProtocolError && looksLikeHelloWithoutToken(data)) {
        this.refuse();
        return;
      }
      throw e;
    }
    if (msg.t !== 'hello') throw new ProtocolError('LA_ERR_PROTO_UNEXPECTED', `expected hello first, got ${msg.t}`);
    clearTimeout(this.helloTimer);
    const auth = this.core.tokens.check(msg.token);
    const tenant = auth.tenant;
    if (tenant === undefined) {
      this.refuse(msg, auth.refused);
      return;
    }
    this.tokenHash = auth.hash;
    if (msg.v !== PROTOCOL_VERSION) {
      this.log.warn('agent refused: protocol version', { remote: this.remote, agent: msg.agentId, version: msg.v, ours: PROTOCOL_VERSION });
      this.send({
        t: 'error',
        code: 'LA_ERR_PROTO_VERSION',
        message: `this SVM speaks lightagent/${PROTOCOL_VERSION}, the agent lightagent/${msg.v}`,
      });
      this.close(CloseCode.VERSION, 'protocol version');
      return;
    }
    this.hello = msg;
    this.tenant = tenant;
    this.uploads.setAccount(this.core.budget.account(tenant));
    this.log.info('agent connected', {
      remote: this.remote,
      agent: msg.agentId,
      host: msg.host,
      os: msg.os,
      hypervisor: msg.hypervisor,
      tenant,
      version: msg.agentVersion,
      ...(this.certSubject ? { cert: this.certSubject } : {}),
    });
    const o = this.core.opts;
    this.lastLoad = this.core.load();
    this.lastGeneration = this.core.generation();
    this.send({
      t: 'welcome',
      v: PROTOCOL_VERSION,
      svmId: o.svmId,
      generation: this.lastGeneration,
      load: this.lastLoad,
      limits: { maxFileSize: o.maxFileSize, maxChunk: o.maxChunk, maxInFlight: o.maxInFlight },
      ...(this.core.features.length ? { features: [...this.core.features] } : {}),
      ...(this.speaks(FEATURES.signatureAge) ? signatureFields(this.core.signatures()) : {}),
    });
    this.core.agents.add(this);
    this.facts = {
      tenant,
      agentId: msg.agentId,
      host: msg.host,
      os: msg.os,
      agentVersion: msg.agentVersion,
      hypervisor: msg.hypervisor,
      connId: crypto.randomBytes(8).toString('hex'),
      lastHeard: () => this.lastHeard,
    };
    this.core.observe('connected', this.facts);
    this.sendPolicy();
    if (this.core.claimAgentId(tenant, msg.agentId) > 0) {
      // Not refused: an agent reconnecting while its old connection is not closed yet looks the same.
      this.log.warn('another connection already uses this agent id: a VM cloned from a template that was not sealed? (docs/vdi.md)', {
        remote: this.remote,
        agent: msg.agentId,
        host: msg.host,
        tenant,
      });
    }
  }

  private refuse(h?: Hello, why: 'unknown' | 'expired' = 'unknown'): void {
    clearTimeout(this.helloTimer);
    this.core.metrics.authFailures.inc();
    // The agent is not told which (no oracle for guessing); the log says.
    this.log.warn(why === 'expired' ? 'agent refused: expired token' : 'agent refused: missing or unknown token', {
      remote: this.remote,
      agent: h?.agentId,
      host: h?.host,
    });
    this.send({ t: 'error', code: 'LA_ERR_AUTH', message: 'missing or unknown tenant token' });
    this.close(CloseCode.AUTH, 'missing or unknown token');
  }

  private onEvent(e: Extract<AgentMessage, { t: 'event' }>): void {
    this.core.metrics.agentEvents.inc();
    const h = this.hello!;
    this.log.warn('agent reported a detection', {
      agent: h.agentId,
      host: h.host,
      tenant: this.tenant,
      remote: this.remote,
      time: e.time,
      path: e.path,
      threat: e.threat,
      action: e.action,
      sha256: e.sha256,
      process: e.process,
    });
    this.core.events.publish({
      kind: 'detection',
      time: e.time,
      tenant: this.tenant,
      agentId: h.agentId,
      host: h.host,
      path: e.path,
      sha256: e.sha256,
      threat: e.threat,
      action: e.action,
      process: e.process,
    });
  }

  /**
   * Send the agent its policy (feature policy) if it changed since the last one sent: after
   * welcome, and after a config reload. No policy for it: `name: ''` (the agent drops its central
   * layer). Returns true if a frame was sent.
   */
  sendPolicy(): boolean {
    if (!this.hello || this.closed || !this.speaks(FEATURES.policy)) return false;
    const p = this.core.policies.resolve(this.tenant, this.hello.agentId, this.hello.host);
    const version = p?.version ?? '';
    if (version === this.lastPolicy) return false;
    this.lastPolicy = version;
    try {
      this.send({ t: 'policy', name: p?.name ?? '', version, settings: p?.settings ?? {} });
    } catch (e) {
      // The config check bounds a policy well under a frame; never let one cost the connection.
      this.log.error('policy not sent', { agent: this.hello.agentId, policy: p?.name, ...describeError(e) });
      return false;
    }
    return true;
  }

  /** Did the agent list this feature of lightagent/1 in its hello? Send a feature's messages only then. */
  speaks(feature: string): boolean {
    return this.hello?.features?.includes(feature) ?? false;
  }

  /** Claim a request id: unique among this agent's requests in flight, at most maxInFlight of them. */
  private begin(id: number): void {
    if (this.busy.has(id)) throw new ProtocolError('LA_ERR_PROTO_UPLOAD', `request id ${id} is already in use`);
    if (this.busy.size >= this.core.opts.maxInFlight)
      throw new ProtocolError('LA_ERR_PROTO_UPLOAD', `more than ${this.core.opts.maxInFlight} requests in flight`);
    this.busy.add(id);
  }

  /** Send the verdict for `id` unless it was cancelled or the connection closed meanwhile. */
  private answer(v: VerdictMsg): void {
    if (!this.busy.delete(v.id)) return;
    this.send(v);
  }

  private reply(id: number, work: Promise<VerdictFields>, timing: Timing): void {
    const t0 = performance.now();
    const took = () => timing.observe((performance.now() - t0) / 1000);
    work.then(
      (v) => {
        // Timed now, observed after the answer is on its way: the histogram is not on the agent's clock.
        const s = (performance.now() - t0) / 1000;
        if (RTT_TRACE && v.sha256 !== undefined) rttMark('v.answer', v.sha256);
        this.answer({ t: 'verdict', id, ...v });
        timing.observe(s);
      },
      (e: unknown) => {
        took();
        const d = describeError(e);
        this.core.metrics.scanErrors.inc();
        if (d.code === 'LA_ERR_RATE_LIMITED') {
          this.core.metrics.rateLimited.inc();
          this.answer({ t: 'verdict', id, verdict: 'error', code: d.code, message: d.message.slice(0, 500) });
          return;
        }
        this.log.error('request failed', { remote: this.remote, agent: this.hello?.agentId, id, ...d });
        this.answer({
          t: 'verdict',
          id,
          verdict: 'error',
          code: e instanceof LightagentError ? e.code : 'LA_ERR_ENGINE',
          message: d.message.slice(0, 500),
        });
      },
    );
  }

  /** Feature lookup-batch: the `lookups` answer, or an `error` verdict of the same id. */
  private replyBatch(id: number, work: Promise<{ generation: string; results: string }>): void {
    const t0 = performance.now();
    work.then(
      (r) => {
        this.core.metrics.lookupSeconds.observe((performance.now() - t0) / 1000);
        if (!this.busy.delete(id)) return;
        this.send({ t: 'lookups', id, ...r });
      },
      (e: unknown) => {
        const d = describeError(e);
        this.log.error('lookup batch failed', { remote: this.remote, agent: this.hello?.agentId, id, ...d });
        this.answer({ t: 'verdict', id, verdict: 'error', code: 'LA_ERR_INTERNAL', message: d.message.slice(0, 500) });
      },
    );
  }

  private refuseUpload(id: number, size: number, code: string, message: string): void {
    this.uploads.refuse(id, size);
    this.core.metrics.scanErrors.inc();
    this.answer({ t: 'verdict', id, verdict: 'error', code, message });
  }

  /** Take a token (a batch: one per hash) from this agent's bucket; over the rate, answer LA_ERR_RATE_LIMITED at once. */
  private withinRate(id: number, cost = 1): boolean {
    if (cost === 1 ? this.bucket.take() : this.bucket.takeMany(cost)) return true;
    this.core.metrics.rateLimited.inc();
    this.core.metrics.scanErrors.inc();
    if (!this.rateWarned)
      this.log.warn('agent over its request rate; refusing requests with LA_ERR_RATE_LIMITED', {
        remote: this.remote,
        agent: this.hello?.agentId,
        tenant: this.tenant,
        perSecond: this.core.opts.rateLimit.perSecond,
        burst: this.core.opts.rateLimit.burst,
      });
    this.rateWarned = true;
    this.answer({
      t: 'verdict',
      id,
      verdict: 'error',
      code: 'LA_ERR_RATE_LIMITED',
      message: `over ${this.core.opts.rateLimit.perSecond} requests per second; retry shortly`,
    });
    return false;
  }

  private startUpload(id: number, size: number): void {
    this.begin(id);
    const o = this.core.opts;
    if (!this.bucket.take()) {
      this.uploads.refuse(id, size); // its chunks are read and discarded
      this.withinRate(id);
    } else if (size > o.maxFileSize) {
      this.refuseUpload(id, size, 'LA_ERR_UPLOAD_TOO_LARGE', `${size} bytes is over this SVM's max_file_size of ${o.maxFileSize}`);
    } else if (!this.uploads.accept(id, size)) {
      this.refusedBusy('too many uploads in progress for this agent; refusing one', id);
      this.refuseUpload(
        id,
        size,
        'LA_ERR_BUSY',
        `this agent already has ${o.uploadsPerAgent} uploads in progress (uploads_per_agent); retry shortly`,
      );
    } else this.core.coalescer.started(this, id, size);
  }

  /** An upload answered LA_ERR_BUSY: counted, the connection's reads held a while, and a warning at most once a minute. */
  private refusedBusy(message: string, id: number): void {
    this.core.metrics.busy.inc();
    this.holdAfterBusy();
    this.warnBusy(message, id);
  }

  /** One warning per agent per minute: a hostile agent must not flood the log. */
  private warnBusy(message: string, id: number): void {
    const now = Date.now();
    if (now - this.busyWarnedAt < 60_000) return;
    this.busyWarnedAt = now;
    const b = this.core.budget;
    this.log.warn(message, {
      remote: this.remote,
      agent: this.hello?.agentId,
      tenant: this.tenant,
      id,
      held: b.used,
      tenantHeld: b.usedBy(this.tenant),
      budget: b.capacity,
      perTenant: b.perTenant,
      perAgent: b.perAgent,
    });
  }

  /**
   * Refused as busy: this connection is not read for a while (BUSY_HOLD_MIN_MS, doubling to
   * BUSY_HOLD_MAX_MS while it is refused again). An agent that reopens an upload at each refusal
   * otherwise has its chunks read, parsed and dropped as fast as it sends them (300 stalling
   * agents: ~8,700 refusals and ~570 MB a second), and the garbage and the turns that costs
   * delay every other tenant's requests. Held, its bytes wait in TCP, not in the SVM. The agent
   * backs off as long itself (file-scanner.ts); its lookups on this connection wait too.
   */
  private holdAfterBusy(): void {
    if (this.closed || this.busyHold) return;
    this.holds.hold('busy');
    this.core.metrics.busyHolds.inc();
    this.busyHold = setTimeout(() => {
      this.busyHold = undefined;
      this.holds.release('busy');
    }, this.busyBackoff.next());
  }

  private onBinary(frame: Buffer): void {
    if (!this.hello) throw new ProtocolError('LA_ERR_PROTO_UNEXPECTED', 'binary frame before hello');
    const chunk = decodeChunk(frame, this.core.opts.maxChunk);
    const done = this.uploads.add(chunk);
    if (done) {
      this.core.coalescer.completed(this, done.id, done.sha256);
      this.scanUpload(done);
    } else this.core.coalescer.progress(this, chunk.id);
  }

  private scanUpload(u: CompletedUpload): void {
    if (RTT_TRACE) rttMark('v.uploaded', u.sha256);
    this.core.metrics.uploads.inc();
    const work = this.core.scan(this.tenant, u.sha256, u.content, this);
    void work.finally(u.release).catch(() => {});
    this.reply(u.id, work, this.core.metrics.uploadSeconds);
  }

  private cleanup(): void {
    clearTimeout(this.helloTimer);
    clearTimeout(this.busyHold);
    if (this.hello && this.core.agents.has(this)) {
      this.core.releaseAgentId(this.tenant, this.hello.agentId);
      if (this.facts) this.core.observe('disconnected', this.facts);
    }
    this.uploads.clear();
    this.core.coalescer.gone(this);
    this.core.readGate.forget(this.reads);
    this.busy.clear();
    this.core.agents.delete(this);
  }
}

/** Is this frame a `hello` whose token is missing or not a string? (Only called on a frame that failed to decode.) */
function looksLikeHelloWithoutToken(data: Buffer): boolean {
  if (data.length > FRAME_LIMITS.maxTextFrame) return false;
  try {
    const o = JSON.parse(data.toString('utf8')) as unknown;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) return false;
    const r = o as Record<string, unknown>;
    return r.t === 'hello' && typeof r.token !== 'string';
  } catch {
    return false;
  }
}
