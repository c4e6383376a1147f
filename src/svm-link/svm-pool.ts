/**
 * SvmPool — the agent's connection to several SVMs, presented as one SvmClient.
 *
 * - One SvmLink per SVM, all kept connected (each reconnects with its own backoff and jitter, which
 *   is the probe of an SVM that is down), so failing over costs no handshake and every SVM's load
 *   is known. The cost: one idle WebSocket per listed SVM (at most 16).
 * - Requests go to the active SVM: the best (lowest) priority, then the lowest reported load.
 * - Failover within the deadline: a request whose SVM drops (in flight, or waiting for a window
 *   slot there) is sent again to the next SVM with what is left of the same deadline. Uploads
 *   restart from byte 0 (the ChunkReader reads by offset). Nothing is lost: every request ends in
 *   a verdict, or in DeadlineError/SvmUnavailableError once its deadline is spent.
 * - No flapping: an SVM that failed or dropped must stay up `holdDownMs` before the pool returns
 *   to it, and the pool moves within one priority for load only after `holdDownMs` on the active
 *   SVM and for a load lower by `LOAD_MARGIN`.
 * - Generations stay coherent: every switch emits `connected` with the new SVM's welcome (the
 *   cache and the gate learn its generation, as after a reconnect), `generation` and `load` are
 *   forwarded from the active SVM only, and a verdict stamped with another generation than the
 *   active SVM's (answered by the SVM just left) is asked again of the active one.
 * - `disconnected` when the last SVM is lost; `refused` when every SVM refused this agent.
 */
import { EventEmitter } from 'node:events';
import { DeadlineError, LightagentError, SvmUnavailableError } from '../errors.js';
import { logger } from '../log.js';
import type {
  DetectionEvent,
  Limits,
  LookupBatch,
  LookupBatchAnswer,
  PolicyMsg,
  StateReport,
  VerdictMsg,
  Welcome,
} from '../protocol/index.js';
import { Backoff } from '../backoff.js';
import type { SvmClient } from './client.js';
import { fetchSvmList, isLoopbackUrl, svmUrlProblem, type SvmEntry } from './discovery.js';
import { SvmLink, type ChunkReader, type LinkState, type SvmLinkEvents, type SvmLinkOptions, type WindowStats } from './svm-link.js';
import { priorityOf, type PriorityLike, type WindowClassStats } from './window.js';

/** Same-priority SVMs: move for load only when the other one's load is lower by this (load is 0..1). */
export const LOAD_MARGIN = 0.2;
/** At start, how long the first SVM to answer waits for better ones still connecting, ms. */
const STARTUP_GRACE_MS = 300;

export interface SvmPoolOptions extends Omit<SvmLinkOptions, 'url'> {
  /** Static SVMs (lower priority preferred). May be empty when `discovery` is set. */
  svms: readonly SvmEntry[];
  discovery?: { url: string; intervalMs?: number; timeoutMs?: number; maxBytes?: number } | undefined;
  /** See the module comment. Default 10 s. */
  holdDownMs?: number;
  /** Accept discovered ws:// URLs to other hosts (token and files in clear). */
  allowPlainWs?: boolean;
}

export interface SvmMemberStatus {
  url: string;
  priority: number;
  active: boolean;
  state: LinkState;
  svmId?: string | undefined;
  generation?: string | undefined;
  load?: number | undefined;
  inFlight: number;
  /** How long its current connection has been up, ms. */
  upMs?: number | undefined;
  error?: { code: string; message: string } | undefined;
}

interface Member {
  entry: SvmEntry;
  link: SvmLink;
  /** When its current connection was welcomed. */
  upSince: number | undefined;
  /** Failed or dropped since the pool started: returning to it waits holdDownMs of uptime. */
  lost: boolean;
  /** Its first connection attempt has ended (welcomed, failed or refused). */
  settled: boolean;
}

export class SvmPool extends EventEmitter<SvmLinkEvents> implements SvmClient {
  private readonly opts: SvmPoolOptions;
  private readonly holdDownMs: number;
  private members: Member[] = [];
  private readonly staticEntries: SvmEntry[];
  private discovered: SvmEntry[] = [];
  private active: Member | undefined;
  private lastActive: Member | undefined;
  private activeSince = 0;
  private started = false;
  private closed = false;
  private firstUpAt: number | undefined;
  private startupSettled = false;
  private evalTimer: NodeJS.Timeout | undefined;
  private discoveryTimer: NodeJS.Timeout | undefined;
  private readonly discoveryBackoff = new Backoff(1000, 60_000);
  private discoveryError: LightagentError | undefined;
  private changeWaiters = new Set<() => void>();
  private readonly log = logger('svm-pool');
  /** Round-trip of the last lookup, ms. */
  lastLatencyMs = 0;
  /** Requests sent again to another SVM after theirs dropped (for status and tests). */
  failovers = 0;

  constructor(options: SvmPoolOptions) {
    super();
    this.opts = options;
    this.holdDownMs = options.holdDownMs ?? 10_000;
    for (const e of options.svms) {
      const bad = svmUrlProblem(e.url);
      if (bad) throw new LightagentError('LA_ERR_CONFIG', `svm: ${e.url} ${bad}`, 'fix the `svm` list in the agent config');
    }
    if (options.svms.length === 0 && !options.discovery)
      throw new LightagentError('LA_ERR_CONFIG', 'no SVM: the list is empty and no discovery URL is set', 'set `svm` or `svm_discovery`');
    this.staticEntries = [...options.svms];
    this.setEntries();
  }

  // ------------------------------------------------------------------ SvmClient

  get url(): string {
    const m = this.active ?? this.lastActive ?? this.ranked(this.members)[0];
    return m?.entry.url ?? this.opts.discovery?.url ?? '';
  }
  get state(): LinkState {
    if (this.closed) return 'closed';
    if (this.active) return 'connected';
    if (!this.started) return 'idle';
    if (this.members.length > 0 && this.members.every((m) => m.link.state === 'refused')) return 'refused';
    return this.lastActive ? 'disconnected' : 'connecting';
  }
  get welcome(): Welcome | undefined {
    return (this.active ?? this.lastActive)?.link.welcome;
  }
  get generation(): string | undefined {
    return (this.active ?? this.lastActive)?.link.generation;
  }
  /** Feature policy: the active SVM's last policy (a switch emits `connected`: read it again then). */
  get policy(): PolicyMsg | undefined {
    return this.active?.link.policy;
  }
  get load(): number {
    return (this.active ?? this.lastActive)?.link.load ?? 0;
  }
  get limits(): Limits | undefined {
    return (this.active ?? this.lastActive)?.link.limits;
  }
  get inFlight(): number {
    return this.members.reduce((n, m) => n + m.link.inFlight, 0);
  }

  /** The windows of every SVM, summed (max for the maxima). */
  get windowStats(): WindowStats {
    const sum = (a: WindowClassStats, b: WindowClassStats): WindowClassStats => ({
      admitted: a.admitted + b.admitted,
      atOnce: a.atOnce + b.atOnce,
      waitedMsTotal: a.waitedMsTotal + b.waitedMsTotal,
      waitedMsMax: Math.max(a.waitedMsMax, b.waitedMsMax),
      timedOut: a.timedOut + b.timedOut,
    });
    return this.members
      .map((m) => m.link.windowStats)
      .reduce(
        (a, b) => ({
          capacity: a.capacity + b.capacity,
          backgroundLimit: a.backgroundLimit + b.backgroundLimit,
          inUse: a.inUse + b.inUse,
          waiting: a.waiting + b.waiting,
          admitted: a.admitted + b.admitted,
          foreground: sum(a.foreground, b.foreground),
          background: sum(a.background, b.background),
          pacedChunks: a.pacedChunks + b.pacedChunks,
        }),
        {
          capacity: 0,
          backgroundLimit: 0,
          inUse: 0,
          waiting: 0,
          admitted: 0,
          foreground: { admitted: 0, atOnce: 0, waitedMsTotal: 0, waitedMsMax: 0, timedOut: 0 },
          background: { admitted: 0, atOnce: 0, waitedMsTotal: 0, waitedMsMax: 0, timedOut: 0 },
          pacedChunks: 0,
        },
      );
  }

  connect(): Promise<void> {
    if (this.closed) return Promise.reject(new SvmUnavailableError(this.url, 'the link was closed'));
    this.start();
    return this.waitConnected(this.opts.connectTimeoutMs ?? 5000);
  }

  async waitConnected(ms: number): Promise<void> {
    const end = performance.now() + ms;
    for (;;) {
      if (this.active) return;
      if (this.closed) throw new SvmUnavailableError(this.url, 'the link was closed');
      const refusal = this.refusal();
      if (refusal) throw refusal;
      const left = end - performance.now();
      if (left <= 0) throw new SvmUnavailableError(this.urls(), this.whyNone(ms));
      await this.waitChange(left);
    }
  }

  async lookup(sha256: string, size: number, deadlineMs = this.opts.deadlineMs ?? 2000, priority?: PriorityLike): Promise<VerdictMsg> {
    const start = performance.now();
    // One Priority across failovers: raised once, it stays raised on the next SVM too.
    const prio = priorityOf(priority);
    const v = await this.request('lookup', deadlineMs, (link, left) => link.lookup(sha256, size, left, prio));
    this.lastLatencyMs = performance.now() - start;
    return v;
  }

  /** Feature lookup-batch, on the active SVM (failing over like `lookup`). */
  lookupBatch(
    entries: LookupBatch['entries'],
    deadlineMs = this.opts.deadlineMs ?? 2000,
    priority?: PriorityLike,
  ): Promise<LookupBatchAnswer | VerdictMsg> {
    const prio = priorityOf(priority);
    return this.request('lookups', deadlineMs, (link, left) => link.lookupBatch(entries, left, prio));
  }

  scan(size: number, read: ChunkReader, deadlineMs: number, name?: string, priority?: PriorityLike): Promise<VerdictMsg> {
    const prio = priorityOf(priority);
    return this.request('scan', deadlineMs, (link, left) => link.scan(size, read, left, name, prio));
  }

  report(event: Omit<DetectionEvent, 't'>): boolean {
    return this.active ? this.active.link.report(event) : false;
  }

  speaks(feature: string): boolean {
    return this.active?.link.speaks(feature) ?? false;
  }

  reportState(report: Omit<StateReport, 't'>): boolean {
    return this.active ? this.active.link.reportState(report) : false;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.evalTimer);
    clearTimeout(this.discoveryTimer);
    this.active = undefined;
    for (const m of this.members) m.link.close();
    this.notify();
  }

  // ------------------------------------------------------------------ status

  /** Every SVM of the pool, the active one first, then by priority and load. */
  status(): SvmMemberStatus[] {
    const now = performance.now();
    return this.ranked(this.members)
      .sort((a, b) => Number(b === this.active) - Number(a === this.active))
      .map((m) => {
        const err = m.link.error;
        return {
          url: m.entry.url,
          priority: m.entry.priority,
          active: m === this.active,
          state: m.link.state,
          svmId: m.link.welcome?.svmId,
          generation: m.link.generation,
          load: m.link.welcome ? m.link.load : undefined,
          inFlight: m.link.inFlight,
          upMs: m.upSince === undefined ? undefined : Math.round(now - m.upSince),
          error: err ? { code: err.code, message: err.message } : undefined,
        };
      });
  }

  /** The link to one SVM of the pool (svm-info measures each one's round trip). */
  linkFor(url: string): SvmLink | undefined {
    return this.members.find((m) => m.entry.url === url)?.link;
  }

  /** The last discovery failure, while the pool runs on the SVMs it knew before. */
  get discoveryFailure(): LightagentError | undefined {
    return this.discoveryError;
  }

  /** Resolves when every SVM's first connection attempt has ended (or after `ms`). */
  async settled(ms: number): Promise<void> {
    const end = performance.now() + ms;
    while (!this.closed && (this.members.length === 0 || this.members.some((m) => !m.settled))) {
      const left = end - performance.now();
      if (left <= 0) return;
      await this.waitChange(left);
    }
  }

  // ------------------------------------------------------------------ requests

  private async request<T extends VerdictMsg | LookupBatchAnswer>(
    kind: 'lookup' | 'scan' | 'lookups',
    deadlineMs: number,
    run: (link: SvmLink, leftMs: number) => Promise<T>,
  ): Promise<T> {
    this.start();
    const deadlineAt = performance.now() + deadlineMs;
    const avoid = new Set<Member>();
    let lastErr: LightagentError | undefined;
    for (;;) {
      if (this.closed) throw new SvmUnavailableError(this.url, 'the link was closed');
      const left = deadlineAt - performance.now();
      if (left < 1) {
        if (lastErr instanceof DeadlineError) throw lastErr;
        throw new SvmUnavailableError(
          this.urls(),
          lastErr ? `${kind}: ${lastErr.message}; no other SVM answered within ${deadlineMs} ms` : `${kind}: ${this.whyNone(deadlineMs)}`,
        );
      }
      const m = this.pick(avoid);
      if (!m) {
        const refusal = this.refusal();
        if (refusal) throw refusal;
        // Nothing connected (or only SVMs that just failed this request): wait for a change,
        // at most 100 ms when avoiding, so a link still closing is tried again, not spun on.
        await this.waitChange(avoid.size ? Math.min(left, 100) : left);
        avoid.clear();
        continue;
      }
      try {
        const v = await run(m.link, Math.max(1, Math.round(left)));
        const now = this.active;
        if (now && now !== m && v.generation !== undefined && now.link.generation !== undefined && v.generation !== now.link.generation) {
          // Answered by the SVM we just left, under its signatures: ask the one in use.
          avoid.add(m);
          lastErr = new SvmUnavailableError(
            m.entry.url,
            `answered under generation ${v.generation}, the active SVM has ${now.link.generation}`,
          );
          continue;
        }
        return v;
      } catch (e) {
        if (e instanceof SvmUnavailableError && !this.closed) {
          lastErr = e;
          avoid.add(m);
          this.failovers++;
          continue;
        }
        throw e;
      }
    }
  }

  /** The active SVM, or (when it failed this request) the best other connected one. */
  private pick(avoid: Set<Member>): Member | undefined {
    if (this.active && this.active.link.state === 'connected' && !avoid.has(this.active)) return this.active;
    const up = this.members.filter((m) => m.link.state === 'connected' && !avoid.has(m));
    return this.forcedChoice(up);
  }

  // ------------------------------------------------------------------ membership

  private start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    for (const m of this.members) this.startMember(m);
    if (this.opts.discovery) void this.discover();
  }

  private startMember(m: Member): void {
    m.link.connect().catch(() => {
      /* the link keeps retrying with backoff; its events drive the pool */
    });
  }

  private setEntries(): void {
    const byUrl = new Map<string, SvmEntry>();
    for (const e of this.discovered) byUrl.set(e.url, e);
    for (const e of this.staticEntries) byUrl.set(e.url, e); // the config file wins over discovery
    for (const m of [...this.members]) {
      const e = byUrl.get(m.entry.url);
      if (e) {
        m.entry = e;
        byUrl.delete(e.url);
      } else {
        this.log.info('SVM no longer listed; leaving it', { svm: m.entry.url });
        this.members = this.members.filter((x) => x !== m);
        m.link.close(); // its requests fail with SvmUnavailableError and go to another SVM
        if (this.active === m) this.activeLost('no longer listed');
        if (this.lastActive === m) this.lastActive = this.active;
      }
    }
    for (const e of byUrl.values()) {
      const m = this.addMember(e);
      if (this.started) this.startMember(m);
    }
    this.evaluate();
    this.notify();
  }

  private addMember(entry: SvmEntry): Member {
    const { svms: _s, discovery: _d, holdDownMs: _h, allowPlainWs: _a, ...linkOpts } = this.opts;
    const link = new SvmLink({ ...linkOpts, url: entry.url });
    const m: Member = { entry, link, upSince: undefined, lost: false, settled: false };
    link.on('connected', () => {
      m.upSince = performance.now();
      m.settled = true;
      this.firstUpAt ??= m.upSince;
      this.evaluate();
      this.notify();
    });
    link.on('disconnected', (why) => {
      m.upSince = undefined;
      m.lost = true;
      if (this.active === m) this.activeLost(why);
      else this.evaluate();
      this.notify();
    });
    link.on('unreachable', () => {
      m.lost = true;
      m.settled = true;
      this.evaluate();
      this.notify();
    });
    link.on('refused', (err) => {
      m.upSince = undefined;
      m.lost = true;
      m.settled = true;
      if (this.active === m) this.activeLost(err.message);
      else this.evaluate();
      const refusal = this.refusal();
      if (refusal) this.emit('refused', refusal);
      this.notify();
    });
    link.on('load', (load) => {
      if (this.active === m) this.emit('load', load);
      this.evaluate();
    });
    link.on('generation', (g) => {
      if (this.active === m) this.emit('generation', g);
    });
    link.on('policy', (p) => {
      if (this.active === m) this.emit('policy', p);
    });
    // Feature scan-command: from any SVM of the pool (the console may be on one that is not active).
    link.on('scan-now', (c) => this.emit('scan-now', c));
    this.members.push(m);
    return m;
  }

  private async discover(): Promise<void> {
    const d = this.opts.discovery!;
    try {
      const list = await fetchSvmList(d.url, { timeoutMs: d.timeoutMs, maxBytes: d.maxBytes, ca: this.opts.ca });
      if (this.closed) return;
      const accepted = list.filter((e) => {
        if (this.opts.allowPlainWs || !e.url.startsWith('ws:') || isLoopbackUrl(e.url)) return true;
        this.log.warn('discovery listed a plain ws:// SVM on another host; ignored (use wss://, or allow_plain_ws)', { svm: e.url });
        return false;
      });
      if (accepted.length === 0)
        throw new LightagentError('LA_ERR_SVM_DISCOVERY', `SVM discovery at ${d.url}: no acceptable SVM in the answer`, 'list wss:// SVMs');
      this.discoveryError = undefined;
      this.discoveryBackoff.reset();
      const key = (l: SvmEntry[]) => JSON.stringify([...l].sort((a, b) => a.url.localeCompare(b.url)));
      if (key(accepted) !== key(this.discovered)) {
        this.log.info('SVM list from discovery', { url: d.url, svms: accepted.length });
        this.discovered = accepted;
        this.setEntries();
      }
      this.scheduleDiscovery(d.intervalMs ?? 300_000);
    } catch (e) {
      if (this.closed) return;
      this.discoveryError = e instanceof LightagentError ? e : new LightagentError('LA_ERR_SVM_DISCOVERY', String(e));
      this.log.warn('SVM discovery failed; keeping the SVMs known so far', {
        code: this.discoveryError.code,
        message: this.discoveryError.message,
      });
      this.scheduleDiscovery(Math.min(this.discoveryBackoff.next(), d.intervalMs ?? 300_000));
      this.notify();
    }
  }

  private scheduleDiscovery(ms: number): void {
    clearTimeout(this.discoveryTimer);
    this.discoveryTimer = setTimeout(() => void this.discover(), ms);
    this.discoveryTimer.unref();
  }

  // ------------------------------------------------------------------ choosing

  /** Lower priority first, then lower load, then list order (stable). */
  private ranked(ms: Member[]): Member[] {
    return [...ms].sort((a, b) => a.entry.priority - b.entry.priority || a.link.load - b.link.load);
  }

  private stable(m: Member, now: number): boolean {
    return !m.lost || (m.upSince !== undefined && now - m.upSince >= this.holdDownMs);
  }

  /** With no usable active SVM: the best stable one, else the best at all. */
  private forcedChoice(up: Member[]): Member | undefined {
    const now = performance.now();
    const stable = up.filter((m) => this.stable(m, now));
    return this.ranked(stable.length ? stable : up)[0];
  }

  private evaluate(): void {
    if (this.closed) return;
    clearTimeout(this.evalTimer);
    this.evalTimer = undefined;
    const now = performance.now();
    const up = this.members.filter((m) => m.link.state === 'connected' && m.upSince !== undefined);
    if (!this.active) {
      if (up.length === 0) return;
      // At start, give SVMs still on their first attempt a moment, so the first to answer does
      // not win over a better one that is a few milliseconds slower.
      if (!this.startupSettled) {
        const waiting = this.members.some((m) => !m.settled);
        const wait = (this.firstUpAt ?? now) + STARTUP_GRACE_MS - now;
        if (waiting && wait > 0) return this.later(wait);
        this.startupSettled = true;
      }
      this.switchTo(this.forcedChoice(up)!, 'first SVM');
      return;
    }
    const a = this.active;
    let nextCheck = Infinity;
    const better = this.ranked(up.filter((m) => m !== a && m.entry.priority < a.entry.priority));
    for (const m of better) {
      if (this.stable(m, now)) return this.switchTo(m, 'a preferred SVM is back');
      nextCheck = Math.min(nextCheck, m.upSince! + this.holdDownMs - now);
    }
    const peers = this.ranked(
      up.filter((m) => m !== a && m.entry.priority === a.entry.priority && m.link.load <= a.link.load - LOAD_MARGIN && this.stable(m, now)),
    );
    if (peers.length) {
      const dwell = this.activeSince + this.holdDownMs - now;
      if (dwell <= 0) return this.switchTo(peers[0]!, `lower load (${peers[0]!.link.load.toFixed(2)} < ${a.link.load.toFixed(2)})`);
      nextCheck = Math.min(nextCheck, dwell);
    }
    if (nextCheck < Infinity) this.later(nextCheck);
  }

  private later(ms: number): void {
    clearTimeout(this.evalTimer);
    this.evalTimer = setTimeout(() => this.evaluate(), Math.max(1, Math.ceil(ms)));
    this.evalTimer.unref();
  }

  private switchTo(m: Member, reason: string): void {
    const prev = this.active;
    this.active = m;
    this.lastActive = m;
    this.activeSince = performance.now();
    this.startupSettled = true;
    this.log.info(prev ? 'switching SVM' : 'using SVM', {
      svm: m.entry.url,
      priority: m.entry.priority,
      load: m.link.load,
      generation: m.link.generation,
      reason,
      ...(prev ? { from: prev.entry.url } : {}),
    });
    this.notify();
    this.emit('connected', m.link.welcome!);
    this.evaluate(); // schedule the next check, if any
  }

  private activeLost(why: string): void {
    const lost = this.active;
    this.active = undefined;
    const up = this.members.filter((m) => m !== lost && m.link.state === 'connected' && m.upSince !== undefined);
    const next = this.forcedChoice(up);
    if (next) {
      this.switchTo(next, `${lost?.entry.url ?? 'the SVM'} was lost: ${why}`);
      return;
    }
    this.log.warn('no SVM connected', { lost: lost?.entry.url, reason: why });
    this.emit('disconnected', why);
  }

  // ------------------------------------------------------------------ waiting

  private notify(): void {
    const ws = this.changeWaiters;
    this.changeWaiters = new Set();
    for (const w of ws) w();
  }

  private waitChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.changeWaiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, Math.max(1, ms));
      this.changeWaiters.add(done);
    });
  }

  /** Every SVM refused this agent (token, version, TLS): the first refusal, else undefined. */
  private refusal(): LightagentError | undefined {
    if (this.members.length === 0 || !this.members.every((m) => m.link.state === 'refused')) return undefined;
    return this.members.map((m) => m.link.error).find((e) => e !== undefined);
  }

  private urls(): string {
    return this.members.length ? this.members.map((m) => m.entry.url).join(', ') : (this.opts.discovery?.url ?? '(no SVM)');
  }

  private whyNone(ms: number): string {
    const parts = this.members.map((m) => `${m.entry.url}: ${m.link.error?.message ?? m.link.state}`);
    if (this.discoveryError) parts.push(this.discoveryError.message);
    return `none connected within ${ms} ms${parts.length ? ` (${parts.join('; ')})` : ''}`;
  }
}
