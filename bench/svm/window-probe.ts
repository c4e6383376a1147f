/**
 * Where does an open wait when it comes right after a burst of new files? A probe of the link's
 * window, no root and no fanotify: `node build/bench/svm/window-probe.js [--files 598] [--tries 3]`.
 *
 * Against a real `lightagent-svm` on loopback (builtin engine, a fresh one per try so nothing is
 * known), one FileScanner with a local cache starts the background scans of `files` files of new
 * content (random bytes, 1 KiB to 64 KiB: what the close-writes of an extract start), then at once
 * two opens are decided as the gate decides them:
 *   joined  the last file of the burst (its close-write scan is queued: the open joins it)
 *   fresh   a file of new content outside the burst (its own lookup and upload)
 * in two modes, alternated each try:
 *   fifo      every request in one class, the whole window (what the link did before classes)
 *   priority  the opens foreground, the burst background (at most 75% of the window)
 * (Starting the burst reads and hashes every file on this thread first, as the gate's close-writes
 * do, so the opens start after that.) Per open: ms from its start to its verdict, of which ms waiting for a window slot and ms at the SVM (from the
 * slot to the answer; ScanResult.svmTiming), and how many background scans had finished then.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VerdictCache } from '../../src/cache/verdict-cache.js';
import { FileScanner, type ScanResult } from '../../src/scan/file-scanner.js';
import { SvmLink } from '../../src/svm-link/index.js';
import { benchArgs } from '../lib/cli.js';
import { stopChild } from '../lib/harness.js';
import { startSvm, svmUrls, TOKEN } from '../onaccess/variants.js';

type Mode = 'fifo' | 'priority';

interface OpenResult {
  ms: number;
  windowWaitMs: number | undefined;
  svmMs: number | undefined;
  outcome: string;
  bgDone: number;
}

async function decide(scanner: FileScanner, file: string, mode: Mode, bgDone: () => number): Promise<OpenResult> {
  const t0 = performance.now();
  const fd = fs.openSync(file, 'r');
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    const r: ScanResult = await scanner.scanFdNow(fd, file, st, mode === 'priority' ? 'foreground' : 'background');
    return {
      ms: Math.round(performance.now() - t0),
      windowWaitMs: r.svmTiming?.windowWaitMs,
      svmMs: r.svmTiming?.svmMs,
      outcome: r.outcome,
      bgDone: bgDone(),
    };
  } finally {
    fs.closeSync(fd);
  }
}

async function oneTry(mode: Mode, n: number, dir: string, logFile: string) {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const files = Array.from({ length: n }, (_, i) => {
    const f = path.join(dir, `f${i}`);
    fs.writeFileSync(f, crypto.randomBytes(1024 + crypto.randomInt(63 * 1024)));
    return f;
  });
  const fresh = path.join(dir, 'fresh');
  fs.writeFileSync(fresh, crypto.randomBytes(16 * 1024));
  const svm = startSvm(logFile);
  try {
    const { url } = await svmUrls(svm);
    const link = new SvmLink({
      url,
      token: TOKEN,
      agentId: 'window-probe',
      host: os.hostname(),
      os: 'linux',
      agentVersion: '0',
      deadlineMs: 60_000,
      ...(mode === 'fifo' ? { backgroundShare: 1 } : {}),
    });
    await link.connect();
    const cache = await VerdictCache.open({ seed: 7n, capacity: 10_000 });
    const scanner = new FileScanner({ link, cache, maxFileSize: 1 << 26, deadlineMs: 60_000 });
    let done = 0;
    const t0 = performance.now();
    const bg = files.map((f) =>
      scanner.scanPath(f).then((r) => {
        done++;
        return r;
      }),
    );
    const [joined, freshR] = await Promise.all([
      decide(scanner, files[n - 1]!, mode, () => done),
      decide(scanner, fresh, mode, () => done),
    ]);
    const all = await Promise.all(bg);
    const burstMs = Math.round(performance.now() - t0);
    const st = link.windowStats;
    link.close();
    return {
      mode,
      burstMs,
      bgClean: all.filter((r) => r.outcome === 'clean').length,
      joined,
      fresh: freshR,
      window: { capacity: st.capacity, backgroundLimit: st.backgroundLimit, pacedChunks: st.pacedChunks },
    };
  } finally {
    await stopChild(svm);
  }
}

async function main() {
  const args = benchArgs(
    {
      name: 'bench/svm/window-probe',
      summary: `Where an open waits right after a burst of new files: one scanner against a real SVM starts the
background scans of a burst, then two opens are decided; the link's window fifo against priority,
alternated. No root, no fanotify; docs/benchmarks.md, "Decisions ahead of background scans".`,
    },
    {
      files: { type: 'string', arg: 'N', number: 'int', min: 1, help: 'files of new content in the burst, 1-64 KiB each (default: 598)' },
      tries: { type: 'string', arg: 'N', number: 'int', min: 1, help: 'tries, each mode once per try with a fresh SVM (default: 3)' },
    },
  );
  const n = Number(args.values.files ?? 598);
  const tries = Number(args.values.tries ?? 3);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'la-window-probe-'));
  try {
    for (let t = 0; t < tries; t++) {
      for (const mode of (t % 2 ? ['priority', 'fifo'] : ['fifo', 'priority']) as Mode[]) {
        const r = await oneTry(mode, n, path.join(dir, 'files'), path.join(dir, 'svm.log'));
        console.log(JSON.stringify({ try: t + 1, ...r, loadavg: os.loadavg().map((x) => Math.round(x * 10) / 10) }));
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}
