import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Journal } from '../../src/store/journal.js';
import { Quarantine, type QuarantineRecord } from '../../src/store/quarantine.js';
import { OBFUSCATION_BYTE } from '../../src/store/quarantine-files.js';
import { QuarantineError } from '../../src/errors.js';
import { EICAR } from '../helpers/fixtures.js';
import { tempDir } from '../helpers/procs.js';

const isRoot = process.getuid?.() === 0;
const rootOnly = { skip: isRoot ? false : 'needs root (store ownership, chown on restore, mount)' };
const NOBODY = 65534;

const root = tempDir('la-quar-');
fs.chmodSync(root, 0o755);
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
function setup(): { q: Quarantine; dir: string } {
  const base = path.join(root, `t${n++}`);
  const dir = path.join(base, 'files');
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  return { q: new Quarantine({ stateDir: path.join(base, 'state') }), dir };
}
const sha = (s: string | Buffer) => crypto.createHash('sha256').update(s).digest('hex');
const asNobody = (...cmd: string[]) =>
  spawnSync('setpriv', [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', ...cmd], { encoding: 'utf8' });
const code = (c: string) => (e: unknown) => e instanceof QuarantineError && e.code === c;

function makeInfected(dir: string, name = 'eicar.com', mode = 0o750): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, EICAR);
  if (isRoot) fs.chownSync(p, NOBODY, NOBODY);
  fs.chmodSync(p, mode); // after chown, which clears set-id bits
  return p;
}

describe('Quarantine', () => {
  it('moves the file into a root-only store, obfuscated, and records it', rootOnly, async () => {
    const { q, dir } = setup();
    const p = makeInfected(dir);
    const rec = await q.quarantine(p, { threat: 'Eicar-Test-Signature', sha256: sha(EICAR) });
    assert.equal(fs.existsSync(p), false, 'original gone');
    assert.match(rec.id, /^[0-9a-z]{8}$/);
    assert.deepEqual(
      {
        originalPath: rec.originalPath,
        uid: rec.uid,
        gid: rec.gid,
        mode: rec.mode,
        size: rec.size,
        sha256: rec.sha256,
        threat: rec.threat,
        state: rec.state,
        method: rec.method,
      },
      {
        originalPath: p,
        uid: NOBODY,
        gid: NOBODY,
        mode: 0o750,
        size: EICAR.length,
        sha256: sha(EICAR),
        threat: 'Eicar-Test-Signature',
        state: 'stored',
        method: 'rename',
      },
    );
    assert.ok(Math.abs(Date.parse(rec.time) - Date.now()) < 60_000);

    const stored = q.dataPath(rec.id);
    const st = fs.statSync(stored);
    assert.equal(st.mode & 0o777, 0o400);
    assert.equal(st.uid, 0);
    assert.equal(st.gid, 0);
    assert.equal(fs.statSync(q.dir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(q.dataDir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(q.indexFile).mode & 0o777, 0o600);
    const bytes = fs.readFileSync(stored);
    assert.ok(!bytes.includes(Buffer.from('EICAR')), 'content is obfuscated');
    assert.equal(Buffer.from(bytes.map((b) => b ^ OBFUSCATION_BYTE)).toString(), EICAR);
    assert.equal(fs.readdirSync(q.dataDir).length, 1, 'no .incoming/.tmp left behind');

    const r = asNobody('cat', stored);
    assert.notEqual(r.status, 0, 'an unprivileged user cannot read the stored file');
    assert.match(r.stderr, /Permission denied/);

    const listed = await q.list();
    assert.deepEqual(listed, [rec]);
  });

  it('restores content, mode and owner, then forgets the item', rootOnly, async () => {
    const { q, dir } = setup();
    const p = makeInfected(dir, 'tool.sh', 0o4750);
    const rec = await q.quarantine(p, { threat: 'T' });
    const out = await q.restore(rec.id);
    assert.equal(out.path, p);
    assert.equal(fs.readFileSync(p, 'utf8'), EICAR);
    const st = fs.statSync(p);
    assert.equal(st.mode & 0o7777, 0o4750);
    assert.equal(st.uid, NOBODY);
    assert.equal(st.gid, NOBODY);
    assert.deepEqual(await q.list(), []);
    assert.equal(fs.existsSync(q.dataPath(rec.id)), false);
    assert.deepEqual(fs.readdirSync(dir), ['tool.sh'], 'no restore temp file left behind');
  });

  it('refuses to restore through a symlinked parent directory (aimed at /etc)', rootOnly, async () => {
    const { q, dir } = setup();
    const sub = path.join(dir, 'sub');
    fs.mkdirSync(sub);
    const name = `la-test-${crypto.randomBytes(4).toString('hex')}.conf`;
    const rec = await q.quarantine(makeInfected(sub, name), { threat: 'T' });
    fs.renameSync(sub, path.join(dir, 'sub.real'));
    fs.symlinkSync('/etc', sub); // the user swaps the directory for a link to /etc
    try {
      await assert.rejects(q.restore(rec.id), code('LA_ERR_RESTORE_SYMLINK'));
      await assert.rejects(q.restore(rec.id, { to: path.join(dir, 'sub', 'x', '..', name) }), (e: unknown) => e instanceof QuarantineError);
      assert.equal(fs.existsSync(path.join('/etc', name)), false, 'nothing written to /etc');
      assert.equal((await q.list()).length, 1, 'still quarantined');
      // The real path works.
      const ok = await q.restore(rec.id, { to: path.join(dir, 'sub.real', name) });
      assert.equal(fs.readFileSync(ok.path, 'utf8'), EICAR);
    } finally {
      fs.rmSync(path.join('/etc', name), { force: true });
    }
  });

  it('refuses to overwrite an existing file without force, replaces it with force', rootOnly, async () => {
    const { q, dir } = setup();
    const p = makeInfected(dir);
    const rec = await q.quarantine(p, { threat: 'T' });
    fs.writeFileSync(p, 'new content');
    await assert.rejects(q.restore(rec.id), code('LA_ERR_RESTORE_EXISTS'));
    assert.equal(fs.readFileSync(p, 'utf8'), 'new content');
    // A symlink at the target is replaced, never followed.
    fs.rmSync(p);
    const victim = path.join(dir, 'victim');
    fs.writeFileSync(victim, 'keep me');
    fs.symlinkSync(victim, p);
    await assert.rejects(q.restore(rec.id), code('LA_ERR_RESTORE_EXISTS'));
    await q.restore(rec.id, { force: true });
    assert.equal(fs.lstatSync(p).isFile(), true);
    assert.equal(fs.readFileSync(p, 'utf8'), EICAR);
    assert.equal(fs.readFileSync(victim, 'utf8'), 'keep me');
  });

  it('deletes an item and its content; unknown ids are refused', rootOnly, async () => {
    const { q, dir } = setup();
    const a = await q.quarantine(makeInfected(dir, 'a'), { threat: 'T' });
    const b = await q.quarantine(makeInfected(dir, 'b'), { threat: 'T' });
    assert.notEqual(a.id, b.id);
    await q.delete(a.id);
    assert.equal(fs.existsSync(q.dataPath(a.id)), false);
    assert.deepEqual(
      (await q.list()).map((r) => r.id),
      [b.id],
    );
    await assert.rejects(q.delete(a.id), code('LA_ERR_QUARANTINE_NOT_FOUND'));
    await assert.rejects(q.restore('../../etc'), code('LA_ERR_QUARANTINE_NOT_FOUND'));
  });

  it('quarantines through an fd (the fanotify event fd), removing the path only if it is that file', rootOnly, async () => {
    const { q, dir } = setup();
    const p = makeInfected(dir);
    const fd = fs.openSync(p, 'r');
    try {
      const rec = await q.quarantine(fd, { threat: 'T' });
      assert.equal(rec.originalPath, p);
      assert.equal(rec.method, 'rename');
      assert.equal(fs.existsSync(p), false);
    } finally {
      fs.closeSync(fd);
    }
    const p2 = makeInfected(dir, 'gone');
    const fd2 = fs.openSync(p2, 'r');
    try {
      fs.unlinkSync(p2);
      fs.writeFileSync(p2, 'an unrelated new file');
      const rec = await q.quarantine(fd2, { threat: 'T', originalPath: p2 });
      assert.equal(rec.method, 'fd');
      assert.equal(rec.sha256, sha(EICAR));
      assert.equal(fs.readFileSync(p2, 'utf8'), 'an unrelated new file', 'a different file at that path is left alone');
    } finally {
      fs.closeSync(fd2);
    }
  });

  it('refuses symlinks and non-regular files as sources', rootOnly, async () => {
    const { q, dir } = setup();
    const target = makeInfected(dir);
    fs.symlinkSync(target, path.join(dir, 'link'));
    await assert.rejects(q.quarantine(path.join(dir, 'link'), { threat: 'T' }), code('LA_ERR_QUARANTINE'));
    await assert.rejects(q.quarantine(dir, { threat: 'T' }), code('LA_ERR_QUARANTINE'));
    assert.equal(fs.existsSync(target), true);
  });

  it('quarantines across filesystems (copy, fsync, unlink) and restores back there', rootOnly, async () => {
    const { q, dir } = setup();
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0755', 'la-quar-test', mnt], { encoding: 'utf8' });
    assert.equal(m.status, 0, `mount tmpfs: ${m.stderr}`);
    try {
      const p = makeInfected(mnt, 'x.bin', 0o640);
      const rec = await q.quarantine(p, { threat: 'T' });
      assert.equal(rec.method, 'copy');
      assert.equal(fs.existsSync(p), false);
      assert.equal(rec.sha256, sha(EICAR));
      await q.restore(rec.id);
      assert.equal(fs.readFileSync(p, 'utf8'), EICAR);
      assert.equal(fs.statSync(p).mode & 0o777, 0o640);
      assert.equal(fs.statSync(p).uid, NOBODY);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });

  it('finishes or undoes quarantines interrupted by a crash', rootOnly, async () => {
    const { q, dir } = setup();
    await q.recover(); // creates the store
    const base = {
      uid: 0,
      gid: 0,
      mode: 0o644,
      size: 0,
      sha256: '',
      threat: 'T',
      time: new Date().toISOString(),
      state: 'moving',
      encoding: 'xor-a5',
      dev: '0',
      ino: '0',
    } as const;
    const index = await Journal.open<QuarantineRecord>(q.indexFile);
    // 1: renamed in, not yet stored.
    await index.put('aaaaaaaa', { ...base, id: 'aaaaaaaa', originalPath: path.join(dir, 'one') });
    fs.writeFileSync(`${q.dataPath('aaaaaaaa')}.incoming`, EICAR);
    // 2: crash before anything moved.
    await index.put('bbbbbbbb', { ...base, id: 'bbbbbbbb', originalPath: path.join(dir, 'two') });
    await index.close();
    // 3: an interrupted delete left content without a record.
    fs.writeFileSync(q.dataPath('cccccccc'), 'x');
    assert.deepEqual(await q.recover(), { completed: 1, dropped: 1, orphans: 1 });
    const [rec, ...rest] = await q.list();
    assert.equal(rest.length, 0);
    assert.equal(rec!.id, 'aaaaaaaa');
    assert.equal(rec!.state, 'stored');
    assert.equal(rec!.sha256, sha(EICAR));
    assert.deepEqual(fs.readdirSync(q.dataDir), ['aaaaaaaa']);
    assert.equal(fs.statSync(q.dataPath('aaaaaaaa')).mode & 0o777, 0o400);
  });
});
