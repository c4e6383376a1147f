/**
 * `lightagent status` — what the running daemon is doing, from its status socket (any user).
 */
import path from 'node:path';
import { loadAgentConfig } from '../../config/agent.js';
import { request } from '../../control/client.js';
import { DEFAULT_SOCKET_DIR, socketDirFor, statusEndpoint, WINDOWS_STATUS_PIPE } from '../../control/local-sockets.js';
import { defineCommand } from '../command.js';
import { err, out, printJson } from '../output.js';

/** The socket dir for a client: flags, then the config file if readable, then the default. */
export function clientSocketDir(o: {
  'socket-dir'?: string | undefined;
  'state-dir'?: string | undefined;
  config?: string | undefined;
}): string {
  if (o['socket-dir']) return path.resolve(o['socket-dir']);
  if (o['state-dir']) return socketDirFor({ state_dir: path.resolve(o['state-dir']) });
  try {
    return socketDirFor(loadAgentConfig({ file: o.config }));
  } catch (e) {
    if (o.config) throw e;
    return DEFAULT_SOCKET_DIR; // e.g. /etc/lightagent/agent.yaml readable by root only
  }
}

// The daemon's status JSON, read loosely: fields may be missing in an older or newer daemon.
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a display of whatever the daemon sent
type Obj = Record<string, any>;

function ago(iso: string | undefined): string {
  const t = iso ? Date.parse(iso) : NaN;
  if (!Number.isFinite(t)) return '?';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : `${Math.round(s / 3600)}h`;
}

/** Age in words: 45s, 12m, 5h, 3d. */
export function ageText(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  return s < 120 ? `${s}s` : s < 7200 ? `${Math.round(s / 60)}m` : s < 172_800 ? `${Math.round(s / 3600)}h` : `${Math.round(s / 86_400)}d`;
}

/** `, 3d old, stale: YES (max 7d)` / `, 5h old, stale: no (max 7d)`; nothing when the SVM does not say. */
function signatureAgeText(svm: Obj): string {
  if (typeof svm.signatureAgeSeconds !== 'number') return '';
  const max = typeof svm.signaturesMaxAge === 'number' ? ` (max ${ageText(svm.signaturesMaxAge)})` : '';
  const stale = svm.signaturesStale === true ? ', stale: YES' : svm.signaturesStale === false ? ', stale: no' : '';
  return `, ${ageText(svm.signatureAgeSeconds)} old${stale}${max}`;
}

function mb(kb: unknown): string {
  return typeof kb === 'number' && Number.isFinite(kb) ? (kb / 1024).toFixed(1) : '?';
}

/** The signature refresh after a new generation (src/scan/signature-refresh.ts); nothing before the first. */
function refreshLines(r: Obj | undefined): string[] {
  if (!r || r.state === 'idle') return [];
  const when =
    r.state === 'running'
      ? `started ${ago(r.startedAt)} ago${r.phase ? `, ${r.phase}` : ''}`
      : `${r.durationMs ?? '?'} ms, ended ${ago(r.finishedAt)} ago`;
  return [
    `refresh:     ${r.state} for generation ${r.generation ?? '?'} (${when}): ${r.done ?? 0} of ${r.total ?? 0} verdicts, ` +
      `${r.promoted ?? 0} promoted, ${r.infected ?? 0} infected, ${r.unknown ?? 0} unknown; ` +
      `${r.uploaded ?? 0} file(s) uploaded (${r.bytes ?? 0} bytes), ${r.marks ?? 0} marks back${r.error ? `; ${r.error}` : ''}`,
  ];
}

/** The running or last scan job (docs/scans.md). */
function scanLine(j: Obj): string {
  const c: Obj = j.counters ?? {};
  const when = j.state === 'running' ? `started ${ago(j.startedAt)} ago` : `${ago(j.finishedAt ?? j.startedAt)} ago`;
  return (
    `scan job:    ${j.state ?? '?'} (${j.trigger ?? '?'}, ${when}): ${c.seen ?? 0} seen, ${c.scanned ?? 0} scanned, ` +
    `${c.infected ?? 0} infected, ${c.errors ?? 0} errors`
  );
}

export function formatStatus(s: Obj): string {
  const p: Obj = s.protection ?? {};
  const svm: Obj = s.svm ?? {};
  const c: Obj = s.cache ?? {};
  const det: Obj = s.detections ?? {};
  const state =
    p.state === 'protected'
      ? 'protected'
      : `${String(p.state ?? 'unknown').toUpperCase()}${p.reasons?.length ? ` (${p.reasons.join(', ')})` : ''}`;
  const lines = [
    `lightagent ${s.version ?? '?'} (pid ${s.pid ?? '?'}, up ${ago(s.startedAt)}, hypervisor ${s.hypervisor ?? 'none detected'})`,
    `protection:  ${state}, mode ${s.mode ?? 'off'}${s.mode === 'watcher' ? ' (scan after write; opens are not blocked)' : ''}`,
    `paths:       ${(s.protect ?? []).join(', ') || '-'}${s.exclude?.length ? `; excluded ${s.exclude.join(', ')}` : ''}`,
    ...exclusionLines(s.exclusions),
    ...policyLines(s.policy),
    `SVM:         ${svm.state ?? '?'} ${svm.url ?? ''}${svm.svmId ? ` (${svm.svmId}, latency ${svm.latencyMs} ms, load ${svm.load})` : ''}`,
    `signatures:  generation ${svm.generation ?? 'unknown'}${signatureAgeText(svm)}`,
    `cache:       ${c.entries ?? 0} of ${c.capacity ?? 0} entries, hit rate ${((c.hitRate ?? 0) * 100).toFixed(1)}% ` +
      `(${c.identityHits ?? 0} hits, ${c.misses ?? 0} misses)`,
    ...refreshLines(s.refresh),
    `queue:       ${s.deferredQueue ?? 0} file(s) waiting for a scan`,
    ...(s.scan ? [scanLine(s.scan)] : []),
    ...(s.memory ? [memoryLine(s.memory)] : []),
    `detections:  ${det.total ?? 0}${det.recent?.length ? ', last:' : ''}`,
  ];
  for (const d of (det.recent ?? []).slice(-10).reverse()) lines.push(`  ${d.time}  ${d.action}  ${d.threat}  ${d.path}`);
  return lines.join('\n');
}

export const statusCommand = defineCommand({
  name: 'status',
  summary: "show the running agent's protection state (any user)",
  usage: '[options]',
  description: `Show the running agent's state: protection mode (fanotify / watcher / off) and whether it is
protected or degraded, the policy from the SVM and where each central setting comes from
(docs/policies.md), SVM link, signature generation, verdict cache size and hit rate,
deferred-scan queue, last detections. Reads the status socket (on Windows the named pipe
${WINDOWS_STATUS_PIPE}); needs no privilege.
Exit codes: 0 protected, 1 degraded or off, 2 the agent cannot be reached.`,
  options: {
    'socket-dir': {
      type: 'string',
      arg: 'DIR',
      help: `where the daemon's sockets are (default from the config file, else\n${DEFAULT_SOCKET_DIR})`,
    },
    'state-dir': { type: 'string', arg: 'DIR', help: "the daemon's --state-dir (its sockets are then in <DIR>.run)" },
    config: { type: 'string', arg: 'F', help: 'agent config file to find socket_dir / state_dir in' },
    pipe: {
      type: 'string',
      arg: 'NAME',
      help: `Windows: the status pipe (default ${WINDOWS_STATUS_PIPE}); the\noptions above do not apply there`,
    },
    timeout: {
      type: 'duration',
      arg: 'DUR',
      min: 1,
      max: 600_000,
      default: 5000,
      help: 'how long to wait for the answer (default 5s; a bare number is ms)',
    },
    json: { type: 'boolean', help: 'print the status as JSON' },
  },
  async handler({ values: o, prefix }) {
    if (o.pipe !== undefined && !/^\\\\\.\\pipe\\[A-Za-z0-9._-]{1,200}$/.test(o.pipe)) {
      err(`${prefix}: --pipe must be \\\\.\\pipe\\NAME (letters, digits, . _ -)`);
      return 2;
    }
    const sock = o.pipe ?? (process.platform === 'win32' ? statusEndpoint('') : statusEndpoint(clientSocketDir(o)));
    const reply = await request(sock, { cmd: 'status' }, o.timeout);
    const s = (reply.status ?? {}) as Obj;
    if (o.json) printJson(s);
    else out(formatStatus(s));
    return s.protection?.state === 'protected' ? 0 : 1;
  },
});

/** The central layer (docs/policies.md): the policy in force, where each central key comes from, a refusal. */
function policyLines(p: Obj | undefined): string[] {
  if (!p) return [];
  const from = p.source === 'saved' ? 'saved copy: the SVM has not confirmed it since the start' : 'from the SVM';
  const lines = [p.source === 'none' ? 'policy:      none (local settings only)' : `policy:      ${p.name} version ${p.version} (${from})`];
  const keys = (p.keys ?? {}) as Record<string, string>;
  const by = (what: string) =>
    Object.entries(keys)
      .filter(([, v]) => v === what)
      .map(([k]) => k);
  const parts = [
    by('central').length ? `central ${by('central').join(', ')}` : '',
    by('local_keys').length ? `kept local (local_keys) ${by('local_keys').join(', ')}` : '',
    by('not-supported').length ? `not supported by this agent ${by('not-supported').join(', ')}` : '',
  ].filter(Boolean);
  if (p.source !== 'none' && parts.length) lines.push(`  settings:  ${parts.join('; ')}; the rest local`);
  if (p.refused) {
    const why = String(p.refused.reason).split('\n').slice(1, 3).join(' ').trim();
    lines.push(`  REFUSED:   ${p.refused.name} version ${p.refused.version} at ${p.refused.at}: ${why}`);
  }
  return lines;
}

/** The kinds of exclusion besides paths, one line when any is set (an older daemon sends none). */
function exclusionLines(e: Obj | undefined): string[] {
  if (!e) return [];
  const n = (k: string) => (Array.isArray(e[k]) ? (e[k] as unknown[]).length : typeof e[k] === 'number' ? (e[k] as number) : 0);
  const parts = [
    n('extensions') ? `extensions ${(e.extensions as string[]).join(' ')}` : '',
    n('processes') ? `${n('processes')} process(es)` : '',
    n('sha256') ? `${n('sha256')} SHA-256` : '',
    n('threats') ? `threats ${(e.threats as string[]).join(' ')}` : '',
  ].filter(Boolean);
  return parts.length ? [`excluded:    ${parts.join('; ')}`] : [];
}

function memoryLine(m: { rssKb: number; heapUsedKb: number; heapTrims?: number }): string {
  const trims = m.heapTrims ? `, trimmed ${m.heapTrims} time(s) while idle` : '';
  return `memory:      ${mb(m.rssKb)} MB resident (main thread's heap ${mb(m.heapUsedKb)} MB${trims})`;
}
