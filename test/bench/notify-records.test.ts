/**
 * parseNotifyRecords (bench/windows/notify-records.ts), the FILE_NOTIFY_INFORMATION reader of the
 * koffi ReadDirectoryChangesW probe: well-formed buffers as Windows lays them out (DWORD-aligned)
 * and as Wine 8 does (packed), then hostile ones: truncated headers and names, lengths past the
 * reported byte count or the buffer, odd name lengths, a next offset pointing back into its own
 * record (a loop), and random bytes (fast-check) with the result checked against the bytes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { parseNotifyRecords } from '../../bench/windows/notify-records.js';

/** Records laid out with each next offset rounded up to `align` bytes (4: Windows, 1: Wine). */
function layout(recs: { action: number; name: string }[], align: number): Buffer {
  const parts: Buffer[] = [];
  recs.forEach((r, i) => {
    const name = Buffer.from(r.name, 'utf16le');
    const size = 12 + name.length;
    const padded = Math.ceil(size / align) * align;
    const b = Buffer.alloc(i === recs.length - 1 ? size : padded);
    b.writeUInt32LE(i === recs.length - 1 ? 0 : padded, 0);
    b.writeUInt32LE(r.action, 4);
    b.writeUInt32LE(name.length, 8);
    name.copy(b, 12);
    parts.push(b);
  });
  return Buffer.concat(parts);
}

const sample = [
  { action: 1, name: 'top.txt' },
  { action: 3, name: 'sub\\deep\\f1.txt' },
  { action: 5, name: 'ünï\\кот.txt' },
];

describe('parseNotifyRecords', () => {
  it('reads DWORD-aligned records (Windows) and packed ones (Wine 8)', () => {
    for (const align of [4, 1]) {
      const b = layout(sample, align);
      assert.deepEqual(parseNotifyRecords(b, b.length), { records: sample });
    }
  });

  it('reads the records Wine 8 returned in a real run (NextEntryOffset 26, not aligned)', () => {
    // the first two records of a 2,386-byte batch seen under Wine ("f14.txt" MODIFIED at offset 0,
    // "sub7\f15.txt" ADDED at 26), the second made the last (its next offset 36 set to 0)
    const b = Buffer.from(
      '1a000000030000000e0000006600310034002e0074007800740000000000010000001800000073007500620037005c006600310035002e00740078007400',
      'hex',
    );
    assert.deepEqual(parseNotifyRecords(b, b.length), {
      records: [
        { action: 3, name: 'f14.txt' },
        { action: 1, name: 'sub7\\f15.txt' },
      ],
    });
  });

  it('uses only the bytes the call reported, even when the buffer holds more', () => {
    const b = Buffer.concat([layout(sample, 4), Buffer.alloc(64, 0xff)]);
    assert.equal(parseNotifyRecords(b, layout(sample, 4).length).records.length, 3);
    const first = layout([sample[0]!], 4).length;
    // reported length ends inside the second record: the first is kept, the error says where
    const p = parseNotifyRecords(layout(sample, 4), first + 20);
    assert.deepEqual(p.records, [sample[0]]);
    assert.match(p.error!, /record at \d+: file name of \d+ bytes runs past/);
  });

  it('refuses a reported length outside the buffer, negative or not an integer', () => {
    const b = layout(sample, 4);
    for (const n of [b.length + 1, -1, 1.5, Number.NaN]) {
      const p = parseNotifyRecords(b, n);
      assert.deepEqual(p.records, []);
      assert.match(p.error!, /outside the/);
    }
  });

  it('stops at a truncated header, an odd or oversized name length, a name past the end', () => {
    assert.match(parseNotifyRecords(Buffer.alloc(11), 11).error!, /no room for its header/);
    assert.deepEqual(parseNotifyRecords(Buffer.alloc(0), 0).records, []);
    const odd = layout([{ action: 1, name: 'ab' }], 4);
    odd.writeUInt32LE(3, 8);
    assert.match(parseNotifyRecords(odd, odd.length).error!, /not a UTF-16 length/);
    const huge = layout([{ action: 1, name: 'ab' }], 4);
    huge.writeUInt32LE(0xfffffffe, 8);
    assert.match(parseNotifyRecords(huge, huge.length).error!, /not a UTF-16 length/);
    const past = layout([{ action: 1, name: 'ab' }], 4);
    past.writeUInt32LE(6, 8);
    assert.match(parseNotifyRecords(past, past.length).error!, /runs past/);
  });

  it('stops at a next offset pointing into its own record (no loop), keeping the records before it', () => {
    const b = layout(sample, 4);
    const second = b.readUInt32LE(0);
    b.writeUInt32LE(4, second); // the second record's next offset: inside itself
    const p = parseNotifyRecords(b, b.length);
    assert.deepEqual(p.records, sample.slice(0, 1)); // the bad record itself is not trusted either
    assert.match(p.error!, /points inside it/);
    const self = layout([sample[0]!, sample[1]!], 4);
    self.writeUInt32LE(12, 0); // shorter than the record itself (12 + 14)
    assert.match(parseNotifyRecords(self, self.length).error!, /points inside it/);
  });

  it('never throws on random bytes, and every record it returns lies inside the reported bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.nat(600), (bytes, n) => {
        const buf = Buffer.from(bytes);
        const p = parseNotifyRecords(buf, Math.min(n, buf.length));
        let used = 0;
        for (const r of p.records) used += 12 + r.name.length * 2;
        assert.ok(used <= Math.min(n, buf.length), `records use ${used} of ${Math.min(n, buf.length)} bytes`);
      }),
      { numRuns: 3000 },
    );
  });
});
