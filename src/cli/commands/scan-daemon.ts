/**
 * `lightagent scan --daemon [PATH...]`: ask the running daemon for a scan job over its control
 * socket (root), then follow it with a progress line until it ends (or `--no-wait`). `--status`
 * and `--cancel` act on the job that runs. The job itself is src/scan/scan-jobs.ts.
 */
import path from 'node:path';
import { request } from '../../control/client.js';
import { CONTROL_SOCKET, STATUS_SOCKET } from '../../control/local-sockets.js';
import type { ScanJobStatus } from '../../scan/scan-jobs.js';
import { err, out, printJson } from '../output.js';

export interface DaemonScanOptions {
  socketDir: string;
  paths: string[];
  json: boolean;
  wait: boolean;
  status: boolean;
  cancel: boolean;
  /** ms between progress polls (default 500). */
  pollMs?: number;
}

function line(j: ScanJobStatus): string {
  const c = j.counters;
  return (
    `job ${j.id} (${j.trigger}) ${j.state}: ${c.seen} files seen, ${c.scanned} scanned, ${c.skipped} skipped, ` +
    `${c.infected} infected, ${c.errors} errors`
  );
}

/** Exit status: 0 clean (or started / cancelled / status), 1 infected files found, 2 failed or errors. */
function exitFor(j: ScanJobStatus | undefined): number {
  if (!j) return 0;
  if (j.state === 'failed') return 2;
  if (j.counters.infected > 0) return 1;
  return j.counters.errors > 0 ? 2 : 0;
}

export async function runDaemonScan(o: DaemonScanOptions): Promise<number> {
  const control = path.join(o.socketDir, CONTROL_SOCKET);
  if (o.status) {
    const r = await request(path.join(o.socketDir, STATUS_SOCKET), { cmd: 'scan-status' });
    const job = (r.job ?? undefined) as ScanJobStatus | undefined;
    if (o.json) printJson({ job: job ?? null });
    else out(job ? line(job) : 'no scan job has run since the daemon started');
    return 0;
  }
  if (o.cancel) {
    const r = await request(control, { cmd: 'scan-cancel' });
    if (o.json) printJson({ cancelled: r.cancelled === true });
    else out(r.cancelled === true ? 'the running scan job was asked to stop' : 'no scan job was running');
    return 0;
  }
  const started = (await request(control, { cmd: 'scan-start', paths: o.paths })).job as ScanJobStatus;
  if (!o.wait) {
    if (o.json) printJson({ job: started });
    else out(`started ${line(started)}`);
    return 0;
  }
  const tty = !o.json && Boolean(process.stderr.isTTY);
  let job = started;
  for (;;) {
    const r = await request(control, { cmd: 'scan-status' });
    const now = r.job as ScanJobStatus | null;
    // Another job replaced ours (cannot while ours runs): report what we last saw.
    if (!now || now.id !== started.id) break;
    job = now;
    if (tty) process.stderr.write(`\r${line(job).slice(0, (process.stderr.columns || 100) - 1)}\x1b[K`);
    if (job.state !== 'running') break;
    await new Promise((res) => setTimeout(res, o.pollMs ?? 500));
  }
  if (tty) process.stderr.write('\r\x1b[K');
  if (o.json) printJson({ job });
  else {
    out(line(job));
    if (job.counters.infected > 0) err('infected files were quarantined: `lightagent events` and `lightagent quarantine list` name them');
  }
  return exitFor(job);
}
