/**
 * `lightagent scan [options] PATH...` — recursive on-demand scan through an SVM.
 * Exit codes: 0 all clean, 1 something infected, 2 error (bad arguments, no SVM, files that could
 * not be judged).
 */
import path from 'node:path';
import { loadAgentConfig, requireSvm, type AgentConfig } from '../../config/agent.js';
import { FileScanner, type LocalVerdictStore, type ScanResult } from '../../scan/file-scanner.js';
import { walkTree, type WalkEntry, type WalkSkip } from '../../scan/tree-walker.js';
import { Exclusions } from '../../scan/exclusions.js';
import { formatBytes } from '../../config/units.js';
import { configureLogging } from '../../log.js';
import type { SvmClient } from '../../svm-link/index.js';
import { svmLinkFor } from '../../agent/svm-connection.js';
import { ProgressBar } from '../progress.js';
import { defineCommand } from '../command.js';
import { err, out, printJson } from '../output.js';
import { openLocalCache } from '../../agent/local-cache.js';
import { runDaemonScan } from './scan-daemon.js';
import { clientSocketDir } from './status.js';

export interface ScanSummary {
  files: number;
  bytes: number;
  clean: number;
  infected: Array<{ path: string; threat: string; sha256?: string }>;
  /** Infected with a threat listed in `exclude.threats`: reported, not counted as infected. */
  reported: Array<{ path: string; threat: string; sha256?: string }>;
  errors: Array<{ path: string; code: string; message: string }>;
  skipped: Array<{ path: string; code: string; message: string }>;
  uploadedBytes: number;
  readBytes: number;
  bySource: Record<string, number>;
  seconds: number;
  svm: { url: string; svmId?: string; generation?: string };
}

export const scanCommand = defineCommand({
  name: 'scan',
  summary: 'scan files and trees (PATH...) through an SVM, on demand',
  usage: '[options] PATH...',
  description: 'Scan files and directory trees through an SVM. Symbolic links are not followed unless asked.',
  options: {
    svm: { type: 'string', arg: 'URL', help: 'SVM to use (ws:// or wss://); default from the config file or LIGHTAGENT_SVM_URL' },
    token: { type: 'string', arg: 'T', help: 'tenant token; default from the config file or LIGHTAGENT_TOKEN' },
    config: { type: 'string', arg: 'F', help: 'agent config file (default /etc/lightagent/agent.yaml if it exists)' },
    json: { type: 'boolean', help: 'print one JSON document with every infected file and the totals' },
    jobs: { type: 'integer', arg: 'N', min: 1, max: 64, default: 16, help: 'files scanned in parallel (default 16)' },
    'follow-symlinks': { type: 'boolean', help: 'follow symbolic links (loops are detected and skipped)' },
    exclude: { type: 'string', multiple: true, arg: 'PATH', help: 'do not scan under PATH (repeatable)' },
    'no-cache': { type: 'boolean', help: 'do not use or update the local verdict cache' },
    'cache-file': { type: 'string', arg: 'F', help: 'local verdict cache file (default <state_dir>/cache.v1)' },
    verbose: { type: 'boolean', help: 'list every skipped or failed file' },
    daemon: {
      type: 'boolean',
      help: 'ask the running daemon for a scan job (root): PATHs inside `protect`, none for every protected tree (docs/scans.md)',
    },
    'no-wait': { type: 'boolean', help: 'with --daemon: start the job and return' },
    status: { type: 'boolean', help: "with --daemon: show the daemon's running or last scan job" },
    cancel: { type: 'boolean', help: 'with --daemon: stop the running scan job' },
    'socket-dir': { type: 'string', arg: 'DIR', help: "with --daemon: the daemon's socket directory (default from the config)" },
    'state-dir': { type: 'string', arg: 'DIR', help: "with --daemon: the daemon's --state-dir (its sockets are then in <DIR>.run)" },
  },
  positionals: true,
  footer:
    'Exit status: 0 clean, 1 infected files found, 2 error.\n' +
    'With --daemon the running daemon scans (shared cache, quarantine and events, idle priority); without it, this process does.',
  async handler({ values: o, positionals, usage }) {
    if (o.daemon || o.status || o.cancel) {
      if (!o.daemon) return usage('--status and --cancel go with --daemon');
      const bad = positionals.find((p) => !path.isAbsolute(p));
      if (bad !== undefined) return usage(`--daemon takes absolute paths (${bad})`);
      return runDaemonScan({
        socketDir: clientSocketDir(o),
        paths: positionals,
        json: o.json,
        wait: !o['no-wait'],
        status: o.status,
        cancel: o.cancel,
      });
    }
    if (positionals.length === 0) return usage('name at least one PATH to scan');
    const jobs = o.jobs;
    const cfg: AgentConfig = loadAgentConfig({ file: o.config, flags: { svm: o.svm, token: o.token } });
    requireSvm(cfg);
    configureLogging({ level: cfg.log.level, ...(cfg.log.file ? { file: cfg.log.file } : {}) });
    const link: SvmClient = svmLinkFor(cfg, { maxInFlight: Math.max(jobs * 2, 8) });
    let cache: Awaited<ReturnType<typeof openLocalCache>> | undefined;
    try {
      await link.connect();
      if (!o['no-cache']) cache = await openLocalCache(cfg, o['cache-file'], link.generation!);
      const summary = await runScan(positionals, {
        link,
        cfg,
        cache: cache?.store,
        jobs,
        followSymlinks: o['follow-symlinks'],
        exclude: o.exclude ?? [],
        progress: o.json ? undefined : new ProgressBar(),
      });
      if (o.json) printJson(summary);
      else printSummary(summary, o.verbose);
      if (summary.infected.length > 0) return 1;
      return summary.errors.length > 0 ? 2 : 0;
    } finally {
      if (cache) await cache.close();
      link.close();
    }
  },
});

interface RunScanOptions {
  link: SvmClient;
  cfg: AgentConfig;
  cache?: LocalVerdictStore | undefined;
  jobs: number;
  followSymlinks: boolean;
  exclude: string[];
  progress?: ProgressBar | undefined;
}

/**
 * The config's exclusions for an on-demand scan: `exclude` (the --exclude flags, or the state
 * directory for seal) replaces nothing: it adds folders to the config's own rules.
 */
function scanExclusions(o: RunScanOptions): Exclusions {
  return new Exclusions(o.cfg.exclude, o.exclude);
}

/** Walk `roots` and scan every regular file with `jobs` workers. Exported for tests and the daemon's rescan. */
export async function runScan(roots: string[], o: RunScanOptions): Promise<ScanSummary> {
  const start = performance.now();
  const scanner = new FileScanner({ link: o.link, cache: o.cache, maxFileSize: o.cfg.max_file_size, deadlineMs: o.cfg.deadline });
  const summary: ScanSummary = {
    files: 0,
    bytes: 0,
    clean: 0,
    infected: [],
    reported: [],
    errors: [],
    skipped: [],
    uploadedBytes: 0,
    readBytes: 0,
    bySource: {},
    seconds: 0,
    svm: { url: o.link.url },
  };
  const queue: WalkEntry[] = [];
  let walkDone = false;
  let totalFiles = 0;
  let totalBytes = 0;
  const parked: Array<() => void> = [];
  const wakeAll = () => {
    for (const r of parked.splice(0)) r();
  };
  const ex = scanExclusions(o);
  const onSkip = (s: WalkSkip) => summary.skipped.push({ path: s.path, code: s.code, message: s.message });

  // The walker runs ahead of the scanners by at most WALK_AHEAD entries: an unbounded queue of
  // stats for a big tree cost hundreds of MB (397 MB RSS for /usr).
  const WALK_AHEAD = 8192;
  let head = 0;
  let resumeWalker: (() => void) | undefined;
  const walker = (async () => {
    try {
      for await (const e of walkTree(roots, {
        followSymlinks: o.followSymlinks,
        exclude: ex.prefixes,
        excludeFile: ex.noPaths ? undefined : (p) => ex.path(p) !== undefined,
        onSkip,
      })) {
        queue.push(e);
        totalFiles++;
        totalBytes += e.size;
        wakeAll();
        if (queue.length - head > WALK_AHEAD) await new Promise<void>((r) => (resumeWalker = r));
      }
    } finally {
      walkDone = true;
      wakeAll();
    }
  })();

  const record = (r: ScanResult) => {
    summary.files++;
    summary.bytes += r.size;
    summary.uploadedBytes += r.uploaded;
    summary.readBytes += r.read;
    summary.bySource[r.source] = (summary.bySource[r.source] ?? 0) + 1;
    // exclude.sha256: that content is clean; exclude.threats: reported, not counted as infected.
    if (r.outcome === 'clean' || (r.outcome === 'infected' && ex.sha256(r.sha256))) summary.clean++;
    else if (r.outcome === 'infected' && ex.threat(r.threat))
      summary.reported.push({ path: r.path, threat: r.threat ?? 'Unknown-Threat', ...(r.sha256 ? { sha256: r.sha256 } : {}) });
    else if (r.outcome === 'infected')
      summary.infected.push({ path: r.path, threat: r.threat ?? 'Unknown-Threat', ...(r.sha256 ? { sha256: r.sha256 } : {}) });
    else if (r.outcome === 'skipped')
      summary.skipped.push({ path: r.path, code: r.error?.code ?? 'LA_SKIP', message: r.error?.message ?? 'skipped' });
    else summary.errors.push({ path: r.path, code: r.error?.code ?? 'LA_ERR_SCAN', message: r.error?.message ?? 'scan failed' });
    o.progress?.update({
      files: summary.files,
      totalFiles,
      bytes: summary.bytes,
      totalBytes,
      totalKnown: walkDone,
      infected: summary.infected.length,
    });
  };

  const worker = async () => {
    for (;;) {
      if (head < queue.length) {
        const e = queue[head]!;
        head++;
        if (resumeWalker && queue.length - head < WALK_AHEAD / 2) {
          resumeWalker();
          resumeWalker = undefined;
        }
        if (head >= 4096 && head * 2 >= queue.length) {
          queue.splice(0, head); // keep the queue's memory bounded by what the walker is ahead
          head = 0;
        }
        record(await scanner.scanPath(e.path, e.stat));
        continue;
      }
      if (walkDone) return;
      await new Promise<void>((r) => parked.push(r));
    }
  };
  await Promise.all([walker, ...Array.from({ length: o.jobs }, worker)]);
  o.progress?.update(
    { files: summary.files, totalFiles, bytes: summary.bytes, totalBytes, totalKnown: true, infected: summary.infected.length },
    true,
  );
  o.progress?.done();
  summary.seconds = (performance.now() - start) / 1000;
  const w = o.link.welcome;
  if (w) summary.svm = { url: o.link.url, svmId: w.svmId, generation: w.generation };
  return summary;
}

function printSummary(s: ScanSummary, verbose: boolean): void {
  for (const i of s.infected) out(`INFECTED  ${i.path}  ${i.threat}`);
  for (const i of s.reported) out(`REPORTED  ${i.path}  ${i.threat} (excluded threat: not counted)`);
  for (const e of s.errors) err(`ERROR     ${e.path}: ${e.message} (${e.code})`);
  if (verbose) for (const k of s.skipped) err(`skipped   ${k.path}: ${k.message}`);
  const rate = s.seconds > 0 ? s.bytes / s.seconds : 0;
  out(
    [
      `Scanned ${s.files} files, ${formatBytes(s.bytes)} in ${s.seconds.toFixed(1)} s (${formatBytes(rate)}/s)`,
      `  clean ${s.clean}, infected ${s.infected.length}, errors ${s.errors.length}, skipped ` +
        `${s.skipped.length}${s.skipped.length && !verbose ? ' (--verbose lists them)' : ''}`,
      `  uploaded to the SVM: ${formatBytes(s.uploadedBytes)}; read locally: ${formatBytes(s.readBytes)}`,
      `  answered by: ${
        Object.entries(s.bySource)
          .map(([k, v]) => `${k} ${v}`)
          .join(', ') || '-'
      }`,
      `  SVM ${s.svm.url}${s.svm.svmId ? ` (${s.svm.svmId}, signatures ${s.svm.generation})` : ''}`,
    ].join('\n'),
  );
}
