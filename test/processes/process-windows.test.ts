/**
 * The Windows process path on Linux, with a fake Toolhelp snapshot source (the koffi bindings run
 * under Wine in test/windows/wine.test.ts): new processes found by diffing, a reused pid read as a
 * new process, the check queue bounded; and the daemon's wiring — ProcessMonitor (win32) +
 * OnAccessHandler.started + a real FileScanner against a scripted SVM + a real quarantine store:
 * an infected process is terminated, its image quarantined, the event names the process;
 * System, the agent and protected names (case-insensitive) are never terminated; a pid that runs
 * another image by the time of the verdict is left alone.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { DeferredQueue } from '../../src/store/deferred-queue.js';
import { DetectionLog } from '../../src/store/detections.js';
import type { AgentEvent } from '../../src/store/events-file.js';
import { FileScanner } from '../../src/scan/file-scanner.js';
import { OnAccessHandler } from '../../src/scan/on-access.js';
import { ProcessMonitor } from '../../src/processes/process-monitor.js';
import { Quarantine } from '../../src/store/quarantine.js';
import { ProcessSnapshotDiff, WindowsProcessWatcher, type SnapshotSource, type WinProcess } from '../../src/platform/windows/processes.js';
import { SvmLink } from '../../src/svm-link/index.js';
import { eventually, tempDir } from '../helpers/procs.js';
import { fakeSvm } from '../helpers/fake-svm.js';

const dir = tempDir('la-winproc-');
const cleanups: Array<() => unknown> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  fs.rmSync(dir, { recursive: true, force: true });
});

class FakeSource implements SnapshotSource {
  procs: WinProcess[] = [];
  terminated: number[] = [];
  /** Image per pid; a test may change it (pid reuse). */
  images = new Map<number, string>();
  snapshot(): WinProcess[] {
    return [...this.procs];
  }
  imagePath(pid: number): string | undefined {
    return this.procs.some((x) => x.pid === pid) ? this.images.get(pid) : undefined;
  }
  terminate(pid: number): boolean {
    this.terminated.push(pid);
    this.procs = this.procs.filter((p) => p.pid !== pid);
    return true;
  }
}

describe('ProcessSnapshotDiff', () => {
  it('reports started and exited processes between snapshots; the first snapshot is the baseline', () => {
    const d = new ProcessSnapshotDiff();
    assert.deepEqual(d.next([{ pid: 4, ppid: 0, name: 'System' }]), { started: [], exited: [] });
    const r = d.next([
      { pid: 4, ppid: 0, name: 'System' },
      { pid: 100, ppid: 4, name: 'a.exe' },
    ]);
    assert.deepEqual(
      r.started.map((p) => p.pid),
      [100],
    );
    assert.deepEqual(
      d.next([{ pid: 4, ppid: 0, name: 'System' }]).exited.map((p) => p.pid),
      [100],
    );
  });

  it('a reused pid (other parent or image) is a new process, and the old one exited', () => {
    const d = new ProcessSnapshotDiff();
    d.next([{ pid: 100, ppid: 4, name: 'a.exe' }]);
    const r = d.next([{ pid: 100, ppid: 8, name: 'b.exe' }]);
    assert.deepEqual(
      r.started.map((p) => p.name),
      ['b.exe'],
    );
    assert.deepEqual(
      r.exited.map((p) => p.name),
      ['a.exe'],
    );
  });
});

describe('WindowsProcessWatcher', () => {
  it('a storm of new processes waits in a bounded queue (also before a checker is set), with bounded concurrent checks', async () => {
    const src = new FakeSource();
    let inFlight = 0;
    let peak = 0;
    let done = 0;
    const w = new WindowsProcessWatcher({ source: src, maxConcurrentChecks: 3 });
    w.poll(false);
    for (let i = 0; i < 5000; i++) {
      src.procs.push({ pid: 1000 + i, ppid: 4, name: `p${i}.exe` });
      src.images.set(1000 + i, `C:\\Apps\\p${i}.exe`);
    }
    src.procs.push({ pid: 9999, ppid: 4, name: 'noimage.exe' });
    w.poll();
    assert.equal(w.counts.queueDropped, 5000 - 4096);
    assert.equal(w.counts.noImage, 1);
    assert.equal(w.counts.checked, 0, 'nothing is checked before a checker is set');
    w.setChecker(async () => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setTimeout(r, 1));
      inFlight--;
      done++;
    });
    await eventually(() => done === 4096, 30_000, 'all queued processes to be checked');
    assert.ok(peak <= 3, `peak ${peak}`);
    assert.equal(w.counts.checked, 4096);
  });
});

/** An SVM whose verdict for content containing "EVIL" is infected. */
const evilSvm = () => fakeSvm({ infected: { marker: 'EVIL', threat: 'Win.Test.Evil' } });

describe('ProcessMonitor on Windows (fake snapshots) + OnAccessHandler.started', () => {
  it('terminates an infected new process, quarantines its image, records the event with the process; spares System, itself and protected names', async () => {
    const svm = await evilSvm();
    cleanups.push(() => svm.close());
    const link = new SvmLink({
      url: svm.url,
      token: 'good',
      agentId: 'agent-winproc',
      host: 'h',
      os: 'windows',
      agentVersion: '0',
      deadlineMs: 5000,
      backoffMinMs: 20,
      backoffMaxMs: 100,
      connectTimeoutMs: 500,
    });
    cleanups.push(() => link.close());
    const stateDir = fs.mkdtempSync(path.join(dir, 'state-'));
    const images = fs.mkdtempSync(path.join(dir, 'img-'));
    const img = (name: string, content: string) => {
      const p = path.join(images, name);
      fs.writeFileSync(p, content);
      return p;
    };
    const src = new FakeSource();
    src.procs = [{ pid: 4, ppid: 0, name: 'System' }];
    src.images.set(4, img('ntoskrnl.exe', 'EVIL kernel'));
    const monitor = await ProcessMonitor.start({
      onDetect: 'deny',
      protectedProcesses: ['LSASS.EXE'],
      watcher: 'auto',
      tableEntries: 64,
      pollMs: 1000,
      eventsFile: path.join(stateDir, 'events.jsonl'),
      eventsMaxBytes: 1 << 20,
      windowsSource: src,
      windowsIntervalMs: 100,
      platform: 'win32',
    });
    cleanups.push(() => monitor.stop());
    assert.equal(monitor.mode, 'toolhelp-snapshot');
    const quarantine = new Quarantine({ stateDir });
    cleanups.push(() => quarantine.close());
    const queue = await DeferredQueue.open({ file: path.join(stateDir, 'queue.journal') });
    cleanups.push(() => queue.close());
    const detections = new DetectionLog(50);
    detections.on('detection', (d) => monitor.recordDetection(d));
    const scanner = new FileScanner({ link, maxFileSize: 1 << 20, deadlineMs: 5000 });
    const handler = new OnAccessHandler({
      scanner,
      detections,
      deferred: queue,
      quarantine,
      deadlineMs: 1000,
      onSvmUnavailable: 'allow',
      maxFileSize: 1 << 20,
      processes: monitor,
    });
    monitor.checkNewProcesses((image, pid) => handler.started(image, pid, () => scanner.scanPath(image)));

    const start = (pid: number, name: string, content: string) => {
      src.procs.push({ pid, ppid: 4, name });
      src.images.set(pid, img(name, content));
    };
    start(200, 'notepad.exe', 'a clean program');
    start(204, 'evil.exe', 'EVIL payload');
    start(208, 'lsass.exe', 'EVIL but protected');
    start(process.pid, 'agent.exe', 'EVIL but the agent itself');
    // pid 0 (System Idle) appears only now: never terminated either
    src.procs.push({ pid: 0, ppid: 0, name: '[System Process]' });
    src.images.set(0, src.images.get(4)!);
    await eventually(() => detections.count >= 4, 10_000, 'four infected images to be judged');
    await eventually(() => !fs.existsSync(path.join(images, 'evil.exe')), 5_000, 'the infected image to be quarantined');
    assert.deepEqual(src.terminated, [204], 'only the infected, unprotected process is terminated');
    assert.ok(fs.existsSync(path.join(images, 'notepad.exe')), 'the clean image stays');
    const evil = detections.recent().find((d) => d.path.endsWith('evil.exe'))!;
    assert.equal(evil.action, 'killed');
    assert.equal(evil.threat, 'Win.Test.Evil');
    assert.equal(evil.process?.pid, 204);
    assert.equal(evil.process?.exe, path.join(images, 'evil.exe'));
    const items = await quarantine.list();
    assert.deepEqual(items.map((r) => path.basename(r.originalPath)).sort(), ['agent.exe', 'evil.exe', 'lsass.exe', 'ntoskrnl.exe']);
    assert.equal(monitor.response.counts.spared, 3, 'System Idle, lsass (protected, any case) and the agent');
    await monitor.events.flush();
    const lines = fs
      .readFileSync(path.join(stateDir, 'events.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as AgentEvent);
    const ev = lines.find((l) => l.path.endsWith('evil.exe'))!;
    assert.equal(ev.kind, 'detection');
    assert.equal(ev.response, 'killed');
    assert.equal(ev.process?.pid, 204);
    assert.equal(ev.process?.exe, path.join(images, 'evil.exe'));
    assert.equal(ev.process?.parents[0]?.pid, 4);

    // A pid that runs another image when the verdict comes is not terminated.
    const before = src.terminated.length;
    let releaseScan!: () => void;
    const gate = new Promise<void>((r) => (releaseScan = r));
    monitor.checkNewProcesses(async (image, pid) => {
      await gate;
      return handler.started(image, pid, () => scanner.scanPath(image));
    });
    start(300, 'late.exe', 'EVIL late verdict');
    await eventually(() => monitor.stats().checking === 1, 5_000, 'the check to start');
    src.images.set(300, img('other.exe', 'another program now has the pid'));
    releaseScan();
    await eventually(() => detections.recent().some((d) => d.path.endsWith('late.exe')), 10_000, 'the late verdict');
    assert.equal(src.terminated.length, before, 'the reused pid is left alone');
    assert.equal(monitor.response.counts.failed, 1);
  });
});
