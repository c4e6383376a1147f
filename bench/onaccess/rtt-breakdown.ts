/**
 * Where an SVM round trip goes: hop-by-hop p50/p99 of the opens an agent sent to the SVM, from
 * the timestamps src/trace.ts records when LIGHTAGENT_RTT_TRACE is set (open-latency.ts --trace
 * DIR sets it: DIR/svm for the SVM, DIR/<phase> for each guest). All marks are CLOCK_MONOTONIC
 * microseconds, comparable across the agent's threads and the SVM's process.
 *
 *   node build/bench/onaccess/rtt-breakdown.js DIR [phase...]     (default: miss second-guest)
 */
import fs from 'node:fs';
import path from 'node:path';
import { benchArgs } from '../lib/cli.js';
import { pct, round } from '../lib/harness.js';

type Mark = [hop: string, key: string, us: number];

function load(dir: string): Mark[] {
  const out: Mark[] = [];
  if (!fs.existsSync(dir)) return out;
  for (const f of fs.readdirSync(dir)) {
    if (!f.endsWith('.jsonl')) continue;
    // GC marks of a worker thread (not thread 0) are told apart: only the main threads' GCs hold up a decision.
    const worker = !f.endsWith('-0.jsonl');
    for (const line of fs.readFileSync(path.join(dir, f), 'utf8').split('\n')) {
      if (!line) continue;
      const m = JSON.parse(line) as Mark;
      if (worker && m[0].startsWith('gc.')) m[0] = `worker.${m[0]}`;
      out.push(m);
    }
  }
  return out;
}

/** hop -> key -> sorted times */
function index(marks: Mark[]): Map<string, Map<string, number[]>> {
  const m = new Map<string, Map<string, number[]>>();
  for (const [hop, key, us] of marks) {
    let k = m.get(hop);
    if (!k) m.set(hop, (k = new Map()));
    const a = k.get(key);
    if (a) a.push(us);
    else k.set(key, [us]);
  }
  for (const k of m.values()) for (const a of k.values()) a.sort((x, y) => x - y);
  return m;
}

/** The first time of `hop` for `key` in [from, to]. */
function within(ix: Map<string, Map<string, number[]>>, hop: string, key: string, from: number, to = Infinity): number | undefined {
  return ix
    .get(hop)
    ?.get(key)
    ?.find((t) => t >= from && t <= to);
}

/** GC pauses [start, end] of a main thread. */
function gcs(ix: Map<string, Map<string, number[]>>): Array<[number, number]> {
  const starts = [...(ix.get('gc.start')?.values() ?? [])].flat().sort((x, y) => x - y);
  const ends = [...(ix.get('gc.end')?.values() ?? [])].flat().sort((x, y) => x - y);
  return starts.map((s, i) => [s, ends[i]!]);
}

export interface HopRow {
  hop: string;
  n: number;
  p50: number;
  p99: number;
  max: number;
  sumMs: number;
}

/** The hops of one phase's opens (each open: a list of [hop, duration us]). */
export function breakdown(dir: string, phase: string): HopRow[] {
  const a = index(load(path.join(dir, phase)));
  const v = index(load(path.join(dir, 'svm')));
  const hops = new Map<string, number[]>();
  const add = (name: string, d: number | undefined) => {
    if (d === undefined || !Number.isFinite(d)) return;
    const l = hops.get(name);
    if (l) l.push(d);
    else hops.set(name, [d]);
  };
  const one = (hop: string, key: string) => a.get(hop)?.get(key)?.[0];
  const agentGc = gcs(a);
  const svmGc = gcs(v);
  const overlaps = (g: Array<[number, number]>, from: number, to: number) => g.some(([s, e]) => s < to && e > from);
  for (const [k] of a.get('s.hashed') ?? []) {
    const [file, sha] = [k.slice(0, k.lastIndexOf('|')), k.slice(k.lastIndexOf('|') + 1)];
    const read = one('w.read', file);
    const post = one('w.post', file);
    const recv = one('m.recv', file);
    const hashed = one('s.hashed', k);
    const decided = one('m.decided', file);
    const responded = one('m.responded', file);
    const marked = one('m.marked', file);
    const sending = within(a, 'l.sending', sha, hashed ?? 0);
    const sent = within(a, 'l.sent', sha, hashed ?? 0);
    if ([read, post, recv, hashed, decided, responded, sending, sent].some((x) => x === undefined)) continue;
    const back = within(a, 'l.recv', sha, sent!)!;
    // From `sending`: the SVM may read the frame before this thread gets to mark `sent`.
    const vIn = within(v, 'v.lookup', sha, sending!, back);
    const vOut = vIn === undefined ? undefined : within(v, 'v.answer', sha, vIn, back);
    add('1 worker: read -> posted', post! - read!);
    add('2 worker -> main thread (postMessage, loop wake)', recv! - post!);
    add('3 main: fstat, decide, read + xxh64 + SHA-256', hashed! - recv!);
    add('4 agent: hashed -> lookup frame (backoff, window, request)', sending! - hashed!);
    add('4b agent: encode + ws.send', sent! - sending!);
    add('5 wire agent -> SVM (from ws.send: loopback, SVM wake, ws parse, decode)', vIn === undefined ? undefined : vIn - sending!);
    add('6 SVM: lookup (rate, cache, answer)', vOut === undefined ? undefined : vOut - vIn!);
    add('7 wire SVM -> agent (encode, loopback, agent wake, parse)', vOut === undefined ? undefined : back - vOut);
    add('5-7 lookup round trip as the agent sees it (from ws.send)', back - sending!);
    const scan = one('l.scan', file);
    let last = back;
    if (scan !== undefined) {
      const up = one('l.uploaded', file);
      const sBack = within(a, 'l.recv', sha, up ?? scan);
      const vUp = within(v, 'v.uploaded', sha, scan, sBack);
      const vAns = vUp === undefined ? undefined : within(v, 'v.answer', sha, vUp, sBack);
      add('8 agent: unknown -> scan sent', scan - back);
      add('9 agent: scan frame + chunk sent', up === undefined ? undefined : up - scan);
      add('10 wire + SVM upload reassembly (chunk sent -> upload complete)', vUp === undefined || up === undefined ? undefined : vUp - up);
      add('11 SVM: scan (cache, engine, answer)', vAns === undefined ? undefined : vAns - vUp!);
      add('12 wire SVM -> agent (verdict)', vAns === undefined || sBack === undefined ? undefined : sBack - vAns);
      add('8-12 upload round trip as the agent sees it', sBack === undefined ? undefined : sBack - back);
      if (sBack !== undefined) last = sBack;
    }
    add('13 agent: verdict -> decision (promise chain)', decided! - last);
    add('14 main: decided -> response written', responded! - decided!);
    if (marked !== undefined && marked <= responded!) {
      add('14a of which the ignore mark before the answer (fanotify_mark, fstat, check)', marked - decided!);
      add('14b of which the response write (wakes the opener)', responded! - marked);
    } else if (marked !== undefined) add('15 main: ignore mark after the answer (nobody waits)', marked - responded!);
    add('total: worker read -> response written', responded! - read!);
    const first = Math.min(read!, recv!);
    if (overlaps(agentGc, first, responded!)) add('total of opens during an agent main-thread GC', responded! - read!);
    else if (overlaps(svmGc, first, responded!)) add('total of opens during an SVM GC', responded! - read!);
    else add('total of opens during no GC', responded! - read!);
  }
  const inRun = (g: Array<[number, number]>) => {
    const t = [...(a.get('w.read')?.values() ?? [])].flat();
    const lo = Math.min(...t);
    const hi = Math.max(...t);
    return g.filter(([s]) => s >= lo && s <= hi).map(([s, e]) => e - s);
  };
  for (const d of inRun(agentGc)) add('GC pauses, agent main thread, during the pass', d);
  for (const d of inRun(svmGc)) add('GC pauses, SVM, during the pass', d);
  return [...hops.entries()]
    .sort(([x], [y]) => order(x) - order(y))
    .map(([hop, ds]) => ({
      hop,
      n: ds.length,
      p50: round(pct(ds, 0.5), 1),
      p99: round(pct(ds, 0.99), 1),
      max: Math.max(...ds),
      sumMs: round(ds.reduce((s, d) => s + d, 0) / 1000, 1),
    }));
}

/** Numbered hops in their order (5-7 after 5, before 6), then the rest as first seen (sort is stable). */
function order(hop: string): number {
  const n = Number.parseInt(hop);
  return Number.isNaN(n) ? 1000 : n;
}

export function breakdownMarkdown(dir: string, phases: string[]): string {
  let md = '';
  for (const phase of phases) {
    const rows = breakdown(dir, phase);
    md += `\n${phase}: hop-by-hop, microseconds\n\n| hop | n | p50 | p99 | max | sum ms |\n|---|---|---|---|---|---|\n`;
    for (const r of rows) md += `| ${r.hop} | ${r.n} | ${r.p50} | ${r.p99} | ${r.max} | ${r.sumMs} |\n`;
  }
  return md;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { positionals, usageError } = benchArgs(
    {
      name: 'bench/onaccess/rtt-breakdown',
      positionals: 'DIR [PHASE...]',
      summary: `Where an SVM round trip goes: hop-by-hop p50/p99 of the opens an agent sent to the SVM, from the
marks under DIR that open-latency.js --trace DIR records (DIR/svm, DIR/<PHASE>; default phases:
miss second-guest). docs/benchmarks.md, "Where an SVM round trip goes".`,
    },
    {},
  );
  const [dir, ...phases] = positionals;
  if (!dir) usageError('DIR is required: the --trace DIR of bench/onaccess/open-latency.js');
  // load() reads a missing directory as no marks: a mistyped DIR or PHASE would print empty tables.
  const isDir = (p: string) => fs.statSync(p, { throwIfNoEntry: false })?.isDirectory() === true;
  if (!isDir(dir!)) usageError(`DIR ${dir}: no such directory (the --trace DIR of bench/onaccess/open-latency.js)`);
  if (!isDir(path.join(dir!, 'svm'))) usageError(`DIR ${dir}: no svm/ in it, not the --trace DIR of bench/onaccess/open-latency.js`);
  const wanted = phases.length ? phases : ['miss', 'second-guest'];
  const missing = wanted.filter((p) => !isDir(path.join(dir!, p)));
  if (missing.length) {
    const there = fs.readdirSync(dir!).filter((p) => p !== 'svm' && isDir(path.join(dir!, p)));
    usageError(`no phase ${missing.join(', ')} under ${dir} (phases there: ${there.join(', ') || 'none'})`);
  }
  process.stdout.write(breakdownMarkdown(dir!, wanted));
}
