/**
 * looksLikeMail (src/svm/engines/containers/mime.ts) decides on the first line's bytes before it
 * makes a string of the head: the same answers as the line loop, at the edges of a field name.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, it } from 'node:test';
import { looksLikeMail } from '../../../src/svm/engines/containers/mime.js';

const mail = (first: string) => Buffer.from(`${first}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nbody\r\n`, 'latin1');

describe('looksLikeMail', () => {
  it('a MIME message, with or without an mbox From line, is mail', () => {
    assert.equal(looksLikeMail(mail('Subject: hello')), true);
    assert.equal(looksLikeMail(mail('From someone@example.org Sat Dec  5 10:00:00 2026')), true);
  });

  it('a field name of 1 to 76 characters opens a message; 77, a space, a byte over 0x7e or no colon does not', () => {
    assert.equal(looksLikeMail(mail(`${'X'.repeat(76)}: v`)), true);
    assert.equal(looksLikeMail(mail(`${'X'.repeat(77)}: v`)), false);
    assert.equal(looksLikeMail(mail('X: v')), true);
    assert.equal(looksLikeMail(mail('Sub ject: v')), false);
    assert.equal(looksLikeMail(mail('Subj\u00e9ct: v')), false);
    assert.equal(looksLikeMail(mail('Subject without colon')), false);
    assert.equal(looksLikeMail(Buffer.from('Subject: one line, no end', 'latin1')), false);
  });

  it('random content is not mail, whatever its first byte', () => {
    for (let i = 0; i < 2000; i++) {
      const b = crypto.randomBytes(4096);
      b[0] = 0x41 + (i % 26);
      assert.equal(looksLikeMail(b), false);
    }
  });
});
