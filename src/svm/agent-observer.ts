/**
 * What the inventory hears of each agent session: connected (past hello), a state report
 * (feature state-report), disconnected. Called by session.ts through SvmCore.observe; an observer
 * that throws is logged and skipped, never the session's problem.
 */
import type { StateReport } from '../protocol/index.js';

export interface AgentFacts {
  tenant: string;
  agentId: string;
  host: string;
  os: string;
  agentVersion: string;
  hypervisor?: string | undefined;
  /** This connection (random per session): a disconnect only clears the row its own connection set. */
  connId: string;
  /** Epoch ms of the last frame received from the agent (any frame). */
  lastHeard(): number;
}

export interface AgentObserver {
  connected(a: AgentFacts): void;
  state(a: AgentFacts, r: Omit<StateReport, 't'>): void;
  disconnected(a: AgentFacts): void;
}
