/**
 * Added latency per open(), measured side by side in one run on a tmpfs made for the run:
 *
 *   none       no agent
 *   miss       agent just started, empty local cache, SVM has never seen the files (upload)
 *   svm-hit    agent with an empty local cache, SVM already knows the files (lookup only)
 *   local-hit  agent restarted with its cache on disk: identity hits, no kernel marks yet
 *   warm       the same files again: kernel ignore marks, no event should reach the agent
 *
 * Each pass opens+closes every file once (FILES distinct small files), timing each open in a child
 * process; p50/p99/p999 in microseconds. Events per warm open come from the agent's counters.
 *
 *   sudo node build/bench/onaccess/open-latency.js [--files N]
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { waitLine } from './children.js';

const args = parseArgs({ options: { files: { type: 'string' }, out: { type: 'string' } } }).values;
const FILES = Number(args.files ?? 5000);
const CLI = new URL('../../src/cli/lightagent.js', import.meta.url).pathname;
const SVM_CLI = new URL('../../src/cli/lightagent-svm.js', import.meta.url).pathname;
if (process.getuid?.() !== 0) {
  process.stderr.write('bench/onaccess/open-latency: needs root (fanotify, tmpfs)\n');
  process.exit(2);
}
const started: ChildProcess[] = [];
const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'la-openlat-'));
const state = fs.mkdtempSync(path.join(os.tmpdir(), 'la-openlat-state-'));
process.on('exit', () => {
  for (const c of started) if (c.exitCode === null) c.kill('SIGKILL');
  spawnSync('umount', ['-l', mnt]);
});
setTimeout(() => process.exit(3), 20 * 60_000).unref();

// The timing child: opens each listed file once, prints one latency (ns) per line.
const TIMER = `
const fs = require('fs');
const files = fs.readFileSync(0, 'utf8').split('\\n').filter(Boolean);
const out = new Float64Array(files.length);
for (let i = 0; i < files.length; i++) {
  const t = process.hrtime.bigint();
  const fd = fs.openSync(files[i], 'r');
  fs.closeSync(fd);
  out[i] = Number(process.hrtime.bigint() - t);
}
process.stdout.write(Array.from(out).join('\\n'));
`;

function pass(files: string[]): number[] {
  const r = spawnSync(process.execPath, ['-e', TIMER], { input: files.join('\n'), maxBuffer: 64 << 20, timeout: 300_000 });
  if (r.status !== 0) throw new Error(`timing child failed: ${r.stderr}`);
  return r.stdout.toString().split('\n').map(Number).map((ns) => ns / 1000);
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]!;
}

async function agentStart(url: string): Promise<ChildProcess> {
  const a = spawn(process.execPath, [CLI, 'run', '--svm', url, '--token', 'bench-token', '--protect', mnt, '--state-dir', state, '--mode', 'fanotify', '--log-file', path.join(state, 'agent.log'), '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  started.push(a);
  await waitLine(a, /"event":"started"/);
  return a;
}
async function agentStop(a: ChildProcess): Promise<void> {
  a.kill('SIGTERM');
  await new Promise((r) => a.once('exit', r));
}
async function agentStats(a: ChildProcess): Promise<Record<string, number>> {
  const f = path.join(state, 'status.json');
  fs.rmSync(f, { force: true });
  a.kill('SIGUSR2');
  for (let i = 0; i < 100 && !fs.existsSync(f); i++) await new Promise((r) => setTimeout(r, 50));
  return JSON.parse(fs.readFileSync(f, 'utf8')).backend;
}

async function main() {
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512m', 'tmpfs', mnt]);
  const files: string[] = [];
  for (let i = 0; i < FILES; i++) {
    const f = path.join(mnt, `d${i % 50}`, `f${i}.txt`);
    fs.mkdirSync(path.dirname(f), { recursive: true });
    fs.writeFileSync(f, crypto.randomBytes(1024 + (i % 3000)));
    files.push(f);
  }
  const svm = spawn(process.execPath, [SVM_CLI, '--listen', '127.0.0.1:0', '--token', 'bench-token', '--json', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'inherit'] });
  started.push(svm);
  const url = (JSON.parse(await waitLine(svm, /\{.*"url".*\}/)) as { url: string }).url;

  const series: Record<string, number[]> = {};
  series.none = pass(files);
  let agent = await agentStart(url);
  series.miss = pass(files);
  await agentStop(agent);
  fs.rmSync(path.join(state, 'cache.v1'), { force: true });
  agent = await agentStart(url);
  series['svm-hit'] = pass(files);
  await agentStop(agent); // saves the cache
  agent = await agentStart(url);
  series['local-hit'] = pass(files);
  const before = await agentStats(agent);
  series.warm = pass(files);
  const afterS = await agentStats(agent);
  await agentStop(agent);
  series['none-again'] = pass(files);
  svm.kill('SIGTERM');

  const perm = (s: Record<string, number>) => (s.open ?? 0) + (s.exec ?? 0);
  const eventsPerWarmOpen = (perm(afterS) - perm(before)) / FILES;
  const rows = Object.entries(series).map(([k, v]) => ({ variant: k, p50: pct(v, 0.5), p99: pct(v, 0.99), p999: pct(v, 0.999) }));
  const base = rows.find((r) => r.variant === 'none')!;
  let md = `| variant | p50 us | p99 us | p99.9 us | added p50 us | added p99 us |\n|---|---|---|---|---|---|\n`;
  for (const r of rows) md += `| ${r.variant} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} | ${r.p999.toFixed(1)} | ${(r.p50 - base.p50).toFixed(1)} | ${(r.p99 - base.p99).toFixed(1)} |\n`;
  md += `\nevents raised per warm open: ${eventsPerWarmOpen} (${perm(afterS) - perm(before)} events for ${FILES} opens)\n`;
  const out = args.out ?? path.join(path.dirname(new URL(import.meta.url).pathname), '../../../bench/results/open-latency.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({ machine: { kernel: os.release(), cpus: os.cpus().length, node: process.version }, files: FILES, rows, eventsPerWarmOpen }, null, 2));
  process.stdout.write(md);
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`open-latency failed: ${(e as Error).stack}\n`);
    process.exit(1);
  },
);
