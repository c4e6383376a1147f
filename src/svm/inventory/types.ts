/**
 * The inventory's rows and the store seam. One row per (tenant, agentId) ever seen, with its last
 * state; a ring of its state changes and one of its recent detections. Two stores implement
 * `InventoryStore` (memory, persisted to a file; Redis, shared by the SVMs that share one) and pass
 * one conformance suite (test/svm/inventory-conformance.ts). What a row means is decided once, in
 * inventory.ts; a store only keeps and returns rows.
 */
import type { ScanJobReport } from '../../protocol/index.js';
import { parseScanJobReport } from '../scan-report.js';

export type AgentStateName = 'protected' | 'degraded' | 'off' | 'unknown';

export interface AgentKey {
  tenant: string;
  agentId: string;
}

/** A row as stored (times as epoch ms). */
export interface StoredAgent extends AgentKey {
  host: string;
  os: string;
  osRelease: string | null;
  agentVersion: string;
  hypervisor: string | null;
  svmId: string | null;
  /** The connection (random per session) that set `connected`; a late disconnect of another one changes nothing. */
  conn: string | null;
  connected: boolean;
  firstSeen: number;
  lastSeen: number;
  silent: boolean;
  state: AgentStateName;
  reasons: string[];
  /** ISO time the agent entered its state (the agent's clock). */
  since: string | null;
  mode: string | null;
  generation: string | null;
  cache: { entries: number; hits: number; misses: number } | null;
  deferred: number;
  /** Detection events this inventory recorded for the agent. */
  detections: number;
  /** Detections the agent counts since it started (its own report). */
  detectionsReported: number;
  policy: { name: string; version: string } | null;
  /** Feature scan-command: the agent's last scan job as it reported it (absent in rows of older SVMs). */
  scan?: ScanJobReport | null;
}

export interface HistoryEntry {
  /** ISO 8601. */
  time: string;
  state: AgentStateName;
  reasons: string[];
}

export interface DetectionRecord {
  /** ISO 8601, the agent's time. */
  time: string;
  tenant: string;
  agentId: string;
  host: string;
  path: string;
  sha256: string | null;
  threat: string;
  action: string;
  process: { pid: number; exe?: string; cmdline?: string; uid?: number } | null;
}

/** Entries kept per agent in each ring. */
export const RING = 100;

export interface InventoryStore {
  readonly kind: 'memory' | 'redis';
  /** Reachable now (Redis); the memory store always is. */
  healthy(): boolean;
  get(key: AgentKey): Promise<StoredAgent | undefined>;
  put(row: StoredAgent): Promise<void>;
  /** Every row (the inventory bounds how many there are). */
  list(): Promise<StoredAgent[]>;
  /** Remove rows with their rings. */
  remove(keys: readonly AgentKey[]): Promise<void>;
  /** Add to the agent's state history; the oldest past RING go. */
  pushHistory(key: AgentKey, e: HistoryEntry): Promise<void>;
  /** Newest first. */
  history(key: AgentKey): Promise<HistoryEntry[]>;
  pushDetection(key: AgentKey, d: DetectionRecord): Promise<void>;
  /** Newest first, per agent; for several agents at once (one round trip for Redis). */
  detections(keys: readonly AgentKey[]): Promise<DetectionRecord[][]>;
  /** Persist what is pending (memory: the file); close connections. */
  close(): Promise<void>;
}

export const keyOf = (k: AgentKey): string => `${encodeURIComponent(k.tenant)}/${encodeURIComponent(k.agentId)}`;

const isStr = (v: unknown, max = 4096): v is string => typeof v === 'string' && v.length <= max;
const isStrOrNull = (v: unknown, max = 4096): boolean => v === null || isStr(v, max);
const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const STATES = new Set(['protected', 'degraded', 'off', 'unknown']);
const isReasons = (v: unknown): v is string[] => Array.isArray(v) && v.length <= 16 && v.every((r) => isStr(r, 64));

/** A row read back from a file or Redis, checked field by field; undefined for anything else. */
export function parseStoredAgent(v: unknown): StoredAgent | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const cache = o.cache as Record<string, unknown> | null;
  const policy = o.policy as Record<string, unknown> | null;
  const ok =
    isStr(o.tenant, 64) &&
    isStr(o.agentId) &&
    isStr(o.host) &&
    isStr(o.os, 128) &&
    isStrOrNull(o.osRelease, 128) &&
    isStr(o.agentVersion, 128) &&
    isStrOrNull(o.hypervisor, 128) &&
    isStrOrNull(o.svmId) &&
    isStrOrNull(o.conn, 64) &&
    typeof o.connected === 'boolean' &&
    isCount(o.firstSeen) &&
    isCount(o.lastSeen) &&
    typeof o.silent === 'boolean' &&
    typeof o.state === 'string' &&
    STATES.has(o.state) &&
    isReasons(o.reasons) &&
    isStrOrNull(o.since, 128) &&
    isStrOrNull(o.mode, 128) &&
    isStrOrNull(o.generation, 128) &&
    (cache === null ||
      (typeof cache === 'object' && !Array.isArray(cache) && isCount(cache.entries) && isCount(cache.hits) && isCount(cache.misses))) &&
    isCount(o.deferred) &&
    isCount(o.detections) &&
    isCount(o.detectionsReported) &&
    (policy === null || (typeof policy === 'object' && !Array.isArray(policy) && isStr(policy.name, 128) && isStr(policy.version, 128)));
  if (!ok) return undefined;
  return {
    tenant: o.tenant as string,
    agentId: o.agentId as string,
    host: o.host as string,
    os: o.os as string,
    osRelease: o.osRelease as string | null,
    agentVersion: o.agentVersion as string,
    hypervisor: o.hypervisor as string | null,
    svmId: o.svmId as string | null,
    conn: o.conn as string | null,
    connected: o.connected as boolean,
    firstSeen: o.firstSeen as number,
    lastSeen: o.lastSeen as number,
    silent: o.silent as boolean,
    state: o.state as AgentStateName,
    reasons: [...(o.reasons as string[])],
    since: o.since as string | null,
    mode: o.mode as string | null,
    generation: o.generation as string | null,
    cache: cache ? { entries: cache.entries as number, hits: cache.hits as number, misses: cache.misses as number } : null,
    deferred: o.deferred as number,
    detections: o.detections as number,
    detectionsReported: o.detectionsReported as number,
    policy: policy ? { name: policy.name as string, version: policy.version as string } : null,
    ...(o.scan !== undefined && o.scan !== null ? { scan: parseScanJobReport(o.scan) ?? null } : {}),
  };
}

export function parseHistoryEntry(v: unknown): HistoryEntry | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  if (!isStr(o.time, 64) || typeof o.state !== 'string' || !STATES.has(o.state) || !isReasons(o.reasons)) return undefined;
  return { time: o.time, state: o.state as AgentStateName, reasons: [...o.reasons] };
}

export function parseDetection(v: unknown): DetectionRecord | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const p = o.process as Record<string, unknown> | null;
  const ok =
    isStr(o.time, 64) &&
    isStr(o.tenant, 64) &&
    isStr(o.agentId) &&
    isStr(o.host) &&
    isStr(o.path) &&
    isStrOrNull(o.sha256, 64) &&
    isStr(o.threat) &&
    isStr(o.action, 32) &&
    (p === null ||
      (typeof p === 'object' &&
        isCount(p.pid) &&
        (p.exe === undefined || isStr(p.exe)) &&
        (p.cmdline === undefined || isStr(p.cmdline)) &&
        (p.uid === undefined || isCount(p.uid))));
  if (!ok) return undefined;
  const proc = p
    ? {
        pid: p.pid as number,
        ...(p.exe !== undefined ? { exe: p.exe as string } : {}),
        ...(p.cmdline !== undefined ? { cmdline: p.cmdline as string } : {}),
        ...(p.uid !== undefined ? { uid: p.uid as number } : {}),
      }
    : null;
  return {
    time: o.time as string,
    tenant: o.tenant as string,
    agentId: o.agentId as string,
    host: o.host as string,
    path: o.path as string,
    sha256: o.sha256 as string | null,
    threat: o.threat as string,
    action: o.action as string,
    process: proc,
  };
}
