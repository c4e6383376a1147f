/**
 * One destination of the SIEM export: a bounded queue (events and bytes) in front of one
 * connection, sent in order, reconnected with backoff. The event bus calls `enqueue`, which
 * only formats and queues: nothing on the scan path ever waits for a receiver. Full queue: the
 * oldest event of the tenant holding the most is dropped (the freshest matter most once the
 * receiver is back; one tenant's flood costs that tenant first: tenant-queue.ts), counted and
 * logged (LA_ERR_SIEM_DROPPED, at most every 10 s).
 *
 * Delivery is at most once per connection: a message is counted as sent when the kernel took it;
 * TCP syslog has no acknowledgement (RFC 6587), so what was in flight when a receiver died
 * unnoticed can be lost. Messages whose write failed are queued again, first.
 */
import { Backoff } from '../../backoff.js';
import { logger } from '../../log.js';
import { TenantQueue, type Queued } from './tenant-queue.js';
import { connect, type SiemConnection, type SiemTarget } from './transport.js';

export interface ExporterOptions {
  /** Short, stable, no secret: the metric label and log field. */
  name: string;
  target: SiemTarget;
  maxEvents: number;
  maxBytes: number;
  connectTimeoutMs?: number;
  /** Reconnect backoff (src/backoff.ts): first and largest delay. */
  backoffMs?: { min: number; max: number };
}

const DROP_LOG_EVERY_MS = 10_000;
/**
 * A connection must stay up this long before the backoff starts over and a later loss counts as
 * a new outage: a receiver that accepts and at once closes (a refused client certificate after a
 * TLS 1.3 handshake, a full receiver) is retried at a growing delay, and logged once.
 */
const STABLE_MS = 10_000;

export class SiemExporter {
  private readonly queue = new TenantQueue();
  /** Written to the connection, not yet confirmed by the kernel; queued again if it fails. */
  private inflight: Queued[] = [];
  private inflightBytes = 0;
  private conn: SiemConnection | undefined;
  private connecting = false;
  private blocked = false;
  private closed = false;
  private retry: NodeJS.Timeout | undefined;
  private readonly backoff: Backoff;
  private readonly log = logger('svm-siem');
  private droppedSinceLog = 0;
  private lastDropLog = 0;
  /** Start of the current outage, kept through connections that did not last STABLE_MS. */
  private downSince: number | undefined;
  private connectedAt = 0;
  private idle: Array<() => void> = [];
  sent = 0;
  dropped = 0;

  constructor(readonly opts: ExporterOptions) {
    this.backoff = new Backoff(opts.backoffMs?.min ?? 500, opts.backoffMs?.max ?? 30_000);
  }

  get name(): string {
    return this.opts.name;
  }
  get queuedEvents(): number {
    return this.queue.size + this.inflight.length;
  }
  get queuedBytes(): number {
    return this.queue.bytes + this.inflightBytes;
  }
  get connected(): boolean {
    return this.conn !== undefined;
  }

  start(): void {
    this.open();
  }

  /** Queue one formatted message of `tenant` (`*`: every tenant's); never throws, never waits. */
  enqueue(tenant: string, msg: Buffer): void {
    if (this.closed || msg.length > this.opts.maxBytes) return this.drop(1);
    this.queue.push({ tenant, msg });
    this.trim();
    this.pump();
  }

  /** Stop: flush what is queued for at most `flushMs`, then close; what is left is counted as dropped. */
  async close(flushMs: number): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retry);
    if (this.conn && this.queuedEvents > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([new Promise<void>((r) => this.idle.push(r)), new Promise<void>((r) => (timer = setTimeout(r, flushMs)))]);
      clearTimeout(timer);
    }
    const left = this.queuedEvents;
    const conn = this.conn;
    this.conn = undefined;
    if (conn) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((r) => {
          conn.once('close', () => r());
          conn.end();
        }),
        new Promise<void>((r) => (timer = setTimeout(r, 1000))),
      ]);
      clearTimeout(timer);
      conn.destroy();
    }
    if (left > 0) {
      this.dropped += left;
      this.log.warn('SIEM export stopped with events not delivered', { code: 'LA_ERR_SIEM_DROPPED', destination: this.name, events: left });
    }
    this.queue.clear();
    this.inflight = [];
    this.inflightBytes = 0;
  }

  private drop(n: number): void {
    this.dropped += n;
    this.droppedSinceLog += n;
    const now = Date.now();
    if (now - this.lastDropLog < DROP_LOG_EVERY_MS) return;
    this.log.warn('SIEM export queue full: events dropped', {
      code: 'LA_ERR_SIEM_DROPPED',
      destination: this.name,
      dropped: this.droppedSinceLog,
      droppedTotal: this.dropped,
      queueEvents: this.opts.maxEvents,
      queueBytes: this.opts.maxBytes,
      hint: 'the receiver is down or slower than the events; raise siem.buffer or fix the receiver',
    });
    this.lastDropLog = now;
    this.droppedSinceLog = 0;
  }

  /** Drop waiting messages (tenant-queue.ts chooses) until both bounds hold. */
  private trim(): void {
    let n = 0;
    while ((this.queuedEvents > this.opts.maxEvents || this.queuedBytes > this.opts.maxBytes) && this.queue.dropOne()) n++;
    if (n) this.drop(n);
  }

  private pump(): void {
    const conn = this.conn;
    if (!conn || this.blocked) return;
    for (let q = this.queue.shift(); q; q = this.queue.shift()) {
      const item = q;
      this.inflight.push(item);
      this.inflightBytes += item.msg.length;
      const more = conn.send(item.msg, (err) => this.written(conn, item, err ?? undefined));
      if (!more) {
        this.blocked = true;
        conn.once('drain', () => {
          this.blocked = false;
          this.pump();
        });
        break;
      }
    }
  }

  private written(conn: SiemConnection, item: Queued, err: Error | undefined): void {
    // After a connection failed, its late callbacks change nothing: onClose queued its messages again.
    if (conn !== this.conn) return;
    const i = this.inflight.indexOf(item);
    // A stream connection that fails closes, and onClose queues its unconfirmed messages again; a
    // datagram that failed (ECONNREFUSED from an earlier ICMP port unreachable) is not retried.
    if (i < 0 || (err && this.opts.target.protocol !== 'udp')) return;
    this.inflight.splice(i, 1);
    this.inflightBytes -= item.msg.length;
    if (err) this.drop(1);
    else this.sent++;
    if (this.queuedEvents === 0) for (const r of this.idle.splice(0)) r();
  }

  private open(): void {
    if (this.closed || this.connecting || this.conn) return;
    this.connecting = true;
    connect(this.opts.target, this.opts.connectTimeoutMs ?? 10_000).then(
      (conn) => {
        this.connecting = false;
        if (this.closed) return conn.destroy();
        this.conn = conn;
        this.connectedAt = Date.now();
        this.log.info('SIEM receiver connected', {
          destination: this.name,
          queued: this.queuedEvents,
          ...(this.downSince ? { downSeconds: Math.round((Date.now() - this.downSince) / 1000) } : {}),
        });
        conn.once('close', (err) => this.onClose(conn, err));
        this.pump();
      },
      (e: Error & { code?: string }) => {
        this.connecting = false;
        this.down(e);
      },
    );
  }

  private onClose(conn: SiemConnection, err: Error | undefined): void {
    if (this.conn !== conn) return;
    this.conn = undefined;
    this.blocked = false;
    // Not confirmed by the kernel: first in line again, in their order.
    this.queue.unshift(this.inflight.splice(0));
    this.inflightBytes = 0;
    if (Date.now() - this.connectedAt >= STABLE_MS) {
      this.backoff.reset();
      this.downSince = undefined;
    }
    if (this.closed) return;
    this.down(err ?? new Error('the receiver closed the connection'));
  }

  private down(e: Error & { code?: string }): void {
    if (this.closed) return;
    const delay = this.backoff.next();
    const first = this.downSince === undefined;
    this.downSince ??= Date.now();
    const fields = {
      code: e.code?.startsWith('LA_ERR_') ? e.code : 'LA_ERR_SIEM_UNAVAILABLE',
      destination: this.name,
      message: e.message,
      queued: this.queuedEvents,
      retryMs: delay,
    };
    if (first) this.log.warn('SIEM receiver unreachable; events queue meanwhile', fields);
    else this.log.debug('SIEM receiver still unreachable', fields);
    this.retry = setTimeout(() => this.open(), delay);
    this.retry.unref();
  }
}
