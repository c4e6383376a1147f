/**
 * The one suite every protection backend must pass (src/watchers/protection.ts is the seam): the
 * backend runs in a child process (fixtures/backend-child.ts, under a watchdog) built by
 * createBackend, and each case changes files from this process and asserts what the backend
 * reported to the handler. A backend that cannot block an open (the watchers) must report the
 * written file; one that can (fanotify) may instead refuse the open: the cases accept either where
 * the kernel gives no write to report (a rename).
 *
 * Backends fed recorded notifications (the Windows watcher on Linux) get, after each change, the
 * FILE_NOTIFY_INFORMATION records ReadDirectoryChangesW gives for it, in buffers laid out as
 * Windows lays them out (DWORD-aligned, at most 64 KiB each).
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EICAR } from '../helpers/procs.js';
import type { BackendKind } from '../../src/watchers/protection.js';

const CHILD = new URL('./fixtures/backend-child.js', import.meta.url).pathname;
const SETTLE_MS = 100;
/** Long enough for a second report of one write to show up if a backend made one. */
const QUIET_MS = 800;

export interface ConformanceTarget {
  kind: BackendKind;
  /** A fresh directory the backend may own; protected/, outside/ and quarantine/ are made in it. */
  base: () => string;
  /** Feed recorded ReadDirectoryChangesW records after each change (the Windows watcher). */
  recorded?: boolean;
  /** The backend refuses opens of infected files (fanotify). */
  blocksOpens: boolean;
  skip?: string | undefined;
}

interface Report {
  t: string;
  path?: string;
  verdict?: string;
  allow?: boolean;
  [k: string]: unknown;
}

const FILE_ACTION = { added: 1, removed: 2, modified: 3, renamedOld: 4, renamedNew: 5 } as const;

/** FILE_NOTIFY_INFORMATION records, DWORD-aligned as Windows writes them. */
export function notifyBuffer(recs: readonly { action: number; name: string }[]): Buffer {
  const parts: Buffer[] = [];
  recs.forEach((r, i) => {
    const name = Buffer.from(r.name, 'utf16le');
    const size = 12 + name.length;
    const padded = Math.ceil(size / 4) * 4;
    const last = i === recs.length - 1;
    const b = Buffer.alloc(last ? size : padded);
    b.writeUInt32LE(last ? 0 : padded, 0);
    b.writeUInt32LE(r.action, 4);
    b.writeUInt32LE(name.length, 8);
    name.copy(b, 12);
    parts.push(b);
  });
  return Buffer.concat(parts);
}

class Agent {
  private out = '';
  private readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;
  constructor(kind: BackendKind, protect: string, quarantine: string) {
    this.child = spawn(process.execPath, [CHILD, kind, protect, quarantine, String(SETTLE_MS)], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.out += d.toString()));
    let err = '';
    this.child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-20_000)));
    // every agent has a watchdog: a hang fails the suite, never the machine
    const watchdog = setTimeout(() => this.child.kill('SIGKILL'), 240_000);
    watchdog.unref();
    this.exited = new Promise((r) =>
      this.child.once('exit', (code) => {
        clearTimeout(watchdog);
        if (code !== 0) process.stderr.write(`backend child exited ${code}; its log:\n${err.slice(-4000)}\n`);
        r(code);
      }),
    );
  }
  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
  reports(): Report[] {
    return this.out
      .split('\n')
      .filter((l) => l.startsWith('@@ '))
      .map((l) => JSON.parse(l.slice(3)) as Report);
  }
  send(line: string): void {
    this.child.stdin!.write(`${line}\n`);
  }
  async until<T>(what: string, fn: (r: Report[]) => T | undefined | false, ms = 20_000): Promise<T> {
    const end = Date.now() + ms;
    for (;;) {
      const v = fn(this.reports());
      if (v) return v;
      if (!this.alive) throw new Error(`the backend exited while waiting for ${what}`);
      if (Date.now() > end)
        throw new Error(`timed out after ${ms} ms waiting for ${what}; reports: ${JSON.stringify(this.reports().slice(-10))}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  async stop(): Promise<number | null> {
    if (!this.alive) return this.child.exitCode;
    this.send('stop');
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    const code = await this.exited;
    clearTimeout(t);
    return code;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function runBackendConformance(name: string, target: ConformanceTarget): void {
  describe(`protection backend conformance: ${name}`, { skip: target.skip }, () => {
    let agent: Agent;
    let protect = '';
    let outside = '';
    let quarantine = '';
    const written = (p: string) => agent.reports().filter((r) => r.t === 'written' && (r.path === p || r.path === `${p} (deleted)`));

    /** Tell a recorded-notification backend what Windows would have said (relative to protect). */
    const notify = (recs: { action: number; rel: string }[]) => {
      if (!target.recorded) return;
      // RDCW's usual buffer is 64 KiB: a burst comes as several of them
      let batch: { action: number; name: string }[] = [];
      let bytes = 0;
      const flush = () => {
        if (batch.length > 0) agent.send(`notify ${notifyBuffer(batch).toString('hex')}`);
        batch = [];
        bytes = 0;
      };
      for (const r of recs) {
        const name = r.rel.split(path.sep).join('\\');
        const size = Math.ceil((12 + name.length * 2) / 4) * 4;
        if (bytes + size > 64 * 1024) flush();
        batch.push({ action: r.action, name });
        bytes += size;
      }
      flush();
    };
    const rel = (p: string) => path.relative(protect, p);
    const create = (p: string, content: string) => {
      fs.writeFileSync(p, content);
      notify([
        { action: FILE_ACTION.added, rel: rel(p) },
        { action: FILE_ACTION.modified, rel: rel(p) },
      ]);
    };

    before(async () => {
      const base = target.base();
      protect = path.join(base, 'protected');
      outside = path.join(base, 'outside');
      quarantine = path.join(base, 'quarantine');
      for (const d of [protect, outside, quarantine]) fs.mkdirSync(d, { recursive: true });
      // case folders exist before the backend starts: a watcher that picks up a new folder late is
      // not what these cases are about
      for (const d of ['create', 'modify', 'rename', 'delete', 'burst', 'vanish', 'excluded']) fs.mkdirSync(path.join(protect, d));
      agent = new Agent(target.kind, protect, quarantine);
      await agent.until('ready', (r) => r.some((x) => x.t === 'ready'), 30_000);
    });
    after(async () => {
      await agent?.stop();
    });

    it('reports a clean file written, once, and leaves it in place', async () => {
      const f = path.join(protect, 'create', 'clean.txt');
      create(f, 'nothing to see\n');
      await agent.until('the clean report', () => written(f).some((r) => r.verdict === 'clean'));
      await sleep(QUIET_MS);
      assert.equal(written(f).length, 1, `one write, one report: ${JSON.stringify(written(f))}`);
      assert.ok(fs.existsSync(f), 'a clean file stays');
      assert.deepEqual(
        agent.reports().filter((r) => r.path === f && r.allow === false),
        [],
      );
    });

    it('reports an infected file written, once, and it is quarantined', async () => {
      const f = path.join(protect, 'create', 'eicar.com');
      create(f, EICAR);
      await agent.until('the detection', () => written(f).some((r) => r.verdict === 'infected'));
      assert.equal(fs.existsSync(f), false, 'moved out of the protected tree');
      await sleep(QUIET_MS);
      assert.equal(written(f).length, 1, `one write, one report: ${JSON.stringify(written(f))}`);
      assert.ok(fs.readdirSync(quarantine).some((n) => n.endsWith('-eicar.com')));
    });

    it('reports a clean file rewritten with infected content, and it is quarantined', async () => {
      const f = path.join(protect, 'modify', 'doc.txt');
      create(f, 'first version\n');
      await agent.until('the first report', () => written(f).some((r) => r.verdict === 'clean'));
      fs.writeFileSync(f, EICAR);
      notify([
        { action: FILE_ACTION.modified, rel: rel(f) },
        { action: FILE_ACTION.modified, rel: rel(f) },
      ]);
      await agent.until('the detection', () => written(f).some((r) => r.verdict === 'infected'));
      assert.equal(fs.existsSync(f), false);
      await sleep(QUIET_MS);
      assert.deepEqual(
        written(f).map((r) => r.verdict),
        ['clean', 'infected'],
        'one report per write',
      );
    });

    it('judges files renamed into the protected tree: an infected one is caught, a clean one is left alone', async () => {
      const srcBad = path.join(outside, 'moved.com');
      const srcGood = path.join(outside, 'moved.txt');
      fs.writeFileSync(srcBad, EICAR);
      fs.writeFileSync(srcGood, 'harmless\n');
      const bad = path.join(protect, 'rename', 'moved.com');
      const good = path.join(protect, 'rename', 'moved.txt');
      fs.renameSync(srcBad, bad);
      fs.renameSync(srcGood, good);
      // moved in from outside the watched tree: Windows reports them as added
      notify([
        { action: FILE_ACTION.added, rel: rel(bad) },
        { action: FILE_ACTION.added, rel: rel(good) },
      ]);
      if (target.blocksOpens) {
        // no write happened, so nothing to report yet: the first open is judged
        assert.throws(
          () => fs.readFileSync(bad),
          (e: NodeJS.ErrnoException) => e.code === 'EPERM',
        );
        assert.equal(fs.readFileSync(good, 'utf8'), 'harmless\n');
        await agent.until('the refusal', (r) => r.some((x) => x.t === 'decide' && x.path === bad && x.allow === false));
        assert.ok(agent.reports().some((x) => x.t === 'decide' && x.path === good && x.allow === true));
      } else {
        await agent.until('the detection', () => written(bad).some((r) => r.verdict === 'infected'));
        await agent.until('the clean report', () => written(good).some((r) => r.verdict === 'clean'));
        assert.equal(fs.existsSync(bad), false, 'quarantined');
      }
      assert.ok(fs.existsSync(good), 'a clean file stays');
      await sleep(QUIET_MS);
      assert.ok(written(bad).length <= 1 && written(good).length <= 1, 'at most one report per file');
      assert.deepEqual(
        agent.reports().filter((r) => r.path?.startsWith(outside)),
        [],
        'nothing outside protect is reported',
      );
    });

    it('leaves excluded paths alone', async () => {
      const f = path.join(protect, 'excluded', 'eicar.com');
      create(f, EICAR);
      await sleep(QUIET_MS + SETTLE_MS);
      assert.deepEqual(
        agent.reports().filter((r) => r.path?.startsWith(path.join(protect, 'excluded'))),
        [],
      );
      assert.ok(fs.existsSync(f));
      fs.rmSync(f);
    });

    it('reports nothing more for a deleted file, and carries on', async () => {
      const f = path.join(protect, 'delete', 'gone.txt');
      create(f, 'short-lived\n');
      await agent.until('its report', () => written(f).length > 0);
      fs.rmSync(f);
      notify([{ action: FILE_ACTION.removed, rel: rel(f) }]);
      await sleep(QUIET_MS);
      assert.equal(written(f).length, 1);
      const canary = path.join(protect, 'delete', 'canary.com');
      create(canary, EICAR);
      await agent.until('the canary', () => written(canary).some((r) => r.verdict === 'infected'));
    });

    it('a burst of 300 files: each reported exactly once, every infected one quarantined', async () => {
      const files: string[] = [];
      const recs: { action: number; rel: string }[] = [];
      for (let i = 0; i < 300; i++) {
        const f = path.join(protect, 'burst', i % 50 === 7 ? `f${i}.com` : `f${i}.txt`);
        fs.writeFileSync(f, i % 50 === 7 ? EICAR : `file ${i}\n`);
        files.push(f);
        recs.push({ action: FILE_ACTION.added, rel: rel(f) }, { action: FILE_ACTION.modified, rel: rel(f) });
      }
      notify(recs);
      await agent.until('a report for every file', () => files.every((f) => written(f).length > 0), 60_000);
      await sleep(QUIET_MS);
      const infected = files.filter((f) => f.endsWith('.com'));
      assert.equal(infected.length, 6);
      for (const f of files) {
        const w = written(f);
        assert.equal(w.length, 1, `${f}: ${JSON.stringify(w)}`);
        assert.equal(w[0]!.verdict, f.endsWith('.com') ? 'infected' : 'clean', f);
        assert.equal(fs.existsSync(f), !f.endsWith('.com'), f);
      }
    });

    it('files that vanish before they are scanned neither crash nor hang it', async () => {
      const gone: string[] = [];
      for (let i = 0; i < 60; i++) {
        const f = path.join(protect, 'vanish', i % 2 ? `v${i}.com` : `v${i}.txt`);
        create(f, i % 2 ? EICAR : `v ${i}\n`);
        fs.rmSync(f);
        notify([{ action: FILE_ACTION.removed, rel: rel(f) }]);
        gone.push(f);
      }
      // one swapped for a directory of the same name between its write and its scan
      const swapped = path.join(protect, 'vanish', 'swapped');
      create(swapped, 'x');
      fs.rmSync(swapped);
      fs.mkdirSync(swapped);
      notify([
        { action: FILE_ACTION.removed, rel: rel(swapped) },
        { action: FILE_ACTION.added, rel: rel(swapped) },
      ]);
      const canary = path.join(protect, 'vanish', 'canary.com');
      create(canary, EICAR);
      await agent.until('the canary', () => written(canary).some((r) => r.verdict === 'infected'));
      await sleep(QUIET_MS);
      assert.ok(agent.alive);
      for (const f of gone) assert.ok(written(f).length <= 1, `${f} reported ${written(f).length} times`);
      // a backend that still held the file open judged it (fanotify reads through the event fd)
      for (const f of gone)
        for (const r of written(f)) if (r.fd === true) assert.equal(r.verdict, f.endsWith('.com') ? 'infected' : 'clean', f);
    });

    // only a backend fed recorded notifications can be made to lose them
    if (target.recorded)
      it('after lost notifications (a buffer overflow) the root is rescanned: nothing written is hidden', async () => {
        const dir = path.join(protect, 'overflow');
        fs.mkdirSync(dir);
        const files = Array.from({ length: 20 }, (_, i) => path.join(dir, i % 5 === 0 ? `o${i}.com` : `o${i}.txt`));
        for (const f of files) fs.writeFileSync(f, f.endsWith('.com') ? EICAR : 'fine\n'); // no records: they were lost
        agent.send('overflow');
        await agent.until('a report for every file', () => files.every((f) => written(f).length > 0), 20_000);
        for (const f of files) assert.equal(fs.existsSync(f), !f.endsWith('.com'), f);
        assert.deepEqual(
          agent.reports().filter((r) => r.path?.startsWith(path.join(protect, 'excluded'))),
          [],
          'the rescan skips excluded paths',
        );
      });

    it('stops promptly and cleanly', async () => {
      agent.send('stats');
      const stats = await agent.until('stats', (r) => r.find((x) => x.t === 'stats'));
      assert.equal(typeof stats.stats, 'object');
      const t0 = Date.now();
      assert.equal(await agent.stop(), 0);
      assert.ok(Date.now() - t0 < 5000, `stop took ${Date.now() - t0} ms`);
    });
  });
}
