/**
 * MIME mail (RFC 5322 / 2045) through postal-mime: the decoded text and HTML bodies and every
 * attachment (base64 and quoted-printable undone) are members. Attached messages
 * (message/rfc822) are members too, so they are opened by the walker under its depth limit
 * rather than inside the parser. Decoding never grows the data (base64 and QP only shrink it), so
 * the budget's ratio does not apply; its member count and byte total do.
 */
import PostalMime from 'postal-mime';
import type { ContainerReader } from './types.js';

/**
 * Larger mail is judged as it is, not opened: postal-mime decodes at ~5 MB/s on the event loop
 * (10 MiB of base64 took 2.3 s here), so a 64 MiB message would stall every agent for ~15 s.
 * docs/svm.md lists this gap; a streaming decoder is the fix.
 */
export const MAX_MAIL_BYTES = 8 * 1024 * 1024;

export const readMime: ContainerReader = async function* (buf, ctx) {
  if (buf.length > MAX_MAIL_BYTES) return;
  let mail: Awaited<ReturnType<typeof PostalMime.parse>>;
  try {
    mail = await PostalMime.parse(buf, {
      forceRfc822Attachments: true,
      attachmentEncoding: 'arraybuffer',
      maxNestingDepth: 64,
      maxPartCount: ctx.budget.limits.maxMembers + 2,
      maxHeadersSize: 1024 * 1024,
    });
  } catch {
    return; // not parseable as mail: the raw bytes were judged
  }
  const parts: Array<{ name: string; data: () => Buffer }> = [];
  if (mail.text) parts.push({ name: '(text)', data: () => Buffer.from(mail.text!, 'utf8') });
  if (mail.html) parts.push({ name: '(html)', data: () => Buffer.from(mail.html!, 'utf8') });
  mail.attachments.forEach((a, i) => {
    const c = a.content;
    parts.push({
      name: a.filename || `(part ${i + 1}${a.mimeType ? ` ${a.mimeType}` : ''})`,
      data: () => (typeof c === 'string' ? Buffer.from(c, 'utf8') : Buffer.from(c as ArrayBuffer)),
    });
  });
  for (const p of parts) {
    const where = ctx.pathOf(p.name);
    ctx.budget.member(where);
    ctx.budget.checkTime();
    const data = p.data();
    ctx.budget.take(data.length, where);
    yield { name: p.name, data };
  }
};

/**
 * Looks like a mail message: the first lines are RFC 5322 header fields (an mbox "From " line
 * may come first) and one of them is MIME-Version or Content-Type. Only the first 8 KiB are read.
 */
export function looksLikeMail(buf: Buffer): boolean {
  const c = buf[0];
  if (c === undefined || !((c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a))) return false;
  // Every scan asks: judge the first line on the bytes before making a string of 8 KiB (a fifth
  // of random content starts with a letter; beside a flood of uploads those strings were 5% of
  // the garbage the SVM's full collections freed).
  if (!startsLikeHeader(buf)) return false;
  const head = buf.toString('latin1', 0, Math.min(buf.length, 8192));
  const lines = head.split(/\r?\n/);
  let i = lines[0]!.startsWith('From ') ? 1 : 0;
  let fields = 0;
  let mime = false;
  for (; i < lines.length - 1; i++) {
    const l = lines[i]!;
    if (l === '') break;
    if (/^[ \t]/.test(l) && fields > 0) continue; // folded continuation
    const m = /^([!-9;-~]{1,76}):/.exec(l);
    if (!m) return false;
    fields++;
    if (/^(mime-version|content-type)$/i.test(m[1]!)) mime = true;
  }
  return mime && fields >= 2;
}

const FROM_ = Buffer.from('From ', 'latin1');

/**
 * The first line could open a message: an mbox "From " line, or a header field name (1-76
 * printable characters other than ':') and its ':'. The same test the line loop of looksLikeMail
 * makes of that line, on bytes.
 */
function startsLikeHeader(buf: Buffer): boolean {
  if (buf.length >= FROM_.length && buf.compare(FROM_, 0, FROM_.length, 0, FROM_.length) === 0) return true;
  const end = Math.min(buf.length, 77);
  for (let i = 0; i < end; i++) {
    const b = buf[i]!;
    if (b === 0x3a) return i > 0;
    if (b < 0x21 || b > 0x7e) return false;
  }
  return false;
}
