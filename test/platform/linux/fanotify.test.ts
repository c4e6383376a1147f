/**
 * The fanotify bindings: the metadata parser and the constants (anyone), error codes and a raw
 * round trip against the real kernel (root; the round trip runs in a child under a watchdog, on
 * a tmpfs made for the test).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { after, describe, it } from 'node:test';
import * as fan from '../../../src/platform/linux/fanotify.js';
import { needRoot, scratchMount } from '../../helpers/procs.js';

const RAW_CHILD = new URL('./fixtures/raw-child.js', import.meta.url).pathname;
const INIT_CHILD = new URL('./fixtures/init-child.js', import.meta.url).pathname;

function record(o: { len?: number; vers?: number; metaLen?: number; mask: bigint; fd: number; pid: number }): Buffer {
  const b = Buffer.alloc(o.len ?? 24);
  b.writeUInt32LE(o.len ?? 24, 0);
  b[4] = o.vers ?? 3;
  b.writeUInt16LE(o.metaLen ?? 24, 6);
  b.writeBigUInt64LE(o.mask, 8);
  b.writeInt32LE(o.fd, 16);
  b.writeInt32LE(o.pid, 20);
  return b;
}

describe('parseEvents', () => {
  it('parses every record of a read, honouring event_len (info records after the metadata)', () => {
    const buf = Buffer.concat([
      record({ mask: BigInt(fan.FAN_OPEN_PERM), fd: 7, pid: 100 }),
      record({ len: 40, mask: BigInt(fan.FAN_OPEN_EXEC_PERM), fd: 8, pid: 101 }),
      record({ mask: BigInt(fan.FAN_CLOSE_WRITE) | (1n << 40n), fd: 9, pid: 102 }),
      record({ mask: BigInt(fan.FAN_Q_OVERFLOW), fd: fan.FAN_NOFD, pid: 0 }),
    ]);
    assert.deepEqual(fan.parseEvents(buf, buf.length), [
      { mask: fan.FAN_OPEN_PERM, fd: 7, pid: 100 },
      { mask: fan.FAN_OPEN_EXEC_PERM, fd: 8, pid: 101 },
      { mask: fan.FAN_CLOSE_WRITE, fd: 9, pid: 102 },
      { mask: fan.FAN_Q_OVERFLOW, fd: -1, pid: 0 },
    ]);
  });

  it('never reads past len, and stops at a record shorter than the metadata', () => {
    const two = Buffer.concat([record({ mask: 1n, fd: 3, pid: 1 }), record({ mask: 1n, fd: 4, pid: 2 })]);
    assert.equal(fan.parseEvents(two, 24 + 23).length, 1, 'a partial second record is not parsed');
    assert.equal(fan.parseEvents(two, 10).length, 0);
    const bad = Buffer.concat([record({ mask: 1n, fd: 3, pid: 1 }), record({ mask: 1n, fd: 4, pid: 2 })]);
    bad.writeUInt32LE(8, 0); // event_len below FAN_EVENT_METADATA_LEN: would loop or misparse
    assert.equal(fan.parseEvents(bad, bad.length).length, 0);
    const overlong = record({ mask: 1n, fd: 3, pid: 1 });
    overlong.writeUInt32LE(4096, 0);
    assert.equal(fan.parseEvents(overlong, overlong.length).length, 0);
  });

  it('refuses a metadata version it does not know', () => {
    const b = record({ vers: 4, mask: 1n, fd: 3, pid: 1 });
    assert.throws(() => fan.parseEvents(b, b.length), { code: 'LA_ERR_FANOTIFY', message: /version 4/ });
  });

  it('writes struct fanotify_response', () => {
    assert.deepEqual([...fan.responseRecord(5, true)], [5, 0, 0, 0, 1, 0, 0, 0]);
    assert.deepEqual([...fan.responseRecord(6, false)], [6, 0, 0, 0, 2, 0, 0, 0]);
  });
});

describe('constants', { skip: fs.existsSync('/usr/include/linux/fanotify.h') ? undefined : 'no kernel headers' }, () => {
  it('match <linux/fanotify.h>', () => {
    const header = fs.readFileSync('/usr/include/linux/fanotify.h', 'utf8');
    const defined = new Map<string, number>();
    for (const m of header.matchAll(/^#define\s+(FAN\w+)\s+\(?(-?(?:0x[0-9a-fA-F]+|\d+))\)?\s*$/gm)) defined.set(m[1]!, Number(m[2]));
    let compared = 0;
    for (const [name, value] of Object.entries(fan)) {
      if (!/^FAN/.test(name) || typeof value !== 'number' || !defined.has(name)) continue;
      assert.equal(value, defined.get(name), name);
      compared++;
    }
    assert.ok(compared >= 15, `compared ${compared} constants`);
  });
});

describe('fanotify syscalls', { skip: needRoot() }, () => {
  it('fanotify_init without CAP_SYS_ADMIN fails with LA_ERR_FANOTIFY_PERM and a hint', () => {
    const r = spawnSync('setpriv', ['--bounding-set', '-sys_admin', '--inh-caps', '-sys_admin', '--', process.execPath, INIT_CHILD], {
      timeout: 20_000,
      killSignal: 'SIGKILL',
    });
    assert.equal(r.status, 0, r.stderr.toString());
    const out = JSON.parse(r.stdout.toString()) as { code: string; hint?: string; message: string };
    assert.equal(out.code, 'LA_ERR_FANOTIFY_PERM', out.message);
    assert.match(out.hint!, /root.*watcher/);
  });

  it('maps EINVAL to LA_ERR_FANOTIFY_UNSUPPORTED and ENOENT to LA_ERR_FANOTIFY naming the path', () => {
    // A group with no mark raises no event: safe in the test process.
    const g = fan.fanotifyInit();
    try {
      assert.throws(() => fan.fanotifyMark(g, fan.FAN_MARK_ADD | fan.FAN_MARK_REMOVE, fan.FAN_OPEN_PERM, fan.AT_FDCWD, '/nonexistent'), {
        code: 'LA_ERR_FANOTIFY_UNSUPPORTED',
      });
      assert.throws(() => fan.fanotifyMark(g, fan.FAN_MARK_ADD | fan.FAN_MARK_MOUNT, fan.FAN_OPEN_PERM, fan.AT_FDCWD, '/nonexistent/la'), {
        code: 'LA_ERR_FANOTIFY',
        message: /\/nonexistent\/la.*No such file/,
      });
      fan.flushInodeMarks(g);
    } finally {
      fan.closeFd(g);
    }
  });

  describe('round trip on a scratch tmpfs', () => {
    const mnt = needRoot() ? undefined : scratchMount('la-fan-');
    after(() => mnt?.unmount());

    it('reads many events per read, denies with EPERM, reports the tgid, and honours an ignore mark set through the event fd', () => {
      const r = spawnSync(process.execPath, [RAW_CHILD, mnt!.dir], { timeout: 30_000, killSignal: 'SIGKILL' });
      assert.equal(r.status, 0, `raw child: ${r.signal ?? ''} ${r.stderr.toString()}`);
      const out = JSON.parse(r.stdout.toString()) as {
        catResults: Array<{ file: string; pid: number; code: number | null; err: string }>;
        catEvents: Array<{ pid: number; path: string }>;
        readSizes: number[];
        selfPid: number;
        workerEventPids: number[];
        eventsFirst: number;
        eventsSecond: number;
      };
      for (const c of out.catResults) {
        if (c.file.includes('deny-')) {
          assert.notEqual(c.code, 0);
          assert.match(c.err, /Operation not permitted/);
        } else assert.equal(c.code, 0, c.err);
        assert.ok(
          out.catEvents.some((e) => e.pid === c.pid && e.path === c.file),
          `an event from cat ${c.pid} for ${c.file}`,
        );
      }
      assert.ok(Math.max(...out.readSizes) > 1, `one read returned several events: ${out.readSizes.join(',')}`);
      assert.ok(out.workerEventPids.length > 0, 'the worker thread open raised an event');
      for (const p of out.workerEventPids) assert.equal(p, out.selfPid, 'a thread of the process is reported by its tgid');
      assert.equal(out.eventsFirst, 1);
      assert.equal(out.eventsSecond, 0, 'the ignore mark silenced the second open');
    });
  });
});
