/**
 * Time-capped fast-check runs with a printed, replayable seed.
 *
 *   LIGHTAGENT_FUZZ_SEED=<n>   replay a run (the seed every failure prints)
 *   LIGHTAGENT_FUZZ_MS=<ms>    time budget per target (default 3000; `npm run test:reliability` uses 5000)
 *
 * A target passes when every generated input either decodes or throws the decoder's documented
 * error class (a LightagentError subclass), and no single input takes longer than `maxInputMs`
 * (a decoder that loops or backtracks on hostile input fails here instead of hanging the daemon).
 */
import fc from 'fast-check';
import type { TestContext } from 'node:test';

export const FUZZ_MS = Number(process.env.LIGHTAGENT_FUZZ_MS ?? 3000);

export function fuzzSeed(): number {
  const fixed = process.env.LIGHTAGENT_FUZZ_SEED;
  return fixed !== undefined ? Number(fixed) : (Date.now() ^ (process.pid << 8)) & 0x7fffffff;
}

export interface FuzzResult {
  runs: number;
  seed: number;
}

function announce(t: TestContext, name: string, seed: number): void {
  const line = `fuzz ${name}: seed ${seed} (replay: LIGHTAGENT_FUZZ_SEED=${seed})`;
  t.diagnostic(line);
  process.stderr.write(`${line}\n`);
}

/** Throw unless `e` is an instance of one of `allowed`: the message names what escaped. */
export function expectOnly(e: unknown, allowed: ReadonlyArray<abstract new (...a: never[]) => Error>, what: string): void {
  if (allowed.some((c) => e instanceof c)) return;
  const desc = e instanceof Error ? `${e.constructor.name}: ${e.message}\n${e.stack}` : String(e);
  throw new Error(`${what} threw something other than ${allowed.map((c) => c.name).join(' | ')}: ${desc}`);
}

function timed<T extends unknown[]>(maxInputMs: number, name: string, fn: (...a: T) => void): (...a: T) => void {
  return (...a: T) => {
    const t0 = performance.now();
    fn(...a);
    const ms = performance.now() - t0;
    if (ms > maxInputMs) throw new Error(`${name}: one input took ${ms.toFixed(0)} ms (limit ${maxInputMs})`);
  };
}

/** Run a synchronous property until the time budget is spent. Returns how many inputs were tried. */
export function fuzz<T>(
  t: TestContext,
  name: string,
  arb: fc.Arbitrary<T>,
  check: (v: T) => void,
  opts: { ms?: number; maxInputMs?: number } = {},
): FuzzResult {
  const seed = fuzzSeed();
  announce(t, name, seed);
  let runs = 0;
  const body = timed(opts.maxInputMs ?? 1000, name, check);
  fc.assert(
    fc.property(arb, (v) => {
      runs++;
      body(v);
    }),
    {
      seed,
      numRuns: Number.MAX_SAFE_INTEGER,
      interruptAfterTimeLimit: opts.ms ?? FUZZ_MS,
      markInterruptAsFailure: false,
      includeErrorInReport: true,
    },
  );
  t.diagnostic(`fuzz ${name}: ${runs} inputs`);
  return { runs, seed };
}

/** Same for an async check (file-backed decoders). */
export async function fuzzAsync<T>(
  t: TestContext,
  name: string,
  arb: fc.Arbitrary<T>,
  check: (v: T) => Promise<void>,
  opts: { ms?: number; maxInputMs?: number } = {},
): Promise<FuzzResult> {
  const seed = fuzzSeed();
  announce(t, name, seed);
  let runs = 0;
  const limit = opts.maxInputMs ?? 2000;
  await fc.assert(
    fc.asyncProperty(arb, async (v) => {
      runs++;
      const t0 = performance.now();
      await check(v);
      const ms = performance.now() - t0;
      if (ms > limit) throw new Error(`${name}: one input took ${ms.toFixed(0)} ms (limit ${limit})`);
    }),
    {
      seed,
      numRuns: Number.MAX_SAFE_INTEGER,
      interruptAfterTimeLimit: opts.ms ?? FUZZ_MS,
      markInterruptAsFailure: false,
      includeErrorInReport: true,
    },
  );
  t.diagnostic(`fuzz ${name}: ${runs} inputs`);
  return { runs, seed };
}

/** Byte edits applied to a valid encoding: flips, overwrites, cuts, insertions. */
export const edits = fc.array(
  fc.oneof(
    fc.record({ kind: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ maxLength: 16 }) }),
    fc.record({
      kind: fc.constant('u32' as const),
      at: fc.nat(),
      value: fc.oneof(fc.constantFrom(0, 1, 0x7fffffff, 0xffffffff, 0x80000000), fc.nat()),
    }),
  ),
  { minLength: 1, maxLength: 6 },
);

export type Edit = { kind: string; at: number; byte?: number; bytes?: Uint8Array; value?: number };

/** Apply `list` to a copy of `src`, never touching bytes before `from`. */
export function applyEdits(src: Buffer, list: readonly Edit[], from = 0): Buffer {
  let b = Buffer.from(src);
  for (const e of list) {
    if (b.length <= from) break;
    const at = from + (e.at % (b.length - from));
    if (e.kind === 'set') b[at] = e.byte!;
    else if (e.kind === 'cut') b = b.subarray(0, at);
    else if (e.kind === 'insert') b = Buffer.concat([b.subarray(0, at), e.bytes!, b.subarray(at)]);
    else if (e.kind === 'u32' && at + 4 <= b.length) b.writeUInt32LE(e.value! >>> 0, at);
  }
  return b;
}
