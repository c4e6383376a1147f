/**
 * What one request/response round trip between two processes costs on this machine, before any
 * lightagent code (issue #22 item 1: how short the SVM round trip can be here). Each variant
 * sends a ~150-byte message (a lookup frame's size), waits for the answer, then sleeps 1 ms so
 * both sides are idle and must be woken, as an agent and an SVM are between first opens:
 *
 *   c-tcp       bench/micro/rtt-echo.c: a TCP echo over loopback in C, blocking reads
 *   node-tcp    a Node echo (net, setNoDelay) and a Node client, each in its own process
 *   node-ws     the same over `ws` as the agent and the SVM use it (zero mask, no deflate)
 *   svm-lookup  a real `lightagent-svm` (builtin engine, memory cache) answering a lookup of a
 *               hash it knows, from a raw lightagent/1 client: the SVM's share of a second
 *               guest's open, without the agent's side (fanotify, worker, hashing)
 *
 * Variants alternate each rep; the first 300 round trips of each run are warm-up and dropped.
 *
 *   node build/bench/micro/rtt-floor.js [--n 2000] [--reps 2] [--out FILE]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { encodeMessage } from '../../src/protocol/index.js';
import { zeroMask } from '../../src/svm-link/svm-link.js';
import { rawAgent, sendUpload } from '../../test/svm/helpers.js';
import { benchArgs } from '../lib/cli.js';
import { atCleanup, installCleanup, machineFacts, pct, round, say, stopChild, track, waitLine } from '../lib/harness.js';
import { startSvm, svmUrls, TOKEN } from '../onaccess/variants.js';

const ECHO_SRC = new URL('../../../bench/micro/rtt-echo.c', import.meta.url).pathname;
const WARMUP = 300;
const PAYLOAD = JSON.stringify({ t: 'lookup', id: 123456, sha256: 'a'.repeat(64), size: 4096, pad: 'x'.repeat(40) });

export interface RttRow {
  variant: string;
  p50us: number;
  p99us: number;
  n: number;
}

/** An echo server in a child Node process: `net` or `ws`. Resolves with its port. */
async function echoChild(kind: 'net' | 'ws'): Promise<{ child: ChildProcess; port: number }> {
  const wsPath = JSON.stringify(new URL(import.meta.resolve('ws')).pathname);
  const src =
    kind === 'net'
      ? `const s = require('net').createServer((c) => { c.setNoDelay(true); c.on('data', (d) => c.write(d)); });
         s.listen(0, '127.0.0.1', () => console.log('port ' + s.address().port));`
      : `const { WebSocketServer } = require(${wsPath});
         const w = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
         w.on('connection', (s) => s.on('message', (m, bin) => s.send(m, { binary: bin })));
         w.on('listening', () => console.log('port ' + w.address().port));`;
  const child = track(spawn(process.execPath, ['-e', src], { stdio: ['ignore', 'pipe', 'inherit'] }), `echo ${kind}`);
  const port = Number(/port (\d+)/.exec(await waitLine(child, /port \d+/, 10_000))![1]);
  return { child, port };
}

/** `n` round trips, 1 ms apart: `send` starts one, the promise it returns ends it. */
async function loop(n: number, send: () => Promise<void>): Promise<number[]> {
  const us: number[] = [];
  for (let i = 0; i < n + WARMUP; i++) {
    await new Promise((r) => setTimeout(r, 1));
    const t = process.hrtime.bigint();
    await send();
    if (i >= WARMUP) us.push(Number(process.hrtime.bigint() - t) / 1000);
  }
  return us;
}

async function cTcp(n: number, bin: string): Promise<number[]> {
  const r = spawnSync(bin, [String(n + WARMUP)], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`rtt-echo exited ${r.status}: ${r.stderr}`);
  return r.stdout.trim().split('\n').map(Number).slice(WARMUP);
}

/** A Node client against a Node echo child, over `net` or `ws`: `n` round trips. */
async function nodeEcho(kind: 'net' | 'ws', n: number): Promise<number[]> {
  const { child, port } = await echoChild(kind);
  try {
    let done: () => void = () => {};
    let send: () => void;
    let close: () => void;
    if (kind === 'net') {
      const c = net.connect(port, '127.0.0.1');
      c.setNoDelay(true);
      await new Promise((r) => c.once('connect', r));
      const msg = Buffer.from(PAYLOAD);
      let want = 0; // a TCP echo may come back in pieces
      c.on('data', (d) => {
        want -= d.length;
        if (want <= 0) done();
      });
      send = () => {
        want = msg.length;
        c.write(msg);
      };
      close = () => c.destroy();
    } else {
      const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false, generateMask: zeroMask });
      await new Promise((r, j) => ws.once('open', r).once('error', j));
      ws.on('message', () => done());
      send = () => ws.send(PAYLOAD);
      close = () => ws.close();
    }
    const us = await loop(
      n,
      () =>
        new Promise<void>((r) => {
          done = r;
          send();
        }),
    );
    close();
    return us;
  } finally {
    await stopChild(child);
  }
}

async function svmLookup(n: number, work: string): Promise<number[]> {
  const svm = startSvm(path.join(work, 'svm.log'));
  try {
    const { url } = await svmUrls(svm);
    svm.stdout!.resume();
    const a = await rawAgent(url, TOKEN, true, { generateMask: zeroMask });
    await a.next((m) => m.t === 'welcome', 10_000);
    const known = crypto.randomBytes(4096);
    let id = 1;
    sendUpload(a, id, known);
    await a.verdict(id, 10_000);
    const sha256 = crypto.createHash('sha256').update(known).digest('hex');
    const us = await loop(n, async () => {
      id++;
      a.ws.send(encodeMessage({ t: 'lookup', id, sha256, size: known.length }));
      const v = await a.verdict(id, 10_000);
      if (v.verdict !== 'clean') throw new Error(`lookup answered ${JSON.stringify(v)}`);
    });
    a.ws.close();
    return us;
  } finally {
    await stopChild(svm);
  }
}

async function main(): Promise<void> {
  const args = benchArgs(
    {
      name: 'bench/micro/rtt-floor',
      summary: `What one ~150-byte request/response between two processes costs here, 1 ms apart: a C TCP echo,
Node over net and over ws, and a real SVM answering a lookup; variants alternated each rep.
docs/benchmarks.md, "Where an SVM round trip goes".`,
    },
    {
      n: {
        type: 'string',
        arg: 'N',
        number: 'int',
        min: 1,
        help: 'timed round trips per variant and rep, after 300 of warm-up (default: 2000)',
      },
      reps: { type: 'string', arg: 'N', number: 'int', min: 1, help: 'repetitions, each variant once per rep (default: 2)' },
      out: { type: 'string', arg: 'FILE', help: 'write the rows and the machine facts as JSON there too' },
    },
  ).values;
  const n = Number(args.n ?? 2000);
  const reps = Number(args.reps ?? 2);
  installCleanup('bench/micro/rtt-floor', 10 * 60_000);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'la-rtt-'));
  atCleanup(() => fs.rmSync(work, { recursive: true, force: true }));
  const bin = path.join(work, 'rtt-echo');
  const cc = spawnSync('cc', ['-O2', '-o', bin, ECHO_SRC], { encoding: 'utf8' });
  if (cc.status !== 0) throw new Error(`cc ${ECHO_SRC} failed (is a C compiler installed?): ${cc.stderr || cc.error?.message}`);
  const variants: Array<[string, () => Promise<number[]>]> = [
    ['c-tcp', () => cTcp(n, bin)],
    ['node-tcp', () => nodeEcho('net', n)],
    ['node-ws', () => nodeEcho('ws', n)],
    ['svm-lookup', () => svmLookup(n, work)],
  ];
  const all = new Map<string, number[]>(variants.map(([v]) => [v, []]));
  for (let rep = 1; rep <= reps; rep++)
    for (const [name, run] of variants) {
      const us = await run();
      all.get(name)!.push(...us);
      say(`rep ${rep}/${reps} ${name}: p50 ${round(pct(us, 0.5), 1)} us, p99 ${round(pct(us, 0.99), 1)} us`);
    }
  const rows: RttRow[] = [...all].map(([variant, us]) => ({
    variant,
    p50us: round(pct(us, 0.5), 1),
    p99us: round(pct(us, 0.99), 1),
    n: us.length,
  }));
  if (args.out) fs.writeFileSync(args.out, JSON.stringify({ machine: machineFacts(), n, reps, rows }, null, 2));
  let md = '| round trip, ~150 B each way, 1 ms apart | p50 us | p99 us | n |\n|---|---|---|---|\n';
  for (const r of rows) md += `| ${r.variant} | ${r.p50us} | ${r.p99us} | ${r.n} |\n`;
  process.stdout.write(md);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`bench/micro/rtt-floor failed: ${(e as Error)?.stack ?? String(e)}\n`);
      process.exit(1);
    },
  );
}
