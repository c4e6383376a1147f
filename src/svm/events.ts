/**
 * What happens on the SVM that someone outside it wants to hear: detections reported by agents,
 * an agent's protection degraded or restored, agents gone silent, policy changes, signature
 * updates. One typed bus on the core; the inventory, the SIEM export and the console subscribe.
 * Publishing never throws and never waits: a subscriber that fails is logged and skipped, so no
 * listener can block or break scanning.
 */
import { EventEmitter } from 'node:events';
import { logger } from '../log.js';

interface Base {
  /** ISO 8601 time of the event (the agent's time for what an agent reported). */
  time: string;
}

interface AgentRef {
  tenant: string;
  agentId: string;
  host: string;
}

/** An agent reported a detection (every `event` of kind `detection`). */
export interface DetectionSvmEvent extends Base, AgentRef {
  kind: 'detection';
  path: string;
  sha256?: string | undefined;
  threat: string;
  action: 'denied' | 'quarantined' | 'reported' | 'killed';
  process?: { pid: number; exe?: string | undefined; cmdline?: string | undefined; uid?: number | undefined } | undefined;
}

/** An agent's protection state changed (protected, degraded, off), with its reasons. */
export interface ProtectionSvmEvent extends Base, AgentRef {
  kind: 'protection';
  state: string;
  previous: string;
  reasons: string[];
}

/** An agent was not heard from for longer than the silence threshold, or was heard again. */
export interface SilenceSvmEvent extends Base, AgentRef {
  kind: 'agent-silent' | 'agent-back';
  lastSeen: string;
}

/** A tenant's policy was set, changed or removed on the SVM. */
export interface PolicySvmEvent extends Base {
  kind: 'policy';
  tenant: string;
  policy: string;
  change: 'set' | 'removed';
  version?: string | undefined;
}

/** The engine's signatures changed generation, or crossed max_signature_age. */
export interface SignatureSvmEvent extends Base {
  kind: 'signatures' | 'signatures-stale';
  engine: string;
  generation: string;
  previous?: string | undefined;
  ageSeconds?: number | undefined;
  /** `signatures-stale`: true when the age went past max_signature_age, false when it came back under. */
  stale?: boolean | undefined;
  maxAgeSeconds?: number | undefined;
}

export type SvmEvent = DetectionSvmEvent | ProtectionSvmEvent | SilenceSvmEvent | PolicySvmEvent | SignatureSvmEvent;
export type SvmEventKind = SvmEvent['kind'];

export class SvmEventBus {
  private readonly emitter = new EventEmitter<{ event: [SvmEvent] }>();
  private readonly log = logger('svm');

  constructor() {
    // Inventory, SIEM export, console streams, tests: a handful, never one per agent.
    this.emitter.setMaxListeners(32);
  }

  publish(e: SvmEvent): void {
    for (const l of this.emitter.listeners('event')) {
      try {
        l(e);
      } catch (err) {
        this.log.error('an event subscriber failed; the event goes on to the others', { kind: e.kind, message: (err as Error).message });
      }
    }
  }

  /** Hear every event; returns the function that stops it. */
  subscribe(listener: (e: SvmEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }
}
