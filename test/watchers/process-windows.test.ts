/**
 * The Windows process watcher's logic on Linux, with a fake Toolhelp snapshot source: new
 * processes found by diffing, a reused pid read as a new process, an infected image terminated
 * and quarantined, protected and own processes never terminated, the scan queue bounded.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ProcessSnapshotDiff, WindowsProcessWatcher, type SnapshotSource, type WinProcess } from '../../src/platform/windows/processes.js';

class FakeSource implements SnapshotSource {
  procs: WinProcess[] = [];
  terminated: number[] = [];
  snapshot(): WinProcess[] {
    return [...this.procs];
  }
  imagePath(pid: number): string | undefined {
    const p = this.procs.find((x) => x.pid === pid);
    return p ? `C:\\Apps\\${p.name}` : undefined;
  }
  terminate(pid: number): boolean {
    this.terminated.push(pid);
    this.procs = this.procs.filter((p) => p.pid !== pid);
    return true;
  }
}

const settle = () => new Promise((r) => setTimeout(r, 20));

describe('ProcessSnapshotDiff', () => {
  it('reports started and exited processes between snapshots; the first snapshot is the baseline', () => {
    const d = new ProcessSnapshotDiff();
    assert.deepEqual(d.next([{ pid: 4, ppid: 0, name: 'System' }]), { started: [], exited: [] });
    const r = d.next([
      { pid: 4, ppid: 0, name: 'System' },
      { pid: 100, ppid: 4, name: 'a.exe' },
    ]);
    assert.deepEqual(r.started.map((p) => p.pid), [100]);
    assert.deepEqual(d.next([{ pid: 4, ppid: 0, name: 'System' }]).exited.map((p) => p.pid), [100]);
  });

  it('a reused pid (other parent or image) is a new process, and the old one exited', () => {
    const d = new ProcessSnapshotDiff();
    d.next([{ pid: 100, ppid: 4, name: 'a.exe' }]);
    const r = d.next([{ pid: 100, ppid: 8, name: 'b.exe' }]);
    assert.deepEqual(r.started.map((p) => p.name), ['b.exe']);
    assert.deepEqual(r.exited.map((p) => p.name), ['a.exe']);
  });
});

describe('WindowsProcessWatcher', () => {
  it('scans new images, terminates an infected process and quarantines its image; spares protected and own ones', async () => {
    const src = new FakeSource();
    src.procs = [{ pid: 4, ppid: 0, name: 'System' }];
    const scanned: string[] = [];
    const quarantined: string[] = [];
    const w = new WindowsProcessWatcher({
      source: src,
      selfPid: 500,
      protectedNames: ['LSASS.exe'],
      scanImage: async (p) => {
        scanned.push(p);
        return p.endsWith('evil.exe') || p.endsWith('lsass.exe') || p.endsWith('agent.exe') ? { infected: true, threat: 'Win.Test.EICAR' } : { infected: false };
      },
      quarantine: async (p) => void quarantined.push(p),
    });
    const events: string[] = [];
    w.on('event', (e) => events.push(`${e.type}:${e.process.pid}`));
    w.poll(false);
    src.procs.push({ pid: 200, ppid: 4, name: 'notepad.exe' }, { pid: 201, ppid: 4, name: 'evil.exe' }, { pid: 202, ppid: 4, name: 'lsass.exe' }, { pid: 500, ppid: 4, name: 'agent.exe' });
    w.poll();
    await settle();
    assert.deepEqual(scanned.sort(), ['C:\\Apps\\agent.exe', 'C:\\Apps\\evil.exe', 'C:\\Apps\\lsass.exe', 'C:\\Apps\\notepad.exe']);
    assert.deepEqual(src.terminated, [201]);
    assert.deepEqual(quarantined, ['C:\\Apps\\evil.exe']);
    assert.ok(events.includes('terminated:201'));
    assert.equal(w.counts.terminated, 1);
    w.poll();
    assert.ok(events.includes('exited:201'));
  });

  it('a storm of new processes waits in a bounded queue with bounded concurrent scans', async () => {
    const src = new FakeSource();
    let inFlight = 0;
    let peak = 0;
    const w = new WindowsProcessWatcher({
      source: src,
      maxConcurrentScans: 3,
      scanImage: async () => {
        inFlight++;
        peak = Math.max(peak, inFlight);
        await new Promise((r) => setTimeout(r, 1));
        inFlight--;
        return { infected: false };
      },
      quarantine: async () => undefined,
    });
    w.poll(false);
    for (let i = 0; i < 5000; i++) src.procs.push({ pid: 1000 + i, ppid: 4, name: `p${i}.exe` });
    w.poll();
    assert.equal(w.counts.queueDropped, 5000 - 4096);
    for (let i = 0; i < 300 && w.counts.scanned < 4096; i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(peak <= 3, `peak ${peak}`);
    assert.equal(w.counts.scanned, 4096);
  });
});
