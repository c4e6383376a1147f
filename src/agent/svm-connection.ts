/**
 * The agent's SvmLink, built from its config the same way for every command (daemon, scan):
 * identity, host facts, deadline, and the pinned CA for wss://.
 */
import fs from 'node:fs';
import { ConfigError } from '../errors.js';
import { hostInfo } from '../platform/host-info.js';
import { SvmLink, type SvmLinkOptions } from '../svm-link/index.js';
import { requireSvm, type AgentConfig } from './config.js';
import { AGENT_VERSION, agentId } from './identity.js';

export function svmLinkFor(cfg: AgentConfig, extra: Partial<SvmLinkOptions> = {}): SvmLink {
  const { svm, token } = requireSvm(cfg);
  let ca: Buffer | undefined;
  if (cfg.ca) {
    try {
      ca = fs.readFileSync(cfg.ca);
    } catch (e) {
      throw new ConfigError('the configuration', [`ca: cannot read ${cfg.ca}: ${(e as Error).message}`]);
    }
  }
  const host = hostInfo();
  return new SvmLink({
    url: svm,
    token,
    agentId: agentId(cfg.state_dir, host.host),
    host: host.host,
    os: host.os,
    hypervisor: host.hypervisor,
    agentVersion: AGENT_VERSION,
    deadlineMs: cfg.deadline,
    ca,
    ...extra,
  });
}
