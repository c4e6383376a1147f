/**
 * `lightagent svm-info [--json]` — which SVM this agent's config leads to, and the state of every
 * other one: connects like the agent does (same list, discovery, CA, client certificate), waits
 * for every SVM's first attempt, then measures each reachable SVM's round trip with a few
 * lookups of a probe hash (an ordinary lookup: it reads the SVM's cache, never uploads).
 * Exit status: 0 an SVM is in use, 2 none reachable (or a bad configuration).
 */
import crypto from 'node:crypto';
import { parseArgs } from 'node:util';
import { loadAgentConfig, requireSvm, type AgentConfig } from '../../config/agent.js';
import { svmPoolFor } from '../../agent/svm-connection.js';
import { parseDuration } from '../../config/units.js';
import { describeError } from '../../errors.js';
import { configureLogging } from '../../log.js';
import type { SvmMemberStatus, SvmPool } from '../../svm-link/index.js';
import { err, fail, out, printJson } from '../output.js';

export const SVM_INFO_HELP = `Usage: lightagent svm-info [options]

Show the SVM this agent uses (the best priority, then the lowest load), its signature generation,
load and round-trip latency, and the state of every other configured or discovered SVM.

Options:
  --svm URL        an SVM (ws:// or wss://); repeat for a prioritized list, first preferred
                   (default: \`svm:\` / \`svm_discovery:\` of the config file, or LIGHTAGENT_SVM_URL)
  --token T        tenant token; default from the config file or LIGHTAGENT_TOKEN
  --config F       agent config file (default /etc/lightagent/agent.yaml if it exists)
  --timeout D      how long to wait for the SVMs (default 3s)
  --samples N      lookups timed per SVM for its latency (default 5, at most 50)
  --json           print one JSON document
  -h, --help       show this help

Exit status: 0 an SVM is in use, 2 no SVM reachable or an error.`;

/** The probe hash: a fixed value no real file is expected to have; lookups of it read, never write. */
const PROBE_SHA256 = crypto.createHash('sha256').update('lightagent svm-info latency probe').digest('hex');

export interface SvmInfo {
  active: (SvmMemberStatus & { latencyMs?: Latency }) | null;
  svms: Array<SvmMemberStatus & { latencyMs?: Latency }>;
  discovery?: { url: string; error?: { code: string; message: string } };
}

interface Latency {
  median: number;
  min: number;
  samples: number;
}

export async function svmInfoCommand(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      allowPositionals: false,
      options: {
        svm: { type: 'string', multiple: true },
        token: { type: 'string' },
        config: { type: 'string' },
        timeout: { type: 'string' },
        samples: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (e) {
    err(`lightagent svm-info: ${(e as Error).message}\n\n${SVM_INFO_HELP}`);
    return 2;
  }
  const o = args.values;
  if (o.help) {
    out(SVM_INFO_HELP);
    return 0;
  }
  const timeoutMs = o.timeout === undefined ? 3000 : parseDuration(o.timeout);
  if (timeoutMs === undefined || timeoutMs < 100 || timeoutMs > 600_000) {
    err('lightagent svm-info: --timeout must be a duration from 100ms to 10m (e.g. 3s, 500ms)');
    return 2;
  }
  const samples = o.samples === undefined ? 5 : Number(o.samples);
  if (!Number.isInteger(samples) || samples < 1 || samples > 50) {
    err('lightagent svm-info: --samples must be an integer from 1 to 50');
    return 2;
  }
  let cfg: AgentConfig;
  let pool: SvmPool;
  try {
    const svm = o.svm === undefined ? undefined : o.svm.length === 1 ? o.svm[0] : o.svm;
    cfg = loadAgentConfig({ file: o.config, flags: { svm, token: o.token } });
    requireSvm(cfg);
    // Only errors on the terminal: the report is the output.
    configureLogging({ level: cfg.log.file ? cfg.log.level : 'error', ...(cfg.log.file ? { file: cfg.log.file } : {}) });
    pool = svmPoolFor(cfg, { connectTimeoutMs: timeoutMs, deadlineMs: timeoutMs });
  } catch (e) {
    return fail(e, 'lightagent svm-info');
  }
  try {
    await pool.connect().catch(() => undefined);
    await pool.settled(timeoutMs);
    const info = await collect(pool, cfg, samples, timeoutMs);
    if (o.json) printJson(info);
    else print(info);
    return info.active ? 0 : 2;
  } catch (e) {
    return fail(e, 'lightagent svm-info');
  } finally {
    pool.close();
  }
}

async function collect(pool: SvmPool, cfg: AgentConfig, samples: number, timeoutMs: number): Promise<SvmInfo> {
  const svms: SvmInfo['svms'] = [];
  for (const s of pool.status()) {
    const link = pool.linkFor(s.url);
    const row: SvmInfo['svms'][number] = { ...s };
    if (link && s.state === 'connected') {
      const times: number[] = [];
      for (let i = 0; i < samples; i++) {
        const t0 = performance.now();
        try {
          await link.lookup(PROBE_SHA256, 0, timeoutMs);
        } catch (e) {
          row.error = describeError(e);
          break;
        }
        times.push(performance.now() - t0);
      }
      if (times.length) {
        times.sort((a, b) => a - b);
        row.latencyMs = { median: round(times[Math.floor(times.length / 2)]!), min: round(times[0]!), samples: times.length };
      }
      // Load and generation may have been reported meanwhile.
      row.load = link.load;
      row.generation = link.generation;
    }
    svms.push(row);
  }
  const info: SvmInfo = { active: svms.find((s) => s.active) ?? null, svms };
  if (cfg.svm_discovery) {
    const f = pool.discoveryFailure;
    info.discovery = { url: cfg.svm_discovery, ...(f ? { error: { code: f.code, message: f.message } } : {}) };
  }
  return info;
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

function describeState(s: SvmMemberStatus): string {
  if (s.state === 'connected') return 'connected';
  if (s.state === 'refused') return `refused: ${s.error?.message ?? ''}${s.error ? ` (${s.error.code})` : ''}`;
  return s.error ? `unreachable: ${s.error.message} (${s.error.code})` : s.state;
}

function line(s: SvmInfo['svms'][number]): string {
  const parts = [`${s.url}  priority ${s.priority}  ${describeState(s)}`];
  if (s.state === 'connected') {
    if (s.svmId) parts.push(`id ${s.svmId}`);
    if (s.generation) parts.push(`signatures ${s.generation}`);
    if (s.load !== undefined) parts.push(`load ${s.load.toFixed(2)}`);
    if (s.latencyMs) parts.push(`latency ${s.latencyMs.median} ms (median of ${s.latencyMs.samples}, min ${s.latencyMs.min})`);
  }
  return parts.join(', ');
}

function print(info: SvmInfo): void {
  if (info.active) out(`in use: ${line(info.active)}`);
  else out('in use: none (no SVM reachable; on access, the on_svm_unavailable policy answers)');
  const others = info.svms.filter((s) => !s.active);
  if (others.length) {
    out('other SVMs:');
    for (const s of others) out(`  ${line(s)}`);
  }
  if (info.discovery) out(`discovery: ${info.discovery.url}${info.discovery.error ? ` failed: ${info.discovery.error.message} (${info.discovery.error.code})` : ' ok'}`);
}
