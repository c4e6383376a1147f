#!/usr/bin/env -S node --max-semi-space-size=1 --single-threaded-gc --no-separate-gc-phases
/**
 * `lightagent` — the agent's command line. One subcommand per file in ./commands, each defined
 * once with src/cli/command.ts; a command's module loads only when it runs (the daemon's start-up
 * does not pay for the tray's or the demo's imports).
 */
import type { Command } from './command.js';
import { err, exitAfterFlush, out } from './output.js';

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
  version: async () => (await import('./commands/version.js')).versionCommand,
};

/** The command list from each command's own summary. */
async function help(): Promise<string> {
  const all = await Promise.all(Object.values(commands).map((load) => load()));
  const rows = all.filter((c) => !c.hidden).map((c) => `  ${c.name.padEnd(16)} ${c.summary}`);
  return (
    `Usage: lightagent <command> [options]\n\nCommands:\n${rows.join('\n')}\n\nRun \`lightagent <command> --help\` ` +
    `for the options of a command.`
  );
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '-h' || name === '--help' || name === 'help') {
    out(await help());
    return name ? 0 : 2;
  }
  if (name === '--version') return (await commands.version!()).run([]);
  const load = Object.hasOwn(commands, name) ? commands[name] : undefined;
  if (!load) {
    err(`lightagent: unknown command "${name.slice(0, 60)}"\n\n${await help()}`);
    return 2;
  }
  return (await load()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => exitAfterFlush(code),
  (e: unknown) => {
    err(`lightagent: internal error: ${(e as Error)?.stack ?? String(e)}`);
    exitAfterFlush(2);
  },
);
