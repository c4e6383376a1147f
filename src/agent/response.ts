/**
 * The response to a process behind a threat, by policy `on_detect`:
 *   deny           the access is denied and the file quarantined; the process lives (default)
 *   deny-and-kill  also SIGKILL the process that wrote an infected file (close-write) or whose
 *                  executable image was found infected after it started (a late verdict)
 * Never killed, whatever the policy: pid 1 (init; its death panics the kernel), kernel threads
 * (pid 2 and its children), the agent itself, and `protected_processes` (absolute exe paths, or
 * bare names matched against the exe's file name). A kill is of that exact process (pid + start
 * time, by pidfd), never of a later process that got its pid.
 */
import path from 'node:path';
import { logger } from '../log.js';
import { killExact, type KillResult } from '../platform/linux/pidfd.js';
import type { Attribution } from './attribution.js';

export type OnDetect = 'deny' | 'deny-and-kill';

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
}

export class ProcessResponse {
  private readonly log = logger('response');
  private readonly protectedPaths: Set<string>;
  private readonly protectedNames: Set<string>;
  private readonly selfPid: number;
  readonly counts = { killed: 0, spared: 0, failed: 0 };

  constructor(private readonly o: ResponseOptions) {
    this.selfPid = o.selfPid ?? process.pid;
    const prot = o.protectedProcesses ?? [];
    this.protectedPaths = new Set(prot.filter((p) => path.isAbsolute(p)));
    this.protectedNames = new Set(prot.filter((p) => !path.isAbsolute(p)));
  }

  get policy(): OnDetect {
    return this.o.onDetect;
  }

  /** Why `who` may never be killed, or undefined if it may. */
  protects(who: Attribution): Extract<ResponseOutcome, { action: 'spared' }>['why'] | undefined {
    if (who.pid === 1) return 'init';
    if (who.pid === 2 || who.ppid === 2) return 'kernel';
    if (who.pid === this.selfPid) return 'agent';
    if (who.source === 'none') return 'unknown-process';
    const exe = who.exe?.replace(/ \(deleted\)$/, '');
    if (exe && (this.protectedPaths.has(exe) || this.protectedNames.has(path.basename(exe)))) return 'protected';
    return undefined;
  }

  /** A process wrote an infected file, or runs an infected image: act by policy. Never throws. */
  respond(who: Attribution, why: 'wrote' | 'runs', file: string): ResponseOutcome {
    if (this.o.onDetect !== 'deny-and-kill') return { action: 'none', why: 'policy' };
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
      this.log.warn('killed the process behind a threat', { pid: who.pid, exe: who.exe, cmdline: who.cmdline, user: who.user, reason: why, file });
      return { action: 'killed' };
    }
    this.counts.failed++;
    this.log.warn('could not kill the process behind a threat', { pid: who.pid, exe: who.exe, result: r, reason: why, file });
    return { action: 'failed', why: r };
  }
}
