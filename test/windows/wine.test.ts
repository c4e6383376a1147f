/**
 * The Windows executable and MSI under Wine (Debian wine + wine64, wixl from msitools' wixl
 * package). One WINEPREFIX per run in a temp dir (first start ~10 s), WINEDEBUG=-all.
 *
 * The executable tested is the Wine variant from `scripts/release-windows.mjs --wine-only`:
 * identical bundle and SEA blob, node.exe with V8's VirtualAlloc2 lookup disabled, because Wine
 * 8.0 rejects MEM_RESERVE_PLACEHOLDER and Node 24 aborts at start without that (docs/windows.md).
 *
 * The process watcher and the status pipe are tested with the exe run in a console (`run`):
 * a copy of Wine's ping.exe, made unique by a marker appended to it, is flagged by hash in the
 * SVM's signatures; started from Wine, it must be terminated, its image quarantined, the event
 * must name it, and `status --json` must read the live state from \\.\pipe\lightagent-status.
 *
 * With CI=true a missing wine/wixl fails; locally it skips with the reason.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { DaemonStatus } from '../../src/agent/daemon.js';
import type { AgentEvent } from '../../src/store/events-file.js';
import { EICAR, hdbLine } from '../helpers/fixtures.js';
import { eventually, inCi, startSvmProcess, type Proc } from '../helpers/procs.js';
import { buildWineVariant, root, WinePrefix, wineExe as exe, wineMissing, wineMsi as msi } from '../helpers/wine.js';

const TOKEN = 'wine-token-1234';

const why = wineMissing();
if (why && inCi) throw new Error(`Windows tests under Wine cannot run: ${why}`);
if (why) process.stderr.write(`\n*** SKIPPING test/windows/wine.test.ts: ${why} ***\n\n`);

let wp: WinePrefix | undefined;
let prefix = '';
const env = () => wp!.env();
const driveC = () => path.join(prefix, 'drive_c');
const wine = (args: string[], timeoutMs?: number) => wp!.run(args, timeoutMs);

/** A Windows program started from Wine in the background, output to a file; ends itself after `ms`. */
function wineBackground(args: string[], out: string, ms: number) {
  const fd = fs.openSync(out, 'w');
  const child = spawn('wine', args, { env: env(), stdio: ['ignore', fd, fd] });
  const watchdog = setTimeout(() => child.kill('SIGKILL'), ms);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => (clearTimeout(watchdog), fs.closeSync(fd), r(code))));
  return { child, exited, log: () => fs.readFileSync(out, 'utf8') };
}

const PROC_THREAT = 'Lightagent.Test.WineProcess';

describe('Windows executable, service and MSI under Wine', { skip: why, timeout: 230_000 }, () => {
  let svm: Proc & { url: string; port: number };
  /** The flagged program: C:\procs\ping.exe, Wine's ping.exe with a unique marker appended. */
  let flagged = '';

  before(async () => {
    buildWineVariant();
    wp = WinePrefix.create('la-wine-');
    prefix = wp.dir;
    // The program the SVM flags by hash (MD5:size:name, a ClamAV .hdb line): Wine's ping.exe
    // (stays alive with -n N), made unique so no other file matches.
    flagged = path.join(driveC(), 'procs', 'ping.exe');
    fs.mkdirSync(path.dirname(flagged), { recursive: true });
    const image = Buffer.concat([
      fs.readFileSync(path.join(driveC(), 'windows/system32/ping.exe')),
      Buffer.from(`\nlightagent-test-${process.pid}-${Date.now()}\n`),
    ]);
    fs.writeFileSync(flagged, image);
    fs.writeFileSync(path.join(prefix, 'procs-image.bin'), image); // what a restore must give back
    const hdb = path.join(prefix, 'procs.hdb');
    fs.writeFileSync(hdb, `${hdbLine(image, PROC_THREAT)}\n`);
    svm = await startSvmProcess(['--signatures', hdb], TOKEN);
  });

  after(() => {
    svm?.child.kill('SIGKILL');
    wp?.dispose();
  });

  it('prints its version', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
    const r = wine([exe, 'version']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), pkg.version);
  });

  it('scans EICAR through the Linux SVM on loopback (infected) and a clean file (clean)', () => {
    fs.writeFileSync(path.join(driveC(), 'eicar.com'), EICAR);
    fs.writeFileSync(path.join(driveC(), 'clean.txt'), 'hello\n');
    const r = wine([exe, 'scan', '--svm', svm.url, '--token', TOKEN, '--no-cache', '--json', 'C:\\eicar.com', 'C:\\clean.txt']);
    assert.equal(r.status, 1, r.stderr);
    const doc = JSON.parse(r.stdout) as { infected: { path: string; threat: string }[]; clean: number };
    assert.deepEqual(
      doc.infected.map((i) => [i.path, i.threat]),
      [['C:\\eicar.com', 'Eicar-Test-Signature']],
    );
    assert.equal(doc.clean, 1);
  });

  it('installs silently with msiexec, runs as a service, quarantines EICAR, uninstalls cleanly', async () => {
    const watched = path.join(driveC(), 'watched');
    fs.mkdirSync(path.join(watched, 'sub'), { recursive: true });
    // The service lives only as long as the Wine session (WinePrefix.keepSession): kept for the test.
    const endSession = wp!.keepSession();
    try {
      await installRunDetectUninstall(watched);
    } finally {
      endSession();
    }
  });

  async function installRunDetectUninstall(watched: string): Promise<void> {
    const i = wine(['msiexec', '/i', msi, `SVM_URL=${svm.url}`, `TOKEN=${TOKEN}`, 'PROTECT=C:\\watched', 'FAIL_CLOSED=0', '/qn'], 120_000);
    assert.equal(i.status, 0, `msiexec /i: ${i.stdout}${i.stderr}`);
    const installed = path.join(driveC(), 'Program Files/lightagent/lightagent-win-x64.exe');
    assert.ok(fs.existsSync(installed), 'the exe is installed');
    const dataDir = path.join(driveC(), 'ProgramData/lightagent');
    const cfg = fs.readFileSync(path.join(dataDir, 'agent.yaml'), 'utf8');
    assert.match(cfg, new RegExp(`svm: ${svm.url.replace(/[/.]/g, '\\$&')}`));
    assert.match(cfg, new RegExp(`token: ${TOKEN}`));
    assert.match(cfg, /on_svm_unavailable: allow/);
    assert.match(cfg, /- C:\\watched/);
    // the tray at logon for every user
    assert.match(wp!.trayRunValue() ?? '(none)', /lightagent-win-x64\.exe" tray/);

    // the MSI's ServiceControl started it through the SCM: RUNNING, connected, watching
    const logFile = path.join(dataDir, 'agent.log');
    await eventually(
      () => fs.existsSync(logFile) && /"service running"/.test(fs.readFileSync(logFile, 'utf8')),
      30_000,
      'the service to report running',
    );
    const q = wine(['sc', 'query', 'lightagent']);
    assert.match(q.stdout, /STATE\s+:\s+4\s+RUNNING/, q.stdout);
    assert.match(fs.readFileSync(logFile, 'utf8'), /"message":"connected"/);

    // Detection by the service itself: EICAR written into the watched folder a few seconds after
    // the start is quarantined and reported; a clean file stays.
    await new Promise((r) => setTimeout(r, 3000));
    const bySvc = path.join(watched, 'eicar-service.com');
    fs.writeFileSync(bySvc, EICAR);
    fs.writeFileSync(path.join(watched, 'ok-service.txt'), 'clean\n');
    await eventually(
      () => !fs.existsSync(bySvc) && /"reportedToSvm":true/.test(fs.readFileSync(logFile, 'utf8')),
      20_000,
      'the service to quarantine and report the infected file',
    ).catch((e: Error) => {
      throw new Error(`${e.message}: ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
    });
    assert.match(fs.readFileSync(logFile, 'utf8'), /"message":"file quarantined".*eicar-service\.com/);
    assert.ok(fs.existsSync(path.join(watched, 'ok-service.txt')), 'the clean file stays');

    // Wine ends a session with its services when its last ordinary program exits, and the next
    // Wine program starts a new one with the auto-start service (WinePrefix.keepSession): with
    // the MSI's restart-on-failure actions a new instance could also come up after the stop
    // below and hold the state directory while the uninstall removes it. No restarts from here on.
    const f = wine(['sc', 'failure', 'lightagent', 'reset=', '0', 'actions=', '']);
    assert.equal(f.status, 0, `sc failure: ${f.stdout}${f.stderr}`);
    // stop answers through the handler: STOPPED, logged
    const s = wine(['sc', 'stop', 'lightagent']);
    assert.equal(s.status, 0, s.stdout);
    await eventually(() => /STATE\s+:\s+1\s+STOPPED/.test(wine(['sc', 'query', 'lightagent']).stdout), 20_000, 'the service to stop');
    assert.match(fs.readFileSync(logFile, 'utf8'), /"service stopped"/);

    // Detection again with the installed exe and config run in a console (`run`).
    const runOut = fs.openSync(path.join(prefix, 'run.txt'), 'w');
    const agent = spawn('wine', [installed, 'run', '--config', 'C:\\ProgramData\\lightagent\\agent.yaml'], {
      env: env(),
      stdio: ['ignore', runOut, runOut],
    });
    const watchdog = setTimeout(() => agent.kill('SIGKILL'), 60_000);
    try {
      await eventually(
        () => /protecting C:\\watched/.test(fs.readFileSync(path.join(prefix, 'run.txt'), 'utf8')),
        30_000,
        'the agent to start',
      );
    } catch (e) {
      clearTimeout(watchdog);
      agent.kill('SIGKILL');
      throw new Error(`${(e as Error).message}: ${fs.readFileSync(path.join(prefix, 'run.txt'), 'utf8').slice(-2000)}`, { cause: e });
    }
    // EICAR written into the watched folder is quarantined. (Wine 8's subtree watch does not
    // cover sub-folders that existed before it started, like sub\ here, whether through fs.watch
    // or a koffi ReadDirectoryChangesW: docs/windows.md. They are covered on Windows only.)
    const bad = path.join(watched, 'eicar.com');
    fs.writeFileSync(bad, EICAR);
    fs.writeFileSync(path.join(watched, 'ok.txt'), 'clean\n');
    try {
      // the move comes before the detection's log line: wait for both before the agent is killed
      await eventually(
        () => !fs.existsSync(bad) && /"reportedToSvm":true/.test(fs.readFileSync(path.join(prefix, 'run.txt'), 'utf8')),
        20_000,
        'the infected file to be quarantined and reported',
      );
    } finally {
      clearTimeout(watchdog);
      agent.kill('SIGTERM');
      await new Promise((r) => setTimeout(r, 1000));
      agent.kill('SIGKILL');
      fs.closeSync(runOut);
    }
    assert.ok(fs.existsSync(path.join(watched, 'ok.txt')), 'the clean file stays');
    const log = fs.readFileSync(path.join(prefix, 'run.txt'), 'utf8');
    assert.match(log, /"message":"file quarantined"/);
    assert.match(log, /"reportedToSvm":true/);
    const ql = wine([installed, 'quarantine', 'list', '--state-dir', 'C:\\ProgramData\\lightagent', '--json']);
    assert.equal(ql.status, 0, ql.stderr);
    assert.match(ql.stdout, /Eicar-Test-Signature/);
    assert.match(ql.stdout, /watched\\\\eicar\.com/);

    // Under Wine every new session starts auto-start services again: the service on-demand and
    // stopped, and the console agent gone, so nothing holds the exe or the state directory while
    // the uninstall runs.
    if (agent.exitCode === null && agent.signalCode === null) await new Promise((r) => agent.once('exit', r));
    await wp!.quiesceService();
    const x = wine(['msiexec', '/x', msi, '/qn'], 120_000);
    assert.equal(x.status, 0, `msiexec /x: ${x.stdout}${x.stderr}`);
    if (fs.existsSync(installed)) {
      const log = fs.existsSync(logFile)
        ? fs
            .readFileSync(logFile, 'utf8')
            .split('\n')
            .filter((l) => /"component":"service"|failed/.test(l))
            .slice(-12)
            .join('\n')
        : '(no log)';
      assert.fail(
        `the exe is not removed; msiexec /x: ${x.stdout}${x.stderr}; sc query: ${wine(['sc', 'query', 'lightagent']).stdout}; tasklist: ${wine(['tasklist']).stdout}; service log:\n${log}`,
      );
    }
    assert.ok(!fs.existsSync(path.join(dataDir, 'agent.yaml')), 'the config is removed');
    assert.ok(fs.existsSync(path.join(dataDir, 'quarantine')), 'the quarantine stays');
    const gone = wine(['sc', 'query', 'lightagent']);
    assert.doesNotMatch(gone.stdout, /RUNNING|STOPPED/, 'the service is deleted');
    assert.equal(wp!.trayRunValue(), undefined, 'the Run value is removed');
  }

  it('run: terminates a process whose image is infected, quarantines the image, records the event; status --json over the pipe', async () => {
    const stateDir = path.join(driveC(), 'la-proc');
    fs.mkdirSync(path.join(driveC(), 'la-watched'), { recursive: true });
    fs.mkdirSync(stateDir, { recursive: true });
    fs.writeFileSync(
      path.join(stateDir, 'agent.yaml'),
      [`svm: ${svm.url}`, `token: ${TOKEN}`, 'state_dir: C:\\la-proc', 'protect:', '  - C:\\la-watched', ''].join('\n'),
    );
    const agent = wineBackground([exe, 'run', '--config', 'C:\\la-proc\\agent.yaml'], path.join(prefix, 'proc-run.txt'), 90_000);
    try {
      await eventually(
        () => /status pipe ready/.test(agent.log()) && /"message":"connected"/.test(agent.log()),
        40_000,
        'the agent to serve the status pipe and connect',
      ).catch((e: Error) => {
        throw new Error(`${e.message}: ${agent.log().slice(-2000)}`);
      });
      assert.match(agent.log(), /process watcher: Toolhelp snapshots/);

      // status over \\.\pipe\lightagent-status: live state of this agent
      const st = wine([exe, 'status', '--json']);
      assert.equal(st.status, 0, `status: ${st.stdout}${st.stderr}`);
      const s1 = JSON.parse(st.stdout) as DaemonStatus;
      assert.equal(s1.protection.state, 'protected');
      assert.equal(s1.mode, 'watcher');
      assert.deepEqual(s1.protect, ['C:\\la-watched']);
      assert.equal(s1.svm.state, 'connected');
      assert.equal(s1.svm.url, svm.url);
      assert.ok(Number.isInteger(s1.pid) && s1.pid > 0);
      assert.equal(s1.detections.total, 0);

      // The flagged program, started from Wine: it would ping for ~30 s.
      const t0 = performance.now();
      const ping = wineBackground(['C:\\procs\\ping.exe', '-n', '30', '127.0.0.1'], path.join(prefix, 'ping.txt'), 60_000);
      const code = await ping.exited;
      const ms = Math.round(performance.now() - t0);
      // (Wine's loader exits 0 for a process ended by TerminateProcess; ping's summary never comes)
      assert.ok(ms < 15_000, `terminated after ${ms} ms (ping -n 30 alone runs ~29 s): ${ping.log()}`);
      assert.doesNotMatch(ping.log(), /Ping statistics|Sent = 30/, 'ping did not finish on its own');
      // The image stays locked until Wine has torn the process down: the agent tries again for 15 s.
      await eventually(() => !fs.existsSync(flagged), 20_000, 'the image to be quarantined').catch((e: Error) => {
        throw new Error(`${e.message}: ${agent.log().slice(-3000)}`);
      });
      await eventually(() => /"message":"file quarantined"/.test(agent.log()), 10_000, 'the quarantine to be logged');
      const killed = /"message":"killed the process behind a threat","pid":(\d+),"reason":"started","timestamp":"([^"]+)"/.exec(
        agent.log(),
      );
      assert.ok(killed, agent.log().slice(-3000));
      process.stderr.write(
        `wine: killed pid ${killed[1]} at ${killed[2]}; ping exited ${ms} ms after it was spawned (exit code ${code})\n`,
      );

      const ql = wine([exe, 'quarantine', 'list', '--state-dir', 'C:\\la-proc', '--json']);
      assert.equal(ql.status, 0, ql.stderr);
      const items = JSON.parse(ql.stdout) as { threat: string; originalPath: string }[];
      assert.ok(
        items.some((i) => i.threat === PROC_THREAT && /^C:\\procs\\ping\.exe$/i.test(i.originalPath)),
        ql.stdout,
      );
      // Restore works on Windows too (no uid check there: the store's ACL guards it), byte for byte.
      const item = (items as Array<{ threat: string; originalPath: string; id: string }>).find((i) => i.threat === PROC_THREAT)!;
      const rs = wine([exe, 'quarantine', 'restore', item.id, '--to', 'C:\\restored-ping.exe', '--state-dir', 'C:\\la-proc']);
      assert.equal(rs.status, 0, `${rs.stdout}${rs.stderr}`);
      assert.ok(
        fs.readFileSync(path.join(driveC(), 'restored-ping.exe')).equals(fs.readFileSync(path.join(prefix, 'procs-image.bin'))),
        'restored byte for byte',
      );

      await eventually(
        () => /ping\.exe/i.test(wine([exe, 'events', '--state-dir', 'C:\\la-proc', '--json']).stdout),
        10_000,
        'the event to be written',
      );
      const evs = wine([exe, 'events', '--state-dir', 'C:\\la-proc', '--json'])
        .stdout.trim()
        .split('\n')
        .map((l) => JSON.parse(l) as AgentEvent);
      const ev = evs.find((e) => e.threat === PROC_THREAT)!;
      assert.ok(ev, JSON.stringify(evs));
      assert.equal(ev.kind, 'detection');
      assert.equal(ev.action, 'killed');
      assert.equal(ev.response, 'killed');
      assert.match(ev.path, /^C:\\procs\\ping\.exe$/i);
      assert.match(ev.process?.exe ?? '', /^C:\\procs\\ping\.exe$/i);
      assert.ok((ev.process?.pid ?? 0) > 0);

      // the detection is in the live status too
      const s2 = JSON.parse(wine([exe, 'status', '--json']).stdout) as DaemonStatus;
      assert.equal(s2.detections.total, 1);
      assert.equal(s2.detections.recent[0].threat, PROC_THREAT);
      assert.equal(s2.detections.recent[0].action, 'killed');
    } finally {
      agent.child.kill('SIGTERM');
      await Promise.race([agent.exited, new Promise((r) => setTimeout(r, 3000))]);
      agent.child.kill('SIGKILL');
    }
  });
});
