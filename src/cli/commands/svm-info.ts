/**
 * `lightagent svm-info [--json]` — which SVM this agent's config leads to, and the state of every
 * other one: connects like the agent does (same list, discovery, CA, client certificate), waits
 * for every SVM's first attempt, then measures each reachable SVM's round trip with a few
 * lookups of a probe hash (an ordinary lookup: it reads the SVM's cache, never uploads).
 * Exit status: 0 an SVM is in use, 2 none reachable (or a bad configuration).
 */
import crypto from 'node:crypto';
import { loadAgentConfig, requireSvm, type AgentConfig } from '../../config/agent.js';
import { svmPoolFor } from '../../agent/svm-connection.js';
import { describeError } from '../../errors.js';
import { configureLogging } from '../../log.js';
import type { SvmMemberStatus, SvmPool } from '../../svm-link/index.js';
import { defineCommand } from '../command.js';
import { out, printJson } from '../output.js';

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

export const svmInfoCommand = defineCommand({
  name: 'svm-info',
  summary: "the SVM in use, its signatures, load and latency, and the other SVMs' states",
  usage: '[options]',
  description: `Show the SVM this agent uses (the best priority, then the lowest load), its signature generation,
load and round-trip latency, and the state of every other configured or discovered SVM.`,
  options: {
    svm: {
      type: 'string',
      multiple: true,
      arg: 'URL',
      help: 'an SVM (ws:// or wss://); repeat for a prioritized list, first preferred\n(default: `svm:` / `svm_discovery:` of the config file, or LIGHTAGENT_SVM_URL)',
    },
    token: { type: 'string', arg: 'T', help: 'tenant token; default from the config file or LIGHTAGENT_TOKEN' },
    config: { type: 'string', arg: 'F', help: 'agent config file (default /etc/lightagent/agent.yaml if it exists)' },
    timeout: {
      type: 'duration',
      arg: 'DUR',
      min: 100,
      max: 600_000,
      default: 3000,
      help: 'how long to wait for the SVMs (default 3s; a bare number is ms)',
    },
    samples: {
      type: 'integer',
      arg: 'N',
      min: 1,
      max: 50,
      default: 5,
      help: 'lookups timed per SVM for its latency (default 5, at most 50)',
    },
    json: { type: 'boolean', help: 'print one JSON document' },
  },
  footer: 'Exit status: 0 an SVM is in use, 2 no SVM reachable or an error.',
  async handler({ values: o }) {
    const timeoutMs = o.timeout;
    const svm = o.svm === undefined ? undefined : o.svm.length === 1 ? o.svm[0] : o.svm;
    const cfg: AgentConfig = loadAgentConfig({ file: o.config, flags: { svm, token: o.token } });
    requireSvm(cfg);
    // Only errors on the terminal: the report is the output.
    configureLogging({ level: cfg.log.file ? cfg.log.level : 'error', ...(cfg.log.file ? { file: cfg.log.file } : {}) });
    const pool: SvmPool = svmPoolFor(cfg, { connectTimeoutMs: timeoutMs, deadlineMs: timeoutMs });
    try {
      await pool.connect().catch(() => undefined);
      await pool.settled(timeoutMs);
      const info = await collect(pool, cfg, o.samples, timeoutMs);
      if (o.json) printJson(info);
      else print(info);
      return info.active ? 0 : 2;
    } finally {
      pool.close();
    }
  },
});

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
  if (info.discovery)
    out(
      `discovery: ` +
        `${info.discovery.url}${info.discovery.error ? ` failed: ${info.discovery.error.message} (${info.discovery.error.code})` : ' ok'}`,
    );
}
