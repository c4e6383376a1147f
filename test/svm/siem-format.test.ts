/**
 * SIEM formats without a network: RFC 5424 (header grammar, structured data escaping, JSON body),
 * CEF 0 (header and extension escaping, severities, field mapping), hostile strings from agents
 * (newlines, NULs, quotes, brackets, 1 MiB paths): bounded and never able to break the framing.
 * Plus the `siem:` config (defaults, key-path errors).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { loadSvmConfig } from '../../src/svm/config.js';
import type { DetectionSvmEvent, SvmEvent } from '../../src/svm/events.js';
import { cefValue, clip, formatEvent, sdValue, type FormatOptions } from '../../src/svm/siem/format.js';
import { octetCount } from '../../src/svm/siem/transport.js';

const T = '2026-12-05T10:11:12.345Z';
const detection = (over: Partial<DetectionSvmEvent> = {}): DetectionSvmEvent => ({
  kind: 'detection',
  time: T,
  tenant: 'acme',
  agentId: 'agent-1',
  host: 'guest-7',
  path: '/home/u/eicar.com',
  sha256: 'a'.repeat(64),
  threat: 'Eicar-Test-Signature',
  action: 'quarantined',
  process: { pid: 42, exe: '/usr/bin/cat', cmdline: 'cat eicar.com', uid: 1000 },
  ...over,
});
const rfc: FormatOptions = {
  format: 'rfc5424',
  facility: 16,
  appName: 'lightagent-svm',
  maxMessage: 8192,
  hostname: 'svm-1',
  procId: '99',
};
const cef: FormatOptions = { ...rfc, format: 'cef' };

/** RFC 5424 section 6, the parts we write: HEADER SP STRUCTURED-DATA [SP MSG]. */
const HEADER = /^<(\d{1,3})>1 (\S+) ([\x21-\x7e]{1,255}) ([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) ([\x21-\x7e]{1,32}) /;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$/;

/** Parse the structured data element strictly per RFC 5424 6.3 (escapes \" \\ \]); returns [params, rest]. */
function parseSd(s: string): [Record<string, string>, string] {
  assert.equal(s[0], '[');
  const id = /^\[([^\s=\]"]{1,32})/.exec(s)!;
  assert.equal(id[1], 'lightagent@32473');
  let i = id[0].length;
  const params: Record<string, string> = {};
  while (s[i] === ' ') {
    const name = /^ ([^\s=\]"]{1,32})="/.exec(s.slice(i))!;
    assert.ok(name, `an SD-PARAM at ${s.slice(i, i + 40)}`);
    i += name[0].length;
    let v = '';
    for (;;) {
      const c = s[i++];
      assert.ok(c !== undefined, 'a closed PARAM-VALUE');
      if (c === '\\' && (s[i] === '"' || s[i] === '\\' || s[i] === ']')) v += s[i++];
      else if (c === '"') break;
      else {
        assert.notEqual(c, ']', 'an unescaped ] in a PARAM-VALUE');
        v += c;
      }
    }
    params[name[1]!] = v;
  }
  assert.equal(s[i], ']');
  return [params, s.slice(i + 1)];
}

function parse5424(b: Buffer): {
  pri: number;
  ts: string;
  host: string;
  app: string;
  procid: string;
  msgid: string;
  sd: Record<string, string>;
  msg: string;
} {
  const s = b.toString('utf8');
  const h = HEADER.exec(s);
  assert.ok(h, `an RFC 5424 header: ${s.slice(0, 120)}`);
  const [sd, rest] = parseSd(s.slice(h[0].length));
  assert.equal(rest[0], ' ');
  return { pri: Number(h[1]), ts: h[2]!, host: h[3]!, app: h[4]!, procid: h[5]!, msgid: h[6]!, sd, msg: rest.slice(1) };
}

/** CEF: split the 7 header fields on unescaped |, then the extension into key=value on unescaped = (spec rules). */
function parseCef(s: string): { header: string[]; ext: Record<string, string> } {
  const at = s.indexOf('CEF:0|');
  assert.ok(at > 0);
  const body = s.slice(at);
  const header: string[] = [];
  let cur = '';
  let i = 0;
  for (; header.length < 7; i++) {
    const c = body[i]!;
    if (c === '\\') cur += body[++i];
    else if (c === '|') {
      header.push(cur);
      cur = '';
    } else cur += c;
  }
  const ext: Record<string, string> = {};
  const extText = body.slice(i);
  assert.doesNotMatch(extText, /[\r\n\0]/, 'no raw CR, LF or NUL in the extension');
  for (const m of extText.matchAll(/(\w+)=((?:[^=\\]|\\.)*?)(?= \w+=|$)/g)) {
    ext[m[1]!] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c));
  }
  return { header, ext };
}

describe('SIEM format: RFC 5424', () => {
  it('writes PRI, version, timestamp, hostname, app-name, procid, msgid, structured data and a JSON body', () => {
    const m = parse5424(formatEvent(detection(), rfc));
    assert.equal(m.pri, 16 * 8 + 2, 'local0.crit');
    assert.equal(m.ts, T);
    assert.match(m.ts, TIMESTAMP);
    assert.equal(m.host, 'svm-1');
    assert.equal(m.app, 'lightagent-svm');
    assert.equal(m.procid, '99');
    assert.equal(m.msgid, 'detection');
    assert.equal(m.sd.tenant, 'acme');
    assert.equal(m.sd.path, '/home/u/eicar.com');
    assert.equal(m.sd.action, 'quarantined');
    assert.equal(m.sd.pid, '42');
    const body = JSON.parse(m.msg) as Record<string, unknown>;
    assert.equal(body.kind, 'detection');
    assert.equal(body.tenant, 'acme');
    assert.equal(body.threat, 'Eicar-Test-Signature');
    assert.equal(body.sha256, 'a'.repeat(64));
    assert.equal(body.cmdline, 'cat eicar.com');
    assert.equal(body.uid, 1000);
  });

  it('gives every kind a tenant, its severity and its fields', () => {
    const base = { time: T, tenant: 'acme', agentId: 'a1', host: 'g' };
    const cases: Array<[SvmEvent, number, Record<string, string>]> = [
      [
        { kind: 'protection', ...base, state: 'degraded', previous: 'protected', reasons: ['fanotify lost', 'svm down'] },
        4,
        { state: 'degraded' },
      ],
      [{ kind: 'protection', ...base, state: 'protected', previous: 'degraded', reasons: [] }, 5, { previous: 'degraded' }],
      [{ kind: 'agent-silent', ...base, lastSeen: T }, 4, { lastSeen: T }],
      [{ kind: 'agent-back', ...base, lastSeen: T }, 5, { agentId: 'a1' }],
      [{ kind: 'policy', time: T, tenant: 'acme', policy: 'strict', change: 'set', version: '3' }, 5, { policy: 'strict', version: '3' }],
      [{ kind: 'signatures', time: T, engine: 'clamav', generation: 'g2', previous: 'g1' }, 6, { tenant: '*', generation: 'g2' }],
      [{ kind: 'signatures-stale', time: T, engine: 'clamav', generation: 'g2', ageSeconds: 900000 }, 4, { ageSeconds: '900000' }],
    ];
    for (const [e, sev, fields] of cases) {
      const m = parse5424(formatEvent(e, rfc));
      assert.equal(m.pri, 16 * 8 + sev, e.kind);
      assert.equal(m.msgid, e.kind);
      assert.ok(m.sd.tenant, `${e.kind} has a tenant`);
      for (const [k, v] of Object.entries(fields)) assert.equal(m.sd[k], v, `${e.kind}.${k}`);
      assert.equal((JSON.parse(m.msg) as { kind: string }).kind, e.kind);
    }
    const p = parse5424(formatEvent(cases[0]![0], rfc));
    assert.equal(p.sd.reasons, 'fanotify lost; svm down');
    assert.deepEqual((JSON.parse(p.msg) as { reasons: string[] }).reasons, ['fanotify lost', 'svm down']);
  });

  it('escapes ", \\ and ] in SD values and keeps hostile strings from breaking the message', () => {
    assert.equal(sdValue('a"b\\c]d'), 'a\\"b\\\\c\\]d');
    const path = '/tmp/x"] [evil@1 a="b"]\\\n<13>1 2026-01-01T00:00:00Z forged - - - - hi\u0000\r\u0085end';
    const e = detection({ path, host: 'host with spaces\n', agentId: 'id]"', threat: 'T\\' });
    const b = formatEvent(e, rfc);
    const m = parse5424(b);
    assert.doesNotMatch(b.toString(), /[\n\r\0\u0085]/, 'no raw control character anywhere');
    assert.match(b.toString(), /\\u0085/, 'NEL escaped in the JSON body');
    assert.equal(m.sd.agentId, 'id]"');
    assert.equal(m.sd.threat, 'T\\');
    assert.equal(m.sd.path, path.replace(/[\n\r\0\u0085]/g, '\ufffd'));
    const body = JSON.parse(m.msg) as Record<string, string>;
    assert.equal(body.path, path, 'the JSON body keeps the exact value');
    assert.equal(body.host, 'host with spaces\n');
  });

  it('falls back to the SVM time for a bad event time, and cuts header fields to PRINTUSASCII', () => {
    const m = parse5424(formatEvent(detection({ time: 'not a date\n' }), { ...rfc, hostname: 'h ö\n', appName: 'app', now: () => 0 }));
    assert.equal(m.ts, '1970-01-01T00:00:00.000Z');
    assert.equal(m.host, 'h___');
    assert.equal(JSON.parse(m.msg).time, 'not a date\n');
  });

  it('bounds a message with a 1 MiB path to max_message, the JSON still whole, the framing exact', () => {
    const long = `/${'é'.repeat(512 * 1024)}`;
    for (const maxMessage of [480, 2048, 8192]) {
      const b = formatEvent(detection({ path: long, process: { pid: 1, cmdline: 'x'.repeat(100_000) } }), { ...rfc, maxMessage });
      assert.ok(b.length <= maxMessage, `${b.length} <= ${maxMessage}`);
      assert.ok(b.toString('utf8').indexOf('\ufffd') < 0, 'cut on a character boundary');
      if (maxMessage >= 2048) {
        const m = parse5424(b);
        const body = JSON.parse(m.msg) as { path: string };
        assert.ok(body.path.endsWith('\u2026') && body.path.length > 10, 'the path is cut and marked');
      }
      const framed = octetCount(b);
      const sp = framed.indexOf(0x20);
      assert.equal(Number(framed.subarray(0, sp).toString()), framed.length - sp - 1, 'octet count = bytes that follow');
    }
    assert.equal(clip('ab€', 4), 'a\u2026');
    assert.equal(clip('short', 10), 'short');
  });
});

describe('SIEM format: CEF', () => {
  it('writes CEF:0 with vendor, product, version, class id, name, severity and the mapped extension', () => {
    const s = formatEvent(detection(), cef).toString();
    assert.match(s, HEADER);
    assert.match(s, / detection - CEF:0\|lightagent\|lightagent-svm\|[\d.]+\|detection\|Malware detected\|8\|/);
    const { header, ext } = parseCef(s);
    assert.equal(header[6], '8');
    assert.equal(ext.rt, String(Date.parse(T)));
    assert.equal(ext.dvchost, 'svm-1');
    assert.equal(ext.dhost, 'guest-7');
    assert.equal(ext.cs1Label, 'tenant');
    assert.equal(ext.cs1, 'acme');
    assert.equal(ext.cs2, 'agent-1');
    assert.equal(ext.filePath, '/home/u/eicar.com');
    assert.equal(ext.fname, 'eicar.com');
    assert.equal(ext.fileHash, 'a'.repeat(64));
    assert.equal(ext.cs3Label, 'threat');
    assert.equal(ext.cs3, 'Eicar-Test-Signature');
    assert.equal(ext.act, 'quarantined');
    assert.equal(ext.spid, '42');
    assert.equal(ext.sproc, '/usr/bin/cat');
    assert.equal(ext.suid, '1000');
    assert.equal(ext.cs4, 'cat eicar.com');
    assert.equal(parseCef(formatEvent(detection({ action: 'reported' }), cef).toString()).header[6], '9');
    const deg = parseCef(
      formatEvent(
        { kind: 'protection', time: T, tenant: 't', agentId: 'a', host: 'h', state: 'off', previous: 'protected', reasons: ['r'] },
        cef,
      ).toString(),
    );
    assert.equal(deg.header[6], '6');
    assert.equal(deg.ext.outcome, 'off');
    assert.equal(deg.ext.reason, 'r');
  });

  it('escapes |, \\, = and newlines; hostile values cannot add fields or lines', () => {
    assert.equal(cefValue('a=b\\c\nd\r\ne'), 'a\\=b\\\\c\\nd\\ne');
    const path = 'C:\\x|y= act=allowed\nCEF:0|forged|x|1|1|x|1|\u0000';
    const s = formatEvent(detection({ path, threat: 'a|b', host: 'h=1 cs1=other' }), cef).toString();
    assert.doesNotMatch(s, /[\n\r\0]/);
    const { header, ext } = parseCef(s);
    assert.equal(header.length, 7);
    assert.equal(ext.filePath, path.replace('\u0000', '\ufffd'));
    assert.equal(ext.act, 'quarantined', 'not the forged act');
    assert.equal(ext.dhost, 'h=1 cs1=other');
    assert.equal(ext.cs1, 'acme');
    assert.equal(ext.cs3, 'a|b');
    assert.equal(ext.fname, 'x|y= act=allowed\nCEF:0|forged|x|1|1|x|1|\ufffd', 'the name after the last \\ or /');
  });
});

describe('SIEM config (siem:)', () => {
  const load = (siem: unknown) => loadSvmConfig({ env: {}, flags: { tokens: ['a-long-token'], siem } });
  const issues = (siem: unknown): readonly string[] => {
    try {
      load(siem);
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      return e.issues;
    }
    return assert.fail('expected a ConfigError');
  };

  it('defaults: rfc5424, every event class, local0, 10000 events / 8 MiB, name host:port, port by protocol', () => {
    assert.deepEqual(load(undefined).siem, []);
    const [d] = load([{ address: 'tcp://10.0.0.7' }]).siem;
    assert.deepEqual(d, {
      name: '10.0.0.7:514',
      protocol: 'tcp',
      host: '10.0.0.7',
      port: 514,
      format: 'rfc5424',
      events: ['detection', 'protection', 'agent-silent', 'policy', 'signatures'],
      tenants: undefined,
      ca: undefined,
      cert: undefined,
      key: undefined,
      buffer: { events: 10_000, bytes: 8 << 20 },
      facility: 16,
      appName: 'lightagent-svm',
      maxMessage: 8192,
    });
    const [t, u] = load([
      { address: 'tls://siem.example', ca: '/ca.pem', format: 'cef', buffer: { events: 5, bytes: '1 MiB' }, facility: 'local7' },
      { address: 'udp://[::1]:5514', events: ['detection'], facility: 3 },
    ]).siem;
    assert.equal(t!.port, 6514);
    assert.equal(t!.facility, 23);
    assert.equal(t!.buffer.bytes, 1 << 20);
    assert.equal(u!.name, '[::1]:5514');
    assert.equal(u!.maxMessage, 2048);
    assert.equal(u!.facility, 3);
  });

  it('reports every bad setting with its key path', () => {
    const got = issues([
      { address: 'http://x' },
      { address: 'tls://x:6514' },
      { address: 'tcp://x', format: 'leef', events: ['nope'], facility: 'local9' },
      { address: 'tls://x', ca: '/ca', cert: '/c', buffer: { events: 0 } },
      { address: 'udp://a', name: 'same' },
      { address: 'udp://b', name: 'same', max_message: 100 },
      { address: 'udp://c', bogus: 1 },
      { address: 'tcp://x', ca: '/ca' },
    ]);
    const has = (re: RegExp) =>
      assert.ok(
        got.some((i) => re.test(i)),
        `${re} in\n${got.join('\n')}`,
      );
    has(/^siem\.0\.address: "http:\/\/x" is not a syslog address/);
    has(/^siem\.1\.ca: tls:\/\/ needs ca/);
    has(/^siem\.7\.ca: ca is for tls:\/\/ destinations only/);
    has(/^siem\.2\.format: /);
    has(/^siem\.2\.events\.0: /);
    has(/^siem\.2\.facility: must be a facility name/);
    has(/^siem\.3\.key: cert and key go together/);
    has(/^siem\.3\.buffer\.events: /);
    has(/^siem\.5\.max_message: must be from 480/);
    has(/^siem\.6: .*bogus/);
  });

  it('refuses two destinations with one name', () => {
    const got = issues([
      { address: 'udp://a', name: 'same' },
      { address: 'udp://b', name: 'same' },
    ]);
    assert.ok(
      got.some((i) => /^siem\.1\.name: two destinations are named same/.test(i)),
      got.join('\n'),
    );
  });
});
