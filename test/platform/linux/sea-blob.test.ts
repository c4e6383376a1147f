/**
 * Finding the single executable's blob (src/platform/linux/sea-blob.ts) in an ELF file: the
 * NODE_SEA_BLOB note among others, nothing in a file without one, and nothing (no throw) in a
 * file that only looks like ELF. The real binary is checked by test/release/release.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { releaseSeaBlobPages, seaBlobRange } from '../../../src/platform/linux/sea-blob.js';
import { tempDir } from '../../helpers/procs.js';

const linux = process.platform === 'linux' ? undefined : 'Linux only';

function note(name: string, desc: Buffer): Buffer {
  const n = Buffer.from(name + '\0', 'latin1');
  const nPad = Buffer.alloc((n.length + 3) & ~3);
  n.copy(nPad);
  const dPad = Buffer.alloc((desc.length + 3) & ~3);
  desc.copy(dPad);
  const h = Buffer.alloc(12);
  h.writeUInt32LE(n.length, 0);
  h.writeUInt32LE(desc.length, 4);
  h.writeUInt32LE(0x20, 8);
  return Buffer.concat([h, nPad, dPad]);
}

/** An ELF64 LE header, one PT_LOAD and one PT_NOTE holding `notes`; returns the file and the notes' offset. */
function elf(notes: Buffer): { file: Buffer; notesAt: number } {
  const eh = Buffer.alloc(64);
  eh.writeUInt32BE(0x7f454c46, 0);
  eh[4] = 2; // ELFCLASS64
  eh[5] = 1; // little-endian
  eh.writeBigUInt64LE(64n, 0x20); // e_phoff
  eh.writeUInt16LE(56, 0x36); // e_phentsize
  eh.writeUInt16LE(2, 0x38); // e_phnum
  const notesAt = 64 + 2 * 56;
  const ph = Buffer.alloc(2 * 56);
  ph.writeUInt32LE(1, 0); // PT_LOAD, ignored
  ph.writeUInt32LE(4, 56); // PT_NOTE
  ph.writeBigUInt64LE(BigInt(notesAt), 56 + 8);
  ph.writeBigUInt64LE(BigInt(notes.length), 56 + 32);
  return { file: Buffer.concat([eh, ph, notes]), notesAt };
}

describe('SEA blob pages', { skip: linux }, () => {
  const dir = tempDir('la-seablob-');
  after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, b: Buffer) => {
    const p = path.join(dir, name);
    fs.writeFileSync(p, b);
    return p;
  };

  it('finds the NODE_SEA_BLOB note after other notes', () => {
    const blob = Buffer.from('blob contents, 27 bytes long');
    const first = note('GNU', Buffer.alloc(20, 1));
    const { file, notesAt } = elf(Buffer.concat([first, note('NODE_SEA_BLOB', blob)]));
    const r = seaBlobRange(write('sea', file));
    assert.deepEqual(r, { offset: notesAt + first.length + 12 + 16, length: blob.length });
    assert.equal(file.toString('latin1', r!.offset, r!.offset + r!.length), blob.toString('latin1'));
  });

  it('finds nothing where there is no blob, a note that runs past its segment, or no ELF', () => {
    assert.equal(seaBlobRange(write('plain', elf(note('GNU', Buffer.alloc(8))).file)), undefined);
    const long = elf(note('NODE_SEA_BLOB', Buffer.alloc(40)));
    long.file.writeBigUInt64LE(BigInt(12 + 16 + 32), 64 + 56 + 32); // the segment ends inside the note
    assert.equal(seaBlobRange(write('cut', long.file)), undefined);
    const bogus = elf(note('NODE_SEA_BLOB', Buffer.alloc(40)));
    bogus.file.writeBigUInt64LE(1n << 40n, 64 + 56 + 32); // a PT_NOTE that claims 1 TiB
    assert.doesNotThrow(() => seaBlobRange(write('bogus', bogus.file)));
    assert.equal(seaBlobRange(write('text', Buffer.from('#!/bin/sh\necho not ELF\n'))), undefined);
    assert.equal(seaBlobRange(write('empty', Buffer.alloc(0))), undefined);
  });

  it('does nothing in a process that is not the single executable', () => {
    assert.equal(releaseSeaBlobPages(), undefined);
  });
});
