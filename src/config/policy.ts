/**
 * Policies: the agent settings an SVM sets centrally for a tenant or group (docs/policies.md).
 * A policy is a subset of the agent's config in the same YAML shape, limited to POLICY_KEYS, and
 * validated by the agent's own validators (the fields of `agentConfigSchema`, without their
 * defaults: a key a policy leaves out is not set centrally). The SVM checks a policy with this
 * schema when it loads its config; the agent checks what it receives with it again.
 *
 * Precedence: central wins, unless the agent's file lists the key under `local_keys:`.
 */
import crypto from 'node:crypto';
import * as z from 'zod';
import { POLICY_KEYS, type PolicyKey } from '../protocol/index.js';
import { agentConfigSchema, type AgentConfig } from './agent.js';

const agentShape = agentConfigSchema.shape as Record<string, z.ZodType>;

/** The validator of one agent setting without its default (absent stays absent). */
function bare(t: z.ZodType): z.ZodType {
  return t instanceof z.ZodDefault || t instanceof z.ZodOptional ? bare(t.unwrap() as z.ZodType) : t;
}

/** Does this agent's config know the key (so a policy can set it here)? */
export function agentKnows(key: PolicyKey): boolean {
  return Object.hasOwn(agentShape, key);
}

const settingSchema = (k: PolicyKey): z.ZodType => (agentKnows(k) ? bare(agentShape[k]!) : z.never());

/** The settings block of a policy: each key optional, validated as in the agent's config. */
export const policySettingsShape = Object.fromEntries(POLICY_KEYS.map((k) => [k, settingSchema(k).optional()])) as Record<
  PolicyKey,
  z.ZodOptional<z.ZodType>
>;
export const policySettingsSchema = z.object(policySettingsShape).strict();

/** Parsed settings (durations in ms, sizes in bytes, `exclude` as its mapping). */
export type PolicySettings = Partial<Record<PolicyKey, unknown>>;

/** JSON with object keys sorted at every level: the same settings always hash the same. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (typeof v === 'object' && v !== null)
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  return JSON.stringify(v);
}

/** A policy's version: the first 16 hex digits of SHA-256 over its name and settings as written. */
export function policyVersion(name: string, settings: Record<string, unknown>): string {
  return crypto.createHash('sha256').update(canonical({ name, settings })).digest('hex').slice(0, 16);
}

/** Where a central key's value in force came from. */
export type SettingSource = 'central' | 'local' | 'local_keys' | 'not-supported';

export interface Merged {
  config: AgentConfig;
  /** Every POLICY_KEY: central (the policy set it), local (the policy did not), local_keys (the file keeps it), not-supported. */
  sources: Record<PolicyKey, SettingSource>;
}

/**
 * The configuration in force: the local one with the policy's settings over it, except the keys
 * the local file lists in `local_keys` and those this agent does not know.
 */
export function mergePolicy(local: AgentConfig, settings: PolicySettings | undefined): Merged {
  const config: AgentConfig = { ...local };
  const sources = {} as Record<PolicyKey, SettingSource>;
  const keep = new Set<string>(local.local_keys);
  for (const k of POLICY_KEYS) {
    const set = settings !== undefined && settings[k] !== undefined;
    if (!set) sources[k] = 'local';
    else if (!agentKnows(k)) sources[k] = 'not-supported';
    else if (keep.has(k)) sources[k] = 'local_keys';
    else {
      (config as Record<string, unknown>)[k] = settings[k];
      sources[k] = 'central';
    }
  }
  return { config, sources };
}
