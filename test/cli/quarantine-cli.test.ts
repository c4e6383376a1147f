import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { Quarantine, type QuarantineRecord } from '../../src/store/quarantine.js';
import { tempDir } from '../helpers/procs.js';

const CLI = fileURLToPath(new URL('../../src/cli/lightagent.js', import.meta.url));
const isRoot = process.getuid?.() === 0;
const rootOnly = { skip: isRoot ? false : 'needs root' };

const root = tempDir('la-qcli-');
fs.chmodSync(root, 0o755);
after(() => fs.rmSync(root, { recursive: true, force: true }));

function cli(args: string[], asNobody = false) {
  const cmd = asNobody ? 'setpriv' : process.execPath;
  const argv = asNobody ? ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, CLI, ...args] : [CLI, ...args];
  const r = spawnSync(cmd, argv, { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('lightagent quarantine', () => {
  const stateDir = path.join(root, 'state');
  const files = path.join(root, 'files');
  fs.mkdirSync(files, { mode: 0o755 });
  const q = new Quarantine({ stateDir });
  const sd = ['--state-dir', stateDir];

  it('--help exits 0; bad usage exits 2 with the help', () => {
    const h = cli(['quarantine', '--help']);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /Usage: lightagent quarantine/);
    const none = cli(['quarantine']);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /name an action/);
    assert.equal(cli(['quarantine', 'restore', ...sd]).code, 2);
    assert.equal(cli(['quarantine', 'frobnicate', 'x', ...sd]).code, 2);
    assert.equal(cli(['quarantine', 'delete', 'x', '--force', ...sd]).code, 2);
  });

  it('lists an empty store, then items as text and JSON', rootOnly, async () => {
    const empty = cli(['quarantine', 'list', ...sd]);
    assert.equal(empty.code, 0, empty.stderr);
    assert.match(empty.stdout, /quarantine is empty/);
    const p = path.join(files, 'bad.exe');
    fs.writeFileSync(p, 'pretend malware');
    const rec = await q.quarantine(p, { threat: 'Test.Threat' });
    const text = cli(['quarantine', 'list', ...sd]);
    assert.equal(text.code, 0);
    assert.match(text.stdout, new RegExp(`^${rec.id} .*Test\\.Threat  ${p.replace(/[.]/g, '\\.')}$`, 'm'));
    const json = cli(['quarantine', 'list', '--json', ...sd]);
    assert.equal(json.code, 0);
    const items = JSON.parse(json.stdout) as QuarantineRecord[];
    assert.deepEqual(
      items.map((i) => [i.id, i.originalPath, i.threat]),
      [[rec.id, p, 'Test.Threat']],
    );
  });

  it('restore: refuses an existing file without --force, restores with --to, errors exit 2', rootOnly, async () => {
    const p = path.join(files, 'r.txt');
    fs.writeFileSync(p, 'content r');
    fs.chmodSync(p, 0o640);
    const rec = await q.quarantine(p, { threat: 'T' });
    fs.writeFileSync(p, 'newer');
    const refused = cli(['quarantine', 'restore', rec.id, ...sd]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /already exists.*LA_ERR_RESTORE_EXISTS/);
    assert.match(refused.stderr, /--force/);
    const to = path.join(files, 'elsewhere.txt');
    const ok = cli(['quarantine', 'restore', rec.id, '--to', to, ...sd]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`restored ${rec.id} to `));
    assert.equal(fs.readFileSync(to, 'utf8'), 'content r');
    assert.equal(fs.statSync(to).mode & 0o777, 0o640);
    const gone = cli(['quarantine', 'restore', rec.id, ...sd]);
    assert.equal(gone.code, 2);
    assert.match(gone.stderr, /LA_ERR_QUARANTINE_NOT_FOUND/);
  });

  it('restore --force replaces; delete removes', rootOnly, async () => {
    const p = path.join(files, 'f.txt');
    fs.writeFileSync(p, 'orig');
    const a = await q.quarantine(p, { threat: 'T' });
    fs.writeFileSync(p, 'newer');
    const forced = cli(['quarantine', 'restore', a.id, '--force', ...sd]);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(fs.readFileSync(p, 'utf8'), 'orig');
    const b = await q.quarantine(p, { threat: 'T' });
    const del = cli(['quarantine', 'delete', b.id, ...sd]);
    assert.equal(del.code, 0, del.stderr);
    assert.equal(fs.existsSync(q.dataPath(b.id)), false);
    assert.equal(
      (await q.list()).some((r) => r.id === b.id),
      false,
    );
  });

  it('restore and delete need root, with a clear error', rootOnly, async () => {
    const p = path.join(files, 'n.txt');
    fs.writeFileSync(p, 'n');
    const rec = await q.quarantine(p, { threat: 'T' });
    for (const action of ['restore', 'delete']) {
      const r = cli(['quarantine', action, rec.id, ...sd], true);
      assert.equal(r.code, 2);
      assert.match(r.stderr, new RegExp(`quarantine ${action} needs root.*LA_ERR_NOT_ROOT`));
    }
    const list = cli(['quarantine', 'list', ...sd], true);
    assert.equal(list.code, 2);
    assert.match(list.stderr, /permission denied.*LA_ERR_NOT_ROOT/);
    assert.equal(
      (await q.list()).some((r) => r.id === rec.id),
      true,
    );
  });
});
