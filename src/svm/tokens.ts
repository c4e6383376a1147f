/**
 * Tenant tokens, kept only as SHA-256 hashes. A presented token is hashed and compared against
 * every stored hash with timingSafeEqual (no early exit), so neither the token nor which tenant
 * it nearly matched leaks through timing. `replace` is the seam for a SIGHUP reload.
 */
import crypto from 'node:crypto';

export interface TenantToken {
  tenant: string;
  token: string;
  /** Epoch ms after which the token is refused (agents holding it are dropped at the next check). */
  expiresAt?: number;
}

function digest(token: string): Buffer {
  return crypto.createHash('sha256').update(token, 'utf8').digest();
}

export class TokenStore {
  private entries: ReadonlyArray<{ hash: Buffer; tenant: string; expiresAt: number }> = [];

  constructor(tokens: readonly TenantToken[]) {
    this.replace(tokens);
  }

  replace(tokens: readonly TenantToken[]): void {
    this.entries = tokens.map((t) => ({ hash: digest(t.token), tenant: t.tenant, expiresAt: t.expiresAt ?? Infinity }));
  }

  get size(): number {
    return this.entries.length;
  }

  /** The tenant `token` belongs to, or undefined (also for a missing, empty or expired token). */
  tenantOf(token: string | undefined, now = Date.now()): string | undefined {
    return this.check(token, now).tenant;
  }

  /** Tenant, and why not: `unknown` (or missing) or `expired`. `hash` identifies the token later (still valid after a reload?). */
  check(token: string | undefined, now = Date.now()): { tenant?: string; hash: Buffer; refused?: 'unknown' | 'expired' } {
    const h = digest(token ?? '');
    let found: { tenant: string; expiresAt: number } | undefined;
    for (const e of this.entries) if (crypto.timingSafeEqual(h, e.hash) && token) found ??= e;
    if (!found) return { hash: h, refused: 'unknown' };
    if (now >= found.expiresAt) return { hash: h, refused: 'expired' };
    return { tenant: found.tenant, hash: h };
  }

  /** Is the token with this hash still configured for `tenant`, and not expired? */
  stillValid(hash: Buffer, tenant: string, now = Date.now()): boolean {
    let ok = false;
    for (const e of this.entries) if (crypto.timingSafeEqual(hash, e.hash) && e.tenant === tenant && now < e.expiresAt) ok = true;
    return ok;
  }
}
