/**
 * lightagent/1 — the messages agent and SVM exchange.
 *
 * Control messages are JSON text frames with a `t` (type) field. File content travels in binary
 * frames (see chunk.ts). Requests carry an `id` (uint32, chosen by the agent, unique among its
 * in-flight requests); the SVM answers each with exactly one `verdict` of the same id.
 *
 *   agent -> SVM: hello, lookup, scan (then binary chunks), event, cancel, state (feature state-report),
 *                 lookups (feature lookup-batch)
 *   SVM -> agent: welcome, verdict, load, generation, error, lookups (feature lookup-batch),
 *                 policy (feature policy), scan-now (feature scan-command)
 *
 * The version rule. `v` changes only when a message every peer must understand changes meaning;
 * then peers of different versions refuse each other (close 4002). Everything added to
 * lightagent/1 after its first release is a *feature*: a name in `FEATURES`, listed by each side
 * in `hello.features` / `welcome.features` for what it speaks. A side sends a message type or a
 * field that belongs to a feature only when the peer listed that feature, so an older peer never
 * sees it; a peer that receives an unlisted type still closes with a protocol error, as before.
 */
export const PROTOCOL = 'lightagent/1';
export const PROTOCOL_VERSION = 1;

/**
 * Additions to lightagent/1, each named once here. A side lists in hello/welcome the ones it
 * speaks; a message of a feature goes only to a peer that listed it.
 */
export const FEATURES = {
  /**
   * `welcome` and `generation` carry `signaturesAt` (ISO 8601: when the signatures in force were
   * made, absent when the SVM does not know) and `signaturesMaxAge` (the SVM's max_signature_age,
   * seconds): the agent shows the age and whether it is stale.
   */
  signatureAge: 'signature-age',
  /** Agent -> SVM `state`: the agent's protection state and figures, on change and at a slow heartbeat (docs/console.md). */
  stateReport: 'state-report',
  /**
   * Agent -> SVM `lookups` (many SHA-256s in one frame), SVM -> agent `lookups` (one result per
   * hash under the SVM's current generation): the agent's signature refresh (docs/cache.md).
   */
  lookupBatch: 'lookup-batch',
  /**
   * SVM -> agent `policy`: the central settings of the agent's tenant (or group), right after
   * welcome and whenever they change (docs/policies.md). `name: ''` means no central policy.
   */
  policy: 'policy',
  /**
   * SVM -> agent `scan-now`: run a scan job of the protected trees (or paths inside them) now;
   * the agent reports the job in `state.scan` (docs/scans.md). Needs state-report to be seen.
   */
  scanCommand: 'scan-command',
} as const satisfies Record<string, string>;
/** At most this many feature names in a hello or welcome, each at most 64 characters. */
export const MAX_FEATURES = 32;

export type OsName = 'linux' | 'windows' | 'other';
export type Verdict = 'clean' | 'infected' | 'unknown' | 'error';

export interface Hello {
  t: 'hello';
  v: number; // protocol version the agent speaks
  agentId: string;
  token: string;
  host: string;
  os: OsName;
  hypervisor?: string;
  agentVersion: string;
  /** Features of lightagent/1 this agent speaks (see FEATURES); absent from older agents. */
  features?: string[];
}

export interface Limits {
  /** Largest file the SVM accepts for upload, bytes. */
  maxFileSize: number;
  /** Largest binary chunk payload, bytes. */
  maxChunk: number;
  /** Requests an agent may have in flight at once. */
  maxInFlight: number;
}

export interface Welcome {
  t: 'welcome';
  v: number;
  svmId: string;
  generation: string;
  load: number; // 0..1, share of scan capacity in use
  limits: Limits;
  /** Features of lightagent/1 this SVM speaks (see FEATURES); absent from older SVMs. */
  features?: string[];
  /** Feature `signature-age`: when the signatures in force were made (ISO 8601), when known. */
  signaturesAt?: string;
  /** Feature `signature-age`: the SVM's max_signature_age, seconds. */
  signaturesMaxAge?: number;
}

/** Ask for a verdict by content hash: answers from the SVM's shared cache, never uploads. */
export interface Lookup {
  t: 'lookup';
  id: number;
  sha256: string; // 64 lowercase hex chars
  size: number;
}

/** Announce an upload of `size` bytes; binary chunks with the same id follow. */
export interface ScanRequest {
  t: 'scan';
  id: number;
  size: number;
  /** Optional hint for logs on the SVM; never trusted for anything else. */
  name?: string;
}

/** Bounds of a `lookups` batch (feature lookup-batch; the codec enforces them). */
export const LOOKUP_BATCH_LIMITS = {
  /** Hashes in one batch: 512 entries of ~100 bytes stay well inside FRAME_LIMITS.maxTextFrame. */
  maxEntries: 512,
} as const;

/**
 * Agent -> SVM, feature `lookup-batch`: many lookups in one frame, one request id, one slot of
 * the in-flight window. Answered from the SVM's shared cache only, never by an engine.
 */
export interface LookupBatch {
  t: 'lookups';
  id: number;
  /** 1..LOOKUP_BATCH_LIMITS.maxEntries hashes (64 lowercase hex) with their sizes. */
  entries: Array<{ sha256: string; size: number }>;
}

/**
 * SVM -> agent, feature `lookup-batch`: the answer to a `lookups` of the same id (an error is a
 * `verdict` with verdict `error`, as for any request). `results[i]` is entry i's verdict under
 * `generation`: `c` clean, `i` infected, `u` unknown (not in the SVM's cache). Threat names are
 * not carried (they would not fit a frame for 512 entries); the agent asks a single `lookup` for
 * the rare infected one.
 */
export interface LookupBatchAnswer {
  t: 'lookups';
  id: number;
  generation: string;
  results: string;
}

export interface Cancel {
  t: 'cancel';
  id: number;
}

export interface VerdictMsg {
  t: 'verdict';
  id: number;
  verdict: Verdict;
  /** SHA-256 the SVM computed (scan) or was asked about (lookup). */
  sha256?: string;
  threat?: string;
  engine?: string;
  generation?: string;
  /** For `error` verdicts: a stable code and a message. */
  code?: string;
  message?: string;
  /** True when the verdict came from the SVM's cache (no engine run). */
  cached?: boolean;
}

export interface DetectionEvent {
  t: 'event';
  kind: 'detection';
  time: string; // ISO 8601
  path: string;
  sha256?: string;
  threat: string;
  action: 'denied' | 'quarantined' | 'reported' | 'killed';
  process?: { pid: number; exe?: string; cmdline?: string; uid?: number };
}

/** Bounds of a `state` report (the codec enforces them). */
export const STATE_LIMITS = {
  /** Reasons listed with a state, each a name of [a-z0-9-] up to 64 characters. */
  maxReasons: 16,
  /** Short strings of a state report (mode, versions, os, generation, policy). */
  maxShort: 128,
} as const;

/**
 * Agent -> SVM, feature `state-report`: the agent's protection state and figures. Sent right
 * after welcome, on a change (at most one per ~2 s) and at a slow heartbeat; only to an SVM that
 * listed the feature.
 */
export interface StateReport {
  t: 'state';
  /** Protection backend in use: fanotify, watcher, windows, off... */
  mode: string;
  state: 'protected' | 'degraded' | 'off';
  /** Why not protected: svm-unreachable, files-queued, protection-off... */
  reasons: string[];
  /** ISO 8601 time the state was entered. */
  since: string;
  agentVersion: string;
  /** linux, windows, other. */
  os: string;
  /** Kernel or OS release, e.g. 6.8.0-45-generic. */
  osRelease?: string;
  /** Signature generation of the verdicts the agent uses now (from its SVM). */
  generation?: string;
  /** The local verdict cache: entries held, hits and misses since the agent started. */
  cache: { entries: number; hits: number; misses: number };
  /** Files allowed unjudged, waiting in the deferred queue. */
  deferred: number;
  /** Detections since the agent started. */
  detections: number;
  /** The policy in force, when policies exist. */
  policy?: { name: string; version: string };
  /** Feature `scan-command`: the agent's last scan job (or refused scan command). */
  scan?: ScanJobReport;
}

/** Bounds of feature scan-command (the codec enforces them). */
export const SCAN_COMMAND_LIMITS = {
  /** Job ids: 1-64 of [A-Za-z0-9._-]. */
  maxId: 64,
  maxPaths: 16,
  maxPathLength: 4096,
  maxReason: 256,
} as const;

/** SVM -> agent, feature `scan-command`: scan now. Paths must lie inside the agent's protected trees. */
export interface ScanNow {
  t: 'scan-now';
  id: string;
  /** Absolute paths; none: every protected tree. */
  paths?: string[];
  /** Why (shown in the agent's log and the console), e.g. "console: admin". */
  reason?: string;
}

/** A scan job as a state report carries it (feature scan-command). */
export interface ScanJobReport {
  id: string;
  trigger: 'manual' | 'schedule' | 'svm';
  /** refused: the agent did not start it (`code` says why: LA_ERR_SCAN_BUSY, LA_ERR_SCAN_PATH). */
  state: 'running' | 'done' | 'cancelled' | 'failed' | 'refused';
  startedAt: string;
  finishedAt?: string;
  seen: number;
  scanned: number;
  skipped: number;
  infected: number;
  errors: number;
  code?: string;
}

/**
 * Settings a policy may carry: keys of the agent's config that make sense centrally. The SVM and
 * the agent validate their values with the agent's own validators (src/config/policy.ts); the
 * codec only bounds their shape. `scan_schedule` is passed through to agents that know it.
 */
export const POLICY_KEYS = ['exclude', 'on_svm_unavailable', 'deadline', 'max_file_size', 'on_detect', 'scan_schedule'] as const;
export type PolicyKey = (typeof POLICY_KEYS)[number];

/** Bounds of a `policy` frame (the codec enforces them; the frame itself is at most 64 KiB). */
export const POLICY_LIMITS = {
  /** A policy name: `tenant-policy` or `tenant-policy/group`. */
  maxName: 128,
  /** Objects and lists nested inside `settings` (exclude.processes[i] is 3 deep). */
  maxDepth: 4,
  /** Entries of one list inside `settings`. */
  maxList: 4096,
} as const;

/**
 * SVM -> agent, feature `policy`: the central settings in force for this agent. `version` is the
 * SVM's content hash of name and settings. `settings` holds only POLICY_KEYS, as written in the
 * SVM's config (durations and sizes in their human form); `name: ''` clears the central layer.
 */
export interface PolicyMsg {
  t: 'policy';
  name: string;
  version: string;
  settings: Partial<Record<PolicyKey, unknown>>;
}

export interface LoadReport {
  t: 'load';
  load: number;
  queue: number;
}

export interface GenerationChange {
  t: 'generation';
  generation: string;
  /** Feature `signature-age`, as in `welcome`. */
  signaturesAt?: string;
  signaturesMaxAge?: number;
}

export interface ErrorMsg {
  t: 'error';
  code: string;
  message: string;
  id?: number;
}

export type AgentMessage = Hello | Lookup | LookupBatch | ScanRequest | Cancel | DetectionEvent | StateReport;
export type SvmMessage = Welcome | VerdictMsg | LookupBatchAnswer | LoadReport | GenerationChange | ErrorMsg | PolicyMsg | ScanNow;
export type Message = AgentMessage | SvmMessage;

/** WebSocket close codes (4000-4999 are for applications, RFC 6455 section 7.4.2). */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL: 4000,
  AUTH: 4001,
  VERSION: 4002,
  OVERSIZED: 4003,
  HELLO_TIMEOUT: 4004,
  RATE_LIMITED: 4005,
  SHUTDOWN: 4010,
} as const;

/** Hard bounds applied by the codec before any other logic runs. */
export const FRAME_LIMITS = {
  /** Largest control (text) frame, bytes. */
  maxTextFrame: 64 * 1024,
  /** Largest chunk payload either side will ever accept, bytes. */
  maxChunk: 1024 * 1024,
  maxString: 4096,
  maxId: 0xffff_ffff,
} as const;
