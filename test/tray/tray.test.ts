/**
 * The tray end to end on a real headless desktop (desktop.ts: Xvfb, dbus-daemon, dunst,
 * dbus-monitor): a real SVM, a real `lightagent run` with fanotify on a scratch tmpfs, and
 * `lightagent tray` running as uid 65534 (no privilege) against the status socket.
 * Set LIGHTAGENT_TRAY_SCREENSHOT=FILE to keep the screenshot (docs/tray-notification.png is one).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EventEmitter } from 'node:events';
import dbus from 'dbus-next';
import { LocalSockets, type AgentService } from '../../src/control/local-sockets.js';
import { startAgent, type Agent } from '../helpers/agent.js';
import { EICAR } from '../helpers/fixtures.js';
import {
  CLI,
  eventually,
  needRoot,
  type Proc,
  restartSvmProcess,
  scratchMount,
  spawnWatched,
  startSvmProcess,
  tempDir,
  waitFor,
} from '../helpers/procs.js';
import { needDesktopTools, startDesktop, type Desktop } from './desktop.js';

const skip = needRoot() ?? needDesktopTools();
/** ImageMagick's convert (a stand-in may shadow it on PATH). */
const CONVERT = '/usr/bin/convert';

/** `node args` as uid/gid 65534 with no groups, under a watchdog. */
function spawnAs65534(args: string[], env: NodeJS.ProcessEnv): Proc {
  return spawnWatched('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, ...args], {
    env,
    watchdogMs: 240_000,
  });
}

/** A minimal org.kde.StatusNotifierWatcher (what a panel runs), recording registrations. */
class Watcher extends dbus.interface.Interface {
  readonly items: string[] = [];
  RegisterStatusNotifierItem(service: string): void {
    this.items.push(service);
  }
}
Watcher.configureMembers({ methods: { RegisterStatusNotifierItem: { inSignature: 's' } } });

describe('tray on a real desktop', { skip }, () => {
  let desk: Desktop;
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  let agent: Agent;
  let tray: Proc;
  let mnt: ReturnType<typeof scratchMount>;
  let stateMnt: ReturnType<typeof scratchMount>;
  let work: string;
  let stateDir: string;
  let bus: dbus.MessageBus;
  const watcher = new Watcher('org.kde.StatusNotifierWatcher');

  before(async () => {
    work = tempDir('la-desk-');
    desk = await startDesktop(path.join(work, 'desk'));
    process.env.DBUS_SESSION_BUS_ADDRESS = desk.busAddress;
    bus = dbus.sessionBus({ busAddress: desk.busAddress });
    bus.export('/StatusNotifierWatcher', watcher);
    await bus.requestName('org.kde.StatusNotifierWatcher', 0);
    svm = await startSvmProcess();
    mnt = scratchMount();
    // State on its own tmpfs: the storm quarantines 500 files, each with journal fsyncs.
    stateMnt = scratchMount('la-state-');
    stateDir = path.join(stateMnt.dir, 'state');
    agent = await startAgent({ svm: svm.url, protect: mnt.dir, stateDir, mode: 'fanotify', watchdogMs: 240_000 });
    fs.chmodSync(work, 0o755);
    tray = spawnAs65534([CLI, 'tray', '--state-dir', stateDir, '--rate', '3/4', '--threat-icon', '3', '--json'], {
      DBUS_SESSION_BUS_ADDRESS: desk.busAddress,
      DISPLAY: desk.display,
      HOME: work,
    });
    await waitFor(tray, /following the agent/, 20_000);
  });
  after(async () => {
    await tray?.stop();
    await agent?.stop();
    await svm?.stop();
    bus?.disconnect();
    await desk?.stop();
    mnt?.unmount();
    stateMnt?.unmount();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('registers a StatusNotifierItem that shows "protected", from an unprivileged process', async () => {
    await eventually(() => watcher.items.length > 0, 10_000, 'a registration with the watcher');
    const name = watcher.items[0]!;
    assert.match(name, /^org\.kde\.StatusNotifierItem-\d+-1$/);
    const obj = await bus.getProxyObject(name, '/StatusNotifierItem');
    const props = obj.getInterface('org.freedesktop.DBus.Properties');
    const status = await props.Get('org.kde.StatusNotifierItem', 'Status');
    const icon = await props.Get('org.kde.StatusNotifierItem', 'IconName');
    assert.equal(status.value, 'Active');
    assert.equal(icon.value, 'security-high');
    const pid = Number(/-(\d+)-1$/.exec(name)![1]);
    const uid = Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
    assert.equal(uid, 65534, 'the tray runs without privilege');
  });

  it('a blocked EICAR gives one Notify with the threat, the file and the action, and the screen shows it', async () => {
    const before = desk.notifyCalls().length;
    const shotBefore = path.join(work, 'before.png');
    desk.screenshot(shotBefore);
    const f = path.join(mnt.dir, 'invoice.pdf.exe');
    fs.writeFileSync(f, EICAR);
    const call = await eventually(
      () =>
        desk
          .notifyCalls()
          .slice(before)
          .find((c) => c.summary.startsWith('Threat blocked')),
      15_000,
      'a Notify call',
    );
    assert.equal(call.appName, 'lightagent');
    assert.equal(call.summary, 'Threat blocked: Eicar-Test-Signature');
    assert.equal(call.body, `File: ${f}\nThreat: Eicar-Test-Signature\nAction: quarantined`);
    assert.ok(!fs.existsSync(f), 'quarantined');
    // The icon turns to "threat blocked" (NeedsAttention).
    const obj = await bus.getProxyObject(watcher.items[0]!, '/StatusNotifierItem');
    const props = obj.getInterface('org.freedesktop.DBus.Properties');
    assert.equal((await props.Get('org.kde.StatusNotifierItem', 'IconName')).value, 'security-low');
    await new Promise((r) => setTimeout(r, 1000)); // dunst draws
    const shot = process.env.LIGHTAGENT_TRAY_SCREENSHOT ?? path.join(work, 'after.png');
    desk.screenshot(shot);
    // The notification changed the screen: compare the top-right corner before and after.
    const corner = (file: string) => spawnSync(CONVERT, [file, '-crop', '600x220+424+0', 'rgb:-'], { maxBuffer: 1 << 24 }).stdout;
    const aImg = corner(shotBefore);
    const bImg = corner(shot);
    assert.ok(aImg.length === 600 * 220 * 3 && bImg.length === aImg.length, 'screenshots decoded');
    let changed = 0;
    for (let i = 0; i < aImg.length; i += 3)
      if (aImg[i] !== bImg[i] || aImg[i + 1] !== bImg[i + 1] || aImg[i + 2] !== bImg[i + 2]) changed++;
    assert.ok(changed > 20_000, `the notification is on screen (${changed} pixels changed in the top-right corner)`);
  });

  it('protection going degraded (SVM gone) and back gives one notification each', async () => {
    const before = desk.notifyCalls().length;
    const port = svm.port;
    await svm.stop('SIGKILL');
    await eventually(
      () =>
        desk
          .notifyCalls()
          .slice(before)
          .find((c) => c.summary === 'Protection degraded'),
      15_000,
      'a degraded notification',
    );
    const deg = desk
      .notifyCalls()
      .slice(before)
      .find((c) => c.summary === 'Protection degraded')!;
    assert.match(deg.body, /Security VM cannot be reached/);
    svm = await restartSvmProcess(port);
    await eventually(
      () =>
        desk
          .notifyCalls()
          .slice(before)
          .find((c) => c.summary === 'Protection restored'),
      30_000,
      'a restored notification',
    );
  });
  it('a storm of 500 detections gives a bounded number of notifications, whose counts add up to 500', async () => {
    // The storm comes from a scripted status socket (the daemon's own LocalSockets), so it is
    // 500 detection events in about a second, not 500 quarantines' worth of disk time.
    await tray.stop();
    const sockDir = path.join(work, 'storm-sockets');
    const bus = new EventEmitter();
    const svc: AgentService = {
      status: () => ({ mode: 'fanotify', protection: { state: 'protected', reasons: [], since: new Date().toISOString() } }),
      subscribe: (on) => {
        bus.on('detection', on.detection);
        return () => bus.off('detection', on.detection);
      },
      reload: async () => ({}),
      rescan: async () => [],
      quarantineList: async () => [],
      quarantineRestore: async () => ({}),
      quarantineDelete: async () => ({}),
    };
    const sockets = await LocalSockets.start(sockDir, svc);
    const stormTray = spawnAs65534([CLI, 'tray', '--socket-dir', sockDir, '--rate', '3/4', '--json'], {
      DBUS_SESSION_BUS_ADDRESS: desk.busAddress,
      DISPLAY: desk.display,
      HOME: work,
    });
    try {
      await waitFor(stormTray, /following the agent/, 20_000);
      await eventually(() => bus.listenerCount('detection') === 1, 10_000, 'the tray to subscribe');
      const before = desk.notifyCalls().length;
      const t0 = Date.now();
      for (let i = 0; i < 500; i++) {
        bus.emit('detection', {
          kind: 'detection',
          time: new Date().toISOString(),
          path: `/home/u/Downloads/e${i}.com`,
          threat: 'Eicar-Test-Signature',
          action: 'quarantined',
        });
        if (i % 50 === 49) await new Promise((r) => setTimeout(r, 100));
      }
      const stormMs = Date.now() - t0;
      const count = () => {
        let individual = 0;
        let summarized = 0;
        for (const c of desk.notifyCalls().slice(before)) {
          if (c.summary.startsWith('Threat blocked')) individual++;
          const m = /^(\d+) more threats? blocked$/.exec(c.summary);
          if (m) summarized += Number(m[1]);
        }
        return { individual, summarized, total: individual + summarized };
      };
      const totals = await eventually(
        () => (count().total === 500 ? count() : undefined),
        15_000,
        'the summaries to account for all 500 detections',
      );
      const calls = desk.notifyCalls().slice(before);
      assert.equal(totals.individual, 3, 'three shown one by one, the rest summarized');
      assert.ok(calls.length <= 5, `${calls.length} notifications for 500 detections`);
      assert.match(calls.at(-1)!.body, /^Last: \/home\/u\/Downloads\/e499\.com/);
      process.stderr.write(
        `storm: 500 detections in ${stormMs} ms -> ${calls.length} notifications (${totals.individual} individual, summaries for ${totals.summarized})\n`,
      );
    } finally {
      await stormTray.stop();
      await sockets.close();
    }
  });
});
