import v8 from 'node:v8';

/**
 * The V8 flags each program runs with in production. V8 reads them once, at start:
 * `v8.setFlagsFromString('--single-threaded-gc')` in a running process aborts it at its next
 * garbage collection. So they travel with every way a program is started: the bins' shebangs
 * (src/cli/lightagent.ts, src/cli/lightagent-svm.ts), the single binary's execArgv
 * (scripts/release.mjs, one list for every command it runs), the benches (bench/lib/harness.ts)
 * and the tests (test/helpers/procs.ts). test/node-flags.test.ts fails when they disagree.
 *
 * - `--max-semi-space-size=1`: the agent's V8 keeps 1 MiB young generations, not 16 MiB, which
 *   cost ~40 MB of RSS after a burst of events (docs/architecture.md, Memory).
 * - `--single-threaded-gc`: V8 collects on the thread that allocates, with no helper threads. On
 *   the SVM, a flooding tenant's uploads made a full collection every ~80-100 ms; with helper
 *   threads each paused the event loop 6-8 ms, most of it waiting for sweeping that ran on a
 *   thread starved by the loop itself (and by the engines, which share the SVM's cores); single
 *   threaded it is ~3 ms, and a quiet tenant's p99 beside the flood went from 18-26 ms to 6-8 ms
 *   (docs/svm.md, Fairness). The agent runs the same binary, so it has the same flags.
 * - `--no-separate-gc-phases`: young collections may run while a full collection marks
 *   incrementally (Node 20's V8 default; Node 24's V8 turned it around). With it on, the first
 *   young collection due during incremental marking, with a 1 MiB young generation every few
 *   ms under load, forces the full collection to finish at once: beside a flooding tenant the
 *   SVM's full collections paused 15-25 ms each, most of it marking left undone; with it off they
 *   end from V8's own task, ~3 ms (docs/svm.md, Fairness).
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--single-threaded-gc', '--no-separate-gc-phases'];

/** The SVM's flags: the same list, since the single binary runs both with one execArgv. */
export const SVM_NODE_FLAGS: readonly string[] = AGENT_NODE_FLAGS;

/** The flags of `want` this process did not start with (empty when it runs as shipped). */
export function missingNodeFlags(want: readonly string[], execArgv: readonly string[] = process.execArgv): string[] {
  return want.filter((f) => !execArgv.includes(f));
}

/**
 * V8 flags the SVM sets on itself as it starts, not in the execArgv: the single binary runs the
 * agent with the same execArgv, and these would let the agent hold more memory before a full
 * collection (its idle RSS is budgeted to the MB). V8 reads both each time it sets its heap
 * limits, so a running process takes them (unlike `--single-threaded-gc`, above); the SVM sets them
 * before it has loaded anything.
 *
 * - `--external-memory-accounted-in-global-limit`: by default V8 counts memory outside its heap
 *   (the array buffers of every socket read and of every upload) allocated since the last full
 *   collection against the old generation's limit, whose slack on the SVM is ~9 MB. A flood of
 *   uploads used that up every ~200 ms, so full collections ran back to back (~5 a second, each
 *   ~3 ms on the SVM's one thread) while the heap itself did not grow. With the flag that memory
 *   counts in the global limit, beside the heap and the verdict cache's arrays.
 * - `--heap-growing-percent=100`: the next limit is 2x what the last full collection left, not a
 *   factor V8 derives from its speeds: with the first flag alone the global limit came out at
 *   ~1.0x the global size (98 MB used of 99), reached again at once. Full collections in a
 *   noisy-neighbour run: 58-63 without either flag, 37-61 with the first alone, 4-10 with both
 *   at 50. At 100 (2026-12-07) the quiet tenant's upload p99 beside the full bench's flood (50
 *   agents) went from 2.4x and 1.77x its alone value to 1.37x and 1.33x (alternated), for
 *   ~220-240 MB more peak RSS (docs/svm.md, "Memory outside the heap").
 *
 * (docs/svm.md, "Memory outside the heap".) On a V8 older than 13 (Node 20, the sources) they
 * are left out: Node 20 does not know the first one.
 */
export const SVM_RUNTIME_V8_FLAGS: readonly string[] = ['--external-memory-accounted-in-global-limit', '--heap-growing-percent=100'];

/** Set SVM_RUNTIME_V8_FLAGS on this process when its V8 knows them; returns the flags set. */
export function applySvmRuntimeFlags(
  v8Version: string = process.versions.v8,
  set: (flag: string) => void = v8.setFlagsFromString,
): string[] {
  const major = Number.parseInt(v8Version, 10);
  if (!(major >= 13)) return [];
  for (const f of SVM_RUNTIME_V8_FLAGS) set(f);
  return [...SVM_RUNTIME_V8_FLAGS];
}
