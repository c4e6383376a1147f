/**
 * What the rest of the agent (FileScanner, daemon, scan, on access) needs from "the SVM": one
 * SvmLink to a single SVM, or an SvmPool over several with failover. Both present this.
 */
import type { EventEmitter } from 'node:events';
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
import type { ChunkReader, LinkState, SvmLinkEvents, WindowStats } from './svm-link.js';
import type { PriorityLike } from './window.js';

export interface SvmClient extends EventEmitter<SvmLinkEvents> {
  /** The SVM in use (a pool: the active one, else the best configured). */
  readonly url: string;
  readonly state: LinkState;
  readonly welcome: Welcome | undefined;
  readonly generation: string | undefined;
  /** Feature policy: the last policy the SVM in use sent on this connection. */
  readonly policy: PolicyMsg | undefined;
  readonly load: number;
  readonly limits: Limits | undefined;
  readonly inFlight: number;
  readonly lastLatencyMs: number;
  /** The in-flight window per class (a pool: summed over its SVMs). */
  readonly windowStats?: WindowStats;
  connect(): Promise<void>;
  waitConnected(ms: number): Promise<void>;
  /** `priority`: `foreground` (the default) for a decision a process is blocked on, else `background`. */
  lookup(sha256: string, size: number, deadlineMs?: number, priority?: PriorityLike): Promise<VerdictMsg>;
  /**
   * Feature lookup-batch: many hashes in one request (the SVM's `lookups` answer), or the SVM's
   * `error` verdict. Throws LA_ERR_PROTO_UNEXPECTED when the SVM in use does not speak it.
   */
  lookupBatch(entries: LookupBatch['entries'], deadlineMs?: number, priority?: PriorityLike): Promise<LookupBatchAnswer | VerdictMsg>;
  scan(size: number, read: ChunkReader, deadlineMs: number, name?: string, priority?: PriorityLike): Promise<VerdictMsg>;
  report(event: Omit<DetectionEvent, 't'>): boolean;
  /** Did the SVM in use list this feature of lightagent/1 in its welcome? */
  speaks(feature: string): boolean;
  /** Send a state report (feature state-report): false when not connected or the SVM does not speak it. */
  reportState(report: Omit<StateReport, 't'>): boolean;
  close(): void;
}
