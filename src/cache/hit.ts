/** What a cache lookup answers (see verdict-cache.ts). */
export type Verdict = 'clean' | 'infected';

export interface CacheHit {
  readonly verdict: Verdict;
  readonly threat?: string | undefined;
  readonly sha256: string;
  readonly stale: boolean;
  /** A plain object (a hit's `sha256` is a getter, which spread and structured clone skip). */
  toJSON(): CacheHitJson;
}

export interface CacheHitJson {
  verdict: Verdict;
  threat?: string;
  sha256: string;
  stale: boolean;
}

const hexWords = new Uint32Array(8);
const hexBytes = Buffer.from(hexWords.buffer);

/**
 * A cache answer. It copies the SHA-256 words out of the table (the entry may be evicted later)
 * but turns them into hex only when `sha256` is read: most hot-path hits (fresh clean verdicts)
 * never need it, and the hex conversion was the largest cost of a hit. A getter is not copied
 * by `{...hit}` or structured clone: use `hit.toJSON()` for a plain object.
 */
export class Hit implements CacheHit {
  private hex: string | undefined;
  constructor(
    readonly verdict: Verdict,
    readonly threat: string | undefined,
    readonly stale: boolean,
    private readonly w0: number,
    private readonly w1: number,
    private readonly w2: number,
    private readonly w3: number,
    private readonly w4: number,
    private readonly w5: number,
    private readonly w6: number,
    private readonly w7: number,
  ) {}

  get sha256(): string {
    if (this.hex === undefined) {
      const w = hexWords;
      w[0] = this.w0;
      w[1] = this.w1;
      w[2] = this.w2;
      w[3] = this.w3;
      w[4] = this.w4;
      w[5] = this.w5;
      w[6] = this.w6;
      w[7] = this.w7;
      this.hex = hexBytes.toString('hex');
    }
    return this.hex;
  }

  toJSON(): CacheHitJson {
    return this.threat === undefined
      ? { verdict: this.verdict, sha256: this.sha256, stale: this.stale }
      : { verdict: this.verdict, threat: this.threat, sha256: this.sha256, stale: this.stale };
  }
}
