/**
 * Path globs for `exclude.paths`, matched in time linear in the path (per pattern), never by
 * backtracking. picomatch compiles globs to JavaScript regexes, and those backtrack: measured here,
 * `/**\/*\/**\/*\/**\/*\/**\/z` took 0.77 s on a 120-character path and `/*a*a*a*a*a*a*a*a*a*a*b` did not
 * finish in 10 s on a 41-character name. File names are chosen by any local user and the check
 * runs on the agent's main thread before the deadline: a slow match would be a denial of service
 * that ends in answers by policy. The syntax and meaning are picomatch's with `dot: true`, no
 * extglobs, no negation (test/scan/exclusions.test.ts checks that they agree on generated paths):
 *
 *   `*`       any run of characters within one path segment (not `/`)
 *   `?`       one character, not `/`
 *   `[abc]`   one of; `[a-z]` ranges; `[!a]` / `[^a]` none of; never `/`
 *   `**`      as a whole segment: any number of segments, none included; first or last in a
 *             pattern, at least one (`/**\/b` is not `/b`, as picomatch; `/srv/*\/**` is what lies in
 *             the folders of /srv, not the files of /srv itself: picomatch says so too, but not of
 *             `/?/**`, which it lets match `/a`). A literal `DIR/**` is DIR and all under it, like a
 *             plain DIR (src/scan/exclusions.ts)
 *   `{a,b}`   alternatives (expanded when compiled, at most GLOB_MAX_ALTERNATIVES), nestable
 *   `\x`      the character x itself
 *
 * Matching works segment by segment: a set of reachable pattern positions is advanced by each path
 * segment (a `**` position stays reachable), and a segment is matched by the classic wildcard
 * algorithm with one resume point, O(segment x pattern segment) at worst.
 */

/** Alternatives one pattern may expand to through its braces. */
export const GLOB_MAX_ALTERNATIVES = 256;

type Tok = { t: 'char'; c: number } | { t: 'any' } | { t: 'star' } | { t: 'class'; neg: boolean; ranges: number[] };
/** One pattern segment: '**', or tokens. */
type Seg = { globstar: true; needsOne: boolean } | { globstar: false; toks: Tok[]; literal: string | undefined };

/** Whether `p` uses glob syntax at all (else it is a literal path). */
export function hasGlobSyntax(p: string): boolean {
  return /[*?[{\\]/.test(p);
}

/**
 * `p` with its braces expanded, or undefined if that makes more than `max` patterns. A brace
 * without a top-level comma, or without its closing brace, is literal.
 */
export function expandBraces(p: string, max = GLOB_MAX_ALTERNATIVES): string[] | undefined {
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '\\') {
      i++;
      continue;
    }
    if (c !== '{') continue;
    let depth = 0;
    let close = -1;
    const commas: number[] = [];
    for (let j = i + 1; j < p.length; j++) {
      const d = p[j];
      if (d === '\\') j++;
      else if (d === '{') depth++;
      else if (d === '}') {
        if (depth === 0) {
          close = j;
          break;
        }
        depth--;
      } else if (d === ',' && depth === 0) commas.push(j);
    }
    if (close < 0 || commas.length === 0) continue;
    const head = p.slice(0, i);
    const tail = p.slice(close + 1);
    const bounds = [i, ...commas, close];
    const out: string[] = [];
    for (let k = 0; k + 1 < bounds.length; k++) {
      const more = expandBraces(head + p.slice(bounds[k]! + 1, bounds[k + 1]) + tail, max - out.length);
      if (more === undefined) return undefined;
      out.push(...more);
      if (out.length > max) return undefined;
    }
    return out;
  }
  return max >= 1 ? [p] : undefined;
}

function parseSegment(s: string): Seg {
  if (s === '**') return { globstar: true, needsOne: false };
  const toks: Tok[] = [];
  let literal: string | undefined = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === '\\' && i + 1 < s.length) {
      const e = s.charCodeAt(++i);
      toks.push({ t: 'char', c: e });
      if (literal !== undefined) literal += s[i];
      continue;
    }
    if (c === '*') {
      while (s[i + 1] === '*') i++; // `a**b` is `a*b`
      toks.push({ t: 'star' });
      literal = undefined;
      continue;
    }
    if (c === '?') {
      toks.push({ t: 'any' });
      literal = undefined;
      continue;
    }
    if (c === '[') {
      const cls = parseClass(s, i);
      if (cls) {
        toks.push(cls.tok);
        i = cls.end;
        literal = undefined;
        continue;
      }
    }
    toks.push({ t: 'char', c: s.charCodeAt(i) });
    if (literal !== undefined) literal += c;
  }
  return { globstar: false, toks, literal };
}

/** A `[...]` class starting at s[i], or undefined if it does not close (then `[` is literal). */
function parseClass(s: string, i: number): { tok: Tok; end: number } | undefined {
  let j = i + 1;
  let neg = false;
  if (s[j] === '!' || s[j] === '^') {
    neg = true;
    j++;
  }
  const ranges: number[] = [];
  let first = true;
  for (; j < s.length; j++) {
    let c = s.charCodeAt(j);
    if (s[j] === ']' && !first) return { tok: { t: 'class', neg, ranges }, end: j };
    first = false;
    if (s[j] === '\\' && j + 1 < s.length) c = s.charCodeAt(++j);
    let hi = c;
    if (s[j + 1] === '-' && j + 2 < s.length && s[j + 2] !== ']') {
      j += 2;
      hi = s[j] === '\\' && j + 1 < s.length ? s.charCodeAt(++j) : s.charCodeAt(j);
    }
    ranges.push(c, hi);
  }
  return undefined;
}

function classHas(tok: { neg: boolean; ranges: number[] }, c: number): boolean {
  if (c === 47 /* / */) return false;
  let inside = false;
  for (let k = 0; k < tok.ranges.length; k += 2)
    if (c >= tok.ranges[k]! && c <= tok.ranges[k + 1]!) {
      inside = true;
      break;
    }
  return inside !== tok.neg;
}

/** Tokens against p[start, end): `*` with one resume point, linear per star. */
function segmentMatches(toks: Tok[], p: string, start: number, end: number): boolean {
  if (start === end) return toks.length === 0; // no pattern segment but an empty one matches an empty segment
  let ti = 0;
  let pi = start;
  let starTi = -1;
  let starPi = 0;
  while (pi < end) {
    const tok = toks[ti];
    if (tok !== undefined && tok.t !== 'star') {
      const c = p.charCodeAt(pi);
      const ok = tok.t === 'char' ? tok.c === c : tok.t === 'any' ? true : classHas(tok, c);
      if (ok) {
        ti++;
        pi++;
        continue;
      }
    } else if (tok !== undefined) {
      starTi = ti++;
      starPi = pi;
      continue;
    }
    if (starTi < 0) return false;
    ti = starTi + 1;
    pi = ++starPi;
  }
  while (ti < toks.length && toks[ti]!.t === 'star') ti++;
  return ti === toks.length;
}

/** One brace-free pattern, compiled. */
class Compiled {
  /** The pattern up to its first wildcard: a path that does not start with it cannot match. */
  readonly lead: string;
  readonly segs: Seg[];
  constructor(pattern: string) {
    this.segs = pattern.split('/').map(parseSegment);
    // As picomatch: a `**` first (`/**\/b` is not `/b`) or last takes at least one segment.
    for (const k of [1, this.segs.length - 1]) {
      const s = this.segs[k];
      if (s?.globstar) s.needsOne = true;
    }
    let lead = '';
    for (let k = 0; k < this.segs.length; k++) {
      const s = this.segs[k]!;
      if (s.globstar || s.literal === undefined) break;
      lead += (k > 0 ? '/' : '') + s.literal;
    }
    this.lead = lead;
  }
}

/**
 * A set of globs compiled once. `match(path)` costs at most (segments of the path) x (segments of
 * each pattern) segment matches, each linear: no input can make it slow. Not reentrant (scratch
 * state is shared), which is fine on one thread.
 */
export class GlobSet {
  private readonly patterns: Compiled[] = [];
  private cur = new Uint8Array(0);
  private next = new Uint8Array(0);

  /** Throws a RangeError if a pattern expands to more than GLOB_MAX_ALTERNATIVES. */
  constructor(globs: readonly string[]) {
    let most = 0;
    for (const g of globs) {
      const alts = expandBraces(g);
      if (alts === undefined) throw new RangeError(`${JSON.stringify(g)} expands to more than ${GLOB_MAX_ALTERNATIVES} patterns`);
      for (const a of alts) {
        const c = new Compiled(a);
        this.patterns.push(c);
        most = Math.max(most, c.segs.length + 1);
      }
    }
    this.cur = new Uint8Array(most);
    this.next = new Uint8Array(most);
  }

  get size(): number {
    return this.patterns.length;
  }

  match(p: string): boolean {
    for (const c of this.patterns) if (p.startsWith(c.lead) && this.one(c.segs, p)) return true;
    return false;
  }

  private one(segs: Seg[], p: string): boolean {
    const m = segs.length;
    let cur = this.cur;
    let next = this.next;
    cur.fill(0, 0, m + 1);
    cur[0] = 1;
    closure(segs, cur);
    let start = 0;
    for (;;) {
      let end = p.indexOf('/', start);
      if (end < 0) end = p.length;
      next.fill(0, 0, m + 1);
      let any = false;
      for (let i = 0; i < m; i++) {
        if (!cur[i]) continue;
        const s = segs[i]!;
        if (s.globstar) {
          // `**` takes any segment but `.` and `..` (never in a kernel path; picomatch agrees).
          if (isDots(p, start, end)) continue;
          next[i] = 1;
          if (s.needsOne) next[i + 1] = 1; // it has taken one: it may be left now
        } else if (segmentMatches(s.toks, p, start, end) && (s.toks.length === 0 || !isDots(p, start, end) || s.literal !== undefined))
          next[i + 1] = 1;
        else continue;
        any = true;
      }
      if (!any) return false;
      closure(segs, next);
      [cur, next] = [next, cur];
      if (end === p.length) return cur[m] === 1;
      start = end + 1;
    }
  }
}

/** A `**` position reached also reaches the next one (it may take no segment), unless it needs one. */
function closure(segs: Seg[], set: Uint8Array): void {
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i]!;
    if (set[i] && s.globstar && !s.needsOne) set[i + 1] = 1;
  }
}

function isDots(p: string, start: number, end: number): boolean {
  const n = end - start;
  return (n === 1 && p.charCodeAt(start) === 46) || (n === 2 && p.charCodeAt(start) === 46 && p.charCodeAt(start + 1) === 46);
}
