/**
 * A real `lightagent run` (fanotify) for the reliability tests, plus timed opens: every open is
 * measured, and the slowest is what the deadline promise is checked against.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { CLI, eventually, run, spawnNode, waitFor, type Proc } from '../helpers/procs.js';

export interface Agent extends Proc {
  stateDir: string;
  status: () => Promise<Record<string, any>>;
}

export async function startAgent(url: string, protect: string, stateDir: string, extra: string[] = [], watchdogMs = 240_000): Promise<Agent> {
  const p = spawnNode(CLI, ['run', '--svm', url, '--token', 'test-token', '--protect', protect, '--state-dir', stateDir, '--mode', 'fanotify', '--json', ...extra], { watchdogMs });
  await waitFor(p, /"event":"started"/, 30_000);
  const statusFile = path.join(stateDir, 'status.json');
  return {
    ...p,
    stateDir,
    status: async () => {
      fs.rmSync(statusFile, { force: true });
      p.child.kill('SIGUSR2');
      await eventually(() => fs.existsSync(statusFile), 10_000, 'status.json');
      return JSON.parse(fs.readFileSync(statusFile, 'utf8'));
    },
  };
}

export function quarantined(stateDir: string, timeoutMs = 20_000): Array<{ originalPath: string; threat: string; id: string }> {
  const r = run(process.execPath, [CLI, 'quarantine', 'list', '--json', '--state-dir', stateDir], timeoutMs);
  if (r.status !== 0) throw new Error(`quarantine list failed (status ${r.status}, ${r.ms.toFixed(0)} ms): ${r.stderr}`);
  return JSON.parse(r.stdout);
}

/** Open times of every `cat` run through `timedCat`, for the report and the deadline check. */
export class OpenTimer {
  readonly times: number[] = [];
  /** `cat file` with a hard 20 s cap; returns exit status and milliseconds. */
  cat(file: string): { status: number | null; ms: number; stderr: string } {
    const r = run('cat', [file], 20_000);
    this.times.push(r.ms);
    return { status: r.status, ms: r.ms, stderr: r.stderr };
  }
  /** The same, without blocking this thread (the event loop must keep running, e.g. for a proxy in this process). */
  async catAsync(file: string): Promise<{ status: number | null; ms: number }> {
    const t0 = performance.now();
    const c = spawn('cat', [file], { stdio: ['ignore', 'ignore', 'ignore'] });
    const kill = setTimeout(() => c.kill('SIGKILL'), 20_000);
    const status = await new Promise<number | null>((r) => c.once('exit', (code) => r(code)));
    clearTimeout(kill);
    const ms = performance.now() - t0;
    this.times.push(ms);
    return { status, ms };
  }
  get max(): number {
    return Math.max(0, ...this.times);
  }
}
