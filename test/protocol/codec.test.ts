/**
 * lightagent/1 codec: round trips of every message, rejections with typed errors, and a
 * fast-check fuzz (random and mutated frames) proving only ProtocolError ever comes out.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ProtocolError } from '../../src/errors.js';
import {
  CHUNK_HEADER,
  decodeAgentMessage,
  decodeChunk,
  decodeSvmMessage,
  encodeChunk,
  encodeChunkHeader,
  encodeMessage,
  FRAME_LIMITS,
  LOOKUP_BATCH_LIMITS,
  MAX_FEATURES,
  POLICY_LIMITS,
  type Message,
} from '../../src/protocol/index.js';

const SHA = 'ab'.repeat(32);
const agentMsgs: Message[] = [
  { t: 'hello', v: 1, agentId: 'a1', token: 'tok', host: 'h', os: 'linux', hypervisor: 'kvm', agentVersion: '0.1.0' },
  { t: 'hello', v: 1, agentId: 'a2', token: 'tok', host: 'h', os: 'linux', agentVersion: '0.1.0', features: ['state-report', 'x-1'] },
  { t: 'lookup', id: 7, sha256: SHA, size: 12 },
  // Feature lookup-batch.
  { t: 'lookups', id: 9, entries: [{ sha256: SHA, size: 12 }] },
  { t: 'scan', id: 4294967295, size: 0, name: '/x' },
  { t: 'cancel', id: 3 },
  {
    t: 'event',
    kind: 'detection',
    time: '2026-01-01T00:00:00Z',
    path: '/p',
    sha256: SHA,
    threat: 'T',
    action: 'denied',
    process: { pid: 10, exe: '/bin/sh', uid: 0 },
  },
  {
    t: 'state',
    mode: 'fanotify',
    state: 'degraded',
    reasons: ['svm-unreachable', 'files-queued'],
    since: '2026-01-01T00:00:00.000Z',
    agentVersion: '0.1.0',
    os: 'linux',
    osRelease: '6.8.0-45-generic',
    generation: 'builtin-1',
    cache: { entries: 10, hits: 5, misses: 2 },
    deferred: 3,
    detections: 1,
    policy: { name: 'default', version: '7' },
  },
  {
    t: 'state',
    mode: 'off',
    state: 'off',
    reasons: [],
    since: '2026-01-01T00:00:00.000Z',
    agentVersion: '0.1.0',
    os: 'windows',
    cache: { entries: 0, hits: 0, misses: 0 },
    deferred: 0,
    detections: 0,
  },
];
const svmMsgs: Message[] = [
  { t: 'welcome', v: 1, svmId: 's', generation: 'g', load: 0.5, limits: { maxFileSize: 1, maxChunk: 2, maxInFlight: 3 } },
  { t: 'welcome', v: 1, svmId: 's', generation: 'g', load: 0, limits: { maxFileSize: 1, maxChunk: 2, maxInFlight: 3 }, features: [] },
  { t: 'verdict', id: 1, verdict: 'infected', sha256: SHA, threat: 'Eicar', engine: 'builtin', generation: 'g', cached: true },
  { t: 'verdict', id: 2, verdict: 'error', code: 'LA_ERR_BUSY', message: 'busy' },
  { t: 'load', load: 1, queue: 0 },
  { t: 'generation', generation: 'g2' },
  // Feature signature-age.
  {
    t: 'welcome',
    v: 1,
    svmId: 's',
    generation: 'g',
    load: 0,
    limits: { maxFileSize: 1, maxChunk: 2, maxInFlight: 3 },
    features: ['signature-age'],
    signaturesAt: '2026-12-01T10:00:00.000Z',
    signaturesMaxAge: 604800,
  },
  { t: 'generation', generation: 'g3', signaturesAt: '2026-12-05T10:20:30Z', signaturesMaxAge: 0 },
  { t: 'error', code: 'LA_ERR_AUTH', message: 'no' },
  // Feature lookup-batch.
  { t: 'lookups', id: 9, generation: 'g', results: 'ciu' },
];

function onlyProtocolErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof ProtocolError))
      throw new Error(`decoder threw a non-protocol error: ${(e as Error)?.stack ?? String(e)}`, { cause: e });
  }
}

describe('protocol codec', () => {
  it('round-trips every message type on the side that receives it', () => {
    for (const m of agentMsgs) assert.deepEqual(decodeAgentMessage(encodeMessage(m)), m);
    for (const m of svmMsgs) assert.deepEqual(decodeSvmMessage(encodeMessage(m)), m);
  });

  it('reads -0 as 0 wherever a number is taken, so what decodes re-encodes as it came (a fuzz find)', () => {
    const ev = decodeAgentMessage(
      `{"t":"event","kind":"detection","time":"2026-01-01T00:00:00Z","path":"/p","sha256":"${SHA}","threat":"T","action":"denied","process":{"pid":-0,"exe":"/bin/sh","uid":-0}}`,
    );
    const proc = (ev as unknown as { process: { pid: number; uid: number } }).process;
    assert.ok(Object.is(proc.pid, 0) && Object.is(proc.uid, 0), JSON.stringify(ev));
    const lk = decodeAgentMessage(`{"t":"lookup","id":-0,"sha256":"${SHA}","size":-0}`) as { id: number; size: number };
    assert.ok(Object.is(lk.id, 0) && Object.is(lk.size, 0));
    assert.deepEqual(decodeAgentMessage(encodeMessage(ev)), ev);
  });

  it('drops unknown fields and rejects messages meant for the other side', () => {
    const m = decodeAgentMessage(JSON.stringify({ t: 'lookup', id: 1, sha256: SHA, size: 1, evil: { __proto__: 1 } }));
    assert.deepEqual(Object.keys(m).sort(), ['id', 'sha256', 'size', 't']);
    assert.throws(
      () => decodeAgentMessage(encodeMessage(svmMsgs[1]!)),
      (e: unknown) => e instanceof ProtocolError && e.code === 'LA_ERR_PROTO_UNEXPECTED',
    );
    assert.throws(() => decodeSvmMessage(encodeMessage(agentMsgs[0]!)), ProtocolError);
  });

  it('feature lists (the version rule): short names only, at most MAX_FEATURES of them', () => {
    const hello = { t: 'hello', v: 1, agentId: 'a', token: 't', host: 'h', os: 'linux', agentVersion: '1' };
    const ok = decodeAgentMessage(JSON.stringify({ ...hello, features: ['a', 'b-2'] }));
    assert.deepEqual((ok as { features?: string[] }).features, ['a', 'b-2']);
    const refused = (features: unknown, code: string) =>
      assert.throws(
        () => decodeAgentMessage(JSON.stringify({ ...hello, features })),
        (e: unknown) => e instanceof ProtocolError && e.code === code && /features/.test(e.message),
        JSON.stringify(features).slice(0, 60),
      );
    refused('state-report', 'LA_ERR_PROTO_MALFORMED');
    refused([1], 'LA_ERR_PROTO_MALFORMED');
    refused(['Upper'], 'LA_ERR_PROTO_MALFORMED');
    refused([''], 'LA_ERR_PROTO_MALFORMED');
    refused(['x'.repeat(65)], 'LA_ERR_PROTO_MALFORMED');
    refused({ a: 1 }, 'LA_ERR_PROTO_MALFORMED');
    refused(
      Array.from({ length: MAX_FEATURES + 1 }, (_, i) => `f${i}`),
      'LA_ERR_PROTO_OVERSIZED',
    );
    const w = { t: 'welcome', v: 1, svmId: 's', generation: 'g', load: 0, limits: { maxFileSize: 1, maxChunk: 2, maxInFlight: 3 } };
    assert.throws(() => decodeSvmMessage(JSON.stringify({ ...w, features: ['../x'] })), ProtocolError);
  });

  it('feature signature-age: signaturesAt is an ISO 8601 UTC time, signaturesMaxAge a non-negative integer', () => {
    const g = { t: 'generation', generation: 'g' };
    const ok = decodeSvmMessage(JSON.stringify({ ...g, signaturesAt: '2026-01-02T03:04:05.678Z', signaturesMaxAge: 3600 }));
    assert.deepEqual(ok, { ...g, signaturesAt: '2026-01-02T03:04:05.678Z', signaturesMaxAge: 3600 });
    for (const signaturesAt of [
      'yesterday',
      '2026-01-02',
      '2026-01-02T03:04:05+01:00',
      '2026-13-02T03:04:05Z',
      `2026-01-02T03:04:05Z${' '.repeat(10)}`,
      'x'.repeat(5000),
      12345,
      { a: 1 },
    ])
      assert.throws(
        () => decodeSvmMessage(JSON.stringify({ ...g, signaturesAt })),
        (e: unknown) => e instanceof ProtocolError && /signaturesAt/.test(e.message),
        JSON.stringify(signaturesAt).slice(0, 40),
      );
    for (const signaturesMaxAge of [-1, 1.5, '7d', Number.MAX_SAFE_INTEGER + 2])
      assert.throws(() => decodeSvmMessage(JSON.stringify({ ...g, signaturesMaxAge })), ProtocolError, String(signaturesMaxAge));
  });

  it('names the field that is wrong', () => {
    assert.throws(() => decodeAgentMessage('{"t":"lookup","id":1,"sha256":"AB","size":1}'), /lookup\.sha256/);
    assert.throws(() => decodeAgentMessage('{"t":"lookup","id":-1,"sha256":"' + SHA + '","size":1}'), /lookup\.id/);
    assert.throws(() => decodeAgentMessage('{"t":"scan","id":1,"size":1.5}'), /scan\.size/);
    assert.throws(() => decodeAgentMessage('{"t":"hello"}'), /hello\.v is missing/);
    assert.throws(() => decodeAgentMessage('[1,2]'), /JSON object/);
    assert.throws(() => decodeAgentMessage('{'), /not valid JSON/);
  });

  it('bounds sizes: frames, strings, chunks', () => {
    const big = JSON.stringify({ t: 'cancel', id: 1, pad: 'x'.repeat(FRAME_LIMITS.maxTextFrame) });
    assert.throws(
      () => decodeAgentMessage(big),
      (e: unknown) => e instanceof ProtocolError && e.code === 'LA_ERR_PROTO_OVERSIZED',
    );
    assert.throws(
      () => decodeAgentMessage(JSON.stringify({ t: 'scan', id: 1, size: 1, name: 'x'.repeat(5000) })),
      (e: unknown) => e instanceof ProtocolError && e.code === 'LA_ERR_PROTO_OVERSIZED',
    );
    assert.throws(
      () => decodeChunk(Buffer.concat([encodeChunk(1, 0, true, Buffer.alloc(10)), Buffer.alloc(100)]), 64),
      (e: unknown) => e instanceof ProtocolError && e.code === 'LA_ERR_PROTO_OVERSIZED',
    );
  });

  it('round-trips chunks and rejects bad headers', () => {
    const c = decodeChunk(encodeChunk(0xdeadbeef, 5, true, Buffer.from('abc')));
    assert.deepEqual([c.id, c.index, c.last, c.payload.toString()], [0xdeadbeef, 5, true, 'abc']);
    assert.throws(() => decodeChunk(Buffer.alloc(5)), ProtocolError);
    const bad = encodeChunk(1, 0, false, Buffer.alloc(1));
    bad[0] = 0;
    assert.throws(() => decodeChunk(bad), /magic/);
    const flags = encodeChunk(1, 0, false, Buffer.alloc(1));
    flags[2] = 0x80;
    assert.throws(() => decodeChunk(flags), /flags/);
  });

  it('builds the same header alone as in a whole chunk, and refuses oversized payloads when encoding', () => {
    const whole = encodeChunk(42, 3, false, Buffer.from('payload'));
    assert.deepEqual(encodeChunkHeader(42, 3, false), whole.subarray(0, CHUNK_HEADER));
    assert.throws(() => encodeChunk(1, 0, true, Buffer.alloc(FRAME_LIMITS.maxChunk + 1)), ProtocolError);
    const empty = decodeChunk(encodeChunk(1, 0, true, Buffer.alloc(0)));
    assert.equal(empty.payload.length, 0);
    assert.equal(empty.last, true);
  });

  it('state reports (feature state-report): bounded strings and lists, closed sets', () => {
    const base = agentMsgs.find((m) => m.t === 'state')!;
    const enc = (patch: Record<string, unknown>) => JSON.stringify({ ...base, ...patch });
    assert.deepEqual(decodeAgentMessage(enc({ extra: 'dropped' })), base);
    const refused: Array<[Record<string, unknown>, string]> = [
      [{ state: 'fine' }, 'LA_ERR_PROTO_MALFORMED'],
      [{ reasons: Array.from({ length: 17 }, (_, i) => `r${i}`) }, 'LA_ERR_PROTO_OVERSIZED'],
      [{ reasons: ['<script>'] }, 'LA_ERR_PROTO_MALFORMED'],
      [{ reasons: 'svm-unreachable' }, 'LA_ERR_PROTO_MALFORMED'],
      [{ mode: 'x'.repeat(129) }, 'LA_ERR_PROTO_OVERSIZED'],
      [{ agentVersion: 'x'.repeat(129) }, 'LA_ERR_PROTO_OVERSIZED'],
      [{ policy: { name: 'p', version: 'v'.repeat(200) } }, 'LA_ERR_PROTO_OVERSIZED'],
      [{ policy: { name: 'p' } }, 'LA_ERR_PROTO_MALFORMED'],
      [{ cache: { entries: -1, hits: 0, misses: 0 } }, 'LA_ERR_PROTO_MALFORMED'],
      [{ cache: [1, 2, 3] }, 'LA_ERR_PROTO_MALFORMED'],
      [{ deferred: 1.5 }, 'LA_ERR_PROTO_MALFORMED'],
      [{ detections: '3' }, 'LA_ERR_PROTO_MALFORMED'],
      [{ since: undefined }, 'LA_ERR_PROTO_MALFORMED'],
    ];
    for (const [patch, code] of refused)
      assert.throws(
        () => decodeAgentMessage(enc(patch)),
        (e: unknown) => e instanceof ProtocolError && e.code === code,
        JSON.stringify(patch).slice(0, 80),
      );
    // An SVM never receives its own agent's message type from the other direction.
    assert.throws(() => decodeSvmMessage(enc({})), ProtocolError);
  });

  it('lookup batches (feature lookup-batch): 1..512 well-formed entries, one letter of c/i/u per result', () => {
    const batch = (entries: unknown) => JSON.stringify({ t: 'lookups', id: 1, entries });
    const full = Array.from({ length: LOOKUP_BATCH_LIMITS.maxEntries }, (_, i) => ({ sha256: SHA, size: Number.MAX_SAFE_INTEGER - i }));
    const text = batch(full);
    assert.ok(text.length < FRAME_LIMITS.maxTextFrame, `a full batch of the largest sizes is ${text.length} bytes, inside one frame`);
    const m = decodeAgentMessage(text);
    assert.equal(m.t === 'lookups' && m.entries.length, LOOKUP_BATCH_LIMITS.maxEntries);
    // Extra fields inside an entry are dropped like any unknown field.
    const extra = decodeAgentMessage(batch([{ sha256: SHA, size: 1, path: '/etc/shadow' }]));
    assert.deepEqual(extra, { t: 'lookups', id: 1, entries: [{ sha256: SHA, size: 1 }] });
    const refused: Array<[unknown, string]> = [
      [[...full, { sha256: SHA, size: 1 }], 'LA_ERR_PROTO_OVERSIZED'],
      [[], 'LA_ERR_PROTO_MALFORMED'],
      ['x', 'LA_ERR_PROTO_MALFORMED'],
      [[{ sha256: SHA.toUpperCase(), size: 1 }], 'LA_ERR_PROTO_MALFORMED'],
      [[{ sha256: SHA, size: -1 }], 'LA_ERR_PROTO_MALFORMED'],
      [[{ sha256: SHA }], 'LA_ERR_PROTO_MALFORMED'],
      [[SHA], 'LA_ERR_PROTO_MALFORMED'],
      [[null], 'LA_ERR_PROTO_MALFORMED'],
      [[[SHA, 1]], 'LA_ERR_PROTO_MALFORMED'],
    ];
    for (const [entries, code] of refused)
      assert.throws(
        () => decodeAgentMessage(batch(entries)),
        (e: unknown) => e instanceof ProtocolError && e.code === code,
        JSON.stringify(entries).slice(0, 80),
      );
    const answer = (results: unknown) => JSON.stringify({ t: 'lookups', id: 1, generation: 'g', results });
    assert.equal((decodeSvmMessage(answer('c'.repeat(512))) as { results: string }).results.length, 512);
    for (const [results, code] of [
      ['c'.repeat(513), 'LA_ERR_PROTO_OVERSIZED'],
      ['', 'LA_ERR_PROTO_MALFORMED'],
      ['cx', 'LA_ERR_PROTO_MALFORMED'],
      ['C', 'LA_ERR_PROTO_MALFORMED'],
      [['c'], 'LA_ERR_PROTO_MALFORMED'],
    ] as const)
      assert.throws(
        () => decodeSvmMessage(answer(results)),
        (e: unknown) => e instanceof ProtocolError && e.code === code,
        String(results).slice(0, 20),
      );
    // An answer needs its generation.
    assert.throws(() => decodeSvmMessage(JSON.stringify({ t: 'lookups', id: 1, results: 'c' })), ProtocolError);
  });

  it('policy (feature policy): only policy keys pass, nesting and lists bounded, names and versions checked', () => {
    const base = {
      t: 'policy',
      name: 'acme/build',
      version: '0123456789abcdef',
      settings: { deadline: '3s', exclude: { paths: ['/srv/cache/**'], processes: [{ path: '/usr/bin/rsync', children: true }] } },
    };
    const enc = (patch: Record<string, unknown>) => JSON.stringify({ ...base, ...patch });
    assert.deepEqual(decodeSvmMessage(enc({})), base);
    // The clear-the-layer form, and keys outside POLICY_KEYS dropped like unknown fields (a newer SVM's).
    assert.deepEqual(decodeSvmMessage(enc({ name: '', version: '', settings: {} })), { t: 'policy', name: '', version: '', settings: {} });
    const dropped = decodeSvmMessage(enc({ settings: { svm: 'ws://evil:1', token: 'x', protect: [], deadline: 2, on_detect: null } }));
    assert.deepEqual(dropped.t === 'policy' && dropped.settings, { deadline: 2 });
    let deep: unknown = 'x';
    for (let i = 0; i < POLICY_LIMITS.maxDepth; i++) deep = [deep];
    const refused: Array<[Record<string, unknown>, string]> = [
      [{ name: 'a/b/c' }, 'LA_ERR_PROTO_MALFORMED'],
      [{ name: 'a b' }, 'LA_ERR_PROTO_MALFORMED'],
      [{ name: 'x'.repeat(129) }, 'LA_ERR_PROTO_OVERSIZED'],
      [{ version: 'XYZ' }, 'LA_ERR_PROTO_MALFORMED'],
      [{ version: 'ab' }, 'LA_ERR_PROTO_MALFORMED'],
      [{ settings: [] }, 'LA_ERR_PROTO_MALFORMED'],
      [{ settings: 'deadline: 3s' }, 'LA_ERR_PROTO_MALFORMED'],
      [{ settings: { exclude: deep } }, 'LA_ERR_PROTO_MALFORMED'],
      [{ settings: { exclude: { paths: Array.from({ length: POLICY_LIMITS.maxList + 1 }, () => 1) } } }, 'LA_ERR_PROTO_OVERSIZED'],
      [{ settings: { exclude: { paths: ['x'.repeat(FRAME_LIMITS.maxString + 1)] } } }, 'LA_ERR_PROTO_OVERSIZED'],
      [{ settings: { exclude: { 'Bad-Key': [] } } }, 'LA_ERR_PROTO_MALFORMED'],
      [{ settings: JSON.parse('{"exclude":{"__proto__":{"paths":["/"]}}}') as unknown }, 'LA_ERR_PROTO_MALFORMED'],
      [{ settings: { deadline: null, exclude: { paths: [null] } } }, 'LA_ERR_PROTO_MALFORMED'],
      [{ settings: undefined }, 'LA_ERR_PROTO_MALFORMED'],
    ];
    for (const [patch, code] of refused)
      assert.throws(
        () => decodeSvmMessage(enc(patch)),
        (e: unknown) => e instanceof ProtocolError && e.code === code,
        JSON.stringify(patch).slice(0, 80),
      );
    // An agent never sends one.
    assert.throws(() => decodeAgentMessage(enc({})), ProtocolError);
  });

  it('feature scan-command: scan-now and state.scan are bounded, closed sets, safe ids', () => {
    const now = { t: 'scan-now', id: 'svm-1', paths: ['/srv/data', 'D:\\share'], reason: 'console: admin' } as const;
    assert.deepEqual(decodeSvmMessage(JSON.stringify({ ...now, extra: 1 })), now);
    assert.deepEqual(decodeSvmMessage(JSON.stringify({ t: 'scan-now', id: 'x' })), { t: 'scan-now', id: 'x' });
    const badNow: Array<[Record<string, unknown>, string]> = [
      [{ id: '../etc' }, 'LA_ERR_PROTO_MALFORMED'],
      [{ id: 'x'.repeat(65) }, 'LA_ERR_PROTO_OVERSIZED'],
      [{ id: 7 }, 'LA_ERR_PROTO_MALFORMED'],
      [{ paths: Array.from({ length: 17 }, (_, i) => `/p${i}`) }, 'LA_ERR_PROTO_OVERSIZED'],
      [{ paths: ['relative/path'] }, 'LA_ERR_PROTO_MALFORMED'],
      [{ paths: ['/a\u0000b'] }, 'LA_ERR_PROTO_MALFORMED'],
      [{ paths: [''] }, 'LA_ERR_PROTO_MALFORMED'],
      [{ paths: '/srv' }, 'LA_ERR_PROTO_MALFORMED'],
      [{ paths: ['/' + 'x'.repeat(4096)] }, 'LA_ERR_PROTO_OVERSIZED'],
      [{ reason: 'r'.repeat(257) }, 'LA_ERR_PROTO_OVERSIZED'],
    ];
    for (const [patch, code] of badNow)
      assert.throws(
        () => decodeSvmMessage(JSON.stringify({ ...now, ...patch })),
        (e: unknown) => e instanceof ProtocolError && e.code === code,
        JSON.stringify(patch).slice(0, 80),
      );
    // An SVM never accepts scan-now from an agent.
    assert.throws(() => decodeAgentMessage(JSON.stringify(now)), ProtocolError);
    const base = agentMsgs.find((m) => m.t === 'state')!;
    const scan = {
      id: 'j1',
      trigger: 'svm',
      state: 'done',
      startedAt: '2026-01-01T00:00:00.000Z',
      finishedAt: '2026-01-01T00:01:00Z',
      seen: 3,
      scanned: 2,
      skipped: 1,
      infected: 1,
      errors: 0,
    };
    assert.deepEqual((decodeAgentMessage(JSON.stringify({ ...base, scan })) as { scan?: unknown }).scan, scan);
    const badScan: Array<Record<string, unknown>> = [
      { state: 'exploded' },
      { trigger: 'cron' },
      { seen: -1 },
      { startedAt: 'yesterday' },
      { code: 'lower case <b>' },
      { id: 'a b' },
    ];
    for (const patch of badScan)
      assert.throws(
        () => decodeAgentMessage(JSON.stringify({ ...base, scan: { ...scan, ...patch } })),
        ProtocolError,
        JSON.stringify(patch),
      );
  });

  it('accepts text as a string or a Buffer alike', () => {
    for (const m of agentMsgs) assert.deepEqual(decodeAgentMessage(Buffer.from(encodeMessage(m))), m);
  });

  it('fuzz: 12,000 random and mutated frames produce only typed protocol errors', () => {
    const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31);
    process.stderr.write(`codec fuzz seed ${seed} (replay with FUZZ_SEED=${seed})\n`);
    const valid = [...agentMsgs, ...svmMsgs].map((m) => encodeMessage(m));
    const mutate = fc
      .tuple(fc.constantFrom(...valid), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat())
      .map(([text, edits, cut]) => {
        const b = Buffer.from(text);
        for (const [pos, byte] of edits) b[pos % b.length] = byte;
        return b.subarray(0, cut % (b.length + 1));
      });
    const jsonish = fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? 'null'));
    const typed = fc
      .record(
        {
          t: fc.constantFrom(
            'hello',
            'lookup',
            'scan',
            'cancel',
            'event',
            'state',
            'welcome',
            'verdict',
            'load',
            'generation',
            'error',
            'x',
          ),
          id: fc.anything(),
          size: fc.anything(),
          sha256: fc.anything(),
          v: fc.anything(),
          limits: fc.anything(),
          process: fc.anything(),
          load: fc.anything(),
          generation: fc.anything(),
          signaturesAt: fc.oneof(
            fc.anything(),
            fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
            fc.string(),
          ),
          signaturesMaxAge: fc.anything(),
          state: fc.anything(),
          reasons: fc.anything(),
          cache: fc.anything(),
          policy: fc.anything(),
          mode: fc.anything(),
        },
        { requiredKeys: ['t'] },
      )
      .map((o) => Buffer.from(JSON.stringify(o) ?? '{}'));
    const chunks = fc
      .tuple(
        fc.nat(),
        fc.nat(),
        fc.boolean(),
        fc.uint8Array({ maxLength: 64 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        fc.nat(),
      )
      .map(([id, index, last, payload, edits, cut]) => {
        const b = encodeChunk(id % 2 ** 32, index % 2 ** 32, last, payload);
        for (const [pos, byte] of edits) b[pos % b.length] = byte;
        return b.subarray(0, cut % (b.length + 1));
      });
    const frames = fc.oneof(
      mutate,
      jsonish,
      typed,
      chunks,
      fc.uint8Array({ maxLength: 300 }).map((u) => Buffer.from(u)),
    );
    const deadline = Date.now() + 20_000;
    let checked = 0;
    fc.assert(
      fc.property(frames, fc.boolean(), (buf, asString) => {
        if (Date.now() > deadline) return; // time cap: the remaining runs pass without work
        checked++;
        const text = asString ? buf.toString('latin1') : buf;
        onlyProtocolErrors(() => decodeAgentMessage(text));
        onlyProtocolErrors(() => decodeSvmMessage(text));
        onlyProtocolErrors(() => decodeChunk(buf));
        onlyProtocolErrors(() => decodeChunk(buf, 16));
      }),
      { numRuns: 12_000, seed },
    );
    process.stderr.write(`codec fuzz: ${checked} frames checked (seed ${seed})\n`);
    assert.ok(checked >= 10_000, `only ${checked} frames fit in the time cap`);
  });
});
