/**
 * SvmEvent -> one syslog message, RFC 5424 (structured data + a JSON body) or CEF 0 inside an
 * RFC 5424 header. Every string in an event may come from a guest: header fields are cut to
 * PRINTUSASCII, values to a byte bound, control characters never reach a line-based reader
 * unescaped, and the whole message is at most `maxMessage` bytes, so no event can break the
 * framing or a receiver's line parser.
 */
import os from 'node:os';
import path from 'node:path';
import type { SvmEvent } from '../events.js';

/** Kept equal to AGENT_VERSION (src/agent/identity.ts, a room above this one). */
export const PRODUCT_VERSION = '0.1.0';
/**
 * The SD-ID: `name@PEN`. lightagent has no IANA Private Enterprise Number yet; 32473 is the one
 * RFC 5612 reserves for documentation and examples. A registered PEN replaces it here only.
 */
export const SD_ID = 'lightagent@32473';

export type SiemFormat = 'rfc5424' | 'cef';
/** What a destination subscribes to: `agent-silent` carries agent-back too, `signatures` signatures-stale. */
export const SIEM_EVENT_CLASSES = ['detection', 'protection', 'agent-silent', 'policy', 'signatures'] as const;
export type SiemEventClass = (typeof SIEM_EVENT_CLASSES)[number];

export const FACILITIES = [
  'kern',
  'user',
  'mail',
  'daemon',
  'auth',
  'syslog',
  'lpr',
  'news',
  'uucp',
  'cron',
  'authpriv',
  'ftp',
  'ntp',
  'security',
  'console',
  'solaris-cron',
  'local0',
  'local1',
  'local2',
  'local3',
  'local4',
  'local5',
  'local6',
  'local7',
] as const;

export interface FormatOptions {
  format: SiemFormat;
  /** 0..23 (RFC 5424 section 6.2.1; local0 = 16). */
  facility: number;
  appName: string;
  /** Whole message in bytes, without the transport's framing. */
  maxMessage: number;
  /** HOSTNAME of the header: the SVM's (default os.hostname()). The agent's host is a field. */
  hostname?: string | undefined;
  procId?: string | undefined;
  /** For tests: the time used when an event's own time is not a valid date. */
  now?: () => number;
}

export function eventClass(e: SvmEvent): SiemEventClass {
  switch (e.kind) {
    case 'agent-silent':
    case 'agent-back':
      return 'agent-silent';
    case 'signatures':
    case 'signatures-stale':
      return 'signatures';
    default:
      return e.kind;
  }
}

/** The event's tenant; `*` for what concerns every tenant (signatures). */
export function eventTenant(e: SvmEvent): string {
  return 'tenant' in e ? e.tenant : '*';
}

const degraded = (state: string) => state !== 'protected';

/** RFC 5424 severity: 2 critical, 4 warning, 5 notice, 6 informational. */
export function syslogSeverity(e: SvmEvent): number {
  switch (e.kind) {
    case 'detection':
      return 2;
    case 'protection':
      return degraded(e.state) ? 4 : 5;
    case 'agent-silent':
    case 'signatures-stale':
      return 4;
    case 'agent-back':
    case 'policy':
      return 5;
    case 'signatures':
      return 6;
  }
}

/** CEF severity 0..10: a threat left in place (reported) is 9, one blocked 8; see docs/siem.md. */
export function cefSeverity(e: SvmEvent): number {
  switch (e.kind) {
    case 'detection':
      return e.action === 'reported' ? 9 : 8;
    case 'protection':
      return degraded(e.state) ? 6 : 3;
    case 'agent-silent':
      return 5;
    case 'signatures-stale':
      return 6;
    case 'agent-back':
    case 'policy':
      return 3;
    case 'signatures':
      return 2;
  }
}

const CEF_NAMES: Record<SvmEvent['kind'], string> = {
  detection: 'Malware detected',
  protection: 'Protection state changed',
  'agent-silent': 'Agent silent',
  'agent-back': 'Agent heard again',
  policy: 'Policy changed',
  signatures: 'Signatures updated',
  'signatures-stale': 'Signatures stale',
};

type Value = string | number | readonly string[];
/** One field: its name in the JSON body and structured data, and its CEF key (label for custom strings). */
interface Field {
  key: string;
  value: Value | undefined;
  cef?: string;
  cefLabel?: string;
}

function fieldsOf(e: SvmEvent): Field[] {
  const time: Field = { key: 'time', value: e.time };
  const agent = (a: { tenant: string; agentId: string; host: string }): Field[] => [
    { key: 'tenant', value: a.tenant, cef: 'cs1', cefLabel: 'tenant' },
    { key: 'agentId', value: a.agentId, cef: 'cs2', cefLabel: 'agentId' },
    { key: 'host', value: a.host, cef: 'dhost' },
  ];
  switch (e.kind) {
    case 'detection':
      return [
        ...agent(e),
        { key: 'path', value: e.path, cef: 'filePath' },
        { key: 'file', value: path.posix.basename(e.path.replace(/\\/g, '/')), cef: 'fname' },
        { key: 'sha256', value: e.sha256, cef: 'fileHash' },
        { key: 'threat', value: e.threat, cef: 'cs3', cefLabel: 'threat' },
        { key: 'action', value: e.action, cef: 'act' },
        { key: 'pid', value: e.process?.pid, cef: 'spid' },
        { key: 'exe', value: e.process?.exe, cef: 'sproc' },
        { key: 'uid', value: e.process?.uid, cef: 'suid' },
        { key: 'cmdline', value: e.process?.cmdline, cef: 'cs4', cefLabel: 'cmdline' },
        time,
      ];
    case 'protection':
      return [
        ...agent(e),
        { key: 'state', value: e.state, cef: 'outcome' },
        { key: 'previous', value: e.previous, cef: 'cs3', cefLabel: 'previousState' },
        { key: 'reasons', value: e.reasons.slice(0, 16), cef: 'reason' },
        time,
      ];
    case 'agent-silent':
    case 'agent-back':
      return [...agent(e), { key: 'lastSeen', value: e.lastSeen, cef: 'cs3', cefLabel: 'lastSeen' }, time];
    case 'policy':
      return [
        { key: 'tenant', value: e.tenant, cef: 'cs1', cefLabel: 'tenant' },
        { key: 'policy', value: e.policy, cef: 'cs3', cefLabel: 'policy' },
        { key: 'change', value: e.change, cef: 'act' },
        { key: 'version', value: e.version, cef: 'cs4', cefLabel: 'policyVersion' },
        time,
      ];
    case 'signatures':
    case 'signatures-stale':
      return [
        { key: 'tenant', value: '*', cef: 'cs1', cefLabel: 'tenant' },
        { key: 'engine', value: e.engine, cef: 'cs3', cefLabel: 'engine' },
        { key: 'generation', value: e.generation, cef: 'cs4', cefLabel: 'generation' },
        { key: 'previous', value: e.previous, cef: 'cs5', cefLabel: 'previousGeneration' },
        { key: 'ageSeconds', value: e.ageSeconds, cef: 'cn1', cefLabel: 'signatureAgeSeconds' },
        time,
      ];
  }
}

const ELLIPSIS = '\u2026';

/** `s` cut to at most `max` UTF-8 bytes on a character boundary, `…` marking a cut. */
export function clip(s: string, max: number): string {
  if (s.length <= max / 3 || Buffer.byteLength(s) <= max) return s;
  const b = Buffer.from(s, 'utf8');
  let end = Math.max(0, max - 3);
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end).toString('utf8') + ELLIPSIS;
}

// C0 controls, DEL and C1 controls: never in a header, an SD value or a CEF field as they are.
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;

/** A header field: PRINTUSASCII only (RFC 5424 section 6), at most `max` characters, `-` when empty. */
export function headerField(s: string, max: number): string {
  const v = s.replace(/[^\x21-\x7e]/g, '_').slice(0, max);
  return v === '' ? '-' : v;
}

/** An SD-PARAM value: `"`, `\` and `]` escaped (RFC 5424 section 6.3.3), controls replaced by U+FFFD. */
export function sdValue(s: string): string {
  return s.replace(CONTROLS, '\ufffd').replace(/["\\\]]/g, (c) => `\\${c}`);
}

/** A CEF header field: `\` and `|` escaped, controls replaced by a space (CEF spec, "Character encoding"). */
export function cefHeader(s: string): string {
  return s.replace(CONTROLS, ' ').replace(/[\\|]/g, (c) => `\\${c}`);
}

/** A CEF extension value: `\` and `=` escaped, CR/LF as `\r`/`\n`, other controls replaced by U+FFFD. */
export function cefValue(s: string): string {
  return s
    .replace(/[\\=]/g, (c) => `\\${c}`)
    .replace(/\r\n|\r|\n/g, (c) => (c === '\r' ? '\\r' : '\\n'))
    .replace(CONTROLS, '\ufffd');
}

/** The event's time if it is a date between 1970 and 9999, else now: RFC 5424 TIMESTAMP, UTC, milliseconds. */
export function timestamp(time: string, now: () => number = Date.now): string {
  const t = Date.parse(time);
  return new Date(Number.isFinite(t) && t >= 0 && t < 253402300800000 ? t : now()).toISOString();
}

/** JSON.stringify, with DEL, C1 controls (NEL) and U+2028/9 escaped too: some readers split lines on them. */
function jsonLine(v: unknown): string {
  return JSON.stringify(v).replace(/[\u007f-\u009f\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

const asText = (v: Value): string => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : v.join('; '));

function clipValue(v: Value, max: number): Value {
  if (typeof v === 'number') return Number.isFinite(v) ? v : 0;
  if (typeof v === 'string') return clip(v, max);
  return v.map((x) => clip(String(x), max));
}

function render(e: SvmEvent, o: FormatOptions, max: number): string {
  const pri = o.facility * 8 + syslogSeverity(e);
  const header =
    `<${pri}>1 ${timestamp(e.time, o.now)} ${headerField(o.hostname ?? os.hostname(), 255)} ${headerField(o.appName, 48)} ` +
    `${headerField(o.procId ?? String(process.pid), 128)} ${headerField(e.kind, 32)}`;
  const fields = fieldsOf(e)
    .filter((f): f is Field & { value: Value } => f.value !== undefined)
    .map((f) => ({ ...f, value: clipValue(f.value, max) }));
  if (o.format === 'rfc5424') {
    const sd = fields.map((f) => ` ${f.key}="${sdValue(asText(f.value))}"`).join('');
    const body: Record<string, Value> = { kind: e.kind };
    for (const f of fields) body[f.key] = f.value;
    // MSG without a BOM (MSG-ANY): SIEM JSON parsers trip on one; the body is UTF-8 JSON all the same.
    return `${header} [${SD_ID} kind="${e.kind}"${sd}] ${jsonLine(body)}`;
  }
  const t = Date.parse(timestamp(e.time, o.now));
  const ext = [`rt=${t}`, `dvchost=${cefValue(headerField(o.hostname ?? os.hostname(), 255))}`];
  for (const f of fields) {
    if (!f.cef) continue;
    if (f.cefLabel) ext.push(`${f.cef}Label=${f.cefLabel}`);
    ext.push(`${f.cef}=${cefValue(asText(f.value))}`);
  }
  const head = ['CEF:0', 'lightagent', 'lightagent-svm', PRODUCT_VERSION, e.kind, CEF_NAMES[e.kind], String(cefSeverity(e))];
  return `${header} - ${head.map(cefHeader).join('|')}|${ext.join(' ')}`;
}

/** Bounds per field, tried in turn until the message fits in maxMessage. */
const FIELD_LIMITS = [1024, 256, 64, 16];

/**
 * The event as one message of at most `maxMessage` bytes: fields are cut shorter until it fits;
 * a message that still does not (a tiny max_message) is cut on a character boundary.
 */
export function formatEvent(e: SvmEvent, o: FormatOptions): Buffer {
  for (const max of FIELD_LIMITS) {
    const b = Buffer.from(render(e, o, max), 'utf8');
    if (b.length <= o.maxMessage) return b;
  }
  const b = Buffer.from(render(e, o, FIELD_LIMITS.at(-1)!), 'utf8');
  let end = o.maxMessage;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end);
}
