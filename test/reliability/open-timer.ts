/**
 * Timed opens for the reliability tests: every open is measured, and the slowest is what the
 * deadline promise is checked against. The agent itself is test/helpers/agent.ts.
 */
import { spawn } from 'node:child_process';
import { run } from '../helpers/procs.js';

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
