/**
 * Unasked reports to connected agents: `load` (agents balance on it) and `generation` (agents
 * re-check cached verdicts by lookup). One timer, running only while agents are connected, at
 * the report interval (2 s by default, never under 1 s): it stays off while the SVM is idle.
 * An agent hears a figure only when it differs from the last one it was told.
 */
import { FEATURES } from '../protocol/index.js';
import { signatureFields, type SignatureStatus } from './signature-age.js';

export interface ReportTarget {
  readonly ready: boolean;
  /** Close the agent if its token was revoked or has expired. */
  checkToken?(): boolean;
  /** The tenant of the agent's token. */
  readonly tenantName: string;
  lastLoad: number;
  lastGeneration: string;
  /** Did the agent list this feature of lightagent/1? (signature-age: generation reports carry the age.) */
  speaks?(feature: string): boolean;
  send(
    m:
      | { t: 'load'; load: number; queue: number }
      | { t: 'generation'; generation: string; signaturesAt?: string; signaturesMaxAge?: number },
  ): void;
}

/** What the reports tell: the SVM's core (src/svm/core.ts) is one. */
export interface ReportSource {
  generation(): string;
  /** Feature signature-age: when the signatures in force were made, and max_signature_age. */
  signatures?(): SignatureStatus;
  load(): number;
  queue(): number;
}

export const MIN_REPORT_INTERVAL_MS = 1000;

export class Reporter {
  private timer: NodeJS.Timeout | undefined;
  private readonly intervalMs: number;

  constructor(
    private readonly core: ReportSource,
    private readonly targets: () => Iterable<ReportTarget>,
    intervalMs: number,
  ) {
    this.intervalMs = Math.max(MIN_REPORT_INTERVAL_MS, intervalMs);
  }

  /** Call when an agent joins: starts the timer if it is off. */
  wake(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.tick(), this.intervalMs);
    this.timer.unref();
  }

  /** Send the generation to every agent that has not heard it (after a signature reload). */
  announceGeneration(): number {
    const generation = this.core.generation();
    let told = 0;
    let age: ReturnType<typeof signatureFields> | undefined;
    for (const t of this.targets()) {
      if (!t.ready || t.lastGeneration === generation) continue;
      t.lastGeneration = generation;
      if (this.core.signatures && t.speaks?.(FEATURES.signatureAge)) {
        age ??= signatureFields(this.core.signatures());
        t.send({ t: 'generation', generation, ...age });
      } else t.send({ t: 'generation', generation });
      told++;
    }
    return told;
  }

  tick(): void {
    let any = false;
    // Engines such as clamd change generation on their own: noticed here.
    this.announceGeneration();
    const load = this.core.load();
    const queue = this.core.queue();
    for (const t of this.targets()) {
      if (!t.ready || t.checkToken?.()) continue;
      any = true;
      if (t.lastLoad === load) continue;
      t.lastLoad = load;
      t.send({ t: 'load', load, queue });
    }
    if (!any) this.stop();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
