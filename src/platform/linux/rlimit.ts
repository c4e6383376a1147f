/**
 * RLIMIT_NOFILE through koffi (getrlimit(2)/setrlimit(2)): how many fds this process may hold.
 * The fanotify gate holds one fd per close-write waiting to be scanned, and the kernel needs one
 * per permission event it hands over (one it cannot make is answered DENY), so the gate sizes
 * what it holds from this limit, and a root agent raises the limit first, as daemons do.
 * struct rlimit { rlim_t rlim_cur; rlim_t rlim_max; } is two u64 on x86_64 and aarch64.
 */
import koffi from 'koffi';

/** <asm-generic/resource.h> */
const RLIMIT_NOFILE = 7;

interface Libc {
  getrlimit: (resource: number, out: BigUint64Array) => number;
  setrlimit: (resource: number, lim: BigUint64Array) => number;
}
let libc: Libc | undefined | null;

function lib(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    const l = koffi.load('libc.so.6');
    libc = {
      getrlimit: l.func('int getrlimit(int resource, _Out_ uint64_t *rlim)') as unknown as Libc['getrlimit'],
      setrlimit: l.func('int setrlimit(int resource, const uint64_t *rlim)') as unknown as Libc['setrlimit'],
    };
  } catch {
    libc = null;
  }
  return libc;
}

/** { soft, hard } of RLIMIT_NOFILE, or undefined off Linux or when it cannot be read. */
export function openFileLimit(): { soft: number; hard: number } | undefined {
  const l = process.platform === 'linux' ? lib() : null;
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
  const l = lib();
  if (!now || !l || now.soft >= want) return now;
  const set = (soft: number, hard: number) => l.setrlimit(RLIMIT_NOFILE, new BigUint64Array([BigInt(soft), BigInt(hard)])) === 0;
  if (now.hard < want && set(want, want)) return openFileLimit();
  set(Math.min(want, now.hard), now.hard);
  return openFileLimit();
}
