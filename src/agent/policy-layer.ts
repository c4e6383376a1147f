/**
 * The central layer of the agent's settings (feature policy, docs/policies.md): the last policy
 * its SVM sent, checked with the agent's own validators, merged over the local file (central
 * wins unless the file lists the key under `local_keys`), and kept in `<state_dir>/policy.json`
 * so a restart without the SVM runs the same settings. A policy that fails a check is refused:
 * logged with its reasons, reported (`policy-refused`), and the settings in force stay.
 */
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import type { AgentConfig } from '../config/agent.js';
import { mergePolicy, policySettingsSchema, policyVersion, type PolicySettings, type SettingSource } from '../config/policy.js';
import { LightagentError } from '../errors.js';
import { logger } from '../log.js';
import { POLICY_KEYS, type PolicyKey, type PolicyMsg } from '../protocol/index.js';

/** A policy accepted by the checks (not yet applied). */
export interface CheckedPolicy {
  name: string;
  version: string;
  /** As received: what is saved and hashed. */
  settings: Record<string, unknown>;
  parsed: PolicySettings;
}

export interface PolicyStatus {
  /** none: no central layer (the local file alone); svm: received on this run; saved: from policy.json at start. */
  source: 'none' | 'svm' | 'saved';
  name?: string | undefined;
  version?: string | undefined;
  appliedAt?: string | undefined;
  /** Where each central key's value in force comes from. */
  keys: Record<PolicyKey, SettingSource>;
  /** The values in force of the central settings that are plain values (exclusions: see `exclusions`). */
  values: Pick<AgentConfig, 'deadline' | 'max_file_size' | 'on_svm_unavailable' | 'on_detect'>;
  /** The last policy refused, while no later one was applied. */
  refused?: { name: string; version: string; reason: string; at: string } | undefined;
}

/** Refused policies: what was wrong, for the log and status. */
export class PolicyRefusedError extends LightagentError {
  constructor(message: string) {
    super('LA_ERR_POLICY_REFUSED', message, 'fix the policy on the SVM (policies: in its config) and reload it there');
  }
}

const FILE = 'policy.json';

/** A path to compare: `/` separators; Windows drive paths (C: and on) in lower case, as their file systems compare them. */
function comparable(p: string): string {
  const q = p.replace(/\\/g, '/');
  return /^[A-Za-z]:/.test(q) ? q.toLowerCase() : q;
}
const MAX_FILE = 64 * 1024;

export class PolicyLayer extends EventEmitter<{ change: [] }> {
  private readonly log = logger('policy');
  private current: (CheckedPolicy & { source: 'svm' | 'saved'; appliedAt: string }) | undefined;
  private refusal: PolicyStatus['refused'];
  private keys: Record<PolicyKey, SettingSource>;

  constructor(
    private readonly stateDir: string,
    local: AgentConfig,
  ) {
    super();
    this.keys = mergePolicy(local, undefined).sources;
  }

  get file(): string {
    return path.join(this.stateDir, FILE);
  }

  /** The central settings in force (undefined: none). */
  get settings(): PolicySettings | undefined {
    return this.current?.parsed;
  }

  /** The name and version in force, for the state report. */
  get inForce(): { name: string; version: string } | undefined {
    return this.current ? { name: this.current.name, version: this.current.version } : undefined;
  }

  get refused(): boolean {
    return this.refusal !== undefined;
  }

  /** Is this the policy in force already (same version, or no policy and none in force)? */
  isCurrent(msg: PolicyMsg): boolean {
    return (this.current?.version ?? '') === msg.version && (this.current?.name ?? '') === msg.name && !this.refusal;
  }

  /** The SVM sent the policy already in force (the saved one, after a restart): it is the SVM's word now. */
  confirm(): void {
    if (this.current?.source !== 'saved') return;
    this.current = { ...this.current, source: 'svm' };
    this.log.info('the SVM confirmed the saved policy', { name: this.current.name, version: this.current.version });
  }

  /** For `status`, with the configuration in force. */
  status(cfg: AgentConfig): PolicyStatus {
    const c = this.current;
    return {
      source: c ? c.source : 'none',
      ...(c ? { name: c.name, version: c.version, appliedAt: c.appliedAt } : {}),
      keys: { ...this.keys },
      values: {
        deadline: cfg.deadline,
        max_file_size: cfg.max_file_size,
        on_svm_unavailable: cfg.on_svm_unavailable,
        on_detect: cfg.on_detect,
      },
      ...(this.refusal ? { refused: { ...this.refusal } } : {}),
    };
  }

  /** The configuration in force for this local file: the policy over it. */
  over(local: AgentConfig, settings: PolicySettings | undefined = this.settings): AgentConfig {
    return mergePolicy(local, settings).config;
  }

  /**
   * Check a policy the SVM sent: every setting by the agent's validators, its version against its
   * content, and that it does not exclude a protected root whole. Throws PolicyRefusedError
   * listing every problem. `name: ''` (no policy) passes as undefined.
   */
  check(msg: PolicyMsg, protect: readonly string[]): CheckedPolicy | undefined {
    if (msg.name === '') return undefined;
    const problems: string[] = [];
    if (msg.version !== policyVersion(msg.name, msg.settings))
      problems.push(`version ${msg.version} does not match the settings (expected ${policyVersion(msg.name, msg.settings)})`);
    const r = policySettingsSchema.safeParse(msg.settings);
    if (!r.success) for (const i of r.error.issues) problems.push(`${i.path.length ? i.path.join('.') : '(settings)'}: ${i.message}`);
    const parsed = r.success ? (r.data as PolicySettings) : {};
    const ex = parsed.exclude as { paths?: string[] } | undefined;
    const whole = (protect.length === 0 ? ['/'] : protect).map(comparable);
    for (const p of ex?.paths ?? []) {
      const root = comparable(p)
        .replace(/\/\*\*$/, '')
        .replace(/\/$/, '');
      // `/`, a drive, a protected path or one of its parents: everything under it would open unchecked.
      if (root === '' || /^[a-z]:$/.test(root) || whole.some((w) => w === root || w.startsWith(`${root}/`)))
        problems.push(`exclude.paths: ${JSON.stringify(p)} would exclude a protected path whole; a policy may not turn protection off`);
    }
    if (problems.length)
      throw new PolicyRefusedError(`policy ${msg.name} (version ${msg.version}) refused:\n${problems.map((x) => `  - ${x}`).join('\n')}`);
    return { name: msg.name, version: msg.version, settings: msg.settings, parsed };
  }

  /** The checked policy (or none) is in force now with this local file: remember it, save it. */
  commit(p: CheckedPolicy | undefined, local: AgentConfig): void {
    this.current = p ? { ...p, source: 'svm', appliedAt: new Date().toISOString() } : undefined;
    this.refusal = undefined;
    this.keys = mergePolicy(local, p?.parsed).sources;
    this.persist();
    this.log.info(p ? 'policy applied' : 'no central policy: the local settings apply', {
      ...(p ? { name: p.name, version: p.version } : {}),
      keys: this.keys,
    });
    this.emit('change');
  }

  /** The local file changed (SIGHUP): where each key comes from now. */
  localChanged(local: AgentConfig): void {
    this.keys = mergePolicy(local, this.settings).sources;
  }

  /** A policy was refused; the settings in force stay. */
  refuse(msg: PolicyMsg, e: unknown): void {
    const reason = e instanceof Error ? e.message : String(e);
    this.refusal = { name: msg.name, version: msg.version, reason: reason.slice(0, 4000), at: new Date().toISOString() };
    this.log.error('policy refused; the settings in force stay', {
      code: e instanceof LightagentError ? e.code : 'LA_ERR_POLICY_REFUSED',
      name: msg.name,
      version: msg.version,
      reason: this.refusal.reason,
      inForce: this.inForce ?? null,
    });
    this.emit('change');
  }

  /**
   * At start: the policy saved by the last run, if it is intact and still passes the checks; a
   * damaged or refused file is logged and left out (the local file alone applies until the SVM
   * sends a policy).
   */
  loadSaved(local: AgentConfig, protect: readonly string[]): PolicySettings | undefined {
    let text: string;
    try {
      const st = fs.statSync(this.file);
      if (st.size > MAX_FILE) throw new Error(`larger than ${MAX_FILE} bytes`);
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT')
        this.log.warn('the saved policy cannot be read; the local settings apply until the SVM sends one', {
          file: this.file,
          message: (e as Error).message,
        });
      return undefined;
    }
    try {
      const o = JSON.parse(text) as Record<string, unknown>;
      if (o.v !== 1 || typeof o.name !== 'string' || typeof o.version !== 'string' || typeof o.settings !== 'object' || o.settings === null)
        throw new Error('not a policy file of version 1');
      const settings = Object.fromEntries(
        Object.entries(o.settings as Record<string, unknown>).filter(([k]) => (POLICY_KEYS as readonly string[]).includes(k)),
      );
      const p = this.check({ t: 'policy', name: o.name, version: o.version, settings }, protect);
      if (!p) return undefined;
      this.current = { ...p, source: 'saved', appliedAt: typeof o.savedAt === 'string' ? o.savedAt : new Date().toISOString() };
      this.keys = mergePolicy(local, p.parsed).sources;
      this.log.info('saved policy applied until the SVM says otherwise', { name: p.name, version: p.version });
      return p.parsed;
    } catch (e) {
      this.log.warn('the saved policy is damaged or no longer valid; the local settings apply until the SVM sends one', {
        file: this.file,
        message: (e as Error).message,
      });
      return undefined;
    }
  }

  private persist(): void {
    const c = this.current;
    try {
      if (!c) {
        fs.rmSync(this.file, { force: true });
        return;
      }
      const tmp = `${this.file}.tmp`;
      const text = JSON.stringify({ v: 1, name: c.name, version: c.version, settings: c.settings, savedAt: c.appliedAt });
      fs.writeFileSync(tmp, text, { mode: 0o600 });
      fs.renameSync(tmp, this.file);
    } catch (e) {
      // In force all the same; only a restart without the SVM would miss it.
      this.log.warn('the policy could not be saved; a restart without the SVM would run the local settings', {
        file: this.file,
        message: (e as Error).message,
      });
    }
  }
}
