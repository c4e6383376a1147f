/**
 * Who may read the admin API: admin tokens (role `admin`: every tenant) and viewer tokens (role
 * `viewer`: one tenant), from `admin_tokens:` / `admin_token_file:` / `--admin-token`. Kept only as
 * SHA-256 hashes, compared with timingSafeEqual against every entry (no early exit), like the
 * agents' tenant tokens (tokens.ts). An agent's tenant token is never an admin token: the config
 * refuses one that is both, and the API answers it 403 (it is known, but not for this).
 */
import crypto from 'node:crypto';
import type { TokenStore } from '../tokens.js';

export type AdminRole = 'admin' | 'viewer';

export interface AdminToken {
  token: string;
  role: AdminRole;
  /** Required for a viewer: the one tenant it sees. */
  tenant?: string | undefined;
}

export interface AdminIdentity {
  role: AdminRole;
  /** null for an admin (every tenant). */
  tenant: string | null;
}

const digest = (t: string): Buffer => crypto.createHash('sha256').update(t, 'utf8').digest();

export class AdminTokenStore {
  private entries: ReadonlyArray<{ hash: Buffer; who: AdminIdentity }> = [];

  constructor(tokens: readonly AdminToken[] = []) {
    this.replace(tokens);
  }

  replace(tokens: readonly AdminToken[]): void {
    for (const t of tokens) if (t.role === 'viewer' && !t.tenant) throw new RangeError('a viewer token needs its tenant');
    this.entries = tokens.map((t) => ({ hash: digest(t.token), who: { role: t.role, tenant: t.role === 'viewer' ? t.tenant! : null } }));
  }

  get size(): number {
    return this.entries.length;
  }

  check(token: string): AdminIdentity | undefined {
    const h = digest(token);
    let found: AdminIdentity | undefined;
    for (const e of this.entries) if (crypto.timingSafeEqual(h, e.hash) && token) found ??= e.who;
    return found ? { ...found } : undefined;
  }
}

export type AuthResult =
  | { ok: true; who: AdminIdentity }
  | { ok: false; status: 401 | 403; code: 'LA_ERR_ADMIN_AUTH' | 'LA_ERR_ADMIN_FORBIDDEN'; message: string };

const BEARER = /^Bearer ([\x21-\x7e]{1,1024})$/;

/** Check `Authorization: Bearer <token>`: an admin or viewer token passes; an agent token is 403; anything else 401. */
export function authenticate(header: string | string[] | undefined, admins: AdminTokenStore, agents: TokenStore): AuthResult {
  const m = typeof header === 'string' ? BEARER.exec(header.trim()) : null;
  if (!m)
    return {
      ok: false,
      status: 401,
      code: 'LA_ERR_ADMIN_AUTH',
      message: 'an admin or viewer token is needed: Authorization: Bearer <token>',
    };
  const token = m[1]!;
  const who = admins.check(token);
  if (who) return { ok: true, who };
  // Checked after: the same hash work for every token, and an agent token never passes here.
  if (agents.check(token).tenant !== undefined)
    return {
      ok: false,
      status: 403,
      code: 'LA_ERR_ADMIN_FORBIDDEN',
      message: 'an agent token cannot read the admin API; use an admin or viewer token',
    };
  return { ok: false, status: 401, code: 'LA_ERR_ADMIN_AUTH', message: 'unknown token' };
}
