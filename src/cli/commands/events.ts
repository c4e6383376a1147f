/**
 * `lightagent events [--json] [--follow]` — recent detections and denied accesses, each with the
 * process behind it, from <state_dir>/events.jsonl (which the daemon appends to; rotated by size).
 * Exit codes: 0 done, 2 error.
 */
import fs from 'node:fs';
import { eventsFilePath, parseLines, readRecentEvents, type AgentEvent } from '../../store/events-file.js';
import type { ProcessIdentity } from '../../store/events-file.js';
import { defineCommand } from '../command.js';
import { err, out } from '../output.js';

const DEFAULT_STATE_DIR = '/var/lib/lightagent';
const FOLLOW_POLL_MS = 500;
/** Most bytes read per follow poll (a burst beyond it is read on the next polls). */
const FOLLOW_MAX_READ = 1024 * 1024;

function who(p: ProcessIdentity | undefined): string {
  if (!p) return '?';
  const user = p.user ?? (p.uid !== undefined ? `uid ${p.uid}` : '?');
  return `${p.pid} ${p.exe ?? '?'} (${user})`;
}

export function formatEvent(e: AgentEvent): string {
  const time = e.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  const what = e.kind === 'detection' ? `${e.threat ?? 'threat'} ${e.action ?? ''}`.trim() : `denied ${e.access ?? ''}: ${e.reason ?? ''}`;
  const lines = [`${time}  ${e.kind.toUpperCase()}  ${what}  ${e.path}`];
  if (e.process) {
    lines.push(`    process ${who(e.process)}${e.process.exited ? ' [exited]' : ''}${e.response ? `  -> ${e.response}` : ''}`);
    if (e.process.cmdline) lines.push(`    cmdline ${e.process.cmdline}`);
    for (const p of e.process.parents ?? []) lines.push(`    parent  ${who(p)}${p.cmdline ? `  ${p.cmdline}` : ''}`);
  }
  return lines.join('\n');
}

export const eventsCommand = defineCommand({
  name: 'events',
  summary: 'recent detections and denied accesses, with the process behind each',
  usage: '[options]',
  description: `Recent detections and denied opens/executions, each with the process that caused it
(pid, executable, command line, user, and up to 3 parents).`,
  options: {
    'state-dir': { type: 'string', arg: 'DIR', help: "the agent's state directory (default /var/lib/lightagent)" },
    lines: {
      type: 'integer',
      short: 'n',
      arg: 'N',
      min: 1,
      max: 10_000,
      default: 50,
      help: 'how many recent events (default 50, at most 10000)',
    },
    follow: { type: 'boolean', help: 'keep printing new events as the agent records them (until Ctrl-C)' },
    json: { type: 'boolean', help: 'one JSON object per line' },
  },
  async handler({ values: o, prefix }) {
    const limit = o.lines;
    const file = eventsFilePath(o['state-dir'] ?? DEFAULT_STATE_DIR);
    const print = (e: AgentEvent) => out(o.json ? JSON.stringify(e) : formatEvent(e));
    try {
      fs.accessSync(file, fs.constants.R_OK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EACCES') {
        err(
          `${prefix}: cannot read ${file}: permission denied (the events file is readable by root only)\n  -> run it as ` +
            `root: sudo lightagent events`,
        );
        return 2;
      }
      if (!o.follow) {
        if (!o.json) out(`no events recorded yet (${file} does not exist)`);
        return 0;
      }
    }
    for (const e of readRecentEvents(file, limit)) print(e);
    if (!o.follow) return 0;
    await follow(file, print);
    return 0;
  },
});

/** Print lines appended to `file` until SIGINT/SIGTERM; starts over when it is rotated. */
async function follow(file: string, print: (e: AgentEvent) => void): Promise<void> {
  let pos = 0;
  let ino = -1;
  try {
    const st = fs.statSync(file);
    pos = st.size;
    ino = st.ino;
  } catch {
    // not there yet
  }
  let partial = '';
  let stop = false;
  const onSignal = () => (stop = true);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const buf = Buffer.alloc(FOLLOW_MAX_READ);
  while (!stop) {
    await new Promise((r) => setTimeout(r, FOLLOW_POLL_MS));
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      continue;
    }
    try {
      const st = fs.fstatSync(fd);
      if (st.ino !== ino || st.size < pos) {
        ino = st.ino; // rotated: the new file from its start
        pos = 0;
        partial = '';
      }
      if (st.size <= pos) continue;
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, st.size - pos), pos);
      pos += n;
      const text = partial + buf.toString('utf8', 0, n);
      const cut = text.lastIndexOf('\n');
      partial = text.slice(cut + 1);
      if (partial.length > FOLLOW_MAX_READ) partial = ''; // a line without an end: drop it
      for (const e of parseLines(
        text
          .slice(0, cut + 1)
          .split('\n')
          .filter((l) => l),
      ))
        print(e);
    } finally {
      fs.closeSync(fd);
    }
  }
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
}
