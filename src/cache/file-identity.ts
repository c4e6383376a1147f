/**
 * Whether a file is still the one that was judged. Every place that trusts an earlier look at a
 * file (the gate before its ignore mark, the worker after its cache hit, the scanner between its
 * lstat and its open, the deferred queue between take() and done()) asks this one question.
 *
 * ctime counts: mtime can be set back to any value with utimensat(2), so a rewrite that restores
 * size and mtime would pass as unchanged; ctime cannot be set from user space and moves on every
 * write, chmod, rename and link.
 */

/**
 * The fields of a file identity, all in one representation: bigints as fstat with
 * `{ bigint: true }` reports them (fs.BigIntStats fits), or decimal strings where they are
 * persisted as JSON. size may be a plain number in either.
 */
export interface IdentityFields<V extends bigint | string> {
  readonly dev: V;
  readonly ino: V;
  readonly size: V | number;
  readonly mtimeNs: V;
  readonly ctimeNs: V;
}

export function sameIdentity<V extends bigint | string>(a: IdentityFields<V>, b: IdentityFields<V>): boolean {
  return a.ino === b.ino && a.ctimeNs === b.ctimeNs && a.mtimeNs === b.mtimeNs && a.size === b.size && a.dev === b.dev;
}
