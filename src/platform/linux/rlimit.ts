/**
 * RLIMIT_NOFILE through libc (getrlimit(2)/setrlimit(2)): how many fds this process may hold.
 * The fanotify gate holds one fd per close-write waiting to be scanned, and the kernel needs one
 * per permission event it hands over (one it cannot make is answered DENY), so the gate sizes
 * what it holds from this limit, and a root agent raises the limit first, as daemons do.
 * struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; } is two u64 on x86_64 and aarch64.
 */
import { tryLibc } from './libc.js';

/** <asm-generic/resource.h> */
const RLIMIT_NOFILE = 7;

/** { soft, hard } of RLIMIT_NOFILE, or undefined off Linux or when it cannot be read. */
export function openFileLimit(): { soft: number; hard: number } | undefined {
  const l = tryLibc();
  if (!l) return undefined;
  const r = new BigUint64Array(2);
  if (l.getrlimit(RLIMIT_NOFILE, r) !== 0) return undefined;
  // RLIM_INFINITY (2^64-1) cannot be the fd limit (it is capped by fs.nr_open), but stay safe.
  const n = (v: bigint) => (v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v));
  return { soft: n(r[0]!), hard: n(r[1]!) };
}

/**
 * Raise the soft limit to at least `want`: within the hard limit for anyone, beyond it (the hard
 * limit raised too) with CAP_SYS_RESOURCE. Never lowers anything. Returns the limits after.
 */
export function raiseOpenFileLimit(want: number): { soft: number; hard: number } | undefined {
  const now = openFileLimit();
  const l = tryLibc();
  if (!now || !l || now.soft >= want) return now;
  const set = (soft: number, hard: number) => l.setrlimit(RLIMIT_NOFILE, new BigUint64Array([BigInt(soft), BigInt(hard)])) === 0;
  if (now.hard < want && set(want, want)) return openFileLimit();
  set(Math.min(want, now.hard), now.hard);
  return openFileLimit();
}
