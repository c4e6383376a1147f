/**
 * Read back-pressure by tenant: a flooding tenant cannot take the SVM's one thread from another.
 *
 * Everything an agent sends is handled on the event loop: frames parsed, uploads hashed as they
 * arrive, complete uploads scanned. Engine slots are shared round-robin (fairness.ts), but the
 * loop is not: in one turn of it every connection with data is read, so a tenant with 20 agents
 * each streaming uploads fills every turn with its hashing and scans, and a quiet tenant's
 * request waits behind all of it (the noisy-neighbour bench: p99 73-88x alone).
 *
 * So while two tenants or more are active (sent a frame within `activeMs`), each tenant may have
 * `bytesPerTurn` bytes of frames handled per turn of the loop. Once a frame takes its tenant past
 * that, every connection of the tenant that sent within `activeMs` is paused, not only the one that
 * went over (its socket is not read: TCP flow control holds its sender back, its bytes wait in the
 * kernel, not in our memory), and they queue in the tenant's line; a connection silent for longer
 * goes on until its first frame, so the tenant's idle agents are not sent to the back of a long
 * line. Pausing only the sender let every other connection of the
 * tenant with data ready in the same poll have a 64 KiB read parsed in that turn: 200 stalling
 * uploaders made a turn of ~12 MiB (tens of ms) however small the budget. At the end of the turn
 * (setImmediate) every tenant's count starts again and at most `resumePerTurn` connections of each
 * line are resumed, in order, so a tenant's work per turn stays bounded however many connections
 * it has, and each of them gets its turn. A resumed connection is told (`resume()`), so time it
 * spent paused is not counted as its uploads stalling. A quiet tenant under its share is never
 * paused.
 *
 * A tenant alone is held to `aloneBytesPerTurn` (larger: its throughput stays whole), and all its
 * connections are resumed at the end of the turn. That is for the tenant that is not active yet:
 * an agent idle for longer than `activeMs` sends a request while another tenant floods, and the
 * gate cannot see it before its bytes are read. Unbounded, one turn read every socket with data
 * up to libuv's 32 reads of 64 KiB each: the first request of an idle quiet agent waited 250 ms
 * beside 20 flooding agents and 730 ms beside the start of 200 stalling ones (the noisy-neighbour
 * bench, 2026-12-05). Bounded, the loop is back to polling after ~1 MiB of frames, and the
 * newcomer's frame is read in the next turn; from there the tenants share as above.
 */

/** What the gate pauses: a WebSocket (ws's pause/resume stop reading its socket). */
export interface Pausable {
  pause(): void;
  resume(): void;
}

export interface ReadGateOptions {
  /** Bytes of one tenant's frames handled per turn of the event loop while others are active; 0: off. */
  bytesPerTurn: number;
  /** Bytes of a tenant's frames handled per turn while no other is active (default 4 x bytesPerTurn); bytesPerTurn 0: off. */
  aloneBytesPerTurn?: number;
  /** Paused connections of one tenant resumed per turn. */
  resumePerTurn: number;
  /** A tenant is active for this long after its last frame. */
  activeMs: number;
}

interface TenantLine {
  /** Bytes handled this turn. */
  used: number;
  lastHeard: number;
  /** Connections that sent a frame and are not paused. */
  running: Set<Pausable>;
  /** Paused connections, oldest first. */
  paused: Set<Pausable>;
}

export class TenantReadGate {
  private readonly tenants = new Map<string, TenantLine>();
  /** Every connection that sent a frame: its tenant, and when it last did. A paused one is in its tenant's `paused`. */
  private readonly conns = new Map<Pausable, { tenant: string; lastHeard: number }>();
  private turnEnd: NodeJS.Immediate | undefined;
  /** Connections paused so far (lightagent_svm_reads_paused_total). */
  pauses = 0;

  private readonly aloneBytes: number;

  constructor(readonly o: ReadGateOptions) {
    this.aloneBytes = Math.max(o.bytesPerTurn, o.aloneBytesPerTurn ?? 4 * o.bytesPerTurn);
  }

  /** Connections paused now. */
  get pausedNow(): number {
    let n = 0;
    for (const t of this.tenants.values()) n += t.paused.size;
    return n;
  }

  /** A frame of `bytes` from `conn` (tenant `tenant`) was handled. */
  account(tenant: string, conn: Pausable, bytes: number, now = performance.now()): void {
    if (this.o.bytesPerTurn <= 0) return;
    let t = this.tenants.get(tenant);
    if (!t) this.tenants.set(tenant, (t = { used: 0, lastHeard: now, running: new Set(), paused: new Set() }));
    t.lastHeard = now;
    t.used += bytes;
    const known = this.conns.get(conn);
    if (known) known.lastHeard = now;
    else {
      this.conns.set(conn, { tenant, lastHeard: now });
      t.running.add(conn);
    }
    this.endTurnSoon();
    if (t.used <= this.o.bytesPerTurn || t.running.size === 0) return;
    if (t.used <= this.aloneBytes && !this.othersActive(tenant, now)) return;
    // The tenant waits for the next turn: every connection of it that sent within activeMs (one
    // silent longer has nothing queued, most likely, and is paused at its first frame if it
    // sends now), the connection that went over last in line.
    for (const c of t.running) if (c !== conn && now - this.conns.get(c)!.lastHeard < this.o.activeMs) this.pauseOne(t, c);
    if (t.running.has(conn)) this.pauseOne(t, conn);
  }

  /** The connection closed. */
  forget(conn: Pausable): void {
    const known = this.conns.get(conn);
    if (!known) return;
    this.conns.delete(conn);
    const t = this.tenants.get(known.tenant);
    t?.paused.delete(conn);
    t?.running.delete(conn);
  }

  private pauseOne(t: TenantLine, conn: Pausable): void {
    t.running.delete(conn);
    conn.pause();
    t.paused.add(conn);
    this.pauses++;
  }

  private othersActive(tenant: string, now: number): boolean {
    for (const [name, t] of this.tenants) if (name !== tenant && now - t.lastHeard < this.o.activeMs) return true;
    return false;
  }

  private endTurnSoon(): void {
    if (this.turnEnd) return;
    this.turnEnd = setImmediate(() => this.endTurn());
  }

  private endTurn(now = performance.now()): void {
    this.turnEnd = undefined;
    let more = false;
    for (const [name, t] of this.tenants) {
      t.used = 0;
      // Nobody to be fair to any more: the whole line goes on.
      const n = this.othersActive(name, now) ? this.o.resumePerTurn : Infinity;
      let k = 0;
      for (const conn of t.paused) {
        if (k++ >= n) break;
        t.paused.delete(conn);
        t.running.add(conn);
        conn.resume();
      }
      if (t.paused.size > 0) more = true;
      else if (now - t.lastHeard > this.o.activeMs) {
        for (const conn of t.running) this.conns.delete(conn);
        this.tenants.delete(name);
      }
    }
    if (more) this.endTurnSoon();
  }
}

/** Why a connection is not read: its tenant's turn is over (TenantReadGate), or it was just refused as busy. */
export type HoldReason = 'turn' | 'busy';

/**
 * One connection's reads, held for one reason or more: it is read again only once none holds.
 * The read gate and the busy pause both pause the same socket, and neither may resume it while
 * the other still holds it.
 */
export class ReadHolds {
  private readonly held = new Set<HoldReason>();
  constructor(private readonly target: Pausable) {}

  get holding(): boolean {
    return this.held.size > 0;
  }

  hold(reason: HoldReason): void {
    if (this.held.size === 0) this.target.pause();
    this.held.add(reason);
  }

  /** True when this was the last hold and the connection is read again. */
  release(reason: HoldReason): boolean {
    if (!this.held.delete(reason) || this.held.size > 0) return false;
    this.target.resume();
    return true;
  }
}
