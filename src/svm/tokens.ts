/**
 * Tenant tokens, kept only as SHA-256 hashes. A presented token is hashed and compared against
 * every stored hash with timingSafeEqual (no early exit), so neither the token nor which tenant
 * it nearly matched leaks through timing. `replace` is the seam for a SIGHUP reload.
 */
import crypto from 'node:crypto';

export interface TenantToken {
  tenant: string;
  token: string;
}

function digest(token: string): Buffer {
  return crypto.createHash('sha256').update(token, 'utf8').digest();
}

export class TokenStore {
  private entries: ReadonlyArray<{ hash: Buffer; tenant: string }> = [];

  constructor(tokens: readonly TenantToken[]) {
    this.replace(tokens);
  }

  replace(tokens: readonly TenantToken[]): void {
    this.entries = tokens.map((t) => ({ hash: digest(t.token), tenant: t.tenant }));
  }

  get size(): number {
    return this.entries.length;
  }

  /** The tenant `token` belongs to, or undefined (also for a missing or empty token). */
  tenantOf(token: string | undefined): string | undefined {
    const h = digest(token ?? '');
    let found: string | undefined;
    for (const e of this.entries) if (crypto.timingSafeEqual(h, e.hash) && token) found ??= e.tenant;
    return found;
  }
}
