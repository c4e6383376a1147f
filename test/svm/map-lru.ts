/**
 * The SVM's memory verdict cache as it was until 2026-12-06: a JS Map used as an LRU (a hit
 * re-inserts, eviction takes the oldest). The reference the typed-array cache is checked against
 * (test/svm/memory-verdict-cache.test.ts) and measured beside (bench/micro/verdict-cache.ts).
 */
import type { CachedVerdict, VerdictKey } from '../../src/svm/verdict-cache.js';

export class MapLru {
  readonly map = new Map<string, CachedVerdict>();
  evictions = 0;
  constructor(private readonly capacity: number) {}
  private k(key: VerdictKey): string {
    return `${key.tenant}\u0000${key.generation}\u0000${key.sha256}`;
  }
  get(key: VerdictKey): CachedVerdict | undefined {
    const v = this.map.get(this.k(key));
    if (v) {
      this.map.delete(this.k(key));
      this.map.set(this.k(key), v);
    }
    return v;
  }
  set(key: VerdictKey, v: CachedVerdict): void {
    this.map.delete(this.k(key));
    this.map.set(this.k(key), v);
    while (this.map.size > this.capacity) {
      this.map.delete(this.map.keys().next().value as string);
      this.evictions++;
    }
  }
}
