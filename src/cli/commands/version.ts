/** `lightagent version [--json]`. */
import { AGENT_VERSION } from '../../agent/identity.js';
import { defineCommand } from '../command.js';
import { out, printJson } from '../output.js';

export const versionCommand = defineCommand({
  name: 'version',
  summary: 'print the version',
  usage: '[--json]',
  description: 'Print the agent version; --json adds the Node runtime, platform and architecture.',
  options: {
    json: { type: 'boolean', help: 'print the version, runtime, platform and architecture as JSON' },
  },
  handler({ values: o }) {
    if (o.json) printJson({ version: AGENT_VERSION, node: process.version, platform: process.platform, arch: process.arch });
    else out(AGENT_VERSION);
    return 0;
  },
});
