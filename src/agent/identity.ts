/**
 * Who this agent is: its id, and the machine facts that tie the id to one VM.
 *
 * A VM cloned from a template that already ran the agent carries the template's state directory,
 * agent id included; every clone would then say hello to the SVM as the same agent. So the id is
 * stored with the facts of the machine that made it (instance.json), and a start on a machine
 * whose facts differ makes a new id, keeping everything else (the verdict cache is what a clone
 * should inherit). `lightagent seal` drops the identity outright (dropIdentity), for templates.
 *
 * Which facts, and why:
 * - DMI product UUID (/sys/class/dmi/id/product_uuid): set by the hypervisor per VM (vSphere,
 *   Hyper-V, OpenStack/libvirt, XenServer give a clone its own), root-only, survives reboots. The
 *   strongest signal; absent in some guests (no DMI, containers) and a fixed placeholder on some.
 * - machine-id (/etc/machine-id): systemd's per-installation id. Image-sealing guides empty it so
 *   that each clone makes its own at first boot, but a clone of an unsealed image keeps it; so it
 *   catches sealed images where DMI is missing, not unsealed ones.
 * - hostname: logged, never decisive. Clones often keep the template's name until cloud-init
 *   renames them, and a DHCP-named VM may change it without being a clone.
 * A clone is a start where a fact known both then and now differs. Windows: no facts are read yet
 * (docs/vdi.md), so only `seal` separates clones there.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { logger } from '../log.js';

export const AGENT_VERSION = '0.1.0';

export const AGENT_ID_FILE = 'agent-id';
export const INSTANCE_FILE = 'instance.json';
export const SEALED_FILE = 'sealed.json';

export interface InstanceFacts {
  machineId?: string | undefined;
  productUuid?: string | undefined;
  hostname: string;
}

export interface InstanceRecord extends InstanceFacts {
  agentId: string;
  createdAt: string;
}

export interface AgentIdentity {
  agentId: string;
  /** The id this state directory held before, when this start found it on another machine. */
  clonedFrom?: string | undefined;
  /** Why it counts as a clone: which fact changed. */
  cloneReason?: string | undefined;
  /** First start after `lightagent seal` (the template's id was dropped). */
  afterSeal?: boolean | undefined;
  /** False when the state directory cannot be written: this id lives as long as the process. */
  persistent: boolean;
}

export interface FactSources {
  machineIdFile: string;
  productUuidFile: string;
  hostname: () => string;
}

export const LINUX_FACT_SOURCES: FactSources = {
  machineIdFile: '/etc/machine-id',
  productUuidFile: '/sys/class/dmi/id/product_uuid',
  hostname: () => os.hostname(),
};

const ID_RE = /^[A-Za-z0-9._-]{8,128}$/;
const MAX_RECORD_BYTES = 4096;

function readSmall(file: string): string | undefined {
  try {
    const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const buf = Buffer.alloc(256);
      const n = fs.readSync(fd, buf, 0, buf.length, 0);
      return buf.subarray(0, n).toString('utf8').trim();
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return undefined;
  }
}

/** 32 hex digits; empty and "uninitialized" (systemd's first-boot marker) are unknown. */
export function normalizeMachineId(raw: string | undefined): string | undefined {
  const v = raw?.toLowerCase();
  return v && /^[0-9a-f]{32}$/.test(v) && !/^0+$/.test(v) ? v : undefined;
}

/** A UUID; all-zero, all-f and one-digit placeholders (boards that ship none) are unknown. */
export function normalizeProductUuid(raw: string | undefined): string | undefined {
  const v = raw?.toLowerCase();
  if (!v || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(v)) return undefined;
  const digits = v.replace(/-/g, '');
  if (/^(.)\1*$/.test(digits) || digits === '03000200040005000006000700080009') return undefined;
  return v;
}

export function readInstanceFacts(sources: FactSources = LINUX_FACT_SOURCES): InstanceFacts {
  const hostname = sources.hostname();
  if (process.platform === 'win32') return { hostname };
  return {
    machineId: normalizeMachineId(readSmall(sources.machineIdFile)),
    productUuid: normalizeProductUuid(readSmall(sources.productUuidFile)),
    hostname,
  };
}

/** Why `now` is not the machine `then` was recorded on, or undefined if nothing decisive changed. */
export function cloneReason(then: InstanceFacts, now: InstanceFacts): string | undefined {
  if (then.productUuid && now.productUuid && then.productUuid !== now.productUuid)
    return 'the DMI product UUID changed (the hypervisor gives each VM its own)';
  if (then.machineId && now.machineId && then.machineId !== now.machineId) return 'the machine-id changed';
  return undefined;
}

function readRecord(stateDir: string): InstanceRecord | undefined {
  const text = readSmallJson(path.join(stateDir, INSTANCE_FILE));
  if (!text || typeof text !== 'object') return undefined;
  const r = text as Record<string, unknown>;
  const str = (k: string) => (typeof r[k] === 'string' && (r[k] as string).length <= 256 ? (r[k] as string) : undefined);
  const agentId = str('agentId');
  if (!agentId || !ID_RE.test(agentId)) return undefined;
  return {
    agentId,
    machineId: normalizeMachineId(str('machineId')),
    productUuid: normalizeProductUuid(str('productUuid')),
    hostname: str('hostname') ?? '',
    createdAt: str('createdAt') ?? '',
  };
}

function readSmallJson(file: string): unknown {
  try {
    const st = fs.lstatSync(file);
    if (!st.isFile() || st.size > MAX_RECORD_BYTES) return undefined;
    return JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
  } catch {
    return undefined;
  }
}

function newId(hostname: string): string {
  return `${hostname.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 64) || 'agent'}-${crypto.randomBytes(8).toString('hex')}`;
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/**
 * The agent id for this state directory on this machine: the stored one, unless it was made on
 * another machine (a clone) or dropped by `seal`; then a new one, stored with today's facts.
 */
export function agentIdentity(stateDir: string, facts: InstanceFacts = readInstanceFacts()): AgentIdentity {
  const idFile = path.join(stateDir, AGENT_ID_FILE);
  const stored = readSmall(idFile);
  const storedId = stored && ID_RE.test(stored) ? stored : undefined;
  const record = readRecord(stateDir);
  let clonedFrom: string | undefined;
  let reason: string | undefined;
  if (storedId && record && record.agentId === storedId) {
    reason = cloneReason(record, facts);
    if (!reason) return { agentId: storedId, persistent: true };
    clonedFrom = storedId;
  } else if (storedId) {
    // An id from before instance.json existed (or a record that does not match it): adopt it and
    // record today's facts, so the next clone of this machine is recognised.
    return { agentId: storedId, persistent: persist(stateDir, storedId, facts, false) };
  }
  const agentId = newId(facts.hostname);
  const afterSeal = !storedId && fs.existsSync(path.join(stateDir, SEALED_FILE));
  const persistent = persist(stateDir, agentId, facts, true);
  if (clonedFrom)
    logger('identity').warn('this machine is a clone: new agent id', { agentId, clonedFrom, reason, hostname: facts.hostname });
  else if (afterSeal)
    logger('identity').info('first start of a clone of a sealed template: new agent id', { agentId, hostname: facts.hostname });
  return { agentId, clonedFrom, cloneReason: reason, afterSeal, persistent };
}

function persist(stateDir: string, agentId: string, facts: InstanceFacts, replaceId: boolean): boolean {
  try {
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    if (replaceId) writeAtomic(path.join(stateDir, AGENT_ID_FILE), `${agentId}\n`);
    const record: InstanceRecord = { agentId, ...facts, createdAt: new Date().toISOString() };
    writeAtomic(path.join(stateDir, INSTANCE_FILE), `${JSON.stringify(record)}\n`);
    return true;
  } catch {
    return false; // read-only or unprivileged (`lightagent scan` as a user)
  }
}

/** Files that belong to one running instance, not to a template: `seal` removes them. */
export const PER_INSTANCE_FILES = [
  AGENT_ID_FILE,
  INSTANCE_FILE,
  'events.jsonl',
  'events.jsonl.1',
  'status.json',
  path.join('deferred', 'queue.journal'),
];

/** Remove the instance identity and history from a state directory; returns what was removed. */
export function dropIdentity(stateDir: string): string[] {
  const removed: string[] = [];
  for (const f of PER_INSTANCE_FILES) {
    try {
      fs.rmSync(path.join(stateDir, f));
      removed.push(f);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  return removed;
}
