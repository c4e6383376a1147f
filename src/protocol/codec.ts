/**
 * One codec for both sides. `decode*` take the raw text of a frame and return a validated message
 * or throw ProtocolError — never anything else, whatever the bytes (fuzzed in test/protocol).
 * Unknown fields are dropped so a newer peer's extras cannot reach our logic.
 */
import { ProtocolError } from '../errors.js';
import {
  FRAME_LIMITS,
  LOOKUP_BATCH_LIMITS,
  MAX_FEATURES,
  POLICY_KEYS,
  POLICY_LIMITS,
  SCAN_COMMAND_LIMITS,
  STATE_LIMITS,
  type AgentMessage,
  type Message,
  type SvmMessage,
} from './messages.js';

type FieldKind =
  'str' | 'hex64' | 'uint' | 'uint32' | 'num01' | 'bool' | 'obj' | 'names' | 'time' | 'hashes' | 'results' | 'settings' | 'strs';
interface Field {
  kind: FieldKind;
  optional?: boolean;
  oneOf?: readonly string[];
  /** For 'obj': nested fields. */
  fields?: Record<string, Field>;
  /** For 'str': a tighter length bound than FRAME_LIMITS.maxString; for 'names': fewer names than MAX_FEATURES. */
  max?: number;
  /** For 'str' (and each of 'strs'): must match. */
  pattern?: RegExp;
  /** For 'strs': at most this many strings, each of at most `max` characters. */
  maxItems?: number;
}
type Schema = Record<string, Field>;

const s = (o: Partial<Field> = {}): Field => ({ kind: 'str', ...o });
const opt = (f: Field): Field => ({ ...f, optional: true });
const uint: Field = { kind: 'uint' };
const uint32: Field = { kind: 'uint32' };
const hex64: Field = { kind: 'hex64' };
/** A short list of short names (feature names): at most MAX_FEATURES, each 1-64 of [a-z0-9-]. */
const names: Field = { kind: 'names' };
const FEATURE_NAME = /^[a-z0-9][a-z0-9-]{0,63}$/;
/** An ISO 8601 UTC time as Date.toISOString writes it (feature signature-age). */
const time: Field = { kind: 'time' };
/** Feature lookup-batch: 1..maxEntries {sha256, size}; and the answer's one letter per entry. */
const hashes: Field = { kind: 'hashes' };
const results: Field = { kind: 'results' };
const RESULTS = new RegExp(`^[ciu]{1,${LOOKUP_BATCH_LIMITS.maxEntries}}$`);
const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?Z$/;

const limitsFields: Record<string, Field> = { maxFileSize: uint, maxChunk: uint, maxInFlight: uint };
const processFields: Record<string, Field> = { pid: uint, exe: opt(s()), cmdline: opt(s()), uid: opt(uint) };
const short = (o: Partial<Field> = {}): Field => s({ max: STATE_LIMITS.maxShort, ...o });
/** Feature scan-command. */
const SCAN_JOB_ID = /^[A-Za-z0-9._-]{1,64}$/;
const scanJobFields: Record<string, Field> = {
  id: s({ max: SCAN_COMMAND_LIMITS.maxId, pattern: SCAN_JOB_ID }),
  trigger: s({ oneOf: ['manual', 'schedule', 'svm'] }),
  state: s({ oneOf: ['running', 'done', 'cancelled', 'failed', 'refused'] }),
  startedAt: time,
  finishedAt: opt(time),
  seen: uint,
  scanned: uint,
  skipped: uint,
  infected: uint,
  errors: uint,
  code: opt(short({ pattern: /^[A-Z0-9_]{1,64}$/ })),
};

const AGENT_SCHEMAS: Record<string, Schema> = {
  hello: {
    v: uint,
    agentId: s(),
    token: s(),
    host: s(),
    os: s({ oneOf: ['linux', 'windows', 'other'] }),
    hypervisor: opt(s()),
    agentVersion: s(),
    features: opt(names),
  },
  lookup: { id: uint32, sha256: hex64, size: uint },
  // Feature lookup-batch (the session refuses it unless this SVM lists the feature).
  lookups: { id: uint32, entries: hashes },
  scan: { id: uint32, size: uint, name: opt(s()) },
  cancel: { id: uint32 },
  event: {
    kind: s({ oneOf: ['detection'] }),
    time: s(),
    path: s(),
    sha256: opt(hex64),
    threat: s(),
    action: s({ oneOf: ['denied', 'quarantined', 'reported', 'killed'] }),
    process: opt({ kind: 'obj', fields: processFields }),
  },
  // Feature state-report (the session refuses it unless this SVM lists the feature).
  state: {
    mode: short(),
    state: s({ oneOf: ['protected', 'degraded', 'off'] }),
    reasons: { ...names, max: STATE_LIMITS.maxReasons },
    since: short(),
    agentVersion: short(),
    os: short(),
    osRelease: opt(short()),
    generation: opt(short()),
    cache: { kind: 'obj', fields: { entries: uint, hits: uint, misses: uint } },
    deferred: uint,
    detections: uint,
    policy: opt({ kind: 'obj', fields: { name: short(), version: short() } }),
    // Feature scan-command (sent only to an SVM that listed it).
    scan: opt({ kind: 'obj', fields: scanJobFields }),
  },
};

const SVM_SCHEMAS: Record<string, Schema> = {
  welcome: {
    v: uint,
    svmId: s(),
    generation: s(),
    load: { kind: 'num01' },
    limits: { kind: 'obj', fields: limitsFields },
    features: opt(names),
    signaturesAt: opt(time),
    signaturesMaxAge: opt(uint),
  },
  verdict: {
    id: uint32,
    verdict: s({ oneOf: ['clean', 'infected', 'unknown', 'error'] }),
    sha256: opt(hex64),
    threat: opt(s()),
    engine: opt(s()),
    generation: opt(s()),
    code: opt(s()),
    message: opt(s()),
    cached: opt({ kind: 'bool' }),
  },
  // Feature lookup-batch (the link refuses it unless it asked).
  lookups: { id: uint32, generation: s(), results },
  load: { load: { kind: 'num01' }, queue: uint },
  generation: { generation: s(), signaturesAt: opt(time), signaturesMaxAge: opt(uint) },
  error: { code: s(), message: s(), id: opt(uint32) },
  // Feature policy (the link refuses it unless the agent listed the feature).
  policy: {
    name: s({ max: POLICY_LIMITS.maxName }),
    version: s({ max: 64 }),
    settings: { kind: 'settings' },
  },
  // Feature scan-command (the agent ignores it unless it listed the feature).
  'scan-now': {
    id: s({ max: SCAN_COMMAND_LIMITS.maxId, pattern: SCAN_JOB_ID }),
    paths: opt({
      kind: 'strs',
      maxItems: SCAN_COMMAND_LIMITS.maxPaths,
      max: SCAN_COMMAND_LIMITS.maxPathLength,
      pattern: /^(\/|[A-Za-z]:\\)/,
    }),
    reason: opt(s({ max: SCAN_COMMAND_LIMITS.maxReason })),
  },
};

const HEX64 = /^[0-9a-f]{64}$/;
/** A policy name: empty (no policy), or letters, digits, . _ - and one / between policy and group. */
const POLICY_NAME = /^(?:[A-Za-z0-9._-]{1,64}(?:\/[A-Za-z0-9._-]{1,63})?)?$/;
const POLICY_VERSION = /^(?:[0-9a-f]{8,64})?$/;
const SETTING_KEY = /^[a-z][a-z0-9_]{0,63}$/;

/**
 * A value inside policy `settings`: JSON data only (strings, finite numbers, booleans, lists,
 * mappings), at most POLICY_LIMITS.maxDepth containers deep, lists of at most maxList entries,
 * strings of at most maxString, mapping keys of [a-z0-9_] (no `__proto__`). Returns a copy.
 */
function settingValue(v: unknown, where: string, depth: number): unknown {
  if (typeof v === 'string') {
    if (v.length > FRAME_LIMITS.maxString)
      throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `${where} is longer than ${FRAME_LIMITS.maxString}`);
    return v;
  }
  if (typeof v === 'boolean') return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) bad(`${where} must be a finite number`);
    return v + 0; // -0 as 0 (see checkFields)
  }
  if (typeof v !== 'object' || v === null) bad(`${where} must be a string, number, boolean, list or mapping`);
  if (depth >= POLICY_LIMITS.maxDepth) bad(`${where} is nested more than ${POLICY_LIMITS.maxDepth} deep`);
  if (Array.isArray(v)) {
    if (v.length > POLICY_LIMITS.maxList)
      throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `${where} has more than ${POLICY_LIMITS.maxList} entries`);
    return v.map((x, i) => settingValue(x, `${where}[${i}]`, depth + 1));
  }
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) {
    if (!SETTING_KEY.test(k)) bad(`${where} has a key that is not a setting name`);
    out[k] = settingValue(x, `${where}.${k}`, depth + 1);
  }
  return out;
}

/** Policy `settings`: a mapping of POLICY_KEYS; other keys (a newer SVM's) are dropped, like unknown fields. */
function policySettings(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) bad(`${where} must be an object`);
  const out: Record<string, unknown> = {};
  for (const k of POLICY_KEYS) {
    const x = (v as Record<string, unknown>)[k];
    if (Object.hasOwn(v, k) && x !== undefined && x !== null) out[k] = settingValue(x, `${where}.${k}`, 1);
  }
  return out;
}

function bad(msg: string): never {
  throw new ProtocolError('LA_ERR_PROTO_MALFORMED', msg);
}

function checkFields(src: Record<string, unknown>, schema: Schema, where: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  // for-in, not Object.entries: no array of pairs per frame (every verdict, both sides).
  for (const key in schema) {
    const f = schema[key]!;
    const v = src[key];
    if (v === undefined || v === null) {
      if (f.optional) continue;
      bad(`${where}.${key} is missing`);
    }
    switch (f.kind) {
      case 'str':
        if (typeof v !== 'string') bad(`${where}.${key} must be a string`);
        if (v.length > (f.max ?? FRAME_LIMITS.maxString))
          throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `${where}.${key} is longer than ${f.max ?? FRAME_LIMITS.maxString}`);
        if (f.oneOf && !f.oneOf.includes(v)) bad(`${where}.${key} must be one of ${f.oneOf.join(', ')}`);
        if (f.pattern && !f.pattern.test(v)) bad(`${where}.${key} is not of the expected form`);
        break;
      case 'strs':
        if (!Array.isArray(v)) bad(`${where}.${key} must be a list`);
        if (v.length > (f.maxItems ?? MAX_FEATURES))
          throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `${where}.${key} has more than ${f.maxItems ?? MAX_FEATURES} entries`);
        for (const x of v as unknown[]) {
          if (typeof x !== 'string' || x.length === 0 || x.includes('\0')) bad(`${where}.${key} must hold non-empty strings`);
          if (x.length > (f.max ?? FRAME_LIMITS.maxString))
            throw new ProtocolError(
              'LA_ERR_PROTO_OVERSIZED',
              `${where}.${key} holds a string longer than ${f.max ?? FRAME_LIMITS.maxString}`,
            );
          if (f.pattern && !f.pattern.test(x)) bad(`${where}.${key} holds a string not of the expected form`);
        }
        out[key] = [...(v as string[])];
        continue;
      case 'hex64':
        if (typeof v !== 'string' || !HEX64.test(v)) bad(`${where}.${key} must be 64 lowercase hex characters`);
        break;
      case 'uint':
        if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) bad(`${where}.${key} must be a non-negative integer`);
        break;
      case 'uint32':
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > FRAME_LIMITS.maxId) bad(`${where}.${key} must be a uint32`);
        break;
      case 'num01':
        if (typeof v !== 'number' || !(v >= 0 && v <= 1)) bad(`${where}.${key} must be a number in [0, 1]`);
        break;
      case 'bool':
        if (typeof v !== 'boolean') bad(`${where}.${key} must be a boolean`);
        break;
      case 'time':
        if (typeof v !== 'string' || !ISO_TIME.test(v) || !Number.isFinite(Date.parse(v)))
          bad(`${where}.${key} must be an ISO 8601 UTC time (YYYY-MM-DDTHH:MM:SS.sssZ)`);
        break;
      case 'names':
        if (!Array.isArray(v)) bad(`${where}.${key} must be a list`);
        if (v.length > (f.max ?? MAX_FEATURES))
          throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `${where}.${key} has more than ${f.max ?? MAX_FEATURES} names`);
        for (const n of v as unknown[])
          if (typeof n !== 'string' || !FEATURE_NAME.test(n)) bad(`${where}.${key} must hold names of [a-z0-9-]`);
        out[key] = [...(v as string[])];
        continue;
      case 'hashes':
        out[key] = checkHashes(v, `${where}.${key}`);
        continue;
      case 'results':
        if (typeof v !== 'string') bad(`${where}.${key} must be a string`);
        if (v.length > LOOKUP_BATCH_LIMITS.maxEntries)
          throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `${where}.${key} has more than ${LOOKUP_BATCH_LIMITS.maxEntries} results`);
        if (!RESULTS.test(v)) bad(`${where}.${key} must be 1-${LOOKUP_BATCH_LIMITS.maxEntries} letters of c, i, u`);
        break;
      case 'settings':
        out[key] = policySettings(v, `${where}.${key}`);
        continue;
      case 'obj':
        if (typeof v !== 'object' || Array.isArray(v)) bad(`${where}.${key} must be an object`);
        out[key] = checkFields(v as Record<string, unknown>, f.fields!, `${where}.${key}`);
        continue;
    }
    // Numbers: JSON's -0 passes the range checks; `+ 0` makes it 0, so what decodes re-encodes as
    // it came (a fuzz case: "pid":-0 decoded to -0 and re-encoded as 0).
    out[key] = typeof v === 'number' ? v + 0 : v;
  }
  return out;
}

/** A `lookups` batch: a list of 1..maxEntries {sha256, size}, copied field by field (extras dropped). */
function checkHashes(v: unknown, where: string): Array<{ sha256: string; size: number }> {
  if (!Array.isArray(v)) bad(`${where} must be a list`);
  if (v.length > LOOKUP_BATCH_LIMITS.maxEntries)
    throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `${where} has more than ${LOOKUP_BATCH_LIMITS.maxEntries} entries`);
  if (v.length === 0) bad(`${where} must hold at least one entry`);
  const out: Array<{ sha256: string; size: number }> = [];
  for (let i = 0; i < v.length; i++) {
    const e: unknown = v[i];
    if (typeof e !== 'object' || e === null || Array.isArray(e)) bad(`${where}[${i}] must be an object`);
    out.push(
      checkFields(e as Record<string, unknown>, { sha256: hex64, size: uint }, `${where}[${i}]`) as { sha256: string; size: number },
    );
  }
  return out;
}

function decodeWith(data: string | Buffer, schemas: Record<string, Schema>): Message {
  const len = typeof data === 'string' ? Buffer.byteLength(data) : data.length;
  if (len > FRAME_LIMITS.maxTextFrame)
    throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `control frame of ${len} bytes exceeds ${FRAME_LIMITS.maxTextFrame}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch {
    bad('control frame is not valid JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) bad('control frame must be a JSON object');
  const t = (parsed as Record<string, unknown>).t;
  if (typeof t !== 'string' || !Object.hasOwn(schemas, t)) {
    throw new ProtocolError('LA_ERR_PROTO_UNEXPECTED', `unknown message type ${JSON.stringify(String(t)).slice(0, 40)}`);
  }
  const out = checkFields(parsed as Record<string, unknown>, schemas[t]!, t);
  if (t === 'policy') {
    if (!POLICY_NAME.test(out.name as string)) bad('policy.name must be empty or NAME or NAME/GROUP of letters, digits, . _ -');
    if (!POLICY_VERSION.test(out.version as string)) bad('policy.version must be empty or 8 to 64 lowercase hex characters');
  }
  out.t = t;
  return out as unknown as Message;
}

/** SVM side: decode what an agent sent. */
export function decodeAgentMessage(data: string | Buffer): AgentMessage {
  return decodeWith(data, AGENT_SCHEMAS) as AgentMessage;
}

/** Agent side: decode what an SVM sent. */
export function decodeSvmMessage(data: string | Buffer): SvmMessage {
  return decodeWith(data, SVM_SCHEMAS) as SvmMessage;
}

export function encodeMessage(msg: Message): string {
  const text = JSON.stringify(msg);
  if (text.length > FRAME_LIMITS.maxTextFrame)
    throw new ProtocolError('LA_ERR_PROTO_OVERSIZED', `refusing to send a ${msg.t} frame of ${text.length} bytes`);
  return text;
}
