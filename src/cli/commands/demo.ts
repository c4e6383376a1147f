/**
 * `lightagent demo` (what `npm start` runs): an SVM with the builtin engine and an agent
 * protecting a demo folder, both on loopback in this process. It plants clean files and EICAR
 * test files, shows what the agent does with them, then keeps protecting until Ctrl-C.
 */
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { loadAgentConfig } from '../../config/agent.js';
import { Daemon } from '../../agent/daemon.js';
import { closeLogging, configureLogging } from '../../log.js';
import { BuiltinEngine, EICAR } from '../../svm/engines/builtin.js';
import { MemoryVerdictCache } from '../../svm/memory-verdict-cache.js';
import { SvmServer } from '../../svm/server.js';
import { defineCommand } from '../command.js';
import { fail, out } from '../output.js';

/** One line of the demonstration: text for a person, or its JSON object with --json. */
type Say = (text: string, json: Record<string, unknown> | undefined) => void;

export const demoCommand = defineCommand({
  name: 'demo',
  summary: 'start a local SVM and an agent protecting a demo folder (what `npm start` runs)',
  usage: '[options]',
  description: `Start an SVM (builtin engine) and an agent protecting DIR/protected (default ./.demo) on loopback,
plant clean and EICAR test files, show the detections, and keep protecting until Ctrl-C.
As root the folder is protected on access (fanotify); otherwise files are scanned after they are
written (watcher).`,
  options: {
    dir: { type: 'string', arg: 'DIR', help: 'where the demo folder and its state go (default ./.demo)' },
    mode: {
      type: 'string',
      arg: 'M',
      choices: ['fanotify', 'watcher'],
      help: 'fanotify | watcher (default: fanotify as root, else watcher)',
    },
    'no-wait': {
      type: 'boolean',
      help: 'exit after the demonstration instead of waiting for Ctrl-C (exit 0\nif every step went as expected, 1 if not)',
    },
    json: {
      type: 'boolean',
      help: 'one JSON object per line instead of text:\n{"event":"start"|"check"|"detection"|"protecting"|"done", ...}',
    },
  },
  async handler({ values: o, prefix }) {
    const json = o.json;
    const say: Say = (text, obj) => {
      if (!json) out(text);
      else if (obj) out(JSON.stringify(obj));
    };
    const base = path.resolve(o.dir ?? '.demo');
    const folder = path.join(base, 'protected');
    const stateDir = path.join(base, 'state');
    fs.mkdirSync(folder, { recursive: true });
    fs.mkdirSync(path.join(folder, 'docs/reports'), { recursive: true });
    configureLogging({ file: path.join(base, 'lightagent.log'), level: 'info' });

    // Files present before protection starts: two clean ones and one infected "old download".
    fs.writeFileSync(path.join(folder, 'readme.txt'), 'This folder is protected by lightagent.\n');
    fs.writeFileSync(path.join(folder, 'docs/reports/q3.csv'), 'quarter,revenue\nq3,42\n');
    const oldDownload = path.join(folder, 'old-download.com');
    fs.writeFileSync(oldDownload, EICAR);

    const token = crypto.randomBytes(16).toString('hex');
    const svm = await SvmServer.start({
      host: '127.0.0.1',
      port: 0,
      tokens: [{ tenant: 'demo', token }],
      engine: new BuiltinEngine(),
      cache: new MemoryVerdictCache(100_000),
    });
    let daemon: Daemon | undefined;
    try {
      const root = process.getuid?.() === 0;
      const mode = (o.mode as 'fanotify' | 'watcher' | undefined) ?? (root ? 'fanotify' : 'watcher');
      const cfg = loadAgentConfig({
        file: undefined,
        env: {},
        flags: { svm: svm.url, token, protect: [folder], state_dir: stateDir, deadline: 2000 },
      });
      daemon = await Daemon.start({ config: cfg, mode });
      daemon.detections.on('detection', (d) =>
        say(`  !! ${d.threat} in ${path.relative(process.cwd(), d.path)}: ${d.action}`, {
          event: 'detection',
          threat: d.threat,
          path: d.path,
          action: d.action,
        }),
      );

      const logFile = path.join(base, 'lightagent.log');
      say('lightagent demo', undefined);
      say(`  SVM       ${svm.url} (engine builtin, signatures ${svm.core.generation()})`, undefined);
      say(
        `  agent     protecting ${path.relative(process.cwd(), folder) || folder} in ${daemon.mode} ` +
          `mode${modeNote(daemon.mode, root)}`,
        undefined,
      );
      say(`  log       ${path.relative(process.cwd(), logFile)}\n`, {
        event: 'start',
        svm: svm.url,
        signatures: svm.core.generation(),
        mode: daemon.mode,
        folder,
        log: logFile,
        stateDir,
      });

      // Children run asynchronously: this thread answers the gate, it must not block on them.
      const sh = (cmd: string) =>
        new Promise<{ status: number; stdout: string; stderr: string }>((resolve) =>
          execFile('sh', ['-c', cmd], { encoding: 'utf8', timeout: 10_000 }, (err, stdout, stderr) =>
            resolve({ status: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
          ),
        );
      say('1. a clean file opens normally:', undefined);
      const clean = await sh(`cat '${path.join(folder, 'readme.txt')}'`);
      say(`   $ cat readme.txt -> ${clean.status === 0 ? `ok: ${clean.stdout.trim()}` : `failed: ${clean.stderr.trim()}`}`, {
        event: 'check',
        step: 'clean-open',
        file: path.join(folder, 'readme.txt'),
        opened: clean.status === 0,
        detail: (clean.status === 0 ? clean.stdout : clean.stderr).trim(),
      });

      say('2. an infected file that was there before the agent started:', undefined);
      const blocked = await sh(`cat '${oldDownload}' > /dev/null`);
      say(
        `   $ cat old-download.com -> ` +
          (blocked.status === 0
            ? 'opened (watcher mode cannot block opens; it is scanned after writes)'
            : `refused: ${blocked.stderr.trim().replace(/^cat: /, '')}`),
        { event: 'check', step: 'infected-open', file: oldDownload, opened: blocked.status === 0, detail: blocked.stderr.trim() },
      );
      if (daemon.mode === 'watcher') {
        const r = await daemon.rescan([oldDownload]);
        say(`   on-demand scan of it: ${r}`, { event: 'check', step: 'on-demand-scan', file: oldDownload, result: r });
      }
      const oldGone = await waitGone(oldDownload, 5000);

      say('3. a new infected file is written (like a download):', undefined);
      const fresh = path.join(folder, 'docs/invoice.pdf.com');
      await sh(`printf '%s' '${EICAR.replace(/'/g, `'\\''`)}' > '${fresh}'`);
      // The file leaves before its detection is logged: wait for both, so the detection line comes first.
      const detections = daemon.detections;
      const gone = (await waitGone(fresh, 5000)) && (await waitFor(() => detections.recent(50).some((d) => d.path === fresh), 5000));
      say(`   $ ls docs/invoice.pdf.com -> ${gone ? 'gone: moved to quarantine' : 'still there (not caught!)'}`, {
        event: 'check',
        step: 'infected-write',
        file: fresh,
        quarantined: gone,
      });

      say(`\nquarantine: lightagent quarantine list --state-dir ${path.relative(process.cwd(), stateDir)}`, undefined);
      // As expected: the clean file opened, both infected files went to quarantine, and on access
      // (fanotify) the old one was refused before anything read it.
      const ok = clean.status === 0 && oldGone && gone && (daemon.mode !== 'fanotify' || blocked.status !== 0);
      if (o['no-wait']) {
        say(ok ? '\nevery step went as expected' : '\nNOT every step went as expected: see the lines above and the log', {
          event: 'done',
          ok,
        });
        return ok ? 0 : 1;
      }
      say(`\nProtecting ${folder} until Ctrl-C. Try: printf '%s' '<the EICAR string>' > ${path.join(folder, 'x.com')}`, {
        event: 'protecting',
        folder,
      });
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
      return 0;
    } catch (e) {
      return fail(e, prefix);
    } finally {
      await daemon?.stop();
      await svm.close();
      await closeLogging();
    }
  },
});

async function waitFor(done: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (done()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return done();
}

const waitGone = (p: string, ms: number) => waitFor(() => !fs.existsSync(p), ms);

function modeNote(mode: string, root: boolean): string {
  if (mode !== 'watcher') return ' (opens and executions are checked before they happen)';
  return root ? '' : ' (not root: files are scanned after they are written; opens are not blocked)';
}
