/**
 * Policies on the SVM (docs/policies.md): the `policies:` block of its config, keyed by tenant,
 * each a subset of the agent's config (POLICY_KEYS, checked by the agent's own validators in
 * src/config/policy.ts) with optional `groups` chosen by agent id or host glob. `PolicyBook`
 * answers which policy an agent runs: the first group that lists it, else the tenant's policy.
 *
 *   policies:
 *     acme:
 *       name: acme-standard          # default: the tenant's name
 *       deadline: 3s
 *       exclude: {paths: [/srv/cache/**]}
 *       groups:
 *         - name: build              # the agent runs acme-standard/build
 *           hosts: [build-*]         # host globs: * and ? only, case-insensitive
 *           agents: [0f3c...]        # and/or agent ids
 *           deadline: 10s            # a group's key replaces the tenant's; the rest is the tenant's
 */
import * as z from 'zod';
import { POLICY_KEYS, type PolicyKey } from '../protocol/index.js';
import { policySettingsShape, policyVersion } from '../config/policy.js';

const NAME = /^[A-Za-z0-9._-]{1,63}$/;
const name = z.string().regex(NAME, 'a policy or group name has 1 to 63 letters, digits, . _ - only');

const hostGlob = z
  .string()
  .min(1, 'must not be empty')
  .max(255, 'a host name has at most 255 characters')
  .regex(/^[A-Za-z0-9.*?_-]+$/, 'a host glob has letters, digits, . _ - and the wildcards * and ? only');

const group = z
  .object({
    name,
    hosts: z.array(hostGlob).max(1000, 'at most 1000 host globs').default([]),
    agents: z.array(z.string().min(1).max(4096)).max(10_000, 'at most 10000 agent ids').default([]),
    ...policySettingsShape,
  })
  .strict();

const policy = z
  .object({
    name: name.optional(),
    groups: z.array(group).max(100, 'at most 100 groups per tenant').default([]),
    ...policySettingsShape,
  })
  .strict()
  .superRefine((p, ctx) => {
    const seen = new Set<string>();
    p.groups.forEach((g, i) => {
      if (seen.has(g.name))
        ctx.addIssue({ code: 'custom', path: ['groups', i, 'name'], message: `two groups are named ${g.name}: give each its own` });
      seen.add(g.name);
    });
  });

/** `policies:` of the SVM config; raw is kept beside the parsed values: agents get the settings as written. */
export const policiesSchema = z
  .record(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'a tenant name has letters, digits, . _ - only'), policy)
  .default({});

/**
 * The `policies:` key of the SVM config: checked with `policiesSchema` (every problem, with its
 * path under `policies`), and kept as written: agents get the settings in their own file's form.
 */
export const policiesBlock = z.unknown().transform((v, ctx) => {
  const r = policiesSchema.safeParse(v ?? {});
  const issues = r.success ? [] : r.error.issues.map((i) => ({ path: i.path as PropertyKey[], message: i.message }));
  // Checked on the raw block too, so they are listed with the schema's problems, not after them.
  if (typeof v === 'object' && v !== null && !Array.isArray(v))
    checkShape(v as Record<string, unknown>, (path, message) => issues.push({ path, message }));
  for (const i of issues) ctx.addIssue({ code: 'custom', path: i.path, message: i.message });
  return issues.length ? z.NEVER : ((v ?? {}) as Record<string, Record<string, unknown>>);
});

/** A group without members, a policy too large for one frame. */
function checkShape(raw: Record<string, unknown>, add: (path: PropertyKey[], message: string) => void): void {
  for (const [tenant, v] of Object.entries(raw)) {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) continue;
    const p = v as Record<string, unknown>;
    const groups = Array.isArray(p.groups) ? (p.groups as unknown[]) : [];
    groups.forEach((g, i) => {
      if (typeof g !== 'object' || g === null) return;
      const m = g as Record<string, unknown>;
      const none = (x: unknown) => !Array.isArray(x) || x.length === 0;
      if (none(m.hosts) && none(m.agents))
        add([tenant, 'groups', i], 'a group chooses its members: give hosts (globs), agents (ids) or both');
    });
    const all = [pick(p), ...groups.map((g) => ({ ...pick(p), ...pick((g ?? {}) as Record<string, unknown>) }))];
    if (all.some((s) => Buffer.byteLength(JSON.stringify(s)) > POLICY_MAX_BYTES))
      add(
        [tenant],
        `the settings are over ${POLICY_MAX_BYTES} bytes as JSON: too large for one policy frame; keep long lists in the agents' files`,
      );
  }
}

/** What a tenant's agents may be sent: settings as written in the config (the agent validates them itself). */
export interface EffectivePolicy {
  name: string;
  version: string;
  settings: Partial<Record<PolicyKey, unknown>>;
}

interface Compiled {
  base: EffectivePolicy;
  groups: Array<{ hosts: RegExpLike[]; agents: Set<string>; policy: EffectivePolicy }>;
}

/** Case-insensitive `*` / `?` match in linear time (hosts are chosen by guests: no backtracking regex). */
interface RegExpLike {
  test(s: string): boolean;
}
function wildcard(pattern: string): RegExpLike {
  const p = pattern.toLowerCase();
  return {
    test(input: string): boolean {
      const s = input.toLowerCase();
      let i = 0;
      let j = 0;
      let star = -1;
      let mark = 0;
      while (i < s.length) {
        if (j < p.length && (p[j] === '?' || p[j] === s[i])) {
          i++;
          j++;
        } else if (j < p.length && p[j] === '*') {
          star = j++;
          mark = i;
        } else if (star >= 0) {
          j = star + 1;
          i = ++mark;
        } else return false;
      }
      while (j < p.length && p[j] === '*') j++;
      return j === p.length;
    },
  };
}

const pick = (o: Record<string, unknown>): Partial<Record<PolicyKey, unknown>> => {
  const out: Partial<Record<PolicyKey, unknown>> = {};
  for (const k of POLICY_KEYS) if (o[k] !== undefined && o[k] !== null) out[k] = o[k];
  return out;
};

const effective = (name: string, settings: Partial<Record<PolicyKey, unknown>>): EffectivePolicy => ({
  name,
  version: policyVersion(name, settings),
  settings,
});

/** A frame must stay under the codec's 64 KiB: the settings of one policy as JSON. */
export const POLICY_MAX_BYTES = 48 * 1024;

/**
 * The policies of every tenant, compiled once per config load. `raw` is the `policies:` block as
 * written (already validated with `policiesSchema`): settings go to agents in that form.
 */
export class PolicyBook {
  private readonly byTenant = new Map<string, Compiled>();

  constructor(raw: Record<string, unknown> = {}) {
    for (const [tenant, v] of Object.entries(raw)) {
      const p = (v ?? {}) as Record<string, unknown>;
      const baseName = typeof p.name === 'string' ? p.name : tenant;
      const baseSettings = pick(p);
      const groups = Array.isArray(p.groups) ? (p.groups as Array<Record<string, unknown>>) : [];
      this.byTenant.set(tenant, {
        base: effective(baseName, baseSettings),
        groups: groups.map((g) => ({
          hosts: ((g.hosts as string[] | undefined) ?? []).map(wildcard),
          agents: new Set((g.agents as string[] | undefined) ?? []),
          policy: effective(`${baseName}/${String(g.name)}`, { ...baseSettings, ...pick(g) }),
        })),
      });
    }
  }

  /** Tenants with a policy. */
  get tenants(): string[] {
    return [...this.byTenant.keys()].sort();
  }

  /** The policy an agent runs: the first group listing its id or matching its host, else its tenant's; none without. */
  resolve(tenant: string, agentId: string, host: string): EffectivePolicy | undefined {
    const c = this.byTenant.get(tenant);
    if (!c) return undefined;
    for (const g of c.groups) if (g.agents.has(agentId) || g.hosts.some((h) => h.test(host))) return g.policy;
    return c.base;
  }

  /** Every policy of a tenant (its own, then its groups'), for the admin API. */
  list(tenant: string): Array<EffectivePolicy & { group: string | null }> {
    const c = this.byTenant.get(tenant);
    if (!c) return [];
    return [
      { ...c.base, group: null },
      ...c.groups.map((g) => ({ ...g.policy, group: g.policy.name.slice(g.policy.name.indexOf('/') + 1) })),
    ];
  }
}

/** A policy for a tenant no token names (checked once the rest of the config is valid: it needs the tokens). */
export function checkPolicies(
  raw: Record<string, unknown>,
  tenants: ReadonlySet<string>,
  add: (path: Array<string | number>, message: string) => void,
): void {
  for (const tenant of Object.keys(raw))
    if (!tenants.has(tenant))
      add([tenant], `no token of tenant ${tenant} (tokens, token_file): no agent could get this policy; is the name right?`);
}
