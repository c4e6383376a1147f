import fs from 'node:fs';
import type { Step } from '../step-runner.js';
import type { DaemonContext } from './context.js';

/** The state directory holds the cache seed, journals and quarantine: root's alone. */
export const stateDirStep: Step<DaemonContext> = {
  name: 'state-dir',
  run({ cfg }) {
    fs.mkdirSync(cfg.state_dir, { recursive: true, mode: 0o700 });
    fs.chmodSync(cfg.state_dir, 0o700);
  },
};
