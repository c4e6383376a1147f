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
