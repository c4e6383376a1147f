/**
 * Upload reassembly for one agent connection, and the memory budget all connections share.
 *
 * Memory is reserved as bytes arrive, never for what an upload announces: an agent that
 * announces large uploads and sends little holds only what it sent. What is held counts against
 * three bounds at once: the agent's own (`upload_memory_per_agent`), its tenant's
 * (`upload_memory_per_tenant`) and the SVM's (`upload_memory`). A chunk past any of them ends
 * that upload with LA_ERR_BUSY (the agent retries later); an upload with no chunk for
 * `upload_stall_timeout` ends with LA_ERR_UPLOAD_TIMEOUT; either way its memory is released at
 * once. So one agent, or one tenant's agents, cannot take the memory another tenant needs.
 * The SHA-256 is computed here, over the bytes received, as they arrive.
 */
import crypto from 'node:crypto';
import { ProtocolError } from '../errors.js';
import type { Chunk } from '../protocol/index.js';

export interface UploadBudgetLimits {
  /** Bytes held at once, all agents together. */
  capacity: number;
  /** Bytes one tenant's agents may hold together (default: capacity). */
  perTenant?: number | undefined;
  /** Bytes one agent connection may hold (default: capacity). */
  perAgent?: number | undefined;
}

/** Upload bytes held in memory across every session, by tenant and by agent. */
export class UploadBudget {
  private held = 0;
  private readonly byTenant = new Map<string, number>();
  readonly capacity: number;
  readonly perTenant: number;
  readonly perAgent: number;

  constructor(limits: UploadBudgetLimits | number) {
    const l = typeof limits === 'number' ? { capacity: limits } : limits;
    this.capacity = l.capacity;
    this.perTenant = Math.min(l.perTenant ?? l.capacity, l.capacity);
    this.perAgent = Math.min(l.perAgent ?? l.capacity, this.perTenant);
  }

  get used(): number {
    return this.held;
  }

  usedBy(tenant: string): number {
    return this.byTenant.get(tenant) ?? 0;
  }

  /** What one agent connection holds counts against itself, its tenant and the whole SVM. */
  account(tenant: string): BudgetAccount {
    return new BudgetAccount(this, tenant);
  }

  /** @internal BudgetAccount's side of a reservation. */
  take(a: BudgetAccount, bytes: number): boolean {
    const tenantHeld = this.usedBy(a.tenant);
    if (a.held + bytes > this.perAgent || tenantHeld + bytes > this.perTenant || this.held + bytes > this.capacity) return false;
    this.held += bytes;
    this.byTenant.set(a.tenant, tenantHeld + bytes);
    return true;
  }

  /** @internal */
  give(a: BudgetAccount, bytes: number): void {
    this.held = Math.max(0, this.held - bytes);
    // Kept at 0, not deleted: tenants are few (one per token), and a Map emptied and filled
    // again at every upload reallocates its table each time (garbage a flood makes by the MB).
    this.byTenant.set(a.tenant, Math.max(0, this.usedBy(a.tenant) - bytes));
  }
}

/** One agent connection's share of the UploadBudget. */
export class BudgetAccount {
  private bytes = 0;
  constructor(
    private readonly budget: UploadBudget,
    readonly tenant: string,
  ) {}

  get held(): number {
    return this.bytes;
  }

  tryReserve(n: number): boolean {
    if (!this.budget.take(this, n)) return false;
    this.bytes += n;
    return true;
  }

  release(n: number): void {
    const r = Math.min(n, this.bytes);
    this.bytes -= r;
    this.budget.give(this, r);
  }
}

/** A complete upload: the bytes, and the SHA-256 the SVM computed over them. */
export interface CompletedUpload {
  id: number;
  sha256: string;
  content: Buffer;
  /** Give the reserved memory back once the verdict is known. */
  release: () => void;
}

interface Upload {
  id: number;
  size: number;
  received: number;
  nextIndex: number;
  /** The chunks received so far (each reserved from the budget as it came); none for a refused upload. */
  chunks: Buffer[];
  /**
   * The whole upload, allocated once PIECES_MAX bytes have arrived (the agent has shown it sends):
   * chunks are copied straight in, so a large file is held once, not once in pieces and once
   * joined. Smaller uploads stay in `chunks`, so an announcement alone allocates nothing.
   */
  whole: Buffer | undefined;
  /** Undefined for a refused upload: its chunks are checked and discarded. */
  hash: crypto.Hash | undefined;
  timer: NodeJS.Timeout;
  /** Refreshed by every chunk: fires when the upload stops making progress. */
  stall: NodeJS.Timeout | undefined;
}

function newUpload(id: number, size: number, hash: crypto.Hash | undefined, onTimeout: () => void, timeoutMs: number): Upload {
  return {
    id,
    size,
    received: 0,
    nextIndex: 0,
    chunks: [],
    whole: undefined,
    hash,
    timer: setTimeout(onTimeout, timeoutMs),
    stall: undefined,
  };
}

/** Bytes an upload keeps as pieces before its whole buffer is allocated. */
const PIECES_MAX = 1 << 20;

/** Ids of uploads dropped (timeout, cancel, refused then forgotten) whose late chunks are ignored, not protocol errors. */
const DROPPED_MEMORY = 1024;

export interface UploadTableOptions {
  /** This connection's share of the SVM's upload memory. */
  account: BudgetAccount;
  timeoutMs: number;
  /** No chunk for this long: the upload is dropped (onTimeout). Default: timeoutMs. */
  stallMs?: number | undefined;
  /** Uploads receiving at once on this connection (default: unbounded). */
  maxActive?: number | undefined;
  /** Refused uploads whose chunks may still come; past it the oldest is forgotten. */
  maxRefused: number;
  /** An accepted upload did not complete in time, or stalled; its memory is already released. */
  onTimeout: (id: number, why: 'timeout' | 'stalled') => void;
  /** A chunk did not fit this agent's, its tenant's or the SVM's memory; the upload is dropped, its memory released. */
  onOverBudget: (id: number) => void;
  /** Content bytes buffered (for metrics). */
  onBytes: (n: number) => void;
}

/**
 * Uploads whose timer fired end here, at most `perTurn` per turn of the event loop and for at most
 * `budgetMs` of it (at least one a turn). Uploads announced together expire together: Node runs
 * every due timer of one duration in one go, and 3,200 stalled uploads of a hostile tenant ending
 * at once (each an error verdict written to its socket) held the SVM's loop for tens of ms while a
 * quiet tenant's requests waited. Spread over turns, the quiet tenant's frames are read between
 * them. A count alone was not enough: an expiry costs 30-60 us on this machine, up to ~150 (the
 * verdict's socket write, which wakes the agent, most of it), so 64 in a turn held the loop 2-6 ms
 * beside 300 stalling agents, and a quiet tenant's lookup that came meanwhile waited for all of
 * it (docs/benchmarks.md, "Expiries by time").
 */
export class TurnQueue {
  private readonly q: Array<() => void> = [];
  private head = 0;
  private turn: NodeJS.Immediate | undefined;

  constructor(
    readonly perTurn: number,
    readonly budgetMs: number = Infinity,
  ) {}

  get pending(): number {
    return this.q.length - this.head;
  }

  /** Array slots held (pending ones and finished ones not yet given back). */
  get slots(): number {
    return this.q.length;
  }

  add(fn: () => void): void {
    this.q.push(fn);
    this.turn ??= setImmediate(() => this.run());
  }

  private run(): void {
    this.turn = undefined;
    const end = Math.min(this.q.length, this.head + this.perTurn);
    const until = performance.now() + this.budgetMs;
    while (this.head < end) {
      const fn = this.q[this.head]!;
      this.q[this.head++] = noop;
      try {
        fn();
      } catch {
        // One upload's end must not stop the others'; its session reports its own errors.
      }
      if (performance.now() >= until) break;
    }
    if (this.head === this.q.length) {
      this.q.length = 0;
      this.head = 0;
      return;
    }
    // A backlog that never drains whole must not keep every slot it ever used.
    if (this.head >= 1024 && this.head * 2 >= this.q.length) {
      this.q.splice(0, this.head);
      this.head = 0;
    }
    this.turn = setImmediate(() => this.run());
  }
}

const noop = (): void => undefined;

/** The SVM's upload expiries: at most 64 and 0.25 ms per turn (each one a verdict frame written). */
export const expiries = new TurnQueue(64, 0.25);

export class UploadTable {
  private readonly active = new Map<number, Upload>();
  private readonly refused = new Map<number, Upload>();
  private readonly dropped = new Set<number>();

  constructor(private readonly o: UploadTableOptions) {}

  /** Charge this connection's uploads to another account (its tenant is known after hello). */
  setAccount(account: BudgetAccount): void {
    if (this.active.size > 0) throw new Error('setAccount with uploads in progress');
    this.o.account = account;
  }

  /** Uploads still receiving chunks (refused ones not counted). */
  get size(): number {
    return this.active.size;
  }

  has(id: number): boolean {
    return this.active.has(id);
  }

  /**
   * Start receiving `size` bytes for `id`. Nothing is reserved yet: memory is taken chunk by
   * chunk. False when this connection already receives `maxActive` uploads (caller answers
   * LA_ERR_BUSY).
   */
  accept(id: number, size: number): boolean {
    this.forget(id);
    if (this.active.size >= (this.o.maxActive ?? Infinity)) return false;
    const u = newUpload(id, size, crypto.createHash('sha256'), () => this.expire(u, 'timeout'), this.o.timeoutMs);
    u.stall = setTimeout(() => this.expire(u, 'stalled'), this.o.stallMs ?? this.o.timeoutMs);
    this.active.set(id, u);
    return true;
  }

  /** The request was answered already (too large, busy): take its chunks without keeping them. */
  refuse(id: number, size: number): void {
    this.forget(id);
    const u = newUpload(id, size, undefined, () => this.drop(id), this.o.timeoutMs);
    this.refused.set(id, u);
    if (this.refused.size > this.o.maxRefused) this.drop(this.refused.keys().next().value as number);
  }

  /** Drop an upload (cancel, timeout, connection closed): memory released, late chunks ignored. */
  drop(id: number): boolean {
    const u = this.active.get(id) ?? this.refused.get(id);
    if (!u) return false;
    clearTimeout(u.timer);
    clearTimeout(u.stall);
    if (this.active.delete(id)) this.o.account.release(u.received);
    u.chunks = [];
    u.whole = undefined;
    this.refused.delete(id);
    this.dropped.add(id);
    if (this.dropped.size > DROPPED_MEMORY) this.dropped.delete(this.dropped.values().next().value as number);
    return true;
  }

  /**
   * Take one chunk. Returns the completed upload after its last chunk, else undefined. Throws
   * ProtocolError for a chunk of an unknown id, out of order, past the announced size, or with a
   * last flag that disagrees with the byte count.
   */
  add(c: Chunk): CompletedUpload | undefined {
    const u = this.active.get(c.id) ?? this.refused.get(c.id);
    if (!u) {
      // A chunk that arrives after we timed out or the agent cancelled is not the agent's fault.
      if (this.dropped.has(c.id)) return undefined;
      throw new ProtocolError('LA_ERR_PROTO_UPLOAD', `chunk for unknown request id ${c.id}`);
    }
    if (c.index !== u.nextIndex)
      throw new ProtocolError('LA_ERR_PROTO_UPLOAD', `chunk ${c.index} of request ${c.id} arrived out of order (expected ${u.nextIndex})`);
    const end = u.received + c.payload.length;
    if (end > u.size) throw new ProtocolError('LA_ERR_PROTO_UPLOAD', `request ${c.id} sent more than its announced ${u.size} bytes`);
    if (c.last !== (end === u.size)) {
      throw new ProtocolError(
        'LA_ERR_PROTO_UPLOAD',
        c.last
          ? `request ${c.id} ended after ${end} of ${u.size} bytes`
          : `request ${c.id} sent all its ${u.size} bytes without a last flag`,
      );
    }
    u.nextIndex++;
    if (u.hash) {
      if (!this.o.account.tryReserve(c.payload.length)) {
        // Its bytes so far go back now; the rest of its chunks are read and discarded.
        this.drop(u.id);
        this.refuse(u.id, u.size);
        const r = this.refused.get(u.id);
        if (r) {
          r.nextIndex = u.nextIndex;
          r.received = end;
        }
        this.o.onOverBudget(u.id);
        return undefined;
      }
      u.stall?.refresh();
      if (!u.whole && end > PIECES_MAX) {
        u.whole = Buffer.allocUnsafe(u.size);
        let at = 0;
        for (const piece of u.chunks) at += piece.copy(u.whole, at);
        u.chunks = [];
      }
      if (u.whole) c.payload.copy(u.whole, u.received);
      // A small chunk is copied: a view would pin the whole socket read it came in (64 KiB).
      else u.chunks.push(c.payload.length < 65536 ? Buffer.from(c.payload) : c.payload);
      u.hash.update(c.payload);
      this.o.onBytes(c.payload.length);
    }
    u.received = end;
    if (!c.last) return undefined;
    clearTimeout(u.timer);
    clearTimeout(u.stall);
    if (!u.hash) {
      this.refused.delete(u.id);
      return undefined;
    }
    this.active.delete(u.id);
    const content = u.whole ?? (u.chunks.length === 1 ? u.chunks[0]! : Buffer.concat(u.chunks, u.size));
    u.chunks = [];
    u.whole = undefined;
    let released = false;
    return {
      id: u.id,
      sha256: u.hash.digest('hex'),
      content,
      release: () => {
        if (released) return;
        released = true;
        this.o.account.release(u.size);
      },
    };
  }

  /**
   * The SVM did not read this connection for a while (the tenant read gate paused it): that time
   * is not the agent's stall, so every accepted upload's stall clock starts again.
   */
  restartStallClocks(): void {
    for (const u of this.active.values()) u.stall?.refresh();
  }

  /** Drop everything (the connection closed). */
  clear(): void {
    for (const id of [...this.active.keys(), ...this.refused.keys()]) this.drop(id);
  }

  private forget(id: number): void {
    const old = this.refused.get(id);
    if (old) {
      clearTimeout(old.timer);
      this.refused.delete(id);
    }
    this.dropped.delete(id);
  }

  /** Its timer fired: the upload ends in a later turn, a bounded number per turn (see `expiries`). */
  private expire(u: Upload, why: 'timeout' | 'stalled'): void {
    expiries.add(() => {
      if (this.active.get(u.id) !== u) return; // completed, cancelled or dropped meanwhile
      this.drop(u.id);
      this.o.onTimeout(u.id, why);
    });
  }
}
