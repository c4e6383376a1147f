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
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { parseArgs } from 'node:util';
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

export interface SvmBenchOptions {
  seconds?: number;
  engines?: Array<'builtin' | 'clamav'>;
  agents?: number;
  fileSize?: number;
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
  const s = await SvmServer.start({
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
  });
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
  };
  const results: EngineBench[] = [];
  const skipped: string[] = [];
  for (const name of o.engines) {
    if (name === 'builtin') {
      results.push(await benchEngine(new BuiltinEngine(), o));
      continue;
    }
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
  return { node: process.version, cpus: (await import('node:os')).cpus().length, options: o, results, skipped };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '3' },
      engines: { type: 'string', default: 'builtin,clamav' },
      agents: { type: 'string', default: '100' },
      'file-size': { type: 'string', default: String(1 << 20) },
      out: { type: 'string' },
    },
  });
  configureLogging({ level: 'error' });
  const r = await runSvmBench({
    seconds: Number(values.seconds),
    engines: values.engines!.split(',').map((e) => e.trim()) as Array<'builtin' | 'clamav'>,
    agents: Number(values.agents),
    fileSize: Number(values['file-size']),
  });
  const text = JSON.stringify(r, null, 2);
  if (values.out) fs.writeFileSync(values.out, `${text}\n`);
  process.stdout.write(`${text}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`svm-bench: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
