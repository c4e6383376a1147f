/**
 * SVM sizing: `node --expose-gc build/bench/svm/sizing.js [--agents 0,100,500,1000,2000]
 * [--rate-at 0,500,2000] [--seconds 3] [--out FILE]`, or `npm run bench -- --only svm-sizing`.
 *
 * 1. Memory per connected agent: one SVM as a child process (the CLI with the shipped binary's
 *    node flags, builtin engine, memory cache, plain ws on loopback, log level warn, a GC every
 *    second so the heap reads as what is live), then raw lightagent/1 agents connected in
 *    steps up to each N: hello (each its own agent id), 3 lookups of unknown hashes answered, then
 *    idle. After 2 s of settling, the SVM's RSS and V8 heap used (its /metrics:
 *    process_resident_memory_bytes, nodejs_heap_size_used_bytes); per agent = (value at N - value
 *    at 0) / N.
 * 2. With N idle agents connected (the sizes of --rate-at), 4 busy agents: lookups/s (32 in
 *    flight each, shared cache hits) and uploads MB/s (distinct random 1 MiB files, 8 in flight
 *    each: every upload an engine run) for --seconds each.
 * 3. The shared verdict cache: the SVM's memory tier (MemoryVerdictCache) in this process, bytes
 *    per entry over 200,000 entries (V8 heap plus the typed arrays that hold the entries); Redis
 *    (test/helpers/redis.ts, when redis-server is installed) used_memory per verdict over 100,000
 *    verdicts written by RedisVerdictCache.
 * 4. clamd (test/helpers/clamd.ts, when installed): its RSS with the tiny offline test database
 *    (EICAR). The full official database cannot be downloaded here (no internet): docs/svm.md
 *    gives ClamAV's documented figure for it, marked as not measured.
 */
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { configureLogging } from '../../src/log.js';
import { encodeMessage, type VerdictMsg } from '../../src/protocol/index.js';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import { RedisVerdictCache } from '../../src/svm/redis-verdict-cache.js';
import { clamdBinary, startClamd } from '../../test/helpers/clamd.js';
import { redisBinary, startRedis } from '../../test/helpers/redis.js';
import { rawAgent, sendUpload, type RawAgent } from '../../test/svm/helpers.js';
import { benchArgs } from '../lib/cli.js';
import { SVM_NODE_FLAGS, machineFacts, productNode, round, say, track } from '../lib/harness.js';

const TOKEN = 'sizing-bench-token';
const SVM_CLI = new URL('../../src/cli/lightagent-svm.js', import.meta.url).pathname;

export interface SizingResult {
  machine: ReturnType<typeof machineFacts>;
  loadAverage: number[];
  memory: Array<{ agents: number; rssMiB: number; heapUsedMiB: number; rssKiBPerAgent?: number; heapKiBPerAgent?: number }>;
  rates: Array<{ idleAgents: number; lookupsPerSec: number; uploadMBps: number; uploads: number }>;
  memoryCacheBytesPerEntry: number;
  redis?: { verdicts: number; bytesPerVerdict: number; keyExample: string };
  clamd?: { rssMiB: number; database: string };
}

const { values: args, usageError } = benchArgs(
  {
    name: 'bench/svm/sizing',
    node: '--expose-gc',
    summary: `SVM sizing: its RSS and V8 heap per connected agent, lookups/s and upload MB/s with N idle agents
connected, the verdict cache's bytes per entry in memory and in Redis, clamd's RSS. The svm-sizing
step of npm run bench; docs/svm.md, "Sizing".`,
  },
  {
    agents: {
      type: 'string',
      default: '0,100,500,1000,2000',
      arg: 'N,N',
      number: 'int',
      min: 0,
      list: true,
      help: 'connected agents, in steps: memory read at each',
    },
    'rate-at': {
      type: 'string',
      default: '0,500,2000',
      arg: 'N,N',
      number: 'int',
      min: 0,
      list: true,
      help: 'at these of --agents, also lookups/s and upload MB/s of 4 busy agents',
    },
    seconds: {
      type: 'string',
      default: '3',
      arg: 'S',
      number: 'float',
      above: 0,
      help: 'length of each rate measurement (lookups, uploads), seconds',
    },
    out: { type: 'string', arg: 'FILE', help: 'write the result as JSON there too' },
  },
);
// Agents are only ever added: the steps go up. A rate step that is not a step would never run.
const steps = args.agents.split(',').map(Number);
if (steps.some((n, i) => i > 0 && n < steps[i - 1]!)) usageError(`--agents ${args.agents}: the steps must not go down`);
const offSteps = args['rate-at'].split(',').filter((n) => !steps.includes(Number(n)));
if (offSteps.length) usageError(`--rate-at: ${offSteps.join(', ')} not among --agents ${args.agents}`);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function get(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer within 10 s`)));
    req.on('error', reject);
  });
}

function metric(text: string, name: string): number {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`no ${name} in /metrics`);
  return Number(m[1]);
}

async function startSvmChild(): Promise<{ url: string; http: string; pid: number; stop: () => Promise<void> }> {
  // The flags the shipped binary runs with, and a GC every second (V8 collects when it likes: the
  // heap then reads as what is live, not what is waiting for a collection).
  const gcEverySecond = 'data:text/javascript,setInterval(() => globalThis.gc(), 1000).unref()';
  const child = spawn(
    productNode().path,
    [
      ...SVM_NODE_FLAGS,
      '--expose-gc',
      '--import',
      gcEverySecond,
      SVM_CLI,
      '--listen',
      '127.0.0.1:0',
      '--token',
      TOKEN,
      '--json',
      '--log-level',
      'warn',
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  track(child, 'svm');
  let out = '';
  const line = await new Promise<{ url: string; metrics: string }>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`the SVM did not listen within 30 s: ${out}`)), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const l = out.split('\n').find((x) => x.includes('"listening"'));
      if (l) {
        clearTimeout(t);
        resolve(JSON.parse(l) as { url: string; metrics: string });
      }
    });
    child.once('exit', (c) => reject(new Error(`the SVM exited (${c}): ${out}`)));
  });
  return {
    url: line.url,
    http: line.metrics.replace(/\/metrics$/, ''),
    pid: child.pid!,
    stop: () =>
      new Promise<void>((r) => {
        child.once('exit', () => r());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 10_000).unref();
      }),
  };
}

let agentSeq = 0;
/** An agent with its own id: hello, welcome, `lookups` lookups of unknown hashes answered. */
async function agent(url: string, lookups: number): Promise<RawAgent> {
  const a = await rawAgent(url, TOKEN, false);
  const id = ++agentSeq;
  a.ws.send(
    JSON.stringify({ t: 'hello', v: 1, token: TOKEN, agentId: `sizing-${id}`, host: `guest-${id}`, os: 'linux', agentVersion: '0' }),
  );
  await a.next((m) => m.t === 'welcome', 30_000);
  for (let i = 1; i <= lookups; i++)
    a.ws.send(encodeMessage({ t: 'lookup', id: i, sha256: crypto.randomBytes(32).toString('hex'), size: 1 }));
  for (let i = 1; i <= lookups; i++) await a.verdict(i, 30_000);
  a.msgs.length = 0;
  return a;
}

async function memoryNow(httpBase: string): Promise<{ rss: number; heap: number }> {
  // Two readings 1 s apart, the lower: a GC in between is likely.
  const read = async () => {
    const t = await get(`${httpBase}/metrics`);
    return { rss: metric(t, 'process_resident_memory_bytes'), heap: metric(t, 'nodejs_heap_size_used_bytes') };
  };
  const a = await read();
  await sleep(1000);
  const b = await read();
  return { rss: Math.min(a.rss, b.rss), heap: Math.min(a.heap, b.heap) };
}

/** `n` requests kept in flight per agent for `ms`: how many completed. */
async function keepBusy(agents: RawAgent[], inFlight: number, ms: number, send: (a: RawAgent, id: number) => void): Promise<number> {
  const end = performance.now() + ms;
  let done = 0;
  await Promise.all(
    agents.map(async (a) => {
      const lanes = Array.from({ length: inFlight }, (_, i) => i + 1);
      await Promise.all(
        lanes.map(async (id) => {
          while (performance.now() < end) {
            send(a, id);
            const v = (await a.verdict(id, 60_000)) as VerdictMsg;
            if (v.verdict === 'error') throw new Error(`error verdict: ${JSON.stringify(v)}`);
            done++;
          }
        }),
      );
      a.msgs.length = 0;
    }),
  );
  return done;
}

async function rates(url: string, seconds: number): Promise<{ lookupsPerSec: number; uploadMBps: number; uploads: number }> {
  const busy = await Promise.all(Array.from({ length: 4 }, () => agent(url, 0)));
  // Lookups of one known hash per agent: shared cache hits after the first upload.
  const known = crypto.randomBytes(4096);
  const knownSha = crypto.createHash('sha256').update(known).digest('hex');
  sendUpload(busy[0]!, 1, known);
  await busy[0]!.verdict(1);
  const t0 = performance.now();
  const lookups = await keepBusy(busy, 32, seconds * 1000, (a, id) =>
    a.ws.send(encodeMessage({ t: 'lookup', id, sha256: knownSha, size: known.length })),
  );
  const lookupsPerSec = lookups / ((performance.now() - t0) / 1000);
  const file = crypto.randomBytes(1 << 20);
  const t1 = performance.now();
  const uploads = await keepBusy(busy, 8, seconds * 1000, (a, id) => {
    crypto.randomFillSync(file, 0, 16); // distinct content: every upload is an engine run
    sendUpload(a, id, file);
  });
  const uploadMBps = (uploads * file.length) / 1e6 / ((performance.now() - t1) / 1000);
  for (const a of busy) a.ws.close();
  return { lookupsPerSec: round(lookupsPerSec, 0), uploadMBps: round(uploadMBps, 1), uploads };
}

async function memoryCachePerEntry(): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  const n = 200_000;
  for (let i = 0; i < 3; i++) gc?.();
  const before = process.memoryUsage().heapUsed;
  const c = new MemoryVerdictCache(n);
  for (let i = 0; i < n; i++)
    await c.set(
      { tenant: 'default', generation: 'clamav-27461-20241125082402', sha256: crypto.randomBytes(32).toString('hex') },
      {
        verdict: 'clean',
        engine: 'clamav',
      },
    );
  gc?.();
  // V8 heap (interned names, a little) plus the typed arrays, which are full at n entries. The
  // process's arrayBuffers figure is not used: Buffers of the phases before are freed meanwhile.
  const per = (Math.max(0, process.memoryUsage().heapUsed - before) + c.arrayBytes()) / n;
  if (c.stats().entries !== n) throw new Error('memory cache did not keep every entry');
  return round(per, 0);
}

async function redisPerVerdict(): Promise<SizingResult['redis']> {
  if (!redisBinary()) {
    say('redis-server not installed: no Redis figure');
    return undefined;
  }
  const r = await startRedis();
  try {
    const used = async () => Number(/used_memory:(\d+)/.exec(await r.command(['INFO', 'memory']))![1]);
    const cache = await RedisVerdictCache.connect({
      url: r.url,
      entries: 1000,
      ttlMs: 7 * 24 * 3600_000,
      timeoutMs: 2000,
      keyPrefix: 'lightagent:v1:',
    });
    const before = await used();
    const n = 100_000;
    for (let i = 0; i < n; i += 1000) {
      await Promise.all(
        Array.from({ length: 1000 }, () =>
          cache.set(
            { tenant: 'default', generation: 'clamav-27461-20241125082402', sha256: crypto.randomBytes(32).toString('hex') },
            { verdict: 'clean', engine: 'clamav' },
          ),
        ),
      );
    }
    const after = await used();
    const keys = Number(/:(\d+)/.exec(await r.command(['DBSIZE']))![1]);
    if (keys < n) throw new Error(`redis holds ${keys} keys, not ${n}`);
    await cache.close();
    return {
      verdicts: n,
      bytesPerVerdict: round((after - before) / n, 0),
      keyExample: 'lightagent:v1:default:clamav-27461-20241125082402:<64 hex>',
    };
  } finally {
    await r.stop();
  }
}

async function clamdRss(): Promise<SizingResult['clamd']> {
  if (!clamdBinary()) {
    say('clamd not installed: no clamd figure');
    return undefined;
  }
  const c = await startClamd();
  try {
    await sleep(1000);
    const status = fs.readFileSync(`/proc/${c.pid()}/status`, 'utf8');
    const kib = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)![1]);
    return {
      rssMiB: round(kib / 1024, 1),
      database: 'test/helpers/clamd.ts offline test database (EICAR .hdb + .ndb), not the official one',
    };
  } finally {
    await c.stop();
  }
}

async function main(): Promise<void> {
  configureLogging({ level: 'error', stderr: true });
  const sizes = steps;
  const rateAt = new Set(args['rate-at'].split(',').map(Number));
  const seconds = Number(args.seconds);
  const result: SizingResult = {
    machine: machineFacts(),
    loadAverage: [],
    memory: [],
    rates: [],
    memoryCacheBytesPerEntry: 0,
  };
  const svm = await startSvmChild();
  const agents: RawAgent[] = [];
  try {
    for (const n of sizes) {
      while (agents.length < n) {
        const batch = Math.min(50, n - agents.length);
        agents.push(...(await Promise.all(Array.from({ length: batch }, () => agent(svm.url, 3)))));
      }
      await sleep(2000);
      const m = await memoryNow(svm.http);
      const base = result.memory[0];
      const row: SizingResult['memory'][number] = { agents: n, rssMiB: round(m.rss / 1048576, 1), heapUsedMiB: round(m.heap / 1048576, 1) };
      if (base && n > 0) {
        row.rssKiBPerAgent = round(((m.rss / 1048576 - base.rssMiB) * 1024) / n, 1);
        row.heapKiBPerAgent = round(((m.heap / 1048576 - base.heapUsedMiB) * 1024) / n, 1);
      }
      result.memory.push(row);
      say(
        `${n} agents: SVM RSS ${row.rssMiB} MiB, heap used ${row.heapUsedMiB} MiB${row.rssKiBPerAgent !== undefined ? `, ${row.rssKiBPerAgent} KiB RSS / ${row.heapKiBPerAgent} KiB heap per agent` : ''}`,
      );
      if (rateAt.has(n)) {
        const r = await rates(svm.url, seconds);
        result.rates.push({ idleAgents: n, ...r });
        say(`  with ${n} idle agents + 4 busy: ${r.lookupsPerSec} lookups/s, ${r.uploadMBps} MB/s of uploads (${r.uploads} x 1 MiB)`);
      }
    }
  } finally {
    for (const a of agents) a.ws.terminate();
    await svm.stop();
  }
  result.memoryCacheBytesPerEntry = await memoryCachePerEntry();
  say(`memory verdict cache: ${result.memoryCacheBytesPerEntry} bytes per entry (V8 heap and typed arrays)`);
  const redis = await redisPerVerdict();
  if (redis) {
    result.redis = redis;
    say(`redis: ${redis.bytesPerVerdict} bytes of used_memory per verdict`);
  }
  const clamd = await clamdRss();
  if (clamd) {
    result.clamd = clamd;
    say(`clamd RSS with the test database: ${clamd.rssMiB} MiB`);
  }
  result.loadAverage = (await import('node:os')).loadavg().map((x) => round(x, 1));
  const json = JSON.stringify(result, null, 2);
  if (args.out) {
    fs.mkdirSync(path.dirname(path.resolve(args.out)), { recursive: true });
    fs.writeFileSync(args.out, json);
  }
  process.stdout.write(`${json}\n`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`sizing: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
