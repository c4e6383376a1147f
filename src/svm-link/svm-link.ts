/**
 * SvmLink — the agent's connection to one SVM.
 *
 * - hello/welcome handshake; an auth or version refusal is final (no reconnect storm).
 * - requests (`lookup`, `scan`) multiplexed by id over one WebSocket, at most `maxInFlight` at
 *   once (the smaller of ours and the SVM's); callers past the window wait, `foreground` ones (an
 *   open a process is blocked in) before `background` ones, which hold at most a share of the
 *   window (see window.ts); FIFO within a class.
 * - every request has a deadline; past it the request fails with DeadlineError and a `cancel` is
 *   sent so the SVM drops the upload.
 * - on a lost connection, every pending request fails with SvmUnavailableError at once (the caller
 *   applies its policy) and the link reconnects with exponential backoff and full jitter.
 * - uploads are sent chunk by chunk, each awaited on the socket, so a large file never sits whole
 *   in the send buffer; a background upload also waits until the socket's send buffer is under
 *   BACKGROUND_BUFFERED_MAX before each chunk, so a foreground frame does not queue behind
 *   megabytes of background chunks.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import WebSocket from 'ws';
import { AuthError, DeadlineError, LightagentError, ProtocolError, SvmTlsError, SvmUnavailableError } from '../errors.js';
import { logger } from '../log.js';
import {
  CloseCode,
  FEATURES,
  FRAME_LIMITS,
  LOOKUP_BATCH_LIMITS,
  PROTOCOL_VERSION,
  decodeSvmMessage,
  encodeChunkHeader,
  encodeMessage,
  type AgentMessage,
  type DetectionEvent,
  type LookupBatch,
  type LookupBatchAnswer,
  type ScanNow,
  type StateReport,
  type Limits,
  type OsName,
  type PolicyMsg,
  type VerdictMsg,
  type Welcome,
} from '../protocol/index.js';
import { Backoff } from '../backoff.js';
import { tlsFailure } from './tls.js';
import { RTT_TRACE, rttMark } from '../trace.js';
import { Priority, Window, priorityOf, type PriorityLike, type WindowClassStats } from './window.js';

/**
 * A background chunk is sent only while the WebSocket's send buffer (bufferedAmount: ws's queue
 * and the socket's userland buffer) holds at most this many bytes; foreground frames never wait.
 */
export const BACKGROUND_BUFFERED_MAX = 256 * 1024;

/** Resets after the TLS handshake, with a client certificate presented, before we call it a refusal. */
const CERT_RESETS_FINAL = 3;

/** The agent's WebSocket masking key: all zeros (see connect()); the SVM then skips the XOR. */
export function zeroMask(mask: Buffer): void {
  mask.fill(0);
}

export type LinkState = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'refused' | 'closed';

export interface SvmLinkOptions {
  url: string;
  token: string;
  agentId: string;
  host: string;
  os: OsName;
  hypervisor?: string | undefined;
  agentVersion: string;
  /** Features of lightagent/1 this agent speaks, sent in hello (see FEATURES in protocol/messages.ts). */
  features?: readonly string[] | undefined;
  /** Default deadline of a lookup, ms. */
  deadlineMs?: number;
  /** Our cap on requests in flight; the SVM's limit applies too. */
  maxInFlight?: number;
  /** Share of the window background requests may hold (default 0.75; tests and benches). */
  backgroundShare?: number;
  /** Time allowed for connect + hello, ms. */
  connectTimeoutMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  /** PEM of the CA that signed the SVM's certificate (wss://): pinned, the system CAs are not used. */
  ca?: string | Buffer | undefined;
  /** PEM client certificate and key for mutual TLS (wss://). */
  cert?: string | Buffer | undefined;
  key?: string | Buffer | undefined;
}

/** Reads `length` bytes at `offset` of the content being uploaded. May return fewer only at EOF. */
export type ChunkReader = (offset: number, length: number) => Uint8Array;

/** What answers a request: a `verdict` (any request; errors too), or `lookups` (a batch, feature lookup-batch). */
type Answer = VerdictMsg | LookupBatchAnswer;

interface Pending {
  id: number;
  kind: 'lookup' | 'scan' | 'lookups';
  resolve: (v: Answer) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

/** The window's counters per class, and how often background chunks waited for the send buffer. */
export interface WindowStats {
  capacity: number;
  backgroundLimit: number;
  inUse: number;
  waiting: number;
  admitted: number;
  foreground: WindowClassStats;
  background: WindowClassStats;
  pacedChunks: number;
}

export interface SvmLinkEvents {
  connected: [Welcome];
  disconnected: [string];
  generation: [string];
  load: [number];
  /** Feature policy: the SVM sent the central settings in force for this agent (docs/policies.md). */
  policy: [PolicyMsg];
  refused: [LightagentError];
  /** A connection attempt failed before the SVM welcomed us (the link retries with backoff). */
  unreachable: [LightagentError];
  /** Feature scan-command: the SVM asks for a scan job now (only when this link listed the feature). */
  'scan-now': [ScanNow];
}

export class SvmLink extends EventEmitter<SvmLinkEvents> {
  readonly url: string;
  private readonly opts: Required<Omit<SvmLinkOptions, 'hypervisor' | 'ca' | 'cert' | 'key' | 'features' | 'backgroundShare'>> &
    Pick<SvmLinkOptions, 'hypervisor' | 'ca' | 'cert' | 'key' | 'features' | 'backgroundShare'>;
  private ws: WebSocket | undefined;
  private _state: LinkState = 'idle';
  private _welcome: Welcome | undefined;
  private _policy: PolicyMsg | undefined;
  private _load = 0;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly window: Window;
  private readonly backoff: Backoff;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private connectWaiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  private lastError: LightagentError | undefined;
  /** Resets right after a TLS handshake in which we presented a client certificate, in a row. */
  private certResets = 0;
  private readonly log;
  /** Round-trip of the last lookup, ms: a cheap latency figure for status. */
  lastLatencyMs = 0;
  /** Background chunks that waited for the send buffer to drain. */
  private pacedChunks = 0;
  /** Woken at every chunk the socket took (and at close): paced background uploads look again. */
  private flushWaiters: Array<() => void> = [];

  constructor(options: SvmLinkOptions) {
    super();
    this.url = options.url;
    this.opts = {
      deadlineMs: 2000,
      maxInFlight: 32,
      connectTimeoutMs: 5000,
      backoffMinMs: 250,
      backoffMaxMs: 30_000,
      ...options,
    };
    this.window = new Window(this.opts.maxInFlight, { backgroundShare: this.opts.backgroundShare });
    this.backoff = new Backoff(this.opts.backoffMinMs, this.opts.backoffMaxMs);
    this.log = logger('svm-link', { svm: options.url });
  }

  get state(): LinkState {
    return this._state;
  }
  get welcome(): Welcome | undefined {
    return this._welcome;
  }
  get generation(): string | undefined {
    return this._welcome?.generation;
  }
  /** Feature policy: the last policy this connection's SVM sent (cleared at each welcome). */
  get policy(): PolicyMsg | undefined {
    return this._policy;
  }
  /** Did the SVM list this feature of lightagent/1 in its welcome? Send a feature's messages only then. */
  speaks(feature: string): boolean {
    return this._welcome?.features?.includes(feature) ?? false;
  }
  get load(): number {
    return this._load;
  }
  get limits(): Limits | undefined {
    return this._welcome?.limits;
  }
  get inFlight(): number {
    return this.pending.size;
  }
  /** The in-flight window per class: admissions, waits, timeouts. */
  get windowStats(): WindowStats {
    const w = this.window;
    return {
      capacity: w.capacity,
      backgroundLimit: w.backgroundLimit,
      inUse: w.inUse,
      waiting: w.waiting,
      admitted: w.admitted,
      foreground: { ...w.stats.foreground },
      background: { ...w.stats.background },
      pacedChunks: this.pacedChunks,
    };
  }
  /** Why the last attempt failed or the SVM refused us; undefined while connected. */
  get error(): LightagentError | undefined {
    return this._state === 'connected' ? undefined : this.lastError;
  }

  /** Start connecting; resolves at the first welcome, rejects on refusal or after connectTimeoutMs. */
  connect(): Promise<void> {
    if (this._state === 'closed') return Promise.reject(new SvmUnavailableError(this.url, 'the link was closed'));
    if (this._state === 'connected') return Promise.resolve();
    const p = this.waitConnected(this.opts.connectTimeoutMs);
    if (this._state === 'idle' || this._state === 'disconnected') this.open();
    return p;
  }

  /** Resolves when connected; rejects after `ms` or when the SVM refuses us. */
  waitConnected(ms: number): Promise<void> {
    if (this._state === 'connected') return Promise.resolve();
    if (this._state === 'refused' && this.lastError) return Promise.reject(this.lastError);
    if (this._state === 'closed') return Promise.reject(new SvmUnavailableError(this.url, 'the link was closed'));
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(t);
          resolve();
        },
        reject: (e: Error) => {
          clearTimeout(t);
          reject(e);
        },
      };
      const t = setTimeout(() => {
        this.connectWaiters = this.connectWaiters.filter((w) => w !== waiter);
        reject(new SvmUnavailableError(this.url, this.lastError ? this.lastError.message : `not connected within ${ms} ms`));
      }, ms);
      this.connectWaiters.push(waiter);
    });
  }

  /**
   * Ask for a verdict by SHA-256. `unknown` means the SVM has not scanned this content.
   * `priority`: `foreground` (default) for a decision a process waits on, `background` otherwise.
   */
  async lookup(sha256: string, size: number, deadlineMs = this.opts.deadlineMs, priority?: PriorityLike): Promise<VerdictMsg> {
    const start = performance.now();
    if (RTT_TRACE) rttMark('l.lookup', sha256);
    const v = await this.request(
      'lookup',
      deadlineMs,
      (id) => {
        if (RTT_TRACE) rttMark('l.sending', sha256);
        this.sendControl({ t: 'lookup', id, sha256, size });
        if (RTT_TRACE) rttMark('l.sent', sha256);
        return Promise.resolve();
      },
      priorityOf(priority),
    );
    this.lastLatencyMs = performance.now() - start;
    return v as VerdictMsg;
  }

  /**
   * Feature lookup-batch: ask for up to LOOKUP_BATCH_LIMITS.maxEntries hashes in one frame (one
   * request id, one window slot). Resolves with the SVM's answer (one letter per entry, checked to
   * match the count) or its `error` verdict; only to an SVM that listed the feature.
   */
  async lookupBatch(
    entries: LookupBatch['entries'],
    deadlineMs = this.opts.deadlineMs,
    priority?: PriorityLike,
  ): Promise<LookupBatchAnswer | VerdictMsg> {
    if (entries.length === 0 || entries.length > LOOKUP_BATCH_LIMITS.maxEntries)
      throw new RangeError(`a lookup batch holds 1..${LOOKUP_BATCH_LIMITS.maxEntries} entries, not ${entries.length}`);
    if (this._state === 'connected' && !this.speaks(FEATURES.lookupBatch))
      throw new LightagentError('LA_ERR_PROTO_UNEXPECTED', `the SVM at ${this.url} does not speak lookup-batch`);
    const v = await this.request(
      'lookups',
      deadlineMs,
      (id) => {
        // Checked again once connected: the SVM we reached may be another (older) one.
        if (!this.speaks(FEATURES.lookupBatch))
          return Promise.reject(new LightagentError('LA_ERR_PROTO_UNEXPECTED', `the SVM at ${this.url} does not speak lookup-batch`));
        this.sendControl({ t: 'lookups', id, entries });
        return Promise.resolve();
      },
      priorityOf(priority),
    );
    if (v.t === 'lookups' && v.results.length !== entries.length)
      throw new ProtocolError('LA_ERR_PROTO_MALFORMED', `the SVM answered ${v.results.length} results for ${entries.length} hashes`);
    return v;
  }

  /** Upload `size` bytes read through `read` and get the SVM's verdict. */
  scan(size: number, read: ChunkReader, deadlineMs: number, name?: string, priority?: PriorityLike): Promise<VerdictMsg> {
    const prio = priorityOf(priority);
    return this.request<VerdictMsg>(
      'scan',
      deadlineMs,
      async (id) => {
        const limits = this._welcome!.limits;
        const chunk = Math.max(1, Math.min(limits.maxChunk, FRAME_LIMITS.maxChunk));
        const msg: AgentMessage = { t: 'scan', id, size };
        if (name !== undefined) msg.name = name.slice(0, FRAME_LIMITS.maxString);
        this.sendControl(msg);
        if (RTT_TRACE && name !== undefined) rttMark('l.scan', name);
        let offset = 0;
        let index = 0;
        // At least one chunk, the last flagged; an empty file is one empty last chunk.
        for (;;) {
          if (!this.pending.has(id)) return; // deadline passed or connection lost meanwhile
          const want = Math.min(chunk, size - offset);
          const data = want > 0 ? read(offset, want) : new Uint8Array(0);
          if (data.length !== want)
            throw new LightagentError(
              'LA_ERR_FILE_CHANGED',
              `the file shrank while it was uploaded (${offset + data.length} of ${size} bytes)`,
              'it will be scanned again at its next change',
            );
          offset += want;
          const last = offset >= size;
          await this.paceBackground(prio, id);
          if (!this.pending.has(id)) return;
          await this.sendBinary(encodeChunkHeader(id, index++, last), data);
          if (RTT_TRACE && last && name !== undefined) rttMark('l.uploaded', name);
          if (last) return;
        }
      },
      prio,
    );
  }

  /** Report a detection to the SVM (best effort: dropped when disconnected, logged locally anyway). */
  report(event: Omit<DetectionEvent, 't'>): boolean {
    if (this._state !== 'connected') return false;
    try {
      this.sendControl({ t: 'event', ...event });
      return true;
    } catch {
      return false;
    }
  }

  /** Send a state report, only to an SVM that speaks state-report (best effort, like `report`). */
  reportState(report: Omit<StateReport, 't'>): boolean {
    if (this._state !== 'connected' || !this.speaks(FEATURES.stateReport)) return false;
    try {
      this.sendControl({ t: 'state', ...report });
      return true;
    } catch {
      return false;
    }
  }

  close(): void {
    this._state = 'closed';
    clearTimeout(this.reconnectTimer);
    this.failAll(new SvmUnavailableError(this.url, 'the link was closed'));
    for (const w of this.connectWaiters.splice(0)) w.reject(new SvmUnavailableError(this.url, 'the link was closed'));
    this.window.drain(new SvmUnavailableError(this.url, 'the link was closed'));
    const ws = this.ws;
    this.ws = undefined;
    if (ws) {
      ws.removeAllListeners();
      ws.on('error', () => {});
      if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) ws.close(CloseCode.NORMAL);
    }
  }

  // ------------------------------------------------------------------ internals

  private async request<T extends Answer = Answer>(
    kind: 'lookup' | 'scan' | 'lookups',
    deadlineMs: number,
    send: (id: number) => Promise<void>,
    priority: Priority,
  ): Promise<T> {
    const deadlineAt = performance.now() + deadlineMs;
    if (this._state !== 'connected') {
      if (this._state === 'idle' || this._state === 'disconnected') this.open();
      await this.waitConnected(deadlineMs);
    }
    const remaining = () => Math.max(1, Math.round(deadlineAt - performance.now()));
    const release = await this.window.acquire(
      remaining(),
      () => new DeadlineError(`waiting for a free ${kind} slot on ${this.url}`, deadlineMs),
      priority,
    );
    const admittedAt = performance.now();
    try {
      if (this._state !== 'connected') throw new SvmUnavailableError(this.url, 'the connection was lost');
      const id = this.allocId();
      const verdict = new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          if (!this.pending.delete(id)) return;
          if (kind === 'scan') this.trySend({ t: 'cancel', id });
          reject(new DeadlineError(`${kind} on ${this.url}`, deadlineMs));
        }, remaining());
        this.pending.set(id, { id, kind, resolve: resolve as (v: Answer) => void, reject, timer });
      });
      try {
        await send(id);
      } catch (err) {
        const p = this.pending.get(id);
        if (p) {
          clearTimeout(p.timer);
          this.pending.delete(id);
          if (kind === 'scan') this.trySend({ t: 'cancel', id });
        }
        verdict.catch(() => {});
        throw err;
      }
      return await verdict;
    } finally {
      priority.svmMs += performance.now() - admittedAt;
      release();
    }
  }

  /** A background upload waits before each chunk while the send buffer is fuller than BACKGROUND_BUFFERED_MAX. */
  private async paceBackground(prio: Priority, id: number): Promise<void> {
    let counted = false;
    for (;;) {
      const ws = this.ws;
      if (prio.foreground || !ws || ws.readyState !== WebSocket.OPEN || !this.pending.has(id)) return;
      if (ws.bufferedAmount <= BACKGROUND_BUFFERED_MAX) return;
      if (!counted) this.pacedChunks++;
      counted = true;
      await new Promise<void>((resolve) => {
        // Woken by the next chunk the socket takes; the timer covers frames sent by others (control).
        const done = () => {
          clearTimeout(t);
          resolve();
        };
        const t = setTimeout(() => {
          this.flushWaiters = this.flushWaiters.filter((f) => f !== done);
          resolve();
        }, 5);
        this.flushWaiters.push(done);
      });
    }
  }

  private flushed(): void {
    if (this.flushWaiters.length === 0) return;
    for (const f of this.flushWaiters.splice(0)) f();
  }

  private allocId(): number {
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffff_fffe ? 1 : this.nextId + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  private open(): void {
    // One socket at a time: a connect() during the reconnect back-off opens now, and the pending
    // timer must not open a second one (found by the soak: every SVM restart left another live
    // connection behind, 6 to one SVM after 5 restarts).
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    if (this._state === 'closed' || this._state === 'refused' || this._state === 'connecting' || this._state === 'connected') return;
    this._state = 'connecting';
    let ws: WebSocket;
    // Node's TLS server checks a client certificate after the handshake and, when it does not
    // trust it, destroys the socket with no TLS alert: the client only sees a reset. Track
    // whether TCP was up so that signature can be told from an SVM that is not there.
    let tcpUp = false;
    const mutual = this.url.startsWith('wss:') && !!this.opts.cert && !!this.opts.key;
    const createConnection = (o: tls.ConnectionOptions) => {
      const servername = o.servername || o.servername === '' ? o.servername : net.isIP(o.host ?? '') ? '' : o.host;
      const sock = tls.connect({ ...o, path: undefined, servername } as tls.ConnectionOptions);
      sock.once('connect', () => (tcpUp = true));
      return sock;
    };
    try {
      ws = new WebSocket(this.url, {
        perMessageDeflate: false,
        maxPayload: FRAME_LIMITS.maxTextFrame + 1024,
        handshakeTimeout: this.opts.connectTimeoutMs,
        // An all-zero mask: RFC 6455 masking defends HTTP proxies from cache poisoning, which
        // loopback and wss:// do not need, and unmasking in JS is the SVM's biggest upload cost
        // (85 -> 226 MiB/s measured). The SVM skips the XOR when the mask is zero.
        generateMask: zeroMask,
        ...(this.opts.ca ? { ca: this.opts.ca } : {}),
        ...(mutual
          ? {
              cert: this.opts.cert,
              key: this.opts.key,
              createConnection: createConnection as unknown as WebSocket.ClientOptions['createConnection'],
            }
          : {}),
      });
    } catch (err) {
      this.lastError = new SvmUnavailableError(this.url, (err as Error).message, { cause: err });
      this._state = 'refused';
      for (const w of this.connectWaiters.splice(0)) w.reject(this.lastError);
      return;
    }
    this.ws = ws;
    const helloTimer = setTimeout(() => ws.terminate(), this.opts.connectTimeoutMs);
    ws.on('open', () => {
      this.trySend({
        t: 'hello',
        v: PROTOCOL_VERSION,
        agentId: this.opts.agentId,
        token: this.opts.token,
        host: this.opts.host,
        os: this.opts.os,
        ...(this.opts.hypervisor ? { hypervisor: this.opts.hypervisor } : {}),
        agentVersion: this.opts.agentVersion,
        ...(this.opts.features?.length ? { features: [...this.opts.features] } : {}),
      });
    });
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        this.protocolFailure(ws, new ProtocolError('LA_ERR_PROTO_UNEXPECTED', 'the SVM sent a binary frame'));
        return;
      }
      let msg;
      try {
        msg = decodeSvmMessage(data as Buffer);
      } catch (err) {
        this.protocolFailure(ws, err as ProtocolError);
        return;
      }
      switch (msg.t) {
        case 'welcome':
          clearTimeout(helloTimer);
          if (msg.v !== PROTOCOL_VERSION) {
            this.refuse(ws, new ProtocolError('LA_ERR_PROTO_VERSION', `the SVM speaks protocol ${msg.v}, this agent ${PROTOCOL_VERSION}`));
            return;
          }
          this._welcome = msg;
          this._policy = undefined;
          this._load = msg.load;
          this._state = 'connected';
          this.lastError = undefined;
          this.certResets = 0;
          this.backoff.reset();
          this.window.setLimit(Math.max(1, Math.min(this.opts.maxInFlight, msg.limits.maxInFlight)));
          this.log.info('connected', { svmId: msg.svmId, generation: msg.generation });
          for (const w of this.connectWaiters.splice(0)) w.resolve();
          this.emit('connected', msg);
          break;
        case 'lookups':
        case 'verdict': {
          const p = this.pending.get(msg.id);
          if (!p) return; // late answer to a request that timed out or was cancelled
          if (RTT_TRACE && msg.t === 'verdict') rttMark('l.recv', msg.sha256 ?? '');
          if (msg.t === 'lookups' && p.kind !== 'lookups') {
            this.protocolFailure(ws, new ProtocolError('LA_ERR_PROTO_UNEXPECTED', `a lookups answer to ${p.kind} request ${msg.id}`));
            return;
          }
          this.pending.delete(msg.id);
          clearTimeout(p.timer);
          p.resolve(msg);
          break;
        }
        case 'load':
          this._load = msg.load;
          this.emit('load', msg.load);
          break;
        case 'generation':
          if (this._welcome && this._welcome.generation !== msg.generation) {
            // Feature signature-age: the new set's date comes with it (absent: not known).
            const { signaturesAt: _at, signaturesMaxAge: _max, ...rest } = this._welcome;
            this._welcome = {
              ...rest,
              generation: msg.generation,
              ...(msg.signaturesAt !== undefined ? { signaturesAt: msg.signaturesAt } : {}),
              ...(msg.signaturesMaxAge !== undefined ? { signaturesMaxAge: msg.signaturesMaxAge } : {}),
            };
            this.log.info('signature generation changed', { generation: msg.generation });
            this.emit('generation', msg.generation);
          }
          break;
        case 'policy':
          if (this.refuseUnlisted(ws, FEATURES.policy, 'a policy')) return;
          this._policy = msg;
          this.log.info('policy received', { name: msg.name, version: msg.version });
          this.emit('policy', msg);
          break;
        case 'scan-now':
          if (this.refuseUnlisted(ws, FEATURES.scanCommand, 'scan-now')) return;
          this.emit('scan-now', msg);
          break;
        case 'error':
          if (msg.code === 'LA_ERR_AUTH') {
            this.refuse(ws, new AuthError(`the SVM at ${this.url} refused the token: ${msg.message}`));
          } else if (msg.id !== undefined && this.pending.has(msg.id)) {
            const p = this.pending.get(msg.id)!;
            this.pending.delete(msg.id);
            clearTimeout(p.timer);
            p.reject(new LightagentError(msg.code, msg.message));
          } else {
            this.log.warn('SVM reported an error', { code: msg.code, message: msg.message });
          }
          break;
      }
    });
    ws.on('close', (code, reason) => {
      clearTimeout(helloTimer);
      if (this.ws !== ws) return;
      this.ws = undefined;
      const why = `closed with code ${code}${reason.length ? ` (${reason.toString('utf8').slice(0, 200)})` : ''}`;
      if (code === CloseCode.AUTH && this._state !== 'refused') {
        this.lastError = new AuthError(`the SVM at ${this.url} refused the token`);
        this._state = 'refused';
      } else if (code === CloseCode.VERSION && this._state !== 'refused') {
        this.lastError = new ProtocolError('LA_ERR_PROTO_VERSION', `the SVM at ${this.url} does not speak protocol ${PROTOCOL_VERSION}`);
        this._state = 'refused';
      }
      this.lostConnection(why);
    });
    ws.on('error', (err) => {
      // 'close' follows; remember the reason for waiters. A certificate the pinned CA does not
      // sign, or an SVM refusing our client certificate, is configuration: final, like a bad token.
      const tls = tlsFailure(this.url, err, { pinned: !!this.opts.ca, clientCert: !!this.opts.cert });
      if (tls && this._state !== 'connected') {
        this.lastError = tls;
        this._state = 'refused';
        this.log.error('TLS handshake with the SVM failed', { code: tls.code, message: tls.message });
        return;
      }
      const code = (err as NodeJS.ErrnoException).code;
      if (mutual && tcpUp && (code === 'ECONNRESET' || code === 'EPIPE') && this._state !== 'connected') {
        if (++this.certResets >= CERT_RESETS_FINAL) {
          this.lastError = new SvmTlsError(
            'LA_ERR_TLS_CLIENT_CERT',
            `the SVM at ${this.url} dropped the connection during the TLS handshake ${this.certResets} times in a row ` +
              `after this agent presented its client certificate: it does not trust that certificate`,
            'check that `tls_cert`/`tls_key` hold a certificate signed by the CA the SVM trusts for agents (its ' +
              'tls.client_ca), and that it has not expired',
            { cause: err },
          );
          this._state = 'refused';
          this.log.error("the SVM does not accept this agent's client certificate", {
            code: this.lastError.code,
            message: this.lastError.message,
          });
          return;
        }
      }
      this.lastError = new SvmUnavailableError(this.url, err.message, { cause: err });
    });
  }

  private refuse(ws: WebSocket, err: LightagentError): void {
    this.lastError = err;
    this._state = 'refused';
    this.log.error('SVM refused this agent', { code: err.code, message: err.message });
    ws.close(CloseCode.NORMAL);
  }

  /**
   * A message of a feature this agent did not list in its hello is a protocol error, like any
   * unlisted type (the version rule, protocol/messages.ts): true when the connection is failed.
   */
  private refuseUnlisted(ws: WebSocket, feature: string, what: string): boolean {
    if (this.opts.features?.includes(feature)) return false;
    this.protocolFailure(ws, new ProtocolError('LA_ERR_PROTO_UNEXPECTED', `the SVM sent ${what}, a feature this agent did not list`));
    return true;
  }

  private protocolFailure(ws: WebSocket, err: ProtocolError): void {
    this.log.error('protocol error from SVM; dropping the connection', { code: err.code, message: err.message });
    ws.close(CloseCode.PROTOCOL, err.code);
  }

  private lostConnection(why: string): void {
    const wasConnected = this._state === 'connected';
    const err = this.lastError ?? new SvmUnavailableError(this.url, why);
    this.failAll(err instanceof SvmUnavailableError ? err : new SvmUnavailableError(this.url, `${why}: ${err.message}`));
    if (this._state === 'refused') {
      for (const w of this.connectWaiters.splice(0)) w.reject(err);
      this.window.drain(err);
      this.emit('refused', err);
      return;
    }
    if (this._state === 'closed') return;
    this._state = 'disconnected';
    if (wasConnected) {
      this.log.warn('lost the SVM connection', { reason: why });
      this.emit('disconnected', why);
    } else {
      this.emit('unreachable', err);
    }
    const delay = this.backoff.next();
    this.reconnectTimer = setTimeout(() => this.open(), delay);
    // A reconnect loop must not keep a CLI process alive by itself.
    this.reconnectTimer.unref();
  }

  private failAll(err: Error): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
  }

  private sendControl(msg: AgentMessage): void {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) throw new SvmUnavailableError(this.url, 'not connected');
    ws.send(encodeMessage(msg));
  }

  private trySend(msg: AgentMessage): void {
    try {
      this.sendControl(msg);
    } catch {
      /* connection already gone: nothing to tell */
    }
  }

  private sendBinary(header: Buffer, payload: Uint8Array): Promise<void> {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return Promise.reject(new SvmUnavailableError(this.url, 'not connected'));
    const frame = Buffer.concat([header, payload]);
    return new Promise((resolve, reject) => {
      ws.send(frame, { binary: true }, (err) => {
        this.flushed();
        if (err) reject(new SvmUnavailableError(this.url, err.message, { cause: err }));
        else resolve();
      });
    });
  }
}
