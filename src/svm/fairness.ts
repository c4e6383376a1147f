/**
 * Fairness between agents, so one noisy guest cannot starve the others:
 *
 * - TokenBucket: each agent may start `rate` requests (lookups and scans) per second, with bursts
 *   of `burst`; a `lookups` batch (feature lookup-batch) counts as one request per hash. A
 *   request over it is answered at once with an error verdict LA_ERR_RATE_LIMITED (the agent
 *   backs off and retries); the connection stays.
 * - FairScheduler: engine scans run at most `concurrency` at once; waiting scans sit in one
 *   bounded queue per agent (`perAgentQueue`), and a freed slot goes round-robin first by
 *   tenant, then by agent within the tenant, not to whoever queued most. A scan over its agent's
 *   queue bound is refused with LA_ERR_RATE_LIMITED.
 */
import { LightagentError } from '../errors.js';

export class RateLimitedError extends LightagentError {
  constructor(message: string) {
    super(
      'LA_ERR_RATE_LIMITED',
      message,
      'the agent sends faster than its share of this SVM (rate_limit, agent_queue); it backs off and retries',
    );
  }
}

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now = performance.now(),
  ) {
    this.tokens = burst;
    this.last = now;
  }

  /** Take one token if there is one. */
  take(now = performance.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /**
   * Take `n` tokens at once (a `lookups` batch costs one per hash). Admitted when min(n, burst)
   * tokens are there, so a batch larger than the burst is not refused for ever; the bucket may
   * then go below zero, and that debt is repaid at `rate` before anything else is admitted.
   */
  takeMany(n: number, now = performance.now()): boolean {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens < Math.min(n, this.burst)) return false;
    this.tokens -= n;
    return true;
  }
}

interface Job {
  run: () => void;
}

/** One tenant's agents with queued jobs, in round-robin order; each agent's own FIFO. */
type TenantQueues = Map<object, Job[]>;

export class FairScheduler {
  private running = 0;
  /** Tenants with queued jobs, in round-robin order. */
  private readonly tenants = new Map<string, TenantQueues>();
  private readonly depthByAgent = new WeakMap<object, number>();
  private queued = 0;

  constructor(
    private readonly concurrency: number,
    private readonly perAgentQueue: number,
  ) {
    if (!(concurrency >= 1)) throw new RangeError('concurrency must be >= 1');
    if (!(perAgentQueue >= 0)) throw new RangeError('perAgentQueue must be >= 0');
  }

  /** Jobs waiting for a slot, all agents together. */
  get depth(): number {
    return this.queued;
  }

  get active(): number {
    return this.running;
  }

  /** Queued jobs of one agent. */
  depthOf(agent: object): number {
    return this.depthByAgent.get(agent) ?? 0;
  }

  /**
   * Run `fn` when a slot is free and it is `agent`'s turn: a freed slot goes to the next tenant in
   * round-robin order, and within it to its next agent, so a tenant with hundreds of busy agents
   * gets one turn in as many as a tenant with one. Rejects with RateLimitedError when the agent's
   * queue is full.
   */
  run<T>(tenant: string, agent: object, fn: () => Promise<T>): Promise<T> {
    if (this.running < this.concurrency && this.queued === 0) return this.start(fn);
    const depth = this.depthOf(agent);
    if (depth >= this.perAgentQueue)
      return Promise.reject(new RateLimitedError(`this agent already has ${depth} scans waiting on the SVM (agent_queue)`));
    return new Promise<T>((resolve, reject) => {
      const agents = this.tenants.get(tenant) ?? new Map<object, Job[]>();
      const q = agents.get(agent) ?? [];
      q.push({ run: () => this.start(fn).then(resolve, reject) });
      agents.set(agent, q);
      this.tenants.set(tenant, agents);
      this.depthByAgent.set(agent, depth + 1);
      this.queued++;
    });
  }

  private start<T>(fn: () => Promise<T>): Promise<T> {
    this.running++;
    let p: Promise<T>;
    try {
      p = fn();
    } catch (e) {
      p = Promise.reject(e);
    }
    return p.finally(() => {
      this.running--;
      this.next();
    });
  }

  /** The first tenant in line gets the slot for its first agent; both go to the back of their lines. */
  private next(): void {
    while (this.running < this.concurrency && this.queued > 0) {
      const [tenant, agents] = this.tenants.entries().next().value as [string, TenantQueues];
      const [agent, q] = agents.entries().next().value as [object, Job[]];
      const job = q.shift()!;
      this.queued--;
      this.depthByAgent.set(agent, q.length);
      agents.delete(agent);
      if (q.length) agents.set(agent, q);
      this.tenants.delete(tenant);
      if (agents.size) this.tenants.set(tenant, agents);
      job.run();
    }
  }
}
