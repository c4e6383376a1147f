/**
 * `lightagent demo` (what `npm start` runs), end to end with its --json lines: as root on a scratch
 * tmpfs (fanotify: the old EICAR file is refused, then both are quarantined), with --mode watcher,
 * and as an unprivileged user (the watcher is chosen and said). Also `version --json`.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CLI, needRoot, scratchMount, spawnNode, tempDir } from '../helpers/procs.js';

const skip = needRoot();

type Line = Record<string, unknown> & { event: string };

/** Run the demo to its end (--no-wait) with a watchdog; its exit code and JSON lines. */
async function demo(args: string[]): Promise<{ code: number | null; lines: Line[]; stderr: string }> {
  const p = spawnNode(CLI, ['demo', '--no-wait', '--json', ...args], { watchdogMs: 90_000 });
  // 'close', not 'exit': every byte of its output has been read by then.
  const code = await new Promise<number | null>((resolve) => p.child.once('close', (c) => resolve(c)));
  const stdout = p.output();
  // output() holds stdout and stderr: the JSON lines are the ones that parse.
  const lines: Line[] = [];
  for (const l of stdout.split('\n')) {
    if (!l.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(l) as Line);
    } catch {
      // a log line, not ours
    }
  }
  return { code, lines, stderr: stdout };
}

const step = (lines: Line[], name: string) => lines.find((l) => l.event === 'check' && l.step === name);

function quarantined(stateDir: string, asNobody = false): Array<{ threat: string; originalPath: string }> {
  const argv = [CLI, 'quarantine', 'list', '--json', '--state-dir', stateDir];
  const r = asNobody
    ? spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, ...argv], {
        encoding: 'utf8',
        timeout: 30_000,
      })
    : spawnSync(process.execPath, argv, { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Array<{ threat: string; originalPath: string }>;
}

describe('lightagent demo', { skip }, () => {
  it('as root, fanotify: the clean file opens, the old EICAR file is refused, both EICAR files end in quarantine', async () => {
    const mnt = scratchMount('la-demo-', '64m');
    try {
      const r = await demo(['--dir', mnt.dir]);
      assert.equal(r.code, 0, r.stderr.slice(-2000));
      const start = r.lines.find((l) => l.event === 'start');
      assert.equal(start?.mode, 'fanotify');
      assert.equal(step(r.lines, 'clean-open')?.opened, true);
      const refused = step(r.lines, 'infected-open');
      assert.equal(refused?.opened, false, 'cat of the old EICAR file failed');
      assert.match(String(refused?.detail), /Operation not permitted/);
      assert.equal(step(r.lines, 'infected-write')?.quarantined, true);
      assert.equal(r.lines.filter((l) => l.event === 'detection' && l.threat === 'Eicar-Test-Signature').length, 2);
      assert.deepEqual(r.lines.at(-1), { event: 'done', ok: true });
      const q = quarantined(path.join(mnt.dir, 'state'));
      assert.deepEqual(q.map((x) => path.basename(x.originalPath)).sort(), ['invoice.pdf.com', 'old-download.com']);
      assert.ok(!fs.existsSync(path.join(mnt.dir, 'protected/old-download.com')));
      assert.ok(fs.existsSync(path.join(mnt.dir, 'protected/readme.txt')));
    } finally {
      mnt.unmount();
    }
  });

  it('--mode watcher: the old file opens (cannot be blocked) and is quarantined after its scan; the new one too', async () => {
    const dir = tempDir('la-demo-w-');
    const r = await demo(['--dir', dir, '--mode', 'watcher']);
    assert.equal(r.code, 0, r.stderr.slice(-2000));
    assert.equal(r.lines.find((l) => l.event === 'start')?.mode, 'watcher');
    assert.equal(step(r.lines, 'infected-open')?.opened, true);
    assert.match(String(step(r.lines, 'on-demand-scan')?.result), /infected \(Eicar-Test-Signature\)/);
    assert.equal(step(r.lines, 'infected-write')?.quarantined, true);
    assert.deepEqual(r.lines.at(-1), { event: 'done', ok: true });
    assert.equal(quarantined(path.join(dir, 'state')).length, 2);
  });

  it('as an unprivileged user, the watcher is chosen and says so in text', () => {
    const dir = tempDir('la-demo-u-');
    fs.chmodSync(dir, 0o777);
    const r = spawnSync(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, 'demo', '--no-wait', '--dir', dir],
      { encoding: 'utf8', timeout: 90_000, killSignal: 'SIGKILL' },
    );
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /in watcher mode \(not root: files are scanned after they are written; opens are not blocked\)/);
    assert.match(r.stdout, /docs\/invoice\.pdf\.com -> gone: moved to quarantine/);
    assert.match(r.stdout, /every step went as expected/);
    assert.equal(quarantined(path.join(dir, 'state'), true).length, 2);
  });

  it('a bad --mode exits 2 and names it', () => {
    const r = spawnSync(process.execPath, [CLI, 'demo', '--mode', 'kernel'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--mode must be fanotify or watcher, not "kernel"/);
  });
});

describe('lightagent version', () => {
  it('prints the version; --json adds the runtime; an unknown option exits 2', () => {
    const plain = spawnSync(process.execPath, [CLI, 'version'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(plain.status, 0);
    const version = plain.stdout.trim();
    assert.match(version, /^\d+\.\d+\.\d+/);
    const j = spawnSync(process.execPath, [CLI, 'version', '--json'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(j.status, 0);
    assert.deepEqual(JSON.parse(j.stdout), { version, node: process.version, platform: process.platform, arch: process.arch });
    const bad = spawnSync(process.execPath, [CLI, 'version', '--frob'], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown option "--frob"/);
  });
});
