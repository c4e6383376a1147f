#!/usr/bin/env -S node --max-semi-space-size=1
/**
 * `lightagent` — the agent's command line. One subcommand per file in ./commands.
 */
import { AGENT_VERSION } from '../agent/identity.js';
import { err, exitAfterFlush, out, printJson } from './output.js';

const HELP = `Usage: lightagent <command> [options]

Commands:
  run              run the protection daemon (on-access protection of the configured paths)
  scan PATH...     scan files and trees through an SVM (on demand)
  svm-info         the SVM in use, its signatures, load and latency, and the other SVMs' states
  quarantine ...   list, restore or delete quarantined files
  seal             prepare this VM as a template for cloning (docs/vdi.md)
  status           show the running agent's protection state (any user)
  events           recent detections and denied accesses, with the process behind each
  tray             desktop tray icon and notifications (run as the desktop user)
  demo             start a local SVM and an agent protecting a demo folder (what \`npm start\` runs)
  version          print the version

Run \`lightagent <command> --help\` for the options of a command.`;

type Command = (argv: string[]) => Promise<number>;

const commands: Record<string, () => Promise<Command>> = {
  run: async () => (await import('./commands/run.js')).runCommand,
  scan: async () => (await import('./commands/scan.js')).scanCommand,
  'svm-info': async () => (await import('./commands/svm-info.js')).svmInfoCommand,
  quarantine: async () => (await import('./commands/quarantine.js')).quarantineCommand,
  seal: async () => (await import('./commands/seal.js')).sealCommand,
  status: async () => (await import('./commands/status.js')).statusCommand,
  events: async () => (await import('./commands/events.js')).eventsCommand,
  tray: async () => (await import('./commands/tray.js')).trayCommand,
  demo: async () => (await import('./commands/demo.js')).demoCommand,
  service: async () => (await import('./commands/service.js')).serviceCommand,
  version: async () => async (argv) => {
    if (argv.includes('-h') || argv.includes('--help')) {
      out('Usage: lightagent version [--json]\n\nPrint the agent version; --json adds the Node runtime, platform and architecture.');
      return 0;
    }
    const bad = argv.find((a) => a !== '--json');
    if (bad !== undefined) {
      err(`lightagent version: unknown option "${bad}"; usage: lightagent version [--json]`);
      return 2;
    }
    if (argv.includes('--json')) printJson({ version: AGENT_VERSION, node: process.version, platform: process.platform, arch: process.arch });
    else out(AGENT_VERSION);
    return 0;
  },
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    out(HELP);
    return name ? 0 : 2;
  }
  if (name === '--version') return (await commands.version!())([]);
  const load = commands[name];
  if (!load) {
    err(`lightagent: unknown command "${name}"\n\n${HELP}`);
    return 2;
  }
  return (await load())(rest);
}

main(process.argv.slice(2)).then(
  (code) => exitAfterFlush(code),
  (e: unknown) => {
    err(`lightagent: internal error: ${(e as Error)?.stack ?? String(e)}`);
    exitAfterFlush(2);
  },
);
