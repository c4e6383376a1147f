/**
 * Filesystem tricks against a real fanotify agent on a scratch tmpfs: paths swapped for symlinks
 * or replaced between check and use (the content judged is the content read, through the event
 * fd), names with newlines and invalid UTF-8, a path at PATH_MAX and one past it, a sparse file of
 * 100 GiB apparent size, FIFOs, files deleted while being scanned, and a quarantine restore
 * aimed through a symlink at /etc. Each promise is in its test's name.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EICAR } from '../helpers/fixtures.js';
import { CLI, eventually, needRoot, run, scratchMount, startSvmProcess, tempDir } from '../helpers/procs.js';
import { quarantineList as quarantined, startAgent, type Agent, type StartAgentOptions } from '../helpers/agent.js';
import { OpenTimer } from './open-timer.js';

/** The reliability tests' agent: fanotify, with a longer watchdog than most (they load it). */
const fanotifyAgent = (svm: string, protect: string, stateDir: string, o: Omit<StartAgentOptions, 'svm' | 'protect' | 'stateDir'> = {}) =>
  startAgent({ svm, protect, stateDir, mode: 'fanotify', watchdogMs: 240_000, ...o });

const skip = needRoot();
const DEADLINE = ['--deadline', '1s'];
const unique = (tag: string) => `${tag} ${Date.now()} ${Math.random()}\n`;
const infected = (tag: string) => `${EICAR}\n${unique(tag)}`;

describe('filesystem tricks under the gate', { skip }, () => {
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  let agent: Agent;
  let mnt: ReturnType<typeof scratchMount>;
  let stateDir: string;
  const opens = new OpenTimer();
  before(async () => {
    svm = await startSvmProcess();
    mnt = scratchMount('la-rel-fs-');
    stateDir = tempDir('la-rel-state-');
    agent = await fanotifyAgent(svm.url, mnt.dir, stateDir, { args: DEADLINE });
  });
  after(async () => {
    await agent?.stop();
    await svm?.stop();
    mnt?.unmount();
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  /** Write files while the agent is stopped, so the next open is their first judgement. */
  async function unseen(write: () => void): Promise<void> {
    await agent.stop();
    write();
    agent = await fanotifyAgent(svm.url, mnt.dir, stateDir, { args: DEADLINE });
  }

  it('symlink swapped and file replaced between check and use: infected content is never served, whatever the path named at open', async () => {
    const d = path.join(mnt.dir, 'swap');
    const n = 15;
    await unseen(() => {
      fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, 'clean.txt'), 'clean content\n');
      for (let i = 0; i < n; i++) fs.writeFileSync(path.join(d, `bad${i}.com`), infected(`swap ${i}`));
    });
    // A link flipped between a clean and an infected target while readers open it, and a path
    // renamed over (clean <-> infected) at the same time.
    const script = `cd ${d}; for i in $(seq 0 ${n - 1}); do
      ln -sfn clean.txt link; (cat link &); ln -sfn bad$i.com link; cat link; cat link
      cp -f clean.txt spot; (cat spot &); cp -f --preserve=all bad$i.com spot.new 2>/dev/null && mv -f spot.new spot; cat spot
    done 2>/dev/null; wait`;
    const r = run('bash', ['-c', script], 60_000);
    assert.equal(r.status, 0, r.stderr);
    assert.ok(!r.stdout.includes('EICAR-STANDARD-ANTIVIRUS-TEST-FILE'), 'no reader ever got infected bytes');
    assert.ok(r.stdout.includes('clean content'), 'the clean target was served');
    assert.equal(agent.child.exitCode, null);
  });

  it('names with a newline and with invalid UTF-8: infected files are refused on open and the agent stays up', async () => {
    const nl = path.join(mnt.dir, 'evil\nname.com');
    const badUtf8 = Buffer.concat([Buffer.from(`${mnt.dir}/bad-`), Buffer.from([0xff, 0xfe, 0xc0, 0x80]), Buffer.from('.com')]);
    await unseen(() => {
      fs.writeFileSync(nl, infected('newline'));
      fs.writeFileSync(badUtf8, infected('utf8'));
    });
    const a = opens.cat(nl);
    assert.notEqual(a.status, 0, 'newline name refused');
    // bash builds the name from bytes: a JS string cannot hold them.
    const b = run('bash', ['-c', `cat "${mnt.dir}"/bad-$'\\xff\\xfe\\xc0\\x80'.com`], 20_000);
    assert.notEqual(b.status, 0, 'invalid UTF-8 name refused');
    assert.match(b.stderr, /Operation not permitted/, 'refused by the gate, not missing');
    const out = b.stdout;
    assert.ok(!out.includes('EICAR-STANDARD'), 'no infected bytes served');
    await eventually(() => !fs.existsSync(nl), 10_000, 'the newline-named file quarantined');
    assert.ok(
      quarantined(stateDir).some((q) => q.originalPath === nl),
      'listed under its exact name',
    );
    const s = await agent.status();
    assert.ok(s.detections.total >= 2, `${JSON.stringify(s.detections).slice(0, 500)}\nagent log:\n${agent.output().slice(-3000)}`);
  });

  it('a path of 4,095 bytes (PATH_MAX with its NUL) and one past PATH_MAX reached relatively: both refused, the agent stays up', async () => {
    // Directories of 200 bytes each until the absolute path is 4,095 bytes long.
    const seg = 'd'.repeat(200);
    let dir = mnt.dir;
    while (Buffer.byteLength(dir) + 201 + 10 < 4095) dir = path.join(dir, seg);
    const leafLen = 4095 - Buffer.byteLength(dir) - 1;
    const leaf = `${'f'.repeat(leafLen - 4)}.com`;
    const full = path.join(dir, leaf);
    assert.equal(Buffer.byteLength(full), 4095);
    await unseen(() => {
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(full, infected('long path'));
    });
    const r = opens.cat(full);
    assert.notEqual(r.status, 0, 'infected file at a 4,095-byte path refused');
    // Past PATH_MAX: only reachable with relative paths (cd step by step).
    const deeper = `cd ${mnt.dir} && for i in $(seq 1 25); do mkdir -p ${seg} && cd ${seg}; done && printf '%s' "$1" > deep.com && echo written`;
    await agent.stop();
    const w = run('bash', ['-c', deeper, 'x', infected('past PATH_MAX')]);
    assert.match(w.stdout, /written/, w.stderr);
    agent = await fanotifyAgent(svm.url, mnt.dir, stateDir, { args: DEADLINE });
    const readDeep = run('bash', ['-c', `cd ${mnt.dir} && for i in $(seq 1 25); do cd ${seg}; done && cat deep.com`], 20_000);
    assert.notEqual(readDeep.status, 0, `infected file past PATH_MAX refused; agent log:\n${agent.output().slice(-3000)}`);
    assert.ok(!readDeep.stdout.includes('EICAR-STANDARD'));
    assert.equal(agent.child.exitCode, null, 'agent alive');
  });

  it('a sparse file of 100 GiB apparent size: the open is answered at once by the max_file_size policy, nothing near 100 GiB is read', async () => {
    const f = path.join(mnt.dir, 'sparse.img');
    await unseen(() => {
      fs.writeFileSync(f, EICAR);
      fs.truncateSync(f, 100 * 2 ** 30);
    });
    const rss0 = (await agent.status()) && Number(fs.readFileSync(`/proc/${agent.pid}/statm`, 'utf8').split(' ')[1]) * 4096;
    const r = run('head', ['-c', '16', f], 20_000);
    assert.equal(r.status, 0, 'over max_file_size: allowed by the stated policy');
    assert.ok(r.ms < 2500, `answered in ${r.ms.toFixed(0)} ms`);
    const io = fs.readFileSync(`/proc/${agent.pid}/io`, 'utf8');
    const rchar = Number(/rchar: (\d+)/.exec(io)![1]);
    assert.ok(rchar < 2 ** 30, `agent read ${rchar} bytes in all (not the 100 GiB)`);
    const rss1 = Number(fs.readFileSync(`/proc/${agent.pid}/statm`, 'utf8').split(' ')[1]) * 4096;
    assert.ok(rss1 - rss0 < 256 << 20, 'no memory sized by the apparent length');
    fs.rmSync(f);
  });

  it('FIFOs: opening one under the gate never hangs (reader and writer both finish), the agent stays up', async () => {
    const fifo = path.join(mnt.dir, 'pipe');
    run('mkfifo', [fifo]);
    const t0 = performance.now();
    const reader = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'ignore'] });
    let got = '';
    reader.stdout!.on('data', (b: Buffer) => (got += b.toString()));
    const writer = run('bash', ['-c', `echo through-the-pipe > ${fifo}`], 10_000);
    assert.equal(writer.status, 0, 'writer finished');
    const code = await Promise.race([
      new Promise<number | null>((r) => reader.once('exit', (c) => r(c))),
      new Promise<'hung'>((r) => setTimeout(() => r('hung'), 10_000)),
    ]);
    if (code === 'hung') reader.kill('SIGKILL');
    assert.equal(code, 0, 'reader finished');
    assert.equal(got.trim(), 'through-the-pipe');
    assert.ok(performance.now() - t0 < 5000);
    // A FIFO with no writer: an O_NONBLOCK open answers at once (the gate must not wait on it).
    const nb = run(
      process.execPath,
      [
        '-e',
        `const fs=require('fs');const fd=fs.openSync(${JSON.stringify(fifo)}, fs.constants.O_RDONLY|fs.constants.O_NONBLOCK);fs.closeSync(fd);console.log('ok')`,
      ],
      10_000,
    );
    assert.match(nb.stdout, /ok/);
    assert.equal(agent.child.exitCode, null);
  });

  it('files deleted while being scanned (200 writes+unlinks racing close-write scans, 30 MiB files opened and removed): no crash, no stuck open, detection still works', async () => {
    const d = path.join(mnt.dir, 'churn');
    fs.mkdirSync(d);
    const churn = run('bash', ['-c', `cd ${d}; for i in $(seq 1 200); do echo "tmp $i $RANDOM" > t$i; rm -f t$i; done; echo done`], 60_000);
    assert.match(churn.stdout, /done/);
    const big = path.join(mnt.dir, 'big-deleted.bin');
    await unseen(() => fs.writeFileSync(big, Buffer.alloc(30 << 20, 7)));
    const reader = spawn('cat', [big], { stdio: ['ignore', 'ignore', 'ignore'] });
    const exited = new Promise<number | null>((r) => reader.once('exit', (c) => r(c)));
    await new Promise((r) => setTimeout(r, 20));
    fs.rmSync(big); // gone from its directory while the agent hashes or uploads it
    const t0 = performance.now();
    const code = await Promise.race([exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 10_000))]);
    if (code === 'hung') reader.kill('SIGKILL');
    assert.notEqual(code, 'hung', 'the open finished');
    assert.ok(performance.now() - t0 < 5000);
    const f = path.join(d, 'still-caught.com');
    fs.writeFileSync(f, infected('after churn'));
    await eventually(() => !fs.existsSync(f), 10_000, 'detection after the churn');
    assert.equal(agent.child.exitCode, null);
  });

  it('quarantine restore aimed through a symlink at /etc is refused (LA_ERR_RESTORE_SYMLINK), and nothing appears in /etc', async () => {
    const sub = path.join(mnt.dir, 'victim-dir');
    fs.mkdirSync(sub);
    const name = `la-rel-${process.pid}-passwd.com`;
    const f = path.join(sub, name);
    fs.writeFileSync(f, infected('restore'));
    await eventually(() => !fs.existsSync(f), 10_000, 'quarantined');
    const item = quarantined(stateDir).find((q) => q.originalPath === f);
    assert.ok(item, 'listed');
    fs.rmSync(sub, { recursive: true });
    fs.symlinkSync('/etc', sub); // the directory is swapped for a link to /etc
    try {
      const r = run(process.execPath, [CLI, 'quarantine', 'restore', item.id, '--state-dir', stateDir, '--json'], 20_000);
      assert.notEqual(r.status, 0, 'refused');
      assert.match(r.stdout + r.stderr, /LA_ERR_RESTORE_SYMLINK/);
      assert.ok(!fs.existsSync(path.join('/etc', name)), 'nothing written into /etc');
      // --to through the link is refused the same way.
      const r2 = run(
        process.execPath,
        [
          CLI,
          'quarantine',
          'restore',
          item.id,
          '--to',
          path.join(sub, `la-rel-${process.pid}-other.com`),
          '--state-dir',
          stateDir,
          '--json',
        ],
        20_000,
      );
      assert.notEqual(r2.status, 0);
      assert.ok(!fs.existsSync(`/etc/la-rel-${process.pid}-other.com`));
      assert.ok(
        quarantined(stateDir).some((q) => q.id === item.id),
        'the item stays in quarantine',
      );
    } finally {
      fs.rmSync(path.join('/etc', name), { force: true });
      fs.rmSync(`/etc/la-rel-${process.pid}-other.com`, { force: true });
      fs.unlinkSync(sub);
    }
  });
});
