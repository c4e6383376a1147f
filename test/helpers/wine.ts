/**
 * The Windows executable and MSI under Wine (Debian wine + wine64, wixl): shared by
 * test/windows/wine.test.ts and test/windows/wine-upgrade.test.ts.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventually } from './procs.js';

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
/** The Wine variant and its MSI, from `scripts/release-windows.mjs --wine-only` (docs/windows.md). */
export const wineExe = path.join(root, 'dist/wine/lightagent-win-x64.exe');
export const wineMsi = path.join(root, 'dist/wine/lightagent-win-x64.msi');
export const RUN_KEY = 'HKLM\\Software\\Microsoft\\Windows\\CurrentVersion\\Run';

/** Why the Wine tests cannot run here, or undefined. */
export function wineMissing(): string | undefined {
  for (const tool of ['wine', 'wineserver', 'wixl', 'msibuild', 'osslsigncode']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
      return `${tool} is not installed (apt-get install wine wine64 wixl msitools osslsigncode)`;
  }
  if (!fs.existsSync('/usr/lib/wine/wine64')) return 'wine64 is not installed';
  return undefined;
}

/** Builds the Wine variant and its MSI (postject over 80 MB, ~45 s; skipped when up to date). */
export function buildWineVariant(): void {
  const b = spawnSync(process.execPath, [path.join(root, 'scripts/release-windows.mjs'), '--wine-only', '--quiet'], {
    cwd: root,
    encoding: 'utf8',
    timeout: 150_000,
  });
  assert.equal(b.status, 0, `release-windows failed: ${b.stdout}${b.stderr}`);
  assert.ok(fs.existsSync(wineExe) && fs.existsSync(wineMsi));
}

export interface WineResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** A WINEPREFIX of its own in a temp dir, set to Windows 10 (node.exe refuses Wine's default Windows 7). */
export class WinePrefix {
  private constructor(readonly dir: string) {}

  static create(name: string): WinePrefix {
    const p = new WinePrefix(fs.mkdtempSync(path.join(os.tmpdir(), name)));
    const w = p.run(['winecfg', '-v', 'win10'], 120_000);
    assert.equal(w.status, 0, `winecfg: ${w.stderr}`);
    return p;
  }

  env(): NodeJS.ProcessEnv {
    return { ...process.env, WINEPREFIX: this.dir, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=' };
  }

  driveC(...parts: string[]): string {
    return path.join(this.dir, 'drive_c', ...parts);
  }

  /**
   * Run a Windows program under wine, its stdout and stderr sent to files: a Unix pipe reaches
   * node.exe as a handle libuv cannot open under Wine (process.stdout throws EBADF).
   */
  run(args: string[], timeoutMs = 60_000): WineResult {
    const r = this.runOnce(args, timeoutMs);
    // Wine failing to launch the program at all (seen once in CI: `wine msiexec /i A` exited 1 in
    // 0.1 s with this message and wrote no msiexec log; not reproduced in 4 fresh prefixes): that
    // is Wine's loader, not the program under test, so it gets one more try, said on stderr.
    if (r.status === 1 && /ShellExecuteEx failed/.test(r.stdout + r.stderr)) {
      process.stderr.write(
        `wine ${args.join(' ')}: Wine could not start it (${(r.stdout + r.stderr).trim().replace(/\s+/g, ' ')}); once more in 1 s\n`,
      );
      spawnSync('sleep', ['1']);
      return this.runOnce(args, timeoutMs);
    }
    return r;
  }

  private runOnce(args: string[], timeoutMs: number): WineResult {
    const o = path.join(this.dir, 'out.txt');
    const e = path.join(this.dir, 'err.txt');
    const fo = fs.openSync(o, 'w');
    const fe = fs.openSync(e, 'w');
    try {
      const r = spawnSync('wine', args, { env: this.env(), stdio: ['ignore', fo, fe], timeout: timeoutMs, killSignal: 'SIGKILL' });
      return { status: r.status, stdout: fs.readFileSync(o, 'utf8'), stderr: fs.readFileSync(e, 'utf8') };
    } finally {
      fs.closeSync(fo);
      fs.closeSync(fe);
    }
  }

  /**
   * Keep this prefix's Wine session alive until the returned function is called. wineserver ends
   * a session, services.exe and every service in it included, once the last ordinary Wine
   * program has exited: a service started by `msiexec /i` is gone a second or two after msiexec
   * returns, with nothing in its log (seen: `ps` showed services.exe and the agent <defunct> 12 s
   * after the install; the next Wine program starts a new session and the auto-start service
   * with it). A `cmd /c pause` waiting on a pipe is that ordinary program here; on Windows the
   * SCM keeps services running without any session.
   */
  keepSession(): () => void {
    const keeper = spawn('wine', ['cmd', '/c', 'pause'], { env: this.env(), stdio: ['pipe', 'ignore', 'ignore'] });
    const watchdog = setTimeout(() => keeper.kill('SIGKILL'), 600_000);
    watchdog.unref();
    return () => {
      clearTimeout(watchdog);
      keeper.kill('SIGKILL');
    };
  }

  /** The tray's Run value, or undefined. */
  trayRunValue(): string | undefined {
    return /lightagent-tray\s+REG_SZ\s+(.*)/.exec(this.run(['reg', 'query', RUN_KEY, '/v', 'lightagent-tray']).stdout)?.[1]?.trim();
  }

  /**
   * Make the installed service on-demand and stopped before `msiexec /x` (docs/windows.md, the
   * Wine-hosted service's lifetime): Wine 8's services.exe starts auto-start services again
   * whenever a new wineserver session starts and restarted an instance after `sc stop`, which then
   * held the state directory while the uninstall removed it. No failure actions, Start = 3 (Wine's
   * sc.exe has no `config start=`; the SCM reads Start from the registry), stopped.
   */
  async quiesceService(): Promise<void> {
    const f = this.run(['sc', 'failure', 'lightagent', 'reset=', '0', 'actions=', '']);
    assert.equal(f.status, 0, `sc failure: ${f.stdout}${f.stderr}`);
    const demand = this.run([
      'reg',
      'add',
      'HKLM\\System\\CurrentControlSet\\Services\\lightagent',
      '/v',
      'Start',
      '/t',
      'REG_DWORD',
      '/d',
      '3',
      '/f',
    ]);
    assert.equal(demand.status, 0, `reg add Start=3: ${demand.stdout}${demand.stderr}`);
    this.run(['sc', 'stop', 'lightagent']);
    await eventually(() => !/RUNNING|PENDING/.test(this.run(['sc', 'query', 'lightagent']).stdout), 20_000, 'the service to be stopped');
  }

  dispose(): void {
    spawnSync('wineserver', ['-k'], { env: this.env(), timeout: 20_000 });
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
