/**
 * SVM benchmark: `node build/bench/svm/svm-bench.js [--seconds 3] [--engines builtin,clamav]
 * [--agents 100] [--file-size 1048576] [--out FILE]`, or `runSvmBench(opts)` from another script.
 *
 * Per engine, one SVM on loopback (in this process; clients are raw lightagent/1 WebSockets,
 * framed as the agent frames them: zero masking key):
 * 1. throughput: 4 agents upload distinct random files (`fileSize`) with 8 uploads in flight each,
 *    for `seconds`: MB/s of content judged (every upload is a cache miss: an engine run);
 * 2. lookups: 4 agents with 32 lookups in flight each, for `seconds`: lookups/s (shared cache hits);
 * 3. 100 agents: `agents - 1` quiet agents each upload a distinct 16 KiB file every 50 ms, first
 *    alone, then with one noisy agent flooding 1 MiB uploads (64 in flight): p50/p99 verdict latency
 *    of the quiet agents in both phases, and how much the noisy one got through or was refused.
 * clamav runs against clamd started by test/helpers/clamd.ts (offline EICAR database), skipped
 * with a note when clamd is not installed.
 *
 * Then, once per process (`archives`, off with --no-archives), the builtin engine's containers:
 * 4. archive throughput: a zip and a tar.gz built here (64 members of 256 KiB of hex text, 16 MiB
 *    unpacked), uploaded as in 1. (each upload distinct: a byte the readers ignore is changed):
 *    MB/s of archive and MB/s unpacked;
 * 5. cold throughput on non-archive files (as in 1.), containers on vs off (`archives.enabled`),
 *    two SVMs side by side, phases alternated ABBA: medians and the ratio on/off;
 * 6. peak RSS of an SVM in a child process (process.resourceUsage().maxRSS) while it scans a
 *    1 GiB zip (16 stored members of 64 MiB of zeros: the upload itself is 1 GiB) and a zip
 *    that unpacks to 1 GiB (16 deflated members of 64 MiB of zeros, 1 MB packed; max_ratio and
 *    max_unpacked raised so it is read to the end).
 */
import crypto from 'node:crypto';
import { fork } from 'node:child_process';
import fs from 'node:fs';
import zlib from 'node:zlib';
import { encodeMessage, type VerdictMsg } from '../../src/protocol/index.js';
import { configureLogging } from '../../src/log.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import { ClamavEngine } from '../../src/svm/engines/clamav.js';
import type { ScanEngine } from '../../src/svm/engines/engine.js';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import { SvmServer } from '../../src/svm/server.js';
import { zeroMask } from '../../src/svm-link/svm-link.js';
import { clamdBinary, startClamd, type Clamd } from '../../test/helpers/clamd.js';
import { rawAgent, sendUpload, type RawAgent } from '../../test/svm/helpers.js';
import { deflatedZeros, tarOf, zip } from '../../test/svm/engines/archive-corpus.js';
import { benchArgs } from '../lib/cli.js';

/** The engines runSvmBench knows, as --engines names them. */
export const SVM_BENCH_ENGINES = ['builtin', 'clamav'] as const;
export type SvmBenchEngine = (typeof SVM_BENCH_ENGINES)[number];

export interface SvmBenchOptions {
  seconds?: number;
  engines?: SvmBenchEngine[];
  agents?: number;
  fileSize?: number;
  /** Run the archive measurements (4-6 above), once per process. Default true. */
  archives?: boolean;
}

export interface ArchiveBench {
  /** Through the SVM, every upload a distinct archive: MB/s of archive uploaded and of bytes unpacked. */
  throughput: Array<{ format: string; packedMiB: number; unpackedMiB: number; uploads: number; archiveMBps: number; unpackedMBps: number }>;
  /** Cold MB/s on distinct random 1 MiB files, containers on vs off, per alternated phase; ratio of medians. */
  nonArchive: {
    phaseSeconds: number;
    onMBps: number[];
    offMBps: number[];
    medianOn: number;
    medianOff: number;
    ratio: number;
    /** builtin engine.scan() of one distinct random 1 MiB file, in process, on/off alternated per call (400 each): median µs. */
    engineUsPerMiB: { on: number; off: number; ratio: number };
  };
  /** Peak RSS of an SVM child process: at rest, and after each scan (maxRSS is a high-water mark). */
  rss: {
    baselineMiB: number;
    rows: Array<{ what: string; archiveMiB: number; unpackedMiB: number; verdict: string; ms: number; peakRssMiB: number }>;
  };
}

export interface EngineBench {
  engine: string;
  throughputMBps: number;
  uploads: number;
  lookupsPerSec: number;
  quietAlone: { p50ms: number; p99ms: number; verdicts: number };
  quietWithNoisy: { p50ms: number; p99ms: number; verdicts: number };
  noisy: { verdicts: number; rateLimited: number; MBps: number };
}

export interface SvmBenchResult {
  node: string;
  cpus: number;
  options: Required<SvmBenchOptions>;
  results: EngineBench[];
  skipped: string[];
  archives?: ArchiveBench;
}

const TOKEN = 'tenant-a-token';
/** The clients frame uploads as the agent does (src/svm-link/svm-link.ts): a zero mask. */
const AGENT_WS = { generateMask: zeroMask };

function pct(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** Keep `window` requests in flight on `a` until `until`; `make(id)` sends one and resolves with its verdict. */
async function pump(
  a: RawAgent,
  window: number,
  until: number,
  send: (id: number) => void,
  onVerdict: (v: VerdictMsg, startedAt: number) => void,
): Promise<void> {
  let next = 1;
  const started = new Map<number, number>();
  await new Promise<void>((resolve) => {
    let inflight = 0;
    const launch = () => {
      while (inflight < window && performance.now() < until) {
        const id = next++;
        started.set(id, performance.now());
        inflight++;
        send(id);
        void a.verdict(id, 60_000).then(
          (v) => {
            inflight--;
            onVerdict(v, started.get(id)!);
            started.delete(id);
            if (performance.now() >= until && inflight === 0) resolve();
            else launch();
          },
          () => {
            inflight--;
            if (inflight === 0) resolve();
          },
        );
      }
      if (inflight === 0) resolve();
    };
    launch();
  });
}

async function benchEngine(engine: ScanEngine, o: Required<SvmBenchOptions>): Promise<EngineBench> {
  const s = await startSvm(engine);
  try {
    // 1. throughput
    const uploaders = await Promise.all([1, 2, 3, 4].map(() => rawAgent(s.url, undefined, true, AGENT_WS)));
    let bytes = 0;
    let uploads = 0;
    const base = crypto.randomBytes(o.fileSize);
    let seq = 0;
    const t0 = performance.now();
    const until = t0 + o.seconds * 1000;
    await Promise.all(
      uploaders.map((a) =>
        pump(
          a,
          8,
          until,
          (id) => {
            const f = Buffer.from(base);
            f.writeUInt32LE(++seq, 0); // distinct content: always an engine run
            sendUpload(a, id, f);
          },
          (v) => {
            if (v.verdict === 'clean' || v.verdict === 'infected') {
              bytes += o.fileSize;
              uploads++;
            }
          },
        ),
      ),
    );
    const throughputMBps = bytes / 2 ** 20 / ((performance.now() - t0) / 1000);
    // 2. lookups of hashes the cache holds (the upload of one file, then its hash)
    const known = crypto.createHash('sha256').update(Buffer.from(base)).digest('hex');
    let lookups = 0;
    const t1 = performance.now();
    await Promise.all(
      uploaders.map((a) =>
        pump(
          a,
          32,
          t1 + o.seconds * 1000,
          (id) => a.ws.send(encodeMessage({ t: 'lookup', id, sha256: known, size: o.fileSize })),
          () => lookups++,
        ),
      ),
    );
    const lookupsPerSec = lookups / ((performance.now() - t1) / 1000);
    for (const a of uploaders) a.ws.close();

    // 3. many agents: quiet ones alone, then with a noisy one
    const quiet = await Promise.all(Array.from({ length: o.agents - 1 }, () => rawAgent(s.url, undefined, true, AGENT_WS)));
    const quietPhase = async (ms: number): Promise<number[]> => {
      const lat: number[] = [];
      const end = performance.now() + ms;
      await Promise.all(
        quiet.map(async (a, i) => {
          let id = 0;
          await new Promise((r) => setTimeout(r, (i * 50) / quiet.length)); // spread the starts
          while (performance.now() < end) {
            const f = crypto.randomBytes(16 * 1024);
            const t = performance.now();
            sendUpload(a, ++id, f);
            const v = await a.verdict(id, 60_000);
            if (v.verdict !== 'error') lat.push(performance.now() - t);
            await new Promise((r) => setTimeout(r, 50));
          }
        }),
      );
      return lat.sort((x, y) => x - y);
    };
    const alone = await quietPhase(o.seconds * 1000);
    const noisy = await rawAgent(s.url, undefined, true, AGENT_WS);
    let noisyOk = 0;
    let noisyLimited = 0;
    const noisyEnd = performance.now() + o.seconds * 1000;
    const big = crypto.randomBytes(1 << 20);
    let nseq = 0;
    const noisyRun = pump(
      noisy,
      64,
      noisyEnd,
      (id) => {
        const f = Buffer.from(big);
        f.writeUInt32LE(++nseq, 0);
        sendUpload(noisy, id, f);
      },
      (v) => {
        if (v.code === 'LA_ERR_RATE_LIMITED' || v.code === 'LA_ERR_BUSY') noisyLimited++;
        else if (v.verdict !== 'error') noisyOk++;
      },
    );
    const tn = performance.now();
    const withNoisy = await quietPhase(o.seconds * 1000);
    await noisyRun;
    const noisyMBps = noisyOk / ((performance.now() - tn) / 1000);
    for (const a of [...quiet, noisy]) a.ws.close();
    return {
      engine: engine.name,
      throughputMBps: round(throughputMBps),
      uploads,
      lookupsPerSec: Math.round(lookupsPerSec),
      quietAlone: { p50ms: round(pct(alone, 50)), p99ms: round(pct(alone, 99)), verdicts: alone.length },
      quietWithNoisy: { p50ms: round(pct(withNoisy, 50)), p99ms: round(pct(withNoisy, 99)), verdicts: withNoisy.length },
      noisy: { verdicts: noisyOk, rateLimited: noisyLimited, MBps: round(noisyMBps) },
    };
  } finally {
    await s.close();
  }
}

const round = (n: number) => Math.round(n * 100) / 100;

export async function runSvmBench(opts: SvmBenchOptions = {}): Promise<SvmBenchResult> {
  const o: Required<SvmBenchOptions> = {
    seconds: opts.seconds ?? 3,
    engines: opts.engines ?? ['builtin', 'clamav'],
    agents: opts.agents ?? 100,
    fileSize: opts.fileSize ?? 1 << 20,
    archives: opts.archives ?? true,
  };
  const results: EngineBench[] = [];
  const skipped: string[] = [];
  for (const name of o.engines) {
    if (name === 'builtin') {
      results.push(await benchEngine(new BuiltinEngine(), o));
      continue;
    }
    if (name !== 'clamav') throw new Error(`runSvmBench: unknown engine ${String(name)} (engines: ${SVM_BENCH_ENGINES.join(', ')})`);
    if (!clamdBinary()) {
      skipped.push('clamav: clamd is not installed (apt-get install clamav-daemon)');
      continue;
    }
    let clamd: Clamd | undefined;
    try {
      clamd = await startClamd({ streamMaxLength: '64M', maxThreads: 8 });
      results.push(await benchEngine(await ClamavEngine.create({ address: clamd.socket, poolSize: 8 }), o));
    } finally {
      await clamd?.stop();
    }
  }
  // svm-scale calls this once per agent count: the archive part runs on the first call only.
  let archives: ArchiveBench | undefined;
  if (o.archives && !archivesDone) {
    archivesDone = true;
    archives = await runArchiveBench(o.seconds);
    process.stderr.write(`svm-bench archives: ${JSON.stringify(archives)}\n`);
  }
  return {
    node: process.version,
    cpus: (await import('node:os')).cpus().length,
    options: o,
    results,
    skipped,
    ...(archives ? { archives } : {}),
  };
}

let archivesDone = false;
const MiB = 2 ** 20;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function startSvm(engine: ScanEngine, extra: Partial<Parameters<typeof SvmServer.start>[0]> = {}): Promise<SvmServer> {
  return SvmServer.start({
    host: '127.0.0.1',
    port: 0,
    tokens: [{ tenant: 'a', token: TOKEN }],
    engine,
    cache: new MemoryVerdictCache(1_000_000),
    closeGraceMs: 200,
    uploadMemory: 1 << 30,
    maxInFlight: 64,
    scanConcurrency: 8,
    agentQueue: 16,
    ...extra,
  });
}

/** 4 agents, `window` uploads in flight each, for `seconds`: uploads judged and their bytes. `make(seq)` gives a distinct file. */
async function uploadPhase(
  url: string,
  seconds: number,
  window: number,
  make: (seq: number) => Buffer,
): Promise<{ uploads: number; bytes: number; seconds: number; verdicts: Set<string> }> {
  const agents = await Promise.all([1, 2, 3, 4].map(() => rawAgent(url, undefined, true, AGENT_WS)));
  let uploads = 0;
  let bytes = 0;
  let seq = 0;
  const verdicts = new Set<string>();
  const sizes = new Map<string, number>();
  const t0 = performance.now();
  await Promise.all(
    agents.map((a, ai) =>
      pump(
        a,
        window,
        t0 + seconds * 1000,
        (id) => {
          const f = make(++seq);
          sizes.set(`${ai}:${id}`, f.length);
          sendUpload(a, id, f);
        },
        (v) => {
          verdicts.add(v.verdict === 'error' ? `error:${v.code}` : (v.threat ?? v.verdict));
          if (v.verdict === 'clean' || v.verdict === 'infected') {
            uploads++;
            bytes += sizes.get(`${ai}:${v.id}`) ?? 0;
          }
        },
      ),
    ),
  );
  const took = (performance.now() - t0) / 1000;
  for (const a of agents) a.ws.close();
  return { uploads, bytes, seconds: took, verdicts };
}

/** 64 members of 256 KiB of hex text (deflates to about half), 16 MiB unpacked. */
function archiveMembers(): Array<{ name: string; data: Buffer }> {
  return Array.from({ length: 64 }, (_, i) => ({
    name: `src/part-${i}.txt`,
    data: Buffer.from(crypto.randomBytes(128 * 1024).toString('hex'), 'latin1'),
  }));
}

export async function runArchiveBench(seconds: number): Promise<ArchiveBench> {
  const on = await startSvm(new BuiltinEngine());
  const off = await startSvm(new BuiltinEngine({ archives: { enabled: false } }));
  try {
    // 4. archive throughput: the zip's first local header's mtime and the gzip header's MTIME make each upload distinct.
    const members = archiveMembers();
    const unpacked = members.reduce((n, m) => n + m.data.length, 0);
    const z = zip(members);
    const tgz = zlib.gzipSync(await tarOf(members), { level: 6 });
    const throughput: ArchiveBench['throughput'] = [];
    for (const [format, buf, at] of [
      ['zip (deflate)', z, 10],
      ['tar.gz', tgz, 4],
    ] as const) {
      const r = await uploadPhase(on.url, seconds, 2, (seq) => {
        const f = Buffer.from(buf);
        f.writeUInt32LE(seq, at);
        return f;
      });
      if (r.verdicts.size !== 1 || !r.verdicts.has('clean'))
        throw new Error(`${format}: unexpected verdicts ${[...r.verdicts].join(', ')}`);
      throughput.push({
        format,
        packedMiB: round(buf.length / MiB),
        unpackedMiB: round(unpacked / MiB),
        uploads: r.uploads,
        archiveMBps: round(r.bytes / MiB / r.seconds),
        unpackedMBps: round((r.uploads * unpacked) / MiB / r.seconds),
      });
    }
    // 5. non-archive cold throughput, containers on vs off, ABBA.
    const base = crypto.randomBytes(1 << 20);
    const plain = (seq: number) => {
      const f = Buffer.from(base);
      f.writeUInt32LE(seq, 0);
      return f;
    };
    const phase = Math.max(2, seconds);
    const onMBps: number[] = [];
    const offMBps: number[] = [];
    for (let i = 0; i < 8; i++) {
      const which = i % 4 === 0 || i % 4 === 3 ? 'on' : 'off';
      const r = await uploadPhase((which === 'on' ? on : off).url, phase, 8, plain);
      (which === 'on' ? onMBps : offMBps).push(round(r.bytes / MiB / r.seconds));
    }
    const medianOn = round(median(onMBps));
    const medianOff = round(median(offMBps));
    // The engine alone, in this process, alternated per call: what a non-archive pays for the sniff.
    const eOn = new BuiltinEngine();
    const eOff = new BuiltinEngine({ archives: { enabled: false } });
    const usOn: number[] = [];
    const usOff: number[] = [];
    for (let i = 0; i < 400; i++) {
      for (const [e, out] of i % 2
        ? ([
            [eOff, usOff],
            [eOn, usOn],
          ] as const)
        : ([
            [eOn, usOn],
            [eOff, usOff],
          ] as const)) {
        const t = performance.now();
        await e.scan(plain(i));
        out.push((performance.now() - t) * 1000);
      }
    }
    const engineUsPerMiB = {
      on: round(median(usOn)),
      off: round(median(usOff)),
      ratio: Math.round((median(usOn) / median(usOff)) * 1000) / 1000,
    };
    const ratio = Math.round((medianOn / medianOff) * 1000) / 1000;
    const nonArchive = { phaseSeconds: phase, onMBps, offMBps, medianOn, medianOff, ratio, engineUsPerMiB };
    return { throughput, nonArchive, rss: await archiveRss() };
  } finally {
    await on.close();
    await off.close();
  }
}

/** 6. The SVM in a child process (this script with --rss-child), so its peak RSS is its own. */
async function archiveRss(): Promise<ArchiveBench['rss']> {
  const child = fork(new URL(import.meta.url).pathname, ['--rss-child'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const next = () =>
    new Promise<{ url?: string; maxRssKb: number }>((r) => child.once('message', (m) => r(m as { url?: string; maxRssKb: number })));
  try {
    const hello = await next();
    const rows: ArchiveBench['rss']['rows'] = [];
    const a = await rawAgent(hello.url!, undefined, true, AGENT_WS);
    const cases: Array<{ what: string; make: () => Buffer; unpacked: number }> = [
      {
        what: 'zip of 16 deflated 64 MiB members of zeros (unpacks to 1 GiB)',
        make: () =>
          zip(
            Array.from({ length: 16 }, (_, i) => ({
              name: `z${i}.bin`,
              data: Buffer.alloc(0),
              raw: { bytes: deflatedZeros(64), size: 64 * MiB },
            })),
          ),
        unpacked: 1024 * MiB,
      },
      {
        what: 'zip of 16 stored 64 MiB members of zeros (a 1 GiB upload)',
        make: () => {
          const zeros = Buffer.alloc(64 * MiB);
          return zip(Array.from({ length: 16 }, (_, i) => ({ name: `s${i}.bin`, data: zeros, method: 0 as const })));
        },
        unpacked: 1024 * MiB,
      },
    ];
    let id = 0;
    for (const c of cases) {
      const buf = c.make();
      const t0 = performance.now();
      sendUpload(a, ++id, buf);
      const v = await a.verdict(id, 300_000);
      const ms = performance.now() - t0;
      child.send('report');
      const m = await next();
      rows.push({
        what: c.what,
        archiveMiB: round(buf.length / MiB),
        unpackedMiB: c.unpacked / MiB,
        verdict: v.verdict === 'error' ? `error:${v.code}` : (v.threat ?? v.verdict),
        ms: Math.round(ms),
        peakRssMiB: round(m.maxRssKb / 1024),
      });
    }
    a.ws.close();
    return { baselineMiB: round(hello.maxRssKb / 1024), rows };
  } finally {
    child.kill();
  }
}

/** The child of archiveRss: an SVM that accepts 1.1 GiB uploads and unpacks up to 2 GiB per file. */
async function rssChild(): Promise<void> {
  configureLogging({ level: 'error' });
  const engine = new BuiltinEngine({ archives: { maxRatio: 100_000, maxUnpacked: 2 ** 31, timeoutMs: 120_000 } });
  const s = await startSvm(engine, {
    maxFileSize: 1100 * MiB,
    uploadMemory: 2 ** 31,
    uploadTimeoutMs: 300_000,
    uploadStallMs: 300_000,
    scanConcurrency: 1,
  });
  const maxRssKb = () => process.resourceUsage().maxRSS;
  process.on('message', () => process.send!({ maxRssKb: maxRssKb() }));
  process.on('disconnect', () => process.exit(0));
  process.send!({ url: s.url, maxRssKb: maxRssKb() });
}

async function main(): Promise<void> {
  const { values, usageError } = benchArgs(
    {
      name: 'bench/svm/svm-bench',
      summary: `One SVM per engine on loopback, raw lightagent/1 clients: upload MB/s, lookups/s, quiet agents'
verdict latency alone and beside a flooding one; then the builtin engine's archives (throughput,
containers on vs off, peak RSS on 1 GiB zips). docs/svm.md, "Inside archives" and "Fairness".`,
    },
    {
      seconds: { type: 'string', default: '3', arg: 'S', number: 'float', above: 0, help: 'length of each phase, seconds' },
      engines: {
        type: 'string',
        default: 'builtin,clamav',
        arg: 'E,E',
        help: `engines to run: ${SVM_BENCH_ENGINES.join(', ')} (clamav: skipped without clamd)`,
      },
      agents: {
        type: 'string',
        default: '100',
        arg: 'N',
        number: 'int',
        min: 2,
        help: 'agents in the latency phase: N - 1 quiet ones and one noisy',
      },
      'file-size': {
        type: 'string',
        default: String(1 << 20),
        arg: 'BYTES',
        number: 'int',
        min: 1,
        help: 'size of each upload in the throughput phase',
      },
      'no-archives': { type: 'boolean', default: false, help: 'skip the archive measurements' },
      out: { type: 'string', arg: 'FILE', help: 'write the result as JSON there too' },
      'rss-child': { type: 'boolean', help: '(internal) be the SVM whose peak RSS the archive measurement reads' },
    },
  );
  const engines = values.engines.split(',').map((e) => e.trim());
  const unknown = engines.filter((e) => !(SVM_BENCH_ENGINES as readonly string[]).includes(e));
  if (unknown.length)
    usageError(`--engines: no engine named ${unknown.map((e) => e || "''").join(', ')} (engines: ${SVM_BENCH_ENGINES.join(', ')})`);
  configureLogging({ level: 'error' });
  const r = await runSvmBench({
    seconds: Number(values.seconds),
    engines: engines as SvmBenchEngine[],
    agents: Number(values.agents),
    fileSize: Number(values['file-size']),
    archives: !values['no-archives'],
  });
  const text = JSON.stringify(r, null, 2);
  if (values.out) fs.writeFileSync(values.out, `${text}\n`);
  process.stdout.write(`${text}\n`);
}

if (import.meta.url === `file://${process.argv[1]}` && process.argv.includes('--rss-child')) {
  rssChild().catch((e: unknown) => {
    process.stderr.write(`svm-bench rss child: ${(e as Error)?.stack ?? String(e)}\n`);
    process.exit(1);
  });
} else if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`svm-bench: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
