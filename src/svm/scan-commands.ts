/**
 * Scan commands (feature scan-command): the admin API asks an agent to scan now; this SVM sends
 * `scan-now` on the agent's live session, only if the agent listed the feature. At most one
 * command per agent is pending (sent, and not yet reported finished or refused in a state report,
 * for at most PENDING_MS): a click repeated, or a tenant scan asked twice, cannot storm an agent.
 * The scans themselves run on the agents at idle priority; their uploads meet the SVM's fairness
 * (fairness.ts) like any other background work.
 */
import crypto from 'node:crypto';
import { logger } from '../log.js';
import { FEATURES, SCAN_COMMAND_LIMITS, type ScanJobReport, type ScanNow, type StateReport } from '../protocol/index.js';
import type { AgentFacts, AgentObserver } from './agent-observer.js';

/** A pending command is forgotten after this long even without news (an agent that never answered). */
export const PENDING_MS = 30 * 60_000;

/** What a scan command needs of a session (session.ts AgentSession). */
export interface ScanTarget {
  readonly info: { agentId: string; host: string; tenant: string } | undefined;
  speaks(feature: string): boolean;
  send(msg: ScanNow): void;
}

export class ScanCommandError extends Error {
  constructor(
    readonly status: number,
    readonly code: 'LA_ERR_SCAN_NOT_CONNECTED' | 'LA_ERR_SCAN_UNSUPPORTED' | 'LA_ERR_SCAN_PENDING' | 'LA_ERR_SCAN_PATH',
    message: string,
  ) {
    super(message);
  }
}

export interface ScanCommandSent {
  tenant: string;
  agentId: string;
  id: string;
  requestedAt: string;
}

const key = (tenant: string, agentId: string) => `${tenant}\0${agentId}`;

export class ScanCommands implements AgentObserver {
  private readonly log = logger('svm-scans');
  private readonly pending = new Map<string, { id: string; at: number }>();

  constructor(
    private readonly sessions: () => Iterable<ScanTarget>,
    private readonly now: () => number = Date.now,
  ) {}

  /** Hook into the core: observers (to clear pending commands) and the feature in welcome. */
  attach(core: { observers: Set<AgentObserver>; features: string[] }): void {
    core.observers.add(this);
    if (!core.features.includes(FEATURES.scanCommand)) core.features.push(FEATURES.scanCommand);
  }

  /** The command pending for an agent, if any. */
  pendingFor(tenant: string, agentId: string): { id: string; requestedAt: string } | undefined {
    const p = this.live(key(tenant, agentId));
    return p ? { id: p.id, requestedAt: new Date(p.at).toISOString() } : undefined;
  }

  /**
   * What the inventory knows of the agent's last job (a shared Redis inventory hears reports that
   * went to another SVM of the agent's pool): a pending command it shows ended is no longer pending.
   */
  settle(tenant: string, agentId: string, known: ScanJobReport | null | undefined): void {
    const k = key(tenant, agentId);
    const p = this.pending.get(k);
    if (p && known && known.id === p.id && known.state !== 'running') this.pending.delete(k);
  }

  /** Connected agents of a tenant (for a tenant-wide scan). */
  connectedIn(tenant: string): string[] {
    const ids = new Set<string>();
    for (const s of this.sessions()) if (s.info?.tenant === tenant) ids.add(s.info.agentId);
    return [...ids].sort();
  }

  /** Send `scan-now` to one agent; throws ScanCommandError (status and code for the API). */
  request(tenant: string, agentId: string, o: { paths?: string[] | undefined; reason: string }): ScanCommandSent {
    if (o.paths && (o.paths.length > SCAN_COMMAND_LIMITS.maxPaths || o.paths.some((p) => !validPath(p))))
      throw new ScanCommandError(
        400,
        'LA_ERR_SCAN_PATH',
        `paths: at most ${SCAN_COMMAND_LIMITS.maxPaths} absolute paths of at most ${SCAN_COMMAND_LIMITS.maxPathLength} characters`,
      );
    const k = key(tenant, agentId);
    const p = this.live(k);
    if (p) throw new ScanCommandError(429, 'LA_ERR_SCAN_PENDING', `a scan (${p.id}) was already asked of this agent and has not finished`);
    let session: ScanTarget | undefined;
    for (const s of this.sessions()) if (s.info?.tenant === tenant && s.info.agentId === agentId) session = s; // the newest
    if (!session) throw new ScanCommandError(409, 'LA_ERR_SCAN_NOT_CONNECTED', 'the agent is not connected to this SVM');
    if (!session.speaks(FEATURES.scanCommand))
      throw new ScanCommandError(409, 'LA_ERR_SCAN_UNSUPPORTED', 'the agent is too old for scan commands (feature scan-command)');
    const id = `svm-${this.now().toString(36)}-${crypto.randomBytes(4).toString('hex')}`;
    const reason = o.reason.slice(0, SCAN_COMMAND_LIMITS.maxReason);
    session.send({ t: 'scan-now', id, ...(o.paths?.length ? { paths: [...o.paths] } : {}), reason });
    const at = this.now();
    this.pending.set(k, { id, at });
    this.log.info('scan command sent', { tenant, agentId, id, paths: o.paths, reason });
    return { tenant, agentId, id, requestedAt: new Date(at).toISOString() };
  }

  connected(): void {}

  state(a: AgentFacts, r: Omit<StateReport, 't'>): void {
    const k = key(a.tenant, a.agentId);
    const p = this.pending.get(k);
    if (p && r.scan?.id === p.id && r.scan.state !== 'running') this.pending.delete(k);
  }

  disconnected(a: AgentFacts): void {
    // The job goes on on the agent, but the SVM will not hear of it on this session.
    this.pending.delete(key(a.tenant, a.agentId));
  }

  private live(k: string): { id: string; at: number } | undefined {
    const p = this.pending.get(k);
    if (p && this.now() - p.at > PENDING_MS) {
      this.pending.delete(k);
      return undefined;
    }
    return p;
  }
}

function validPath(p: unknown): boolean {
  return typeof p === 'string' && /^(\/|[A-Za-z]:\\)/.test(p) && p.length <= SCAN_COMMAND_LIMITS.maxPathLength && !p.includes('\0');
}
