import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import { walkTree, type WalkSkip } from '../../src/scan/tree-walker.js';
import { NO_EXCLUSIONS } from '../../src/config/exclusions.js';
import { Exclusions } from '../../src/scan/exclusions.js';
import { needRoot, scratchMount, tempDir } from '../helpers/procs.js';

async function collect(roots: string[], opts: Parameters<typeof walkTree>[1] = {}) {
  const files: string[] = [];
  const skips: WalkSkip[] = [];
  for await (const e of walkTree(roots, { ...opts, onSkip: (s) => skips.push(s) })) files.push(e.path);
  return { files, skips };
}

describe('walkTree', () => {
  const root = tempDir('la-walk-');
  fs.mkdirSync(path.join(root, 'a/b/c'), { recursive: true });
  fs.writeFileSync(path.join(root, 'a/one.txt'), '1');
  fs.writeFileSync(path.join(root, 'a/b/c/deep.txt'), 'deep');
  fs.symlinkSync(path.join(root, 'a'), path.join(root, 'a/b/loop'));
  fs.symlinkSync(path.join(root, 'nowhere'), path.join(root, 'dangling'));
  fs.mkdirSync(path.join(root, 'excluded'));
  fs.writeFileSync(path.join(root, 'excluded/x.txt'), 'x');

  it('yields regular files depth first and reports symlinks without following them', async () => {
    const { files, skips } = await collect([root], { exclude: [path.join(root, 'excluded')] });
    assert.deepEqual(
      files.map((f) => path.relative(root, f)),
      ['a/b/c/deep.txt', 'a/one.txt'],
    );
    assert.ok(skips.some((s) => s.code === 'LA_SKIP_SYMLINK' && s.path.endsWith('loop')));
  });

  it('leaves out the files an exclusion covers (globs, extensions), reported as LA_SKIP_EXCLUDED', async () => {
    const ex = new Exclusions({ ...NO_EXCLUSIONS, paths: [`${root}/a/b/**/*.txt`], extensions: ['.TXT'] });
    const { files, skips } = await collect([path.join(root, 'a')], {
      exclude: ex.prefixes,
      excludeFile: (p) => ex.path(p) !== undefined,
    });
    assert.deepEqual(files, []);
    assert.deepEqual(
      skips
        .filter((s) => s.code === 'LA_SKIP_EXCLUDED')
        .map((s) => path.relative(root, s.path))
        .sort(),
      ['a/b/c/deep.txt', 'a/one.txt'],
    );
    const onlyGlob = new Exclusions({ ...NO_EXCLUSIONS, paths: [`${root}/a/b/**/*.txt`] });
    const r = await collect([path.join(root, 'a')], { excludeFile: (p) => onlyGlob.path(p) !== undefined });
    assert.deepEqual(
      r.files.map((f) => path.relative(root, f)),
      ['a/one.txt'],
    );
  });

  it('detects a symlink loop when following symlinks and reports the dangling link', async () => {
    const { files, skips } = await collect([root], { followSymlinks: true, exclude: [path.join(root, 'excluded')] });
    assert.equal(files.filter((f) => f.endsWith('deep.txt')).length, 1);
    assert.ok(skips.some((s) => s.code === 'LA_SKIP_LOOP'));
    assert.ok(skips.some((s) => s.path.endsWith('dangling') && s.code === 'ENOENT'));
  });

  it('reports sockets and FIFOs and a vanished root instead of failing', async () => {
    const d = tempDir('la-walk2-');
    const sock = path.join(d, 's.sock');
    const srv = net.createServer().listen(sock);
    await new Promise((r) => srv.once('listening', r));
    const { execFileSync } = await import('node:child_process');
    execFileSync('mkfifo', [path.join(d, 'fifo')]);
    const { files, skips } = await collect([d, path.join(d, 'gone')]);
    srv.close();
    assert.deepEqual(files, []);
    assert.deepEqual(skips.map((s) => s.code).sort(), ['ENOENT', 'LA_SKIP_NOT_REGULAR', 'LA_SKIP_NOT_REGULAR']);
  });

  it(
    'oneFileSystem: does not enter a directory on another file system (a tmpfs mounted inside the root)',
    { skip: needRoot() },
    async () => {
      const d = tempDir('la-walk-xdev-');
      fs.writeFileSync(path.join(d, 'here.txt'), 'h');
      const inner = scratchMount('la-walk-inner-', '8m');
      try {
        fs.writeFileSync(path.join(inner.dir, 'elsewhere.txt'), 'e');
        fs.mkdirSync(path.join(d, 'sub'));
        // The tmpfs is bind-mounted at d/sub: another device under the root.
        execFileSync('mount', ['--bind', inner.dir, path.join(d, 'sub')]);
        try {
          const all = await collect([d]);
          assert.deepEqual(all.files.map((f) => path.basename(f)).sort(), ['elsewhere.txt', 'here.txt']);
          const one = await collect([d], { oneFileSystem: true });
          assert.deepEqual(
            one.files.map((f) => path.basename(f)),
            ['here.txt'],
          );
          assert.deepEqual(
            one.skips.map((s) => [path.basename(s.path), s.code]),
            [['sub', 'LA_SKIP_OTHER_FS']],
          );
          // A root on another file system is walked: the rule is per root.
          assert.deepEqual(
            (await collect([path.join(d, 'sub')], { oneFileSystem: true })).files.map((f) => path.basename(f)),
            ['elsewhere.txt'],
          );
        } finally {
          execFileSync('umount', ['-l', path.join(d, 'sub')]);
        }
      } finally {
        inner.unmount();
      }
    },
  );
});
