/**
 * The messages waiting for one SIEM destination, one FIFO per tenant: taken round-robin by
 * tenant, and when the bound is passed the oldest message of the tenant holding the most goes.
 * A tenant whose agents flood the SVM with events (event frames are the agent's to send) thus
 * loses its own oldest events first, not the others'. Within one tenant the order is kept.
 */
export interface Queued {
  tenant: string;
  msg: Buffer;
}

export class TenantQueue {
  private readonly fifos = new Map<string, Queued[]>();
  /** Tenants with messages, in round-robin order (the next to send first). */
  private ring: string[] = [];
  private n = 0;
  private b = 0;

  get size(): number {
    return this.n;
  }
  get bytes(): number {
    return this.b;
  }

  push(q: Queued): void {
    this.fifo(q.tenant).push(q);
    this.n++;
    this.b += q.msg.length;
  }

  /** Put messages back at the front of their tenants' FIFOs, in their order (a write that failed). */
  unshift(items: readonly Queued[]): void {
    for (let i = items.length - 1; i >= 0; i--) {
      const q = items[i]!;
      this.fifo(q.tenant).unshift(q);
      this.n++;
      this.b += q.msg.length;
    }
  }

  /** The next message: the oldest of the tenant whose turn it is. */
  shift(): Queued | undefined {
    const tenant = this.ring.shift();
    if (tenant === undefined) return undefined;
    const f = this.fifos.get(tenant)!;
    const q = f.shift()!;
    if (f.length) this.ring.push(tenant);
    else this.fifos.delete(tenant);
    this.n--;
    this.b -= q.msg.length;
    return q;
  }

  /** Drop the oldest message of the tenant holding the most messages; returns it. O(tenants). */
  dropOne(): Queued | undefined {
    let worst: string | undefined;
    let most = 0;
    for (const [t, f] of this.fifos) if (f.length > most) [worst, most] = [t, f.length];
    if (worst === undefined) return undefined;
    const f = this.fifos.get(worst)!;
    const q = f.shift()!;
    if (!f.length) {
      this.fifos.delete(worst);
      this.ring = this.ring.filter((t) => t !== worst);
    }
    this.n--;
    this.b -= q.msg.length;
    return q;
  }

  clear(): void {
    this.fifos.clear();
    this.ring = [];
    this.n = 0;
    this.b = 0;
  }

  private fifo(tenant: string): Queued[] {
    let f = this.fifos.get(tenant);
    if (!f) {
      f = [];
      this.fifos.set(tenant, f);
      this.ring.push(tenant);
    }
    return f;
  }
}
