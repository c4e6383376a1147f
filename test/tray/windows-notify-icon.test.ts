/**
 * The Windows tray's pure half: state -> stock icon / tooltip, notification -> balloon icon, and
 * NOTIFYICONDATAW built byte by byte (x64 layout, text fields cut to their UTF-16 arrays).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  IDI_ERROR,
  IDI_INFORMATION,
  IDI_SHIELD,
  IDI_WARNING,
  INFO_CHARS,
  INFO_TITLE_CHARS,
  NID_OFFSETS,
  NIF_ICON,
  NIF_INFO,
  NIF_MESSAGE,
  NIF_TIP,
  NIIF_ERROR,
  NIIF_INFO,
  NIIF_WARNING,
  NOTIFYICONDATAW_SIZE,
  TIP_CHARS,
  balloonFlags,
  buildNotifyIconData,
  fitUtf16,
  iconFor,
  readText,
  tooltipFor,
} from '../../src/tray/windows-notify-icon.js';
import { threatNotification } from '../../src/tray/tray-app.js';

describe('Windows tray: icon, tooltip and balloon kind', () => {
  it('maps each state to a stock icon like the Linux icon names (high / medium / low)', () => {
    assert.deepEqual(iconFor('protected'), { id: IDI_SHIELD, fallback: IDI_INFORMATION });
    assert.deepEqual(iconFor('degraded'), { id: IDI_WARNING, fallback: IDI_WARNING });
    assert.deepEqual(iconFor('threat'), { id: IDI_ERROR, fallback: IDI_ERROR });
    assert.deepEqual(iconFor('off'), { id: IDI_ERROR, fallback: IDI_ERROR });
    assert.deepEqual([IDI_ERROR, IDI_WARNING, IDI_INFORMATION, IDI_SHIELD], [32513, 32515, 32516, 32518]);
  });

  it('tooltips name the product once', () => {
    assert.equal(tooltipFor('protected', 'Protected (watcher)'), 'lightagent: Protected (watcher)');
    assert.equal(tooltipFor('off', 'lightagent is not running: not protected'), 'lightagent is not running: not protected');
    assert.equal(tooltipFor('threat', '  '), 'lightagent: threat blocked');
    assert.equal(tooltipFor('degraded', ''), 'lightagent: degraded');
  });

  it('a threat notification says what was done, and does not call a threat left in place blocked', () => {
    const n = (action: string) => threatNotification({ path: 'C:\\a.exe', threat: 'Eicar', action });
    assert.equal(n('quarantined').summary, 'Threat blocked: Eicar');
    assert.match(n('quarantined').body, /^Action: quarantined$/m);
    assert.match(n('denied').body, /^Action: access denied$/m);
    assert.match(n('killed').body, /^Action: the program was stopped$/m);
    assert.equal(n('reported').summary, 'Threat found: Eicar');
    assert.match(n('reported').body, /^Action: left in place and reported to your administrator$/m);
    assert.match(n('something-new').body, /^Action: something-new$/m, 'an action this tray does not know is shown as sent');
    assert.match(n('toString').body, /^Action: toString$/m, 'no prototype lookups');
  });

  it('balloon icons: a stopped agent is an error, a recovery information, threats and degradation warnings', () => {
    assert.equal(balloonFlags(threatNotification({ path: 'C:\\a.exe', threat: 'Eicar', action: 'quarantined' })), NIIF_WARNING);
    assert.equal(balloonFlags({ kind: 'summary', summary: '9 more', body: '', urgency: 'normal' }), NIIF_WARNING);
    assert.equal(balloonFlags({ kind: 'degraded', summary: 'd', body: '', urgency: 'normal' }), NIIF_WARNING);
    assert.equal(balloonFlags({ kind: 'off', summary: 'o', body: '', urgency: 'critical' }), NIIF_ERROR);
    assert.equal(balloonFlags({ kind: 'recovered', summary: 'r', body: '', urgency: 'low' }), NIIF_INFO);
  });
});

describe('Windows tray: UTF-16 text fitted to fixed arrays', () => {
  it('keeps short text, cuts long text with an ellipsis within chars - 1 units', () => {
    assert.equal(fitUtf16('hello', 128), 'hello');
    assert.equal(fitUtf16('x'.repeat(127), 128), 'x'.repeat(127));
    const cut = fitUtf16('x'.repeat(500), 128);
    assert.equal(cut.length, 127);
    assert.ok(cut.endsWith('…'));
    assert.equal(fitUtf16('abcdef', 4), 'ab…');
  });

  it('never splits a surrogate pair, and replaces lone surrogates', () => {
    // 😀 is two code units; cut at a point that would fall between them.
    const s = `${'a'.repeat(61)}😀😀😀`;
    const cut = fitUtf16(s, INFO_TITLE_CHARS);
    assert.ok(cut.length <= 63);
    assert.equal(cut, `${'a'.repeat(61)}…`);
    assert.equal(fitUtf16('a\ud800b', 10), 'a\ufffdb');
    assert.equal(fitUtf16('a\udc00b', 10), 'a\ufffdb');
  });

  it('turns NUL and other control characters (but not newlines) into spaces', () => {
    assert.equal(fitUtf16('a\0b\tc\nd\x7f', 64), 'a b c\nd ');
  });

  it('any string: at most chars - 1 units, well-formed UTF-16, a prefix of the cleaned text or cut with …', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: 'binary', maxLength: 400 }),
          fc.array(fc.integer({ min: 0, max: 0xffff }), { maxLength: 400 }).map((a) => String.fromCharCode(...a)),
        ),
        fc.constantFrom(TIP_CHARS, INFO_CHARS, INFO_TITLE_CHARS, 2, 3),
        (s, n) => {
          const t = fitUtf16(s, n);
          assert.ok(t.length <= n - 1, `${t.length} > ${n - 1}`);
          assert.ok(!/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(t), 'no lone surrogate');
          assert.ok(!t.includes('\0'));
          // round trip through UTF-16LE is exact (nothing lost by the encoder)
          assert.equal(Buffer.from(t, 'utf16le').toString('utf16le'), t);
        },
      ),
      { numRuns: 2000 },
    );
  });
});

describe('Windows tray: NOTIFYICONDATAW', () => {
  it('has the x64 size and field offsets', () => {
    assert.equal(NOTIFYICONDATAW_SIZE, 976);
    // each text array ends where the next field starts
    assert.equal(NID_OFFSETS.szTip + TIP_CHARS * 2, NID_OFFSETS.dwState);
    assert.equal(NID_OFFSETS.szInfo + INFO_CHARS * 2, NID_OFFSETS.uTimeout);
    assert.equal(NID_OFFSETS.szInfoTitle + INFO_TITLE_CHARS * 2, NID_OFFSETS.dwInfoFlags);
    assert.equal(NID_OFFSETS.hBalloonIcon + 8, NOTIFYICONDATAW_SIZE);
    for (const k of ['hWnd', 'hIcon', 'hBalloonIcon'] as const) assert.equal(NID_OFFSETS[k] % 8, 0, `${k} is pointer-aligned`);
  });

  it('writes the handles, flags and texts where Shell_NotifyIconW reads them', () => {
    const b = buildNotifyIconData({
      hWnd: 0x1_0002_0044n,
      uID: 1,
      uFlags: NIF_MESSAGE | NIF_ICON | NIF_TIP | NIF_INFO,
      uCallbackMessage: 0x8001,
      hIcon: 0x10021,
      tip: 'lightagent: Protected (watcher)',
      info: 'File: C:\\Users\\ü\\x.exe\nThreat: Eicar',
      infoTitle: 'Threat blocked: Eicar',
      infoFlags: NIIF_WARNING,
    });
    assert.equal(b.length, 976);
    assert.equal(b.readUInt32LE(NID_OFFSETS.cbSize), 976);
    assert.equal(b.readBigInt64LE(NID_OFFSETS.hWnd), 0x1_0002_0044n);
    assert.equal(b.readUInt32LE(NID_OFFSETS.uID), 1);
    assert.equal(b.readUInt32LE(NID_OFFSETS.uFlags), 0x17);
    assert.equal(b.readUInt32LE(NID_OFFSETS.uCallbackMessage), 0x8001);
    assert.equal(b.readBigInt64LE(NID_OFFSETS.hIcon), 0x10021n);
    assert.equal(readText(b, NID_OFFSETS.szTip, TIP_CHARS), 'lightagent: Protected (watcher)');
    assert.equal(readText(b, NID_OFFSETS.szInfo, INFO_CHARS), 'File: C:\\Users\\ü\\x.exe\nThreat: Eicar');
    assert.equal(readText(b, NID_OFFSETS.szInfoTitle, INFO_TITLE_CHARS), 'Threat blocked: Eicar');
    assert.equal(b.readUInt32LE(NID_OFFSETS.dwInfoFlags), NIIF_WARNING);
    assert.equal(b.readBigInt64LE(NID_OFFSETS.hBalloonIcon), 0n);
  });

  it('long texts stay inside their arrays, NUL-terminated, and do not touch the next field', () => {
    const huge = '界'.repeat(5000);
    const b = buildNotifyIconData({
      hWnd: 1,
      uID: 1,
      uFlags: NIF_TIP | NIF_INFO,
      tip: huge,
      info: huge,
      infoTitle: huge,
      infoFlags: NIIF_ERROR,
    });
    for (const [off, n] of [
      [NID_OFFSETS.szTip, TIP_CHARS],
      [NID_OFFSETS.szInfo, INFO_CHARS],
      [NID_OFFSETS.szInfoTitle, INFO_TITLE_CHARS],
    ] as const) {
      const t = readText(b, off, n);
      assert.equal(t.length, n - 1);
      assert.ok(t.endsWith('…'));
      assert.equal(b.readUInt16LE(off + (n - 1) * 2), 0, 'the last unit is the NUL');
    }
    assert.equal(b.readUInt32LE(NID_OFFSETS.dwState), 0);
    assert.equal(b.readUInt32LE(NID_OFFSETS.uTimeout), 10_000);
    assert.equal(b.readUInt32LE(NID_OFFSETS.dwInfoFlags), NIIF_ERROR);
  });

  it('leaves absent texts empty', () => {
    const b = buildNotifyIconData({ hWnd: 7, uID: 1, uFlags: 0 });
    assert.equal(readText(b, NID_OFFSETS.szTip, TIP_CHARS), '');
    assert.equal(readText(b, NID_OFFSETS.szInfo, INFO_CHARS), '');
  });
});
