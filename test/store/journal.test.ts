import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Journal, JOURNAL_HEADER_BYTES } from '../../src/store/journal.js';
import { JournalError } from '../../src/errors.js';
import { fillDisk, needRoot, scratchMount, tempDir } from '../helpers/procs.js';

const root = tempDir('la-journal-');
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const fresh = () => path.join(root, `j${n++}`, 'test.journal');

async function withJournal<T>(file: string, fn: (j: Journal<unknown>) => Promise<T>, opts = {}): Promise<T> {
  const j = await Journal.open<unknown>(file, opts);
  try {
    return await fn(j);
  } finally {
    await j.close();
  }
}
const snapshot = (j: Journal<unknown>) => Object.fromEntries(j.entries());

describe('Journal', () => {
  it('replays puts and deletes in order after reopen, with 0600 files in a 0700 directory', async () => {
    const file = fresh();
    await withJournal(file, async (j) => {
      await j.put('a', { v: 1 });
      await j.put('b', [1, 2]);
      await j.put('a', { v: 2 }); // keeps its place
      await j.write([
        { op: 'put', key: 'c', value: 'x' },
        { op: 'delete', key: 'b' },
      ]);
      assert.equal(await j.delete('nope'), false);
    });
    await withJournal(file, async (j) => {
      assert.deepEqual([...j.keys()], ['a', 'c']);
      assert.deepEqual(snapshot(j), { a: { v: 2 }, c: 'x' });
    });
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.dirname(file)).mode & 0o777, 0o700);
    assert.equal(fs.existsSync(`${file}.lock`), false, 'lock released on close');
  });

  it('torn tail (file cut mid-record): earlier records kept, tail truncated, appends continue', async () => {
    const file = fresh();
    await withJournal(file, async (j) => {
      for (let i = 0; i < 5; i++) await j.put(`k${i}`, { i, pad: 'x'.repeat(50) });
    });
    const full = fs.statSync(file).size;
    fs.truncateSync(file, full - 20);
    await withJournal(file, async (j) => {
      assert.deepEqual([...j.keys()], ['k0', 'k1', 'k2', 'k3']);
      assert.ok(j.stats().droppedTailBytes > 0);
      await j.put('after', 1);
    });
    await withJournal(file, async (j) => {
      assert.deepEqual([...j.keys()], ['k0', 'k1', 'k2', 'k3', 'after']);
      assert.equal(j.stats().droppedTailBytes, 0);
    });
  });

  it('a flipped byte stops replay at that record, copies the damaged tail aside, and appends continue', async () => {
    const file = fresh();
    const offsets: number[] = [];
    await withJournal(file, async (j) => {
      for (let i = 0; i < 4; i++) {
        offsets.push(j.stats().fileBytes);
        await j.put(`k${i}`, i);
      }
    });
    const buf = fs.readFileSync(file);
    buf[offsets[2]! + 10] ^= 0x01; // inside record k2's payload
    fs.writeFileSync(file, buf);
    await withJournal(file, async (j) => {
      assert.deepEqual(snapshot(j), { k0: 0, k1: 1 });
      await j.put('k9', 9);
    });
    await withJournal(file, async (j) => assert.deepEqual(snapshot(j), { k0: 0, k1: 1, k9: 9 }));
    assert.ok(fs.readdirSync(path.dirname(file)).some((f) => f.startsWith('test.journal.corrupt-')));
  });

  it('a zero-filled tail (size grew, data never written) is dropped', async () => {
    const file = fresh();
    await withJournal(file, (j) => j.put('a', 1));
    fs.appendFileSync(file, Buffer.alloc(4096));
    await withJournal(file, async (j) => {
      assert.deepEqual(snapshot(j), { a: 1 });
      await j.put('b', 2);
    });
    await withJournal(file, async (j) => assert.deepEqual(snapshot(j), { a: 1, b: 2 }));
  });

  it('an unknown header is moved aside, not destroyed, and a new journal starts', async () => {
    const file = fresh();
    fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
    fs.writeFileSync(file, 'SQLite format 3\0 something else');
    await withJournal(file, async (j) => {
      assert.equal(j.size, 0);
      await j.put('a', 1);
    });
    assert.ok(fs.readdirSync(path.dirname(file)).some((f) => f.startsWith('test.journal.unreadable-')));
    await withJournal(file, async (j) => assert.deepEqual(snapshot(j), { a: 1 }));
  });

  it('everything acknowledged before a SIGKILL is there on reopen', async () => {
    const file = fresh();
    const journalUrl = new URL('../../src/store/journal.js', import.meta.url).href;
    const script = `
      import { Journal } from ${JSON.stringify(journalUrl)};
      const j = await Journal.open(${JSON.stringify(file)});
      for (let i = 0; ; i++) {
        await j.put('k' + i, { i, pad: 'p'.repeat(i % 300) });
        process.stdout.write('ack ' + i + '\\n');
      }`;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let acked = -1;
    let buffered = '';
    await new Promise<void>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (code, sig) => (sig === 'SIGKILL' ? resolve() : reject(new Error(`child exited ${code} ${sig}`))));
      child.stdout.on('data', (d: Buffer) => {
        buffered += d.toString();
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        for (const l of lines) if (l.startsWith('ack ')) acked = Number(l.slice(4));
        if (acked >= 300 && !child.killed) child.kill('SIGKILL'); // mid-stream: appends are in flight
      });
    });
    assert.ok(acked >= 300);
    await withJournal(file, async (j) => {
      for (let i = 0; i <= acked; i++) assert.deepEqual(j.get(`k${i}`), { i, pad: 'p'.repeat(i % 300) }, `acknowledged k${i} lost`);
      await j.put('after-crash', true); // the dead child's lock was taken over
    });
  });

  it('compaction keeps exactly the live records and shrinks the file', async () => {
    const file = fresh();
    await withJournal(
      file,
      async (j) => {
        for (let round = 0; round < 50; round++) for (let k = 0; k < 10; k++) await j.put(`k${k}`, { round, pad: 'z'.repeat(100) });
        await j.delete('k3');
        const s = j.stats();
        assert.ok(s.compactions > 0, 'automatic compaction ran');
        assert.ok(s.fileBytes < 4 * (s.liveBytes + JOURNAL_HEADER_BYTES), `file ${s.fileBytes} vs live ${s.liveBytes}`);
        await j.compact();
        assert.equal(j.stats().fileBytes, JOURNAL_HEADER_BYTES + j.stats().liveBytes);
      },
      { compactMinGarbageBytes: 4096 },
    );
    await withJournal(file, async (j) => {
      assert.deepEqual([...j.keys()], ['k0', 'k1', 'k2', 'k4', 'k5', 'k6', 'k7', 'k8', 'k9']);
      assert.deepEqual(j.get('k9'), { round: 49, pad: 'z'.repeat(100) });
    });
    assert.equal(fs.existsSync(`${file}.tmp`), false);
  });

  it('group-commits concurrent writes and keeps all of them', async () => {
    const file = fresh();
    await withJournal(file, (j) => Promise.all(Array.from({ length: 2000 }, (_, i) => j.put(`k${i}`, i))));
    await withJournal(file, async (j) => {
      assert.equal(j.size, 2000);
      assert.equal(j.get('k1999'), 1999);
    });
  });

  it('refuses writes whose live data would pass maxBytes, leaving memory unchanged', async () => {
    const file = fresh();
    await withJournal(
      file,
      async (j) => {
        await j.put('a', 'x'.repeat(500));
        await assert.rejects(j.put('b', 'y'.repeat(800)), (e: JournalError) => e.code === 'LA_ERR_JOURNAL_FULL');
        assert.equal(j.has('b'), false);
        for (let i = 0; i < 20; i++) await j.put('a', String(i % 10).repeat(500)); // replacing stays within bounds
        assert.ok(j.stats().fileBytes <= 1024);
      },
      { maxBytes: 1024 },
    );
  });

  it("one writer at a time: a second open fails, a dead holder's lock is taken over", async () => {
    const file = fresh();
    const j = await Journal.open(file);
    await assert.rejects(Journal.open(file), (e: JournalError) => e.code === 'LA_ERR_JOURNAL_LOCKED');
    const reader = await Journal.open(file, { readOnly: true });
    assert.equal(reader.size, 0);
    await reader.close();
    await j.close();
    fs.writeFileSync(`${file}.lock`, '2147483646\n'); // a pid that cannot be alive
    await withJournal(file, (k) => k.put('a', 1));
  });

  describe('on a full disk (a 1 MiB tmpfs)', { skip: needRoot() }, () => {
    it('a write refused for lack of space leaves memory as the disk is; writes resume once space is freed', async () => {
      const m = scratchMount('la-journal-full-', '1m');
      try {
        const file = path.join(m.dir, 'q', 'test.journal');
        await withJournal(file, async (j) => {
          await j.put('before', 1);
          fillDisk(path.join(m.dir, 'filler'));
          await assert.rejects(
            j.put('refused', 'x'.repeat(20_000)),
            (e: unknown) => e instanceof JournalError && /disk full/.test(e.message) && /ENOSPC/.test(e.message),
          );
          await assert.rejects(j.put('also-refused', 'y'.repeat(20_000)), JournalError, 'still full: refused again after the cut-back');
          assert.equal(j.get('refused'), undefined, 'the refused put is not in memory');
          assert.equal(j.get('also-refused'), undefined);
          assert.deepEqual(snapshot(j), { before: 1 });
          await j.put('small', 2); // fits in the page the file already has
          fs.rmSync(path.join(m.dir, 'filler'));
          await j.put('after', 3);
        });
        await withJournal(file, async (j) =>
          assert.deepEqual(snapshot(j), { before: 1, small: 2, after: 3 }, 'on disk: exactly the acknowledged writes'),
        );
      } finally {
        m.unmount();
      }
    });

    it('a journal that cannot be created opens empty (with its lock), refuses writes, and writes once space is freed', async () => {
      const m = scratchMount('la-journal-full-', '1m');
      try {
        fs.mkdirSync(path.join(m.dir, 'q'));
        fillDisk(path.join(m.dir, 'filler'));
        const file = path.join(m.dir, 'q', 'test.journal');
        const j = await Journal.open<unknown>(file);
        try {
          assert.equal(j.size, 0);
          assert.ok(fs.lstatSync(`${file}.lock`).isSymbolicLink(), 'the lock is taken on the full disk');
          await assert.rejects(
            Journal.open<unknown>(file),
            (e: unknown) => e instanceof JournalError && e.code === 'LA_ERR_JOURNAL_LOCKED',
            'and it still excludes a second writer',
          );
          await assert.rejects(j.put('a', 1), (e: unknown) => e instanceof JournalError && /disk full/.test(e.message));
          fs.rmSync(path.join(m.dir, 'filler'));
          await j.put('b', 2);
        } finally {
          await j.close();
        }
        await withJournal(file, async (k) => assert.deepEqual(snapshot(k), { b: 2 }));
      } finally {
        m.unmount();
      }
    });
  });
});
