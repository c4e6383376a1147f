/**
 * Is the machine protected right now? One small state machine the status socket and the tray
 * share: `protected`, `degraded` (the SVM is unreachable, or files were allowed unjudged and wait
 * in the deferred queue), or `off` (no protection backend). A short SVM blip is not reported:
 * the link must stay down `graceMs` before the state turns degraded.
 */
import { EventEmitter } from 'node:events';
import type { ProtectionMode } from '../watchers/protection.js';

export type ProtectionStateName = 'protected' | 'degraded' | 'off';
export type DegradedReason = 'svm-unreachable' | 'files-queued' | 'protection-off';

export interface ProtectionSnapshot {
  state: ProtectionStateName;
  reasons: DegradedReason[];
  /** ISO 8601 time the state was entered. */
  since: string;
}

export interface ProtectionProbe {
  mode: ProtectionMode;
  svmConnected: boolean;
  queued: number;
}

export class ProtectionState extends EventEmitter<{ change: [ProtectionSnapshot, ProtectionSnapshot] }> {
  private current: ProtectionSnapshot = { state: 'protected', reasons: [], since: new Date().toISOString() };
  private svmDownSince: number | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly probe: () => ProtectionProbe,
    private readonly graceMs = 2000,
    private readonly now: () => number = Date.now,
  ) {
    super();
  }

  get snapshot(): ProtectionSnapshot {
    return { ...this.current, reasons: [...this.current.reasons] };
  }

  /** Re-evaluate every `intervalMs` (and whenever `evaluate` is called). */
  start(intervalMs = 500): void {
    this.evaluate();
    this.timer = setInterval(() => this.evaluate(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  evaluate(): ProtectionSnapshot {
    const p = this.probe();
    const t = this.now();
    if (p.svmConnected) this.svmDownSince = undefined;
    else this.svmDownSince ??= t;
    const reasons: DegradedReason[] = [];
    if (p.mode === 'off') reasons.push('protection-off');
    if (this.svmDownSince !== undefined && t - this.svmDownSince >= this.graceMs) reasons.push('svm-unreachable');
    if (p.queued > 0) reasons.push('files-queued');
    const state: ProtectionStateName = p.mode === 'off' ? 'off' : reasons.length > 0 ? 'degraded' : 'protected';
    const prev = this.current;
    if (state !== prev.state || reasons.join() !== prev.reasons.join()) {
      this.current = { state, reasons, since: state === prev.state ? prev.since : new Date(t).toISOString() };
      this.emit('change', this.snapshot, prev);
    }
    return this.snapshot;
  }
}
