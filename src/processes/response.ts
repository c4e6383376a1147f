/**
 * The response to a process behind a threat, by policy `on_detect`:
 *   deny           the access is denied and the file quarantined; the process lives (default)
 *   deny-and-kill  also SIGKILL the process that wrote an infected file (close-write) or whose
 *                  executable image was found infected after it started (a late verdict)
 * Windows has no exec gate (no minifilter): a process started from an infected image cannot be
 * refused, so there it is terminated whatever the policy (reason 'started': the Windows
 * equivalent of a denied exec), through the `kill` hook (TerminateProcess).
 * Never killed, whatever the policy: pid 1 (init; its death panics the kernel), kernel threads
 * (pid 2 and its children), on Windows pid 0 (System Idle) and 4 (System), the agent itself, and
 * `protected_processes` (absolute exe paths, or bare names matched against the exe's file name;
 * case-insensitive on Windows). A kill is of that exact process (pid + start time, by pidfd, on
 * Linux), never of a later process that got its pid.
 */
import path from 'node:path';
import { logger } from '../log.js';
import { killExact, type KillResult } from '../platform/linux/pidfd.js';
import type { Attribution } from '../store/events-file.js';

export type OnDetect = 'deny' | 'deny-and-kill';

/** wrote: close-write of an infected file; runs: a late verdict on an allowed exec; started: Windows, a new process's image is infected. */
export type ResponseReason = 'wrote' | 'runs' | 'started';

export type ResponseOutcome =
  | { action: 'none'; why: 'policy' }
  | { action: 'spared'; why: 'init' | 'kernel' | 'agent' | 'protected' | 'unknown-process' }
  | { action: 'killed' }
  | { action: 'failed'; why: Exclude<KillResult, 'killed'> };

export interface ResponseOptions {
  onDetect: OnDetect;
  protectedProcesses?: readonly string[];
  /** The agent's pid (default process.pid). */
  selfPid?: number;
  /** How to kill (tests); default killExact. */
  kill?: (pid: number, startTicks: number | undefined) => KillResult;
  /** Whose rules for pids, paths and names (default process.platform; tests). */
  platform?: NodeJS.Platform;
}

export class ProcessResponse {
  private readonly log = logger('response');
  private readonly protectedPaths: Set<string>;
  private readonly protectedNames: Set<string>;
  private readonly selfPid: number;
  readonly counts = { killed: 0, spared: 0, failed: 0 };

  private readonly windows: boolean;

  constructor(private readonly o: ResponseOptions) {
    this.selfPid = o.selfPid ?? process.pid;
    this.windows = (o.platform ?? process.platform) === 'win32';
    const prot = (o.protectedProcesses ?? []).map((p) => this.fold(p));
    const abs = (p: string) => (this.windows ? path.win32.isAbsolute(p) : path.posix.isAbsolute(p));
    this.protectedPaths = new Set(prot.filter(abs));
    this.protectedNames = new Set(prot.filter((p) => !abs(p)));
  }

  /** Windows paths and names compare case-insensitively. */
  private fold(s: string): string {
    return this.windows ? s.toLowerCase() : s;
  }

  get policy(): OnDetect {
    return this.o.onDetect;
  }

  /** A reload or a policy from the SVM changed on_detect: it holds from the next detection. */
  set policy(onDetect: OnDetect) {
    this.o.onDetect = onDetect;
  }

  /** Why `who` may never be killed, or undefined if it may. */
  protects(who: Attribution): Extract<ResponseOutcome, { action: 'spared' }>['why'] | undefined {
    if (who.pid === 1) return 'init';
    if (this.windows ? who.pid === 0 || who.pid === 4 : who.pid === 2 || who.ppid === 2) return 'kernel';
    if (who.pid === this.selfPid) return 'agent';
    if (who.source === 'none') return 'unknown-process';
    const raw = who.exe?.replace(/ \(deleted\)$/, '');
    const exe = raw === undefined ? undefined : this.fold(raw);
    const base = (p: string) => (this.windows ? path.win32.basename(p) : path.posix.basename(p));
    if (exe && (this.protectedPaths.has(exe) || this.protectedNames.has(base(exe)))) return 'protected';
    return undefined;
  }

  /**
   * A process wrote an infected file, or runs an infected image: act by policy. 'started' (Windows:
   * a new process whose image is infected, which nothing could refuse) is terminated under either
   * policy. Never throws.
   */
  respond(who: Attribution, why: ResponseReason, file: string): ResponseOutcome {
    if (this.o.onDetect !== 'deny-and-kill' && why !== 'started') return { action: 'none', why: 'policy' };
    const spare = this.protects(who);
    if (spare) {
      this.counts.spared++;
      this.log.warn('not killing a protected process', { pid: who.pid, exe: who.exe, why: spare, file });
      return { action: 'spared', why: spare };
    }
    let r: KillResult;
    try {
      r = (this.o.kill ?? killExact)(who.pid, who.startTicks);
    } catch {
      r = 'failed';
    }
    if (r === 'killed') {
      this.counts.killed++;
      this.log.warn('killed the process behind a threat', {
        pid: who.pid,
        exe: who.exe,
        cmdline: who.cmdline,
        user: who.user,
        reason: why,
        file,
      });
      return { action: 'killed' };
    }
    this.counts.failed++;
    this.log.warn('could not kill the process behind a threat', { pid: who.pid, exe: who.exe, result: r, reason: why, file });
    return { action: 'failed', why: r };
  }
}
