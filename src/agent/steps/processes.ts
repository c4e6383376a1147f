import { ProcessMonitor, processSettings } from '../../processes/process-monitor.js';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** Before the scanner: the handler attributes denials and detections through it. */
export const processesStep: Step<DaemonContext> = {
  name: 'processes',
  async run(ctx) {
    const processes = await ProcessMonitor.start(processSettings(ctx.cfg));
    ctx.processes = processes;
    return () => processes.stop();
  },
};
