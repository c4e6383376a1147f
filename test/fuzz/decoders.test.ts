/**
 * Hostile input for every decoder: protocol frames both ways, binary chunks, agent and SVM config
 * files, the persisted verdict cache (cache.v1, with its checksum recomputed so the fuzz reaches
 * the record checks), the journal format, the deferred queue and the quarantine index on top of
 * it, and signature files. Each target is time-capped and prints its seed (test/fuzz/fuzz.ts);
 * the promise is the same everywhere: the documented error class or a valid result, never
 * another exception, never a hang.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import YAML from 'yaml';
import { ConfigError, JournalError, ProtocolError, QuarantineError, SignatureFileError } from '../../src/errors.js';
import { closeLogging, configureLogging } from '../../src/log.js';
import {
  decodeAgentMessage,
  decodeChunk,
  decodeSvmMessage,
  encodeChunk,
  encodeMessage,
  FRAME_LIMITS,
  POLICY_KEYS,
  POLICY_LIMITS,
  type Message,
} from '../../src/protocol/index.js';
import { PolicyLayer, PolicyRefusedError } from '../../src/agent/policy-layer.js';
import { agentConfigSchema, loadAgentConfig } from '../../src/config/agent.js';
import { loadSvmConfig } from '../../src/svm/config.js';
import { VerdictCache, type FileIdentity } from '../../src/cache/verdict-cache.js';
import { decodeRecords, encodeOps, encodeRecord, headerBytes, JOURNAL_HEADER_BYTES } from '../../src/store/journal-format.js';
import { Journal } from '../../src/store/journal.js';
import { DeferredQueue } from '../../src/store/deferred-queue.js';
import { Quarantine } from '../../src/store/quarantine.js';
import { emptySignatureSet, loadSignatureFile } from '../../src/svm/engines/signatures.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import { applyEdits, edits, expectOnly, fuzz, fuzzAsync } from './fuzz.js';
import { tempDir } from '../helpers/procs.js';

const dir = tempDir('la-fuzz-');
before(() => configureLogging({ file: path.join(dir, 'log.jsonl'), level: 'error' }));
after(async () => {
  await closeLogging();
  fs.rmSync(dir, { recursive: true, force: true });
});

const SHA = 'ab'.repeat(32);
const agentMsgs: Message[] = [
  { t: 'hello', v: 1, agentId: 'a1', token: 'tok', host: 'h', os: 'linux', hypervisor: 'kvm', agentVersion: '0.1.0' },
  { t: 'lookup', id: 7, sha256: SHA, size: 12 },
  // Feature lookup-batch.
  {
    t: 'lookups',
    id: 8,
    entries: [
      { sha256: SHA, size: 12 },
      { sha256: 'cd'.repeat(32), size: 0 },
    ],
  },
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
    reasons: ['svm-unreachable'],
    since: '2026-01-01T00:00:00Z',
    agentVersion: '0.1.0',
    os: 'linux',
    osRelease: '6.8.0',
    generation: 'g',
    cache: { entries: 1, hits: 2, misses: 3 },
    deferred: 4,
    detections: 5,
    policy: { name: 'p', version: '1' },
    scan: {
      id: 'svm-1.x_y',
      trigger: 'svm',
      state: 'running',
      startedAt: '2026-01-01T00:00:00.000Z',
      seen: 1,
      scanned: 1,
      skipped: 0,
      infected: 0,
      errors: 0,
      code: 'LA_ERR_SCAN_BUSY',
    },
  },
];
const svmMsgs: Message[] = [
  { t: 'welcome', v: 1, svmId: 's', generation: 'g', load: 0.5, limits: { maxFileSize: 1, maxChunk: 2, maxInFlight: 3 } },
  { t: 'verdict', id: 1, verdict: 'infected', sha256: SHA, threat: 'Eicar', engine: 'builtin', generation: 'g', cached: true },
  { t: 'load', load: 1, queue: 0 },
  { t: 'generation', generation: 'g2' },
  { t: 'error', code: 'LA_ERR_AUTH', message: 'no', id: 4 },
  { t: 'lookups', id: 8, generation: 'g2', results: 'ciu' },
  // Feature policy.
  {
    t: 'policy',
    name: 'acme/build',
    version: '0123456789abcdef',
    settings: {
      deadline: '3s',
      exclude: { paths: ['/srv/cache/**'], processes: [{ path: '/usr/bin/rsync', children: true }] },
      scan_schedule: { every: '1d', at: '02:30' },
    },
  },
  { t: 'scan-now', id: 'svm-abc', paths: ['/srv', 'C:\\Users'], reason: 'console: admin' },
];

/** Values that break naive validators: wrong types, huge, negative, NaN-ish, prototype keys. */
const nasty = fc.oneof(
  fc.constantFrom(
    null,
    true,
    false,
    -1,
    0,
    1.5,
    2 ** 53,
    -(2 ** 53),
    1e308,
    -0,
    '',
    '0',
    'NaN',
    '__proto__',
    [],
    {},
    { __proto__: { polluted: 1 } },
  ),
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.integer(),
  fc.double(),
  fc.jsonValue({ maxDepth: 3 }),
);

/** A valid message with fields replaced, removed or added (including __proto__ and constructor). */
function mutatedMessages(valid: Message[]): fc.Arbitrary<string> {
  return fc
    .tuple(
      fc.constantFrom(...valid),
      fc.array(
        fc.tuple(
          fc.constantFrom(
            't',
            'v',
            'id',
            'size',
            'sha256',
            'entries',
            'results',
            'generation',
            'token',
            'limits',
            'process',
            'load',
            'verdict',
            'os',
            'kind',
            'action',
            '__proto__',
            'constructor',
            'extra',
          ),
          fc.option(nasty, { nil: undefined }),
        ),
        { maxLength: 4 },
      ),
    )
    .map(([m, changes]) => {
      let text = JSON.stringify(m);
      for (const [k, v] of changes) {
        const o = JSON.parse(text) as Record<string, unknown>;
        if (v === undefined) delete o[k];
        else o[k] = v;
        text = JSON.stringify(o).replace('"extra"', '"__proto__"');
      }
      return text;
    });
}

/** Deeply nested JSON (parser stack), long strings and frames near the 64 KiB bound. */
const deepOrLong = fc.oneof(
  fc.integer({ min: 1, max: 30_000 }).map((n) => '['.repeat(n) + ']'.repeat(n)),
  fc.integer({ min: 1, max: 20_000 }).map((n) => `{"t":"lookup","id":1,"sha256":${'['.repeat(n)}1${']'.repeat(n)},"size":1}`),
  fc
    .integer({ min: FRAME_LIMITS.maxTextFrame - 50, max: FRAME_LIMITS.maxTextFrame + 50 })
    .map((n) => `{"t":"cancel","id":1,"p":"${'x'.repeat(Math.max(0, n - 28))}"}`),
  fc
    .integer({ min: 4090, max: 4100 })
    .map((n) => JSON.stringify({ t: 'hello', v: 1, agentId: 'x'.repeat(n), token: 't', host: 'h', os: 'linux', agentVersion: '0' })),
);

function frameArb(valid: Message[]): fc.Arbitrary<Buffer> {
  return fc.oneof(
    mutatedMessages(valid).map((s) => Buffer.from(s)),
    fc.tuple(fc.constantFrom(...valid), edits).map(([m, e]) => applyEdits(Buffer.from(JSON.stringify(m)), e)),
    fc.uint8Array({ maxLength: 400 }).map((u) => Buffer.from(u)),
    fc.string({ unit: 'binary', maxLength: 200 }).map((s) => Buffer.from(s)),
    deepOrLong.map((s) => Buffer.from(s)),
  );
}

describe('fuzz: protocol frames never escape ProtocolError', () => {
  it('the SVM decoding what an agent sends: ProtocolError or a valid agent message (round-trips)', (t) => {
    fuzz(t, 'decodeAgentMessage', fc.tuple(frameArb(agentMsgs), fc.boolean()), ([buf, asString]) => {
      try {
        const m = decodeAgentMessage(asString ? buf.toString('utf8') : buf);
        assert.ok(['hello', 'lookup', 'lookups', 'scan', 'cancel', 'event', 'state'].includes(m.t));
        assert.deepEqual(decodeAgentMessage(encodeMessage(m)), m, 'what decodes re-encodes to itself');
        assert.equal(Object.getPrototypeOf(m), Object.prototype, 'no prototype smuggled in');
      } catch (e) {
        expectOnly(e, [ProtocolError], 'decodeAgentMessage');
      }
    });
  });

  it('the agent decoding what an SVM sends: ProtocolError or a valid SVM message (round-trips)', (t) => {
    fuzz(t, 'decodeSvmMessage', fc.tuple(frameArb(svmMsgs), fc.boolean()), ([buf, asString]) => {
      try {
        const m = decodeSvmMessage(asString ? buf.toString('utf8') : buf);
        assert.ok(['welcome', 'verdict', 'lookups', 'load', 'generation', 'error', 'policy', 'scan-now'].includes(m.t));
        assert.deepEqual(decodeSvmMessage(encodeMessage(m)), m);
      } catch (e) {
        expectOnly(e, [ProtocolError], 'decodeSvmMessage');
      }
    });
  });

  it('lookup batches (feature lookup-batch): hostile entry lists give ProtocolError or a bounded batch', (t) => {
    const entry = fc.oneof(
      fc.record({ sha256: fc.constant(SHA), size: fc.nat() }),
      fc.record({ sha256: fc.oneof(fc.constant(SHA.toUpperCase()), fc.constant(SHA.slice(1)), nasty), size: nasty }),
      nasty,
    );
    const batch = fc.oneof(
      fc.array(entry, { maxLength: 8 }),
      // Near the entry bound: 512 valid ones, and one more.
      fc.integer({ min: 510, max: 514 }).map((n) => Array.from({ length: n }, (_, i) => ({ sha256: SHA, size: i }))),
      nasty,
    );
    const answer = fc.oneof(
      fc.stringMatching(/^[ciuxC]{0,6}$/),
      fc.integer({ min: 510, max: 514 }).map((n) => 'c'.repeat(n)),
      nasty,
    );
    const frames = fc.oneof(
      fc.tuple(fc.nat(), batch).map(([id, entries]) => ({ agent: true, text: JSON.stringify({ t: 'lookups', id, entries }) })),
      fc
        .tuple(fc.nat(), answer, fc.oneof(fc.constant('g'), nasty))
        .map(([id, results, generation]) => ({ agent: false, text: JSON.stringify({ t: 'lookups', id, generation, results }) })),
    );
    fuzz(t, 'lookups', frames, ({ agent, text }) => {
      try {
        const m = agent ? decodeAgentMessage(text) : decodeSvmMessage(text);
        assert.equal(m.t, 'lookups');
        if ('entries' in m) {
          assert.ok(m.entries.length >= 1 && m.entries.length <= 512);
          for (const e of m.entries) assert.deepEqual(Object.keys(e).sort(), ['sha256', 'size']);
          assert.deepEqual(decodeAgentMessage(encodeMessage(m)), m);
        } else {
          assert.match(m.results, /^[ciu]{1,512}$/);
          assert.deepEqual(decodeSvmMessage(encodeMessage(m)), m);
        }
      } catch (e) {
        expectOnly(e, [ProtocolError], 'lookups');
      }
    });
  });

  it('policy frames with any settings: ProtocolError, or bounded settings the agent checks without throwing anything else', (t) => {
    const layer = new PolicyLayer(dir, agentConfigSchema.parse({}));
    const depth = (v: unknown): number =>
      typeof v === 'object' && v !== null ? 1 + Math.max(0, ...Object.values(v as Record<string, unknown>).map(depth)) : 0;
    const settings = fc.dictionary(fc.constantFrom(...POLICY_KEYS, 'protect', 'token', '__proto__', 'svm'), fc.jsonValue({ maxDepth: 6 }), {
      maxKeys: 7,
    });
    // Mostly well-formed names and versions, so most frames reach the agent's checks.
    const name = fc.oneof(fc.constantFrom('acme', 'acme/build', ''), fc.string({ maxLength: 80 }));
    const version = fc.oneof(fc.stringMatching(/^[0-9a-f]{16}$/), fc.string({ maxLength: 70 }));
    fuzz(t, 'policy frame', fc.tuple(name, version, settings), ([name, version, st]) => {
      const text = JSON.stringify({ t: 'policy', name, version, settings: st });
      let m;
      try {
        m = decodeSvmMessage(text);
      } catch (e) {
        return expectOnly(e, [ProtocolError], 'decodeSvmMessage(policy)');
      }
      assert.equal(m.t, 'policy');
      if (m.t !== 'policy') return;
      for (const k of Object.keys(m.settings)) assert.ok((POLICY_KEYS as readonly string[]).includes(k), `only policy keys pass: ${k}`);
      assert.ok(depth(m.settings) <= POLICY_LIMITS.maxDepth + 1, 'nesting bounded');
      try {
        layer.check(m, ['/srv']);
      } catch (e) {
        expectOnly(e, [PolicyRefusedError], 'PolicyLayer.check');
      }
    });
  });

  it('binary chunks: ProtocolError or a chunk whose fields re-encode to the same bytes', (t) => {
    const chunkArb = fc.oneof(
      fc
        .tuple(fc.nat(), fc.nat(), fc.boolean(), fc.uint8Array({ maxLength: 64 }), edits)
        .map(([id, i, last, p, e]) => applyEdits(encodeChunk(id >>> 0, i >>> 0, last, p), e)),
      fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)),
    );
    fuzz(t, 'decodeChunk', fc.tuple(chunkArb, fc.integer({ min: 0, max: 128 })), ([frame, max]) => {
      try {
        const c = decodeChunk(frame, max);
        assert.ok(c.payload.length <= max);
        assert.deepEqual(encodeChunk(c.id, c.index, c.last, c.payload), frame);
      } catch (e) {
        expectOnly(e, [ProtocolError], 'decodeChunk');
      }
    });
  });
});

// ------------------------------------------------------------------ config files

const agentKeys = [
  'svm',
  'token',
  'local_keys',
  'ca',
  'deadline',
  'max_file_size',
  'on_svm_unavailable',
  'protect',
  'exclude',
  'state_dir',
  'socket_dir',
  'cache',
  'log',
  'unknown_key',
];
const svmKeys = [
  'listen',
  'policies',
  'tokens',
  'engine',
  'signatures',
  'max_file_size',
  'max_chunk',
  'max_in_flight',
  'upload_timeout',
  'hello_timeout',
  'upload_memory',
  'cache',
  'insecure_plain_ws',
  'tls',
  'log',
  'bogus',
];
const configValue = fc.oneof(
  nasty,
  fc.constantFrom(
    '2s',
    '500ms',
    '64 MiB',
    '1.5 GB',
    '-1s',
    '1e400',
    'Infinity',
    '0x10',
    'ws://127.0.0.1:1',
    'wss://[::1]:7443',
    '/abs',
    'relative',
    '127.0.0.1:99999',
    '[::1]:7443',
    'x:y:z',
  ),
  fc.array(
    fc.oneof(
      fc.constantFrom('/a', 'rel', '', 'secret-token-1', { tenant: 'a', token: 'x' }, { tenant: 'b/../', token: '12345678' }),
      nasty,
    ),
    { maxLength: 4 },
  ),
  fc.dictionary(fc.constantFrom('entries', 'save_interval', 'file', 'level', 'cert', 'key', 'client_ca', 'x'), nasty, { maxKeys: 3 }),
);
function configText(keys: string[]): fc.Arbitrary<string> {
  return fc.oneof(
    fc
      .dictionary(fc.constantFrom(...keys), configValue, { maxKeys: 8 })
      .chain((o) => fc.constantFrom(YAML.stringify(o), JSON.stringify(o))),
    fc.string({ unit: 'binary', maxLength: 300 }),
    // YAML features a hostile file could use: aliases (billion laughs), tags, merge keys, anchors.
    fc.integer({ min: 1, max: 12 }).map((n) => {
      let s = 'a: &a ["x","x","x","x","x","x","x","x","x","x"]\n';
      for (let i = 1; i <= n; i++)
        s += `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10)
          .fill(`*${String.fromCharCode(96 + i)}`)
          .join(',')}]\n`;
      return s;
    }),
    fc.constantFrom(
      '!!binary AAAA',
      'x: !!js/function "function(){}"',
      '<<: *nothing',
      '%YAML 9.9\n---\nx: 1',
      '--- |\n  text',
      'svm: !!timestamp 2001-12-14',
      '- 1\n- 2',
      '"unterminated',
      '{a: 1, a: 2}',
      `protect: [${'"/x",'.repeat(2000)}"/y"]`,
    ),
  );
}

describe('fuzz: config files never escape ConfigError', () => {
  it('agent config file (YAML/JSON): ConfigError naming the file, or a config with sane values', (t) => {
    const file = path.join(dir, 'agent.yaml');
    fuzz(
      t,
      'loadAgentConfig',
      configText(agentKeys),
      (text) => {
        fs.writeFileSync(file, text);
        try {
          const c = loadAgentConfig({ file, env: {} });
          assert.ok(Number.isFinite(c.deadline) && c.deadline >= 0, `deadline ${c.deadline}`);
          assert.ok(Number.isFinite(c.max_file_size) && c.max_file_size >= 0, `max_file_size ${c.max_file_size}`);
          assert.ok(path.isAbsolute(c.state_dir));
        } catch (e) {
          expectOnly(e, [ConfigError], 'loadAgentConfig');
          assert.ok((e as ConfigError).message.includes(file), 'the error names the file');
        }
      },
      { maxInputMs: 3000 },
    ); // YAML parses a 2,000-item list in ~0.4 s on a busy core
  });

  it('SVM config file (YAML/JSON): ConfigError naming the file, or a config with sane values', (t) => {
    const file = path.join(dir, 'svm.yaml');
    fuzz(
      t,
      'loadSvmConfig',
      configText(svmKeys),
      (text) => {
        fs.writeFileSync(file, text);
        try {
          const c = loadSvmConfig({ file, env: {} });
          assert.ok(c.tokens.length >= 1);
          assert.ok(c.max_chunk >= 4096 && c.max_chunk <= FRAME_LIMITS.maxChunk);
          assert.ok(Number.isFinite(c.upload_timeout) && c.upload_timeout >= 100);
          assert.ok(c.listen.port >= 0 && c.listen.port <= 65535);
        } catch (e) {
          expectOnly(e, [ConfigError], 'loadSvmConfig');
          assert.ok((e as ConfigError).message.includes(file), 'the error names the file');
        }
      },
      { maxInputMs: 3000 },
    );
  });
});

// ------------------------------------------------------------------ cache.v1

const ident = (n: number): FileIdentity => ({ dev: 7n, ino: BigInt(n), size: BigInt(n * 3), mtimeNs: 11n, ctimeNs: 13n });
const shaOf = (n: number) => crypto.createHash('sha256').update(String(n)).digest('hex');

describe('fuzz: the persisted verdict cache', () => {
  it('a damaged cache.v1, even with a valid checksum, never throws: the cache starts empty or loads only valid records, and keeps working', async (t) => {
    const seed = 0x5eedn;
    const good = path.join(dir, 'good-cache.v1');
    const c = await VerdictCache.open({ seed, capacity: 64, file: good, generation: 'gen-1' });
    for (let i = 1; i <= 40; i++)
      c.record(ident(i), BigInt(i), shaOf(i), i % 5 === 0 ? 'infected' : 'clean', i % 5 === 0 ? `Threat.${i}` : undefined);
    c.setGeneration('gen-2');
    for (let i = 41; i <= 48; i++) c.record(ident(i), BigInt(i), shaOf(i), 'clean');
    assert.equal(await c.save(), true);
    const valid = fs.readFileSync(good);
    const file = path.join(dir, 'fuzz-cache.v1');
    const arb = fc.tuple(edits, fc.boolean(), fc.integer({ min: 1, max: 128 }));
    await fuzzAsync(
      t,
      'cache.v1',
      arb,
      async ([e, fixSum, capacity]) => {
        let b = applyEdits(valid, e);
        // Recompute the checksum so the record and table checks are reached, not only the SHA-256.
        if (fixSum && b.length > 32)
          b = Buffer.concat([
            b.subarray(0, b.length - 32),
            crypto
              .createHash('sha256')
              .update(b.subarray(0, b.length - 32))
              .digest(),
          ]);
        fs.rmSync(`${file}.bad`, { force: true });
        fs.writeFileSync(file, b);
        let cache: VerdictCache;
        try {
          cache = await VerdictCache.open({ seed, capacity, file });
        } catch (err) {
          throw new Error(`VerdictCache.open threw on a damaged file: ${(err as Error).stack}`, { cause: err });
        }
        assert.ok(
          cache.size <= cache.capacity && cache.capacity >= Math.min(capacity, 16),
          `size ${cache.size}, capacity ${cache.capacity}`,
        );
        // Whatever it loaded must answer lookups, take new records and save again.
        for (let i = 1; i <= 50; i++) {
          const h = cache.lookupIdentity(ident(i));
          if (h) assert.ok(h.verdict === 'clean' || h.verdict === 'infected', `verdict ${String(h.verdict)}`);
          cache.lookupFingerprint(BigInt(i));
        }
        cache.record(ident(1000), 1000n, shaOf(1000), 'infected', 'New.Threat');
        assert.equal(cache.lookupIdentity(ident(1000))?.verdict, 'infected');
        assert.equal(await cache.save(), true);
      },
      { maxInputMs: 3000 },
    );
  });
});

// ------------------------------------------------------------------ journal, queue, quarantine index

const opArb = fc.oneof(
  fc.tuple(fc.constant('p'), fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('/a', '__proto__', 'constructor')), nasty),
  fc.tuple(fc.constant('d'), fc.string({ maxLength: 12 })),
  nasty,
);
/** A journal file: our header (sometimes damaged), then records with valid CRCs around random payloads, then edits. */
const journalArb = fc
  .tuple(
    fc.array(
      fc.oneof(
        fc.array(opArb, { maxLength: 4 }).map((ops) => Buffer.from(JSON.stringify(ops))),
        fc.uint8Array({ minLength: 2, maxLength: 40 }).map((u) => Buffer.from(u)),
        fc.constant(
          encodeOps([
            {
              op: 'put',
              key: '/q/file',
              value: { path: '/q/file', dev: '1', ino: '2', size: 3, mtimeNs: '4', reason: 'deadline', time: 5 },
            },
          ]),
        ),
      ),
      { maxLength: 6 },
    ),
    fc.option(edits, { nil: undefined }),
    fc.boolean(),
  )
  .map(([payloads, e, keepHeader]) => {
    const body = Buffer.concat([headerBytes(), ...payloads.map((p) => encodeRecord(p))]);
    return e ? applyEdits(body, e, keepHeader ? JOURNAL_HEADER_BYTES : 0) : body;
  });

describe('fuzz: journals (deferred queue, quarantine index)', () => {
  it('decodeRecords never throws and never reads past a bad record', (t) => {
    fuzz(t, 'decodeRecords', fc.tuple(journalArb, fc.integer({ min: 2, max: 1 << 20 })), ([data, max]) => {
      const d = decodeRecords<unknown>(data, max);
      assert.ok(d.end >= JOURNAL_HEADER_BYTES && d.end <= Math.max(data.length, JOURNAL_HEADER_BYTES));
      for (const ops of d.batches) for (const o of ops) assert.ok((o.op === 'put' || o.op === 'delete') && typeof o.key === 'string');
      if (d.end < data.length) assert.ok(d.problem, 'stopping early says why');
    });
  });

  it('Journal.open and DeferredQueue.open on any bytes: JournalError or a working store (writes after replay succeed)', async (t) => {
    let n = 0;
    await fuzzAsync(t, 'DeferredQueue.open', journalArb, async (data) => {
      const sub = path.join(dir, `q${n++}`);
      fs.mkdirSync(sub, { mode: 0o700 });
      const file = path.join(sub, 'queue.journal');
      fs.writeFileSync(file, data);
      try {
        const q = await DeferredQueue.open({ file, capacity: 3 });
        try {
          for (const e of q.take(10)) assert.equal(typeof e.path, 'string');
          await q.add({ path: '/after/replay', dev: '1', ino: '1', size: 1, mtimeNs: '1', reason: 'deadline' });
          assert.ok(q.has('/after/replay'));
          assert.ok(q.size <= 3);
        } finally {
          await q.close();
        }
        // What was written replays.
        const j = await Journal.open<unknown>(file, { readOnly: true });
        assert.ok(j.has('/after/replay'));
        await j.close();
      } catch (e) {
        expectOnly(e, [JournalError], 'DeferredQueue.open');
      } finally {
        fs.rmSync(sub, { recursive: true, force: true });
      }
    });
  });

  it('quarantine index: list() on any bytes gives JournalError/QuarantineError or only well-formed records', async (t) => {
    let n = 0;
    const recordArb = fc.record(
      {
        id: fc.constantFrom('abcd1234', 'x', '../../etc'),
        originalPath: fc.oneof(fc.string(), fc.constant('/etc/passwd')),
        uid: nasty,
        gid: nasty,
        mode: nasty,
        threat: fc.string(),
        state: fc.constantFrom('moving', 'stored', 'evil'),
        time: fc.oneof(fc.string(), nasty),
      },
      { requiredKeys: [] },
    );
    const indexArb = fc.oneof(
      journalArb,
      fc
        .array(recordArb, { maxLength: 4 })
        .map((recs) =>
          Buffer.concat([headerBytes(), ...recs.map((r) => encodeRecord(encodeOps([{ op: 'put', key: String(r.id), value: r }])))]),
        ),
    );
    await fuzzAsync(t, 'quarantine index', indexArb, async (data) => {
      const stateDir = path.join(dir, `s${n++}`);
      fs.mkdirSync(path.join(stateDir, 'quarantine'), { recursive: true, mode: 0o700 });
      const q = new Quarantine({ stateDir, lockWaitMs: 0 });
      fs.writeFileSync(q.indexFile, data);
      try {
        const list = await q.list();
        for (const r of list) {
          assert.equal(typeof r.originalPath, 'string');
          assert.ok(Number.isInteger(r.uid) && Number.isInteger(r.mode));
          assert.ok(r.state === 'moving' || r.state === 'stored');
        }
      } catch (e) {
        expectOnly(e, [JournalError, QuarantineError], 'Quarantine.list');
      } finally {
        fs.rmSync(stateDir, { recursive: true, force: true });
      }
    });
  });
});

// ------------------------------------------------------------------ signatures

const hexByte = fc.integer({ min: 0, max: 255 }).map((b) => b.toString(16).padStart(2, '0'));
const ndbToken = fc.oneof(
  { weight: 6, arbitrary: hexByte },
  fc.constantFrom(
    '??',
    '*',
    '{0}',
    '{3}',
    '{1-4}',
    '{-5}',
    '{2-}',
    '{9999999}',
    '{5-1}',
    '(',
    ')',
    '|',
    '!',
    '?',
    'a?',
    '[1-2]',
    '(B)',
    '{',
    '}',
    '{-}',
    '(aa|bb)',
    '(??|41)',
    '(41|42|43|44|45|46|47|48)',
  ),
);
const ndbLine = fc
  .tuple(
    fc.oneof(fc.constantFrom('Test.Sig', '', 'x'.repeat(300), 'bad\x01name'), fc.string({ maxLength: 10 })),
    fc.constantFrom('0', '1', '99', 'x', ''),
    fc.constantFrom('*', '0', '10', '10,5', 'EOF-4', 'EOF-10,3', 'EP+0', '-1', '99999999999'),
    fc.array(ndbToken, { minLength: 0, maxLength: 24 }).map((a) => a.join('')),
    fc.constantFrom('', ':51', ':51:255', ':x', ':1:2:3'),
  )
  .map(([n, tt, off, hex, fl]) => `${n}:${tt}:${off}:${hex}${fl}`);
const hashLine = fc
  .tuple(
    fc.oneof(
      fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF'), minLength: 30, maxLength: 66 }),
      fc.constantFrom('44d88612fea8a8f36de82e1278abb02f', 'zz'.repeat(16)),
      fc.integer({ min: 0, max: 70 }).map((n) => 'a'.repeat(n)),
    ),
    fc.constantFrom('*', '68', '0', '-1', '1e3', '999999999999', '9999999999999', ''),
    fc.oneof(fc.constantFrom('Name', '', 'N\x00'), fc.string({ maxLength: 8 })),
  )
  .map(([h, s, n]) => `${h}:${s}:${n}`);

describe('fuzz: signature files', () => {
  it('bad lines become SignatureFileError entries (file:line), the engine loads the rest and scans without hanging', (t) => {
    const ext = fc.constantFrom('.hdb', '.hsb', '.ndb', '.ndu', '.hdu', '.txt');
    const fileArb = fc.tuple(
      ext,
      fc.array(fc.oneof(ndbLine, hashLine, fc.string({ unit: 'binary', maxLength: 40 }), fc.constantFrom('', '#c', '\r')), {
        maxLength: 12,
      }),
      fc.uint8Array({ maxLength: 2048 }),
    );
    let n = 0;
    fuzz(
      t,
      'signatures',
      fileArb,
      ([e, lines, content]) => {
        const file = path.join(dir, `sigs${n++ % 4}${e}`);
        fs.writeFileSync(file, lines.join('\n'));
        const set = emptySignatureSet();
        try {
          const loaded = loadSignatureFile(set, file);
          assert.ok(loaded >= 0 && loaded <= lines.length);
          for (const err of set.errors) {
            assert.ok(err instanceof SignatureFileError);
            assert.ok(err.message.startsWith(`${file}:`), err.message);
          }
        } catch (err) {
          expectOnly(err, [SignatureFileError], 'loadSignatureFile');
          assert.equal(e, '.txt', 'only an unknown extension refuses the whole file');
          return;
        }
        // The engine with these signatures must scan hostile content in bounded time.
        const engine = new BuiltinEngine({ signatureFiles: [file] });
        const body = Buffer.concat([Buffer.from(content), Buffer.from(lines.join('\n'), 'latin1')]);
        const r = engine.scanSync(body);
        assert.equal(typeof r.infected, 'boolean');
        if (r.infected) assert.ok(r.threat, 'an infected verdict names its threat');
      },
      { maxInputMs: 1500 },
    );
  });
});
