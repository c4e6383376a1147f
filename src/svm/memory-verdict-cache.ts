/**
 * Bounded in-memory LRU (a Map keeps insertion order: a hit re-inserts, eviction takes the
 * oldest). Roughly 200 bytes per entry with V8 overheads: 1,000,000 entries ~ 200 MB on the SVM.
 */
import { verdictKey, type CachedVerdict, type SharedVerdictCache, type VerdictKey } from './verdict-cache.js';

export class MemoryVerdictCache implements SharedVerdictCache {
  readonly kind = 'memory';
  private readonly map = new Map<string, CachedVerdict>();
  private evictions = 0;
  private hits = 0;

  constructor(private readonly capacity: number) {
    if (!(capacity >= 1)) throw new RangeError('capacity must be >= 1');
  }

  async get(key: VerdictKey): Promise<CachedVerdict | undefined> {
    const k = verdictKey(key);
    const v = this.map.get(k);
    if (v) {
      this.hits++;
      this.map.delete(k);
      this.map.set(k, v);
    }
    return v;
  }

  async set(key: VerdictKey, v: CachedVerdict): Promise<void> {
    const k = verdictKey(key);
    this.map.delete(k);
    this.map.set(k, v);
    while (this.map.size > this.capacity) {
      const oldest = this.map.keys().next().value as string;
      this.map.delete(oldest);
      this.evictions++;
    }
  }

  tierHits(): Readonly<Record<string, number>> {
    return { memory: this.hits };
  }

  healthy(): boolean {
    return true;
  }

  stats(): { entries: number; evictions: number } {
    return { entries: this.map.size, evictions: this.evictions };
  }

  async close(): Promise<void> {
    this.map.clear();
  }
}
