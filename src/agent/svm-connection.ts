/**
 * The agent's connection to its SVMs, built from its config the same way for every command
 * (daemon, scan, svm-info): identity, host facts, deadline, the pinned CA and client certificate
 * for wss://. One SVM and no discovery: an SvmLink, as always; a list or a discovery URL: an
 * SvmPool (failover, priority, load). Both are an SvmClient to the rest of the agent.
 */
import fs from 'node:fs';
import { ConfigError } from '../errors.js';
import { hostInfo } from '../platform/host-info.js';
import { FEATURES } from '../protocol/index.js';
import {
  SvmLink,
  SvmPool,
  isLoopbackUrl,
  type SvmClient,
  type SvmEntry,
  type SvmLinkOptions,
  type SvmPoolOptions,
} from '../svm-link/index.js';
import { requireSvm, type AgentConfig } from '../config/agent.js';
import { AGENT_VERSION, agentIdentity, readInstanceFacts } from './identity.js';

export type SvmClientExtra = Partial<SvmLinkOptions> & Pick<SvmPoolOptions, 'holdDownMs'>;

/** The configured SVMs as a prioritized list (a plain URL is priority 0; list items default to their position). */
export function svmEntries(svm: AgentConfig['svm']): SvmEntry[] {
  if (svm === undefined) return [];
  if (typeof svm === 'string') return [{ url: svm, priority: 0 }];
  return svm.map((e, i) => (typeof e === 'string' ? { url: e, priority: i } : { url: e.url, priority: e.priority ?? i }));
}

function readPem(key: string, file: string | undefined): Buffer | undefined {
  if (!file) return undefined;
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new ConfigError('the configuration', [`${key}: cannot read ${file}: ${(e as Error).message}`]);
  }
}

/**
 * lightagent/1 features every agent link speaks (protocol/messages.ts FEATURES); the daemon's
 * state-report step sends the state reports, its signature refresh sends lookup batches and its
 * policy steps apply policies; other commands only list them. The daemon's link adds
 * scan-command (steps/svm-link.ts).
 */
export const AGENT_FEATURES: readonly string[] = [FEATURES.signatureAge, FEATURES.stateReport, FEATURES.lookupBatch, FEATURES.policy];

export function svmLinkFor(cfg: AgentConfig, extra: SvmClientExtra = {}): SvmClient {
  return build(cfg, extra, false);
}

/** Always a pool, even of one SVM (svm-info reports every SVM the same way). */
export function svmPoolFor(cfg: AgentConfig, extra: SvmClientExtra = {}): SvmPool {
  return build(cfg, extra, true) as SvmPool;
}

function build(cfg: AgentConfig, extra: SvmClientExtra, pool: boolean): SvmClient {
  const { token } = requireSvm(cfg);
  const entries = svmEntries(cfg.svm);
  const issues: string[] = [];
  const seen = new Set<string>();
  for (const e of entries) {
    if (seen.has(e.url)) issues.push(`svm: ${e.url} is listed twice`);
    seen.add(e.url);
    if (e.url.startsWith('ws:') && !isLoopbackUrl(e.url) && !cfg.allow_plain_ws) {
      issues.push(
        `svm: ${e.url} is plain ws:// to another host (the token and file contents would travel in clear); use wss:// with \`ca:\`, or set allow_plain_ws: true`,
      );
    }
  }
  if (issues.length) throw new ConfigError('the configuration', issues);
  const ca = readPem('ca', cfg.ca);
  const cert = readPem('tls_cert', cfg.tls_cert);
  const key = readPem('tls_key', cfg.tls_key);
  const host = hostInfo();
  const { holdDownMs, ...linkExtra } = extra;
  const common = {
    token,
    agentId: agentIdentity(cfg.state_dir, { ...readInstanceFacts(), hostname: host.host }).agentId,
    host: host.host,
    os: host.os,
    hypervisor: host.hypervisor,
    agentVersion: AGENT_VERSION,
    deadlineMs: cfg.deadline,
    features: [...AGENT_FEATURES],
    ca,
    cert,
    key,
    ...linkExtra,
  };
  if (!pool && entries.length === 1 && !cfg.svm_discovery) return new SvmLink({ url: entries[0]!.url, ...common });
  return new SvmPool({
    ...common,
    svms: entries,
    discovery: cfg.svm_discovery ? { url: cfg.svm_discovery, intervalMs: cfg.svm_discovery_interval } : undefined,
    holdDownMs: holdDownMs ?? cfg.svm_hold_down,
    allowPlainWs: cfg.allow_plain_ws,
  });
}
