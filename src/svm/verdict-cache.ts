/**
 * The SVM's shared verdict cache: (tenant, signature generation, SHA-256) -> verdict. Only the
 * SVM writes it, and only with what its own engine found over bytes it hashed itself. Async so a
 * networked implementation (Redis) fits the same seam.
 */
export interface CachedVerdict {
  verdict: 'clean' | 'infected';
  threat?: string;
  engine: string;
}

export interface VerdictKey {
  tenant: string;
  generation: string;
  sha256: string;
}

export interface SharedVerdictCache {
  readonly kind: string;
  get(key: VerdictKey): Promise<CachedVerdict | undefined>;
  set(key: VerdictKey, v: CachedVerdict): Promise<void>;
  healthy(): boolean;
  /** `uncached`: verdicts set but not stored (the memory cache's bounds), when the cache counts them. */
  stats(): { entries: number; evictions: number; uncached?: number };
  /** Hits per tier (`memory`, `redis`) since start, for /metrics. */
  tierHits?(): Readonly<Record<string, number>>;
  close(): Promise<void>;
}

/** A store URL with its credentials (`user:pass@`) replaced by `***`, for logs and status. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}
