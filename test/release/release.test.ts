/**
 * The single executable (npm run release) does what the compiled sources do: version, the SVM
 * (`lightagent svm`, or invoked as lightagent-svm), an on-demand scan, and the fanotify gate on a
 * scratch tmpfs with koffi loaded from the executable's own assets.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EICAR } from '../helpers/fixtures.js';
import { eventually, needRoot, type Proc, run, scratchMount, tempDir, waitFor } from '../helpers/procs.js';
import { hostInfo } from '../../src/platform/host-info.js';
import { BINARY, ROOT, ensureBinary, runBinary, spawnBinary } from './binary.js';
import { seaBlobRange } from '../../src/platform/linux/sea-blob.js';
import { SVM_RUNTIME_V8_FLAGS } from '../../src/node-flags.js';

const TOKEN = 'release-test-token';

async function startSvm(file?: string): Promise<Proc & { url: string }> {
  const p = spawnBinary(
    file ? ['--listen', '127.0.0.1:0', '--token', TOKEN, '--json'] : ['svm', '--listen', '127.0.0.1:0', '--token', TOKEN, '--json'],
    file ? { file } : {},
  );
  const m = await waitFor(p, /"url"\s*:\s*"(ws:\/\/[^"]+)"/);
  return { ...p, url: m[1]! };
}

/** Private directories of a process: lightagent-<pid>-XXXXXX under /run (root) or the temp dir. */
function privateDirs(pid: number): string[] {
  const found: string[] = [];
  for (const base of ['/run', os.tmpdir()]) {
    try {
      for (const n of fs.readdirSync(base)) if (n.startsWith(`lightagent-${pid}-`)) found.push(path.join(base, n));
    } catch {
      // no such base
    }
  }
  return found;
}

describe('release binary', () => {
  let svm: Proc & { url: string };
  let work: string;
  before(async () => {
    const ms = ensureBinary();
    if (ms) process.stderr.write(`built ${BINARY} in ${(ms / 1000).toFixed(1)} s\n`);
    work = tempDir('la-release-');
    svm = await startSvm();
  });
  after(async () => {
    await svm?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  });

  it("its embedded blob is where the idle trim pages it out from (NODE_SEA_BLOB, Node's magic first)", () => {
    const r = seaBlobRange(BINARY);
    assert.ok(r && r.length > 1024 * 1024, JSON.stringify(r));
    const fd = fs.openSync(BINARY, 'r');
    try {
      const magic = Buffer.alloc(4);
      fs.readSync(fd, magic, 0, 4, r.offset);
      assert.equal(magic.readUInt32LE(0), 0x0143da20, 'node::sea kMagic');
    } finally {
      fs.closeSync(fd);
    }
  });

  it('prints the package version and is a Node 24 single executable', () => {
    const r = runBinary(['version']);
    assert.equal(r.status, 0, r.stderr);
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    assert.equal(r.stdout.trim(), pkg.version);
    assert.equal(r.stderr, '', 'no SEA warning or other noise on stderr');
    // A command of the full part: V8 takes both code caches (the daemon part's, made by
    // --experimental-sea-config, and the full part's), which it rejects, with a warning on
    // stderr, when they were made under other V8 flags than the executable's execArgv.
    const full = runBinary(['status', '--help']);
    assert.equal(full.status, 0, full.stderr);
    assert.equal(full.stderr, '', 'no "Code cache data rejected" or other noise on stderr');
    const help = runBinary(['--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /lightagent svm/);
    assert.match(help.stdout, /Usage: lightagent <command>/);
  });

  it('scan: EICAR is infected (exit 1), a clean file is clean (exit 0), through `lightagent svm`', () => {
    const bad = path.join(work, 'eicar.com');
    const good = path.join(work, 'clean.txt');
    fs.writeFileSync(bad, EICAR);
    fs.writeFileSync(good, 'nothing to see\n');
    const r = runBinary(['scan', '--svm', svm.url, '--token', TOKEN, '--no-cache', '--json', work]);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    const doc = JSON.parse(r.stdout) as { infected: { path: string; threat: string }[] };
    assert.deepEqual(
      doc.infected.map((i) => [i.path, i.threat]),
      [[bad, 'Eicar-Test-Signature']],
    );
    const c = runBinary(['scan', '--svm', svm.url, '--token', TOKEN, '--no-cache', good]);
    assert.equal(c.status, 0, c.stdout + c.stderr);
  });

  it('invoked as lightagent-svm (a link) it is the SVM', async () => {
    const link = path.join(work, 'lightagent-svm');
    fs.symlinkSync(BINARY, link);
    const s = await startSvm(link);
    try {
      const r = await fetch(s.url.replace('ws://', 'http://') + '/healthz');
      assert.equal(r.status, 200);
      // The web console's files travel in the binary as SEA assets (no node_modules beside it).
      const page = await fetch(s.url.replace('ws://', 'http://') + '/console/');
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
      const hooks = await fetch(s.url.replace('ws://', 'http://') + '/console/vendor/hooks.mjs');
      assert.match(await hooks.text(), /from"\.\/preact\.mjs"/);
      // The executable's execArgv (src/node-flags.ts) reach the SVM: it warns when it lacks them.
      assert.doesNotMatch(s.output(), /started without the V8 flags/);
      // Its V8 (13+) takes the SVM's runtime flags, and the listening line says so.
      const listening = JSON.parse(/^\{"event":"listening".*$/m.exec(s.output())![0]) as { v8Runtime: string[] };
      assert.deepEqual(listening.v8Runtime, [...SVM_RUNTIME_V8_FLAGS]);
    } finally {
      await s.stop();
    }
  });

  it('removes its private directory at exit, and those of dead processes at start', () => {
    const base = process.getuid?.() === 0 ? '/run' : os.tmpdir();
    const stale = path.join(base, 'lightagent-999999999-abcDEF');
    fs.mkdirSync(stale, { mode: 0o700 });
    fs.writeFileSync(path.join(stale, 'koffi.node'), 'x');
    const r = runBinary(['version']);
    assert.equal(r.status, 0);
    assert.equal(fs.existsSync(stale), false, 'the dead process directory was removed');
  });

  describe('fanotify gate from the binary', { skip: needRoot() }, () => {
    let mnt: ReturnType<typeof scratchMount>;
    let agent: Proc;
    let state: string;
    before(async () => {
      mnt = scratchMount('la-rel-mnt-');
      state = tempDir('la-rel-state-');
      fs.writeFileSync(path.join(mnt.dir, 'eicar.com'), EICAR);
      fs.writeFileSync(path.join(mnt.dir, 'clean.txt'), 'clean\n');
      // A hostile inherited LIGHTAGENT_SEA_DIR is ignored: the binary unpacks its own.
      const decoy = tempDir('la-decoy-');
      fs.writeFileSync(path.join(decoy, 'koffi.node'), 'not an ELF file');
      agent = spawnBinary(
        [
          'run',
          '--svm',
          svm.url,
          '--token',
          TOKEN,
          '--protect',
          mnt.dir,
          '--state-dir',
          state,
          '--mode',
          'fanotify',
          '--deadline',
          '1s',
          '--json',
        ],
        {
          env: { LIGHTAGENT_SEA_DIR: decoy },
        },
      );
      await waitFor(agent, /"event"\s*:\s*"started"[^\n]*"mode"\s*:\s*"fanotify"/);
    });
    after(async () => {
      await agent?.stop();
      mnt?.unmount();
      fs.rmSync(state, { recursive: true, force: true });
    });

    it('unpacks koffi into a private 0700 directory', () => {
      const dirs = privateDirs(agent.pid);
      assert.equal(dirs.length, 1, `one private dir for pid ${agent.pid}: ${dirs.join(', ')}`);
      const st = fs.statSync(dirs[0]!);
      assert.equal(st.mode & 0o777, 0o700);
      assert.equal(st.uid, process.getuid!());
      const files = (fs.readdirSync(dirs[0]!, { recursive: true }) as string[])
        .filter((f) => fs.statSync(path.join(dirs[0]!, f)).isFile())
        .sort();
      assert.deepEqual(files, ['koffi.node', 'package.json', 'src/watchers/fanotify-worker.js']);
    });

    it('cat of EICAR fails with EPERM, a clean file opens, the SVM hears of the detection', async () => {
      const r = run('cat', [path.join(mnt.dir, 'eicar.com')]);
      assert.notEqual(r.status, 0);
      assert.match(r.stderr, /Operation not permitted/);
      const c = run('cat', [path.join(mnt.dir, 'clean.txt')]);
      assert.equal(c.status, 0, c.stderr);
      assert.equal(c.stdout, 'clean\n');
      await eventually(
        () => /agent reported a detection[^\n]*eicar\.com|eicar\.com[^\n]*agent reported a detection/.test(svm.output()),
        10_000,
        'detection at the SVM',
      );
    });

    it('the hello names the hypervisor (the SVM logs it)', async () => {
      const want = hostInfo().hypervisor;
      const line = await eventually(
        () =>
          svm
            .output()
            .split('\n')
            .find((l) => l.includes('agent connected')),
        10_000,
        'agent connected at the SVM',
      );
      const logged = (JSON.parse(line) as { hypervisor?: string }).hypervisor;
      assert.equal(logged, want);
    });

    it('`lightagent status` names the hypervisor too', () => {
      const r = runBinary(['status', '--json', '--state-dir', state]);
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.equal((JSON.parse(r.stdout) as { hypervisor?: string }).hypervisor, hostInfo().hypervisor);
      const text = runBinary(['status', '--state-dir', state]);
      assert.match(text.stdout, new RegExp(`hypervisor ${hostInfo().hypervisor ?? 'none detected'}\\)`));
    });

    it('the worker thread starts from the binary and the process connector runs (no fallback)', () => {
      assert.doesNotMatch(
        agent.output(),
        /Cannot find module|MODULE_NOT_FOUND|FALLING BACK|Code cache data rejected/,
        agent.output().slice(-3000),
      );
      // The connector's socket is read through the pipe handle of the Node inside the binary.
      assert.match(agent.output(), /process watcher: kernel process events connector/, agent.output().slice(-3000));
    });

    it('stops on SIGTERM with exit 0 and removes its private directory', async () => {
      const pid = agent.pid;
      assert.equal(await agent.stop('SIGTERM'), 0, agent.output().slice(-2000));
      assert.deepEqual(privateDirs(pid), []);
    });
  });
});
