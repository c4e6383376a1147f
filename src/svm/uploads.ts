/**
 * Upload reassembly for one agent connection, and the memory budget all connections share.
 *
 * An accepted upload reserves its whole announced size from the budget before any chunk is
 * buffered, so the SVM never holds more than `uploadMemory` bytes of content at once, whatever
 * the agents send; past it, uploads are refused (LA_ERR_BUSY) and the agent retries later.
 * The SHA-256 is computed here, over the bytes received, as they arrive.
 */
import crypto from 'node:crypto';
import { ProtocolError } from '../errors.js';
import type { Chunk } from '../protocol/index.js';

/** Upload bytes held in memory across every session. */
export class UploadBudget {
  private held = 0;
  constructor(readonly capacity: number) {}

  get used(): number {
    return this.held;
  }

  tryReserve(bytes: number): boolean {
    if (this.held + bytes > this.capacity) return false;
    this.held += bytes;
    return true;
  }

  release(bytes: number): void {
    this.held = Math.max(0, this.held - bytes);
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
  /** Empty for a refused upload: its chunks are checked and discarded. */
  buf: Buffer;
  hash: crypto.Hash | undefined;
  timer: NodeJS.Timeout;
}

/** Ids of uploads dropped (timeout, cancel, refused then forgotten) whose late chunks are ignored, not protocol errors. */
const DROPPED_MEMORY = 1024;

export interface UploadTableOptions {
  budget: UploadBudget;
  timeoutMs: number;
  /** Refused uploads whose chunks may still come; past it the oldest is forgotten. */
  maxRefused: number;
  /** An accepted upload did not complete in time; its memory is already released. */
  onTimeout: (id: number) => void;
  /** Content bytes buffered (for metrics). */
  onBytes: (n: number) => void;
}

export class UploadTable {
  private readonly active = new Map<number, Upload>();
  private readonly refused = new Map<number, Upload>();
  private readonly dropped = new Set<number>();

  constructor(private readonly o: UploadTableOptions) {}

  /** Uploads still receiving chunks (refused ones not counted). */
  get size(): number {
    return this.active.size;
  }

  has(id: number): boolean {
    return this.active.has(id);
  }

  /** Start receiving `size` bytes for `id`. False when the memory budget is spent (caller answers LA_ERR_BUSY). */
  accept(id: number, size: number): boolean {
    this.forget(id);
    if (!this.o.budget.tryReserve(size)) return false;
    const u: Upload = {
      id,
      size,
      received: 0,
      nextIndex: 0,
      buf: Buffer.allocUnsafe(size),
      hash: crypto.createHash('sha256'),
      timer: setTimeout(() => this.expire(u), this.o.timeoutMs),
    };
    this.active.set(id, u);
    return true;
  }

  /** The request was answered already (too large, busy): take its chunks without keeping them. */
  refuse(id: number, size: number): void {
    this.forget(id);
    const u: Upload = {
      id,
      size,
      received: 0,
      nextIndex: 0,
      buf: Buffer.alloc(0),
      hash: undefined,
      timer: setTimeout(() => this.drop(id), this.o.timeoutMs),
    };
    this.refused.set(id, u);
    if (this.refused.size > this.o.maxRefused) this.drop(this.refused.keys().next().value as number);
  }

  /** Drop an upload (cancel, timeout, connection closed): memory released, late chunks ignored. */
  drop(id: number): boolean {
    const u = this.active.get(id) ?? this.refused.get(id);
    if (!u) return false;
    clearTimeout(u.timer);
    if (this.active.delete(id)) this.o.budget.release(u.size);
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
      c.payload.copy(u.buf, u.received);
      u.hash.update(c.payload);
      this.o.onBytes(c.payload.length);
    }
    u.received = end;
    if (!c.last) return undefined;
    clearTimeout(u.timer);
    if (!u.hash) {
      this.refused.delete(u.id);
      return undefined;
    }
    this.active.delete(u.id);
    let released = false;
    return {
      id: u.id,
      sha256: u.hash.digest('hex'),
      content: u.buf,
      release: () => {
        if (released) return;
        released = true;
        this.o.budget.release(u.size);
      },
    };
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

  private expire(u: Upload): void {
    if (this.active.get(u.id) !== u) return;
    this.drop(u.id);
    this.o.onTimeout(u.id);
  }
}
