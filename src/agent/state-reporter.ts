/**
 * The agent's state reports to its SVM (feature state-report, docs/console.md): protection mode
 * and state with reasons, versions and OS, the signature generation in use, the local cache's
 * size and hits, the deferred queue's depth, the detections. Sent right after each welcome, on
 * a change (debounced: at most one per `minIntervalMs`, 2 s) and as a heartbeat every
 * `heartbeatMs` (default 5 min, never under 30 s) -- never chatty. Only to an SVM that listed the
 * feature; an older SVM never sees a `state` frame.
 */
import { FEATURES, type StateReport } from '../protocol/index.js';
import type { SvmClient } from '../svm-link/index.js';

export type StateFigures = Omit<StateReport, 't'>;

export interface StateReporterOptions {
  link: SvmClient;
  /** The figures now (called at each send). */
  figures: () => StateFigures;
  /** Heartbeat (default 300 s; at least 30 s). */
  heartbeatMs?: number;
  /** Least time between two reports (default 2 s). */
  minIntervalMs?: number;
}

export const MIN_HEARTBEAT_MS = 30_000;

export class StateReporter {
  readonly heartbeatMs: number;
  private readonly minIntervalMs: number;
  private lastSent = -Infinity;
  private pending: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Reports sent (tests, status). */
  sent = 0;
  private readonly onConnected = () => this.sendNow();

  constructor(private readonly o: StateReporterOptions) {
    this.heartbeatMs = Math.max(MIN_HEARTBEAT_MS, o.heartbeatMs ?? 300_000);
    this.minIntervalMs = o.minIntervalMs ?? 2000;
  }

  start(): void {
    this.o.link.on('connected', this.onConnected);
    if (this.o.link.state === 'connected') this.sendNow();
    else this.armHeartbeat();
  }

  /** Something changed: report it, at most one report per minIntervalMs. */
  changed(): void {
    if (this.stopped || this.pending) return;
    const wait = Math.max(0, this.lastSent + this.minIntervalMs - Date.now());
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.send();
    }, wait);
    this.pending.unref();
  }

  stop(): void {
    this.stopped = true;
    this.o.link.off('connected', this.onConnected);
    clearTimeout(this.pending);
    clearTimeout(this.heartbeat);
  }

  /** Right after a welcome: the SVM (maybe a new one after a failover) hears the state at once. */
  private sendNow(): void {
    clearTimeout(this.pending);
    this.pending = undefined;
    this.send();
  }

  private send(): void {
    if (this.stopped) return;
    this.armHeartbeat();
    const link = this.o.link;
    if (link.state !== 'connected' || !link.speaks(FEATURES.stateReport)) return;
    if (link.reportState(this.o.figures())) {
      this.sent++;
      this.lastSent = Date.now();
    }
  }

  private armHeartbeat(): void {
    clearTimeout(this.heartbeat);
    if (this.stopped) return;
    this.heartbeat = setTimeout(() => this.send(), this.heartbeatMs);
    this.heartbeat.unref();
  }
}

/** Bound a figure to what the codec accepts (strings of at most 128 characters, reasons as names). */
export function boundFigures(f: StateFigures): StateFigures {
  const short = (s: string) => s.slice(0, 128);
  return {
    ...f,
    mode: short(f.mode),
    reasons: f.reasons.filter((r) => /^[a-z0-9][a-z0-9-]{0,63}$/.test(r)).slice(0, 16),
    since: short(f.since),
    agentVersion: short(f.agentVersion),
    os: short(f.os),
    ...(f.osRelease !== undefined ? { osRelease: short(f.osRelease) } : {}),
    ...(f.generation !== undefined ? { generation: short(f.generation) } : {}),
    ...(f.policy ? { policy: { name: short(f.policy.name), version: short(f.policy.version) } } : {}),
  };
}
