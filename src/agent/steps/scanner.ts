import type { AgentConfig } from '../../config/agent.js';
import { FileScanner } from '../../scan/file-scanner.js';
import { OnAccessHandler } from '../../scan/on-access.js';
import { Exclusions } from '../../scan/exclusions.js';
import { DetectionLog } from '../../store/detections.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

export const scannerStep: Step<DaemonContext> = {
  name: 'scanner',
  run(ctx) {
    const link = ctx.link!;
    ctx.detections = new DetectionLog(200, (d) => link.report(d));
    ctx.detections.on('detection', (d) => ctx.processes?.recordDetection(d));
    Object.assign(ctx, buildHandler(ctx.cfg, ctx));
    // Windows: each new process's image through the same scanner and response (the handler
    // and scanner of the moment: a reload replaces them).
    ctx.processes?.checkNewProcesses((image, pid) => ctx.handler!.started(image, pid, () => ctx.scanner!.scanPath(image)));
  },
};

/** The scanner and on-access handler for one configuration (start-up, and each reload). */
export function buildHandler(cfg: AgentConfig, ctx: DaemonContext): { scanner: FileScanner; handler: OnAccessHandler } {
  const scanner = new FileScanner({ link: ctx.link!, cache: ctx.cache!.store, maxFileSize: cfg.max_file_size, deadlineMs: cfg.deadline });
  const handler = new OnAccessHandler({
    scanner,
    detections: ctx.detections!,
    deferred: ctx.deferred!,
    quarantine: ctx.quarantine!,
    // A little under the gate's own deadline, so the policy answer (which also queues the
    // file) normally wins over the worker's backstop answer.
    deadlineMs: Math.max(50, cfg.deadline - Math.min(250, cfg.deadline / 4)),
    onSvmUnavailable: cfg.on_svm_unavailable,
    maxFileSize: cfg.max_file_size,
    processes: ctx.processes,
    // Compiled once per configuration: a reload builds a new handler, so new exclusions.
    exclusions: new Exclusions(cfg.exclude, [cfg.state_dir]),
  });
  return { scanner, handler };
}
