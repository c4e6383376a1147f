/**
 * Signature freshness on the SVM (issue #25 item 1): one age per engine, /healthz `signatures`
 * and `degraded` past max_signature_age, the `signatures` / `signatures-stale` events, feature
 * signature-age in welcome and generation, and builtin/YARA files reloaded when they change
 * (a broken update keeps the signatures in force and is counted).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FEATURES, type SvmMessage } from '../../src/protocol/index.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import { loadYaraModule, YaraEngine } from '../../src/svm/engines/yara.js';
import type { SvmEvent } from '../../src/svm/events.js';
import { loadSvmConfig } from '../../src/svm/config.js';
import { ConfigError } from '../../src/errors.js';
import { signatureTime } from '../../src/svm/signature-age.js';
import type { SvmHealth, SvmServer } from '../../src/svm/server.js';
import { signatureAge } from '../../src/agent/daemon.js';
import { formatStatus } from '../../src/cli/commands/status.js';
import { inCi, tempDir } from '../helpers/procs.js';
import { rawAgent, startTestSvm, TOKEN, upload, type RawAgent } from './helpers.js';

const DAY = 86_400_000;
const PROBE = Buffer.from('lightagent freshness probe: flag me\n');
const PROBE_NDB = `Lightagent.Test.Probe:0:*:${Buffer.from('freshness probe: flag me').toString('hex')}\n`;
const OTHER_NDB = `Lightagent.Test.Other:0:*:${Buffer.from('some other pattern').toString('hex')}\n`;

const yaraMissing = await loadYaraModule().then(
  () => undefined,
  (e: Error) => {
    if (inCi) throw new Error(`CI=true: the yara watch test may not skip: ${e.message}`);
    return `needs @litko/yara-x: ${e.message}`;
  },
);

async function until(fn: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A raw agent that lists `features` in its hello. */
async function agentWith(url: string, features: string[]): Promise<RawAgent> {
  const a = await rawAgent(url, TOKEN, false);
  a.ws.send(
    JSON.stringify({
      t: 'hello',
      v: 1,
      agentId: `raw-${features.length}`,
      token: TOKEN,
      host: 't',
      os: 'linux',
      agentVersion: '0',
      features,
    }),
  );
  await a.next((m) => m.t === 'welcome');
  return a;
}

async function health(s: SvmServer): Promise<{ status: number; body: SvmHealth & { signatures: { ageSeconds: number } } }> {
  const res = await fetch(`${s.httpUrl}/healthz`);
  return { status: res.status, body: (await res.json()) as SvmHealth & { signatures: { ageSeconds: number } } };
}

function writeAtomically(file: string, content: string, mtime?: number): void {
  fs.writeFileSync(`${file}.part`, content);
  if (mtime !== undefined) fs.utimesSync(`${file}.part`, mtime / 1000, mtime / 1000);
  fs.renameSync(`${file}.part`, file);
}

describe('signature freshness', () => {
  it('config: max_signature_age (default 7d, 1m..3650d) and watch_signatures (default true)', () => {
    const env = {};
    const base = { tokens: ['a-long-enough-token'] };
    const def = loadSvmConfig({ env, flags: base });
    assert.equal(def.max_signature_age, 7 * DAY);
    assert.equal(def.watch_signatures, true);
    const c = loadSvmConfig({ env, flags: { ...base, max_signature_age: '36h', watch_signatures: false } });
    assert.equal(c.max_signature_age, 36 * 3_600_000);
    assert.equal(c.watch_signatures, false);
    for (const bad of ['10s', '4000d', 'soon', -1])
      assert.throws(
        () => loadSvmConfig({ env, flags: { ...base, max_signature_age: bad } }),
        (e: unknown) => e instanceof ConfigError && e.issues.some((i) => i.startsWith('max_signature_age')),
        String(bad),
      );
  });

  it('gives one age per engine: builtin by its newest signature file, none for the EICAR set alone', () => {
    const dir = tempDir('la-sigage-');
    const a = path.join(dir, 'a.ndb');
    const b = path.join(dir, 'b.hdb');
    fs.writeFileSync(a, OTHER_NDB);
    fs.writeFileSync(b, '');
    const t = Date.now() - 3 * DAY;
    fs.utimesSync(a, t / 1000, t / 1000);
    fs.utimesSync(b, (t - DAY) / 1000, (t - DAY) / 1000);
    const withFiles = signatureTime(new BuiltinEngine({ signatureFiles: [a, b] }));
    assert.equal(withFiles.source, 'signature-files');
    assert.ok(Math.abs(withFiles.at! - t) < 1000, 'the newest file dates the set');
    assert.deepEqual(signatureTime(new BuiltinEngine()), { at: undefined, source: 'builtin-only' });
  });

  it('/healthz: signatures with age and bound; stale makes it degraded (200), with an event; fresh files make it ok again', async () => {
    const dir = tempDir('la-sigage-');
    const file = path.join(dir, 'local.ndb');
    writeAtomically(file, OTHER_NDB, Date.now() - 10 * DAY);
    const engine = new BuiltinEngine({ signatureFiles: [file] });
    const s = await startTestSvm({ engine, maxSignatureAgeMs: 7 * DAY, signatureCheckMs: 100 });
    const events: SvmEvent[] = [];
    s.core.events.subscribe((e) => events.push(e));
    try {
      let h = await health(s);
      assert.equal(h.status, 200);
      assert.equal(h.body.status, 'degraded');
      assert.equal(h.body.signatures.generation, engine.generation());
      assert.equal(h.body.signatures.stale, true);
      assert.equal(h.body.signatures.maxAgeSeconds, 7 * 86_400);
      assert.ok(Math.abs(h.body.signatures.ageSeconds - 10 * 86_400) < 5, `age ${h.body.signatures.ageSeconds}`);
      assert.equal(h.body.signatures.source, 'signature-files');
      const staleAge = await fetch(`${s.httpUrl}/metrics`).then((r) => r.text());
      assert.match(staleAge, /^lightagent_svm_signature_age_seconds\{engine="builtin"\} 8640\d\d$/m);
      assert.match(staleAge, /^lightagent_svm_signatures_stale 1$/m);
      // New signatures, made now: reload, a new generation, fresh again.
      writeAtomically(file, OTHER_NDB + PROBE_NDB);
      const before = engine.generation();
      const r = await s.reloadSignatures();
      assert.equal(r.previous, before);
      assert.notEqual(r.generation, before);
      h = await health(s);
      assert.equal(h.body.status, 'ok');
      assert.equal(h.body.signatures.stale, false);
      assert.ok(h.body.signatures.ageSeconds < 60);
      const gen = events.find((e) => e.kind === 'signatures');
      assert.ok(gen && gen.kind === 'signatures' && gen.previous === before && gen.generation === r.generation, JSON.stringify(events));
      const fresh = events.find((e) => e.kind === 'signatures-stale');
      assert.ok(fresh && fresh.kind === 'signatures-stale' && fresh.stale === false, JSON.stringify(events));
    } finally {
      await s.close();
    }
  });

  it('publishes signatures-stale when the age crosses the bound while running', async () => {
    const dir = tempDir('la-sigage-');
    const file = path.join(dir, 'local.ndb');
    // 1 minute short of the bound.
    writeAtomically(file, OTHER_NDB, Date.now() - DAY + 1500);
    const s = await startTestSvm({ engine: new BuiltinEngine({ signatureFiles: [file] }), maxSignatureAgeMs: DAY, signatureCheckMs: 100 });
    const events: SvmEvent[] = [];
    s.core.events.subscribe((e) => events.push(e));
    try {
      assert.equal((await health(s)).body.status, 'ok');
      await until(() => events.some((e) => e.kind === 'signatures-stale'), 10_000, 'the signatures-stale event');
      const e = events.find((x) => x.kind === 'signatures-stale')!;
      assert.ok(e.kind === 'signatures-stale' && e.stale === true && e.maxAgeSeconds === 86_400 && e.ageSeconds! > 86_400);
      assert.equal((await health(s)).body.status, 'degraded');
    } finally {
      await s.close();
    }
  });

  it('feature signature-age: signaturesAt only to agents that listed it, in welcome and generation', async () => {
    const dir = tempDir('la-sigage-');
    const file = path.join(dir, 'local.ndb');
    const made = Date.UTC(2026, 0, 2, 3, 4, 5);
    writeAtomically(file, OTHER_NDB, made);
    const s = await startTestSvm({ engine: new BuiltinEngine({ signatureFiles: [file] }), maxSignatureAgeMs: 3 * DAY });
    const modern = await agentWith(s.url, [FEATURES.signatureAge]);
    const old = await agentWith(s.url, []);
    try {
      const w1 = modern.msgs.find((m) => m.t === 'welcome')!;
      assert.ok(w1.t === 'welcome');
      assert.ok(w1.features?.includes('signature-age'));
      assert.equal(w1.signaturesAt, new Date(made).toISOString());
      assert.equal(w1.signaturesMaxAge, 3 * 86_400);
      const w2 = old.msgs.find((m) => m.t === 'welcome')!;
      assert.ok(w2.t === 'welcome' && !('signaturesAt' in w2) && !('signaturesMaxAge' in w2), JSON.stringify(w2));
      const made2 = Date.UTC(2026, 5, 6, 7, 8, 9);
      writeAtomically(file, OTHER_NDB + PROBE_NDB, made2);
      const r = await s.reloadSignatures();
      assert.equal(r.agentsTold, 2);
      const isGen = (m: SvmMessage) => m.t === 'generation' && m.generation === r.generation;
      const g1 = await modern.next(isGen);
      assert.ok(g1.t === 'generation' && g1.signaturesAt === new Date(made2).toISOString() && g1.signaturesMaxAge === 3 * 86_400);
      const g2 = await old.next(isGen);
      assert.deepEqual(g2, { t: 'generation', generation: r.generation });
      // The agent's side: what `lightagent status` shows from it.
      const st = signatureAge({ signaturesAt: g1.signaturesAt, signaturesMaxAge: g1.signaturesMaxAge }, made2 + 5 * DAY);
      assert.deepEqual(st, {
        signaturesAt: g1.signaturesAt,
        signatureAgeSeconds: 5 * 86_400,
        signaturesMaxAge: 3 * 86_400,
        signaturesStale: true,
      });
      const text = formatStatus({ svm: { generation: r.generation, ...st } });
      assert.match(text, new RegExp(`signatures: {2}generation ${r.generation}, 5d old, stale: YES \\(max 3d\\)`));
      assert.deepEqual(signatureAge({}), {}, 'an SVM that does not speak the feature: nothing shown');
      assert.match(formatStatus({ svm: { generation: 'g' } }), /signatures: {2}generation g$/m);
    } finally {
      modern.ws.close();
      old.ws.close();
      await s.close();
    }
  });

  it('builtin: a changed signature file is loaded without SIGHUP, agents are told; a broken update keeps the signatures', async () => {
    const dir = tempDir('la-sigwatch-');
    const file = path.join(dir, 'local.ndb');
    writeAtomically(file, OTHER_NDB);
    const engine = new BuiltinEngine({ signatureFiles: [file] });
    const s = await startTestSvm({ engine, watchSignatures: { pollMs: 200, settleMs: 500 } });
    const a = await agentWith(s.url, [FEATURES.signatureAge]);
    try {
      assert.equal((await upload(a, 1, PROBE)).verdict, 'clean');
      const g0 = engine.generation();
      // Written in two goes, 60 ms apart: the settle wait (500 ms of no change) loads the whole
      // file once, never the half one.
      const whole = OTHER_NDB + PROBE_NDB;
      fs.writeFileSync(file, whole.slice(0, OTHER_NDB.length + 10));
      await new Promise((r) => setTimeout(r, 60));
      fs.writeFileSync(file, whole);
      const told = await a.next((m) => m.t === 'generation', 10_000);
      assert.ok(told.t === 'generation' && told.generation !== g0 && told.signaturesAt);
      assert.equal(engine.generation(), told.generation);
      assert.equal((await upload(a, 2, PROBE)).verdict, 'infected');
      assert.equal(s.core.signatureReloads.ok, 1, 'one reload for the two writes');
      // Broken: the file is gone. The signatures in force stay, the failure is counted.
      fs.rmSync(file);
      await until(() => s.core.signatureReloads.failed === 1, 10_000, 'a failed reload');
      assert.equal(engine.generation(), told.generation);
      assert.equal((await upload(a, 3, PROBE)).verdict, 'infected');
      const text = await fetch(`${s.httpUrl}/metrics`).then((r) => r.text());
      assert.match(text, /^lightagent_svm_signature_reloads_total\{result="failed"\} 1$/m);
      assert.match(text, /^lightagent_svm_signature_reloads_total\{result="ok"\} 1$/m);
      // Back: loaded again.
      writeAtomically(file, OTHER_NDB);
      await until(() => s.core.signatureReloads.ok === 2, 10_000, 'the reload after the fix');
      assert.equal(engine.generation(), g0);
    } finally {
      a.ws.close();
      await s.close();
    }
  });

  it('yara: a changed rule directory is loaded without SIGHUP; a rule error keeps the rules in force', { skip: yaraMissing }, async () => {
    const dir = tempDir('la-yarawatch-');
    const rule = (name: string, text: string) => `rule ${name} { strings: $a = "${text}" condition: $a }\n`;
    fs.writeFileSync(path.join(dir, 'a.yar'), rule('other', 'some other pattern'));
    const engine = await YaraEngine.create({ rules: dir });
    const s = await startTestSvm({ engine, watchSignatures: { pollMs: 200, settleMs: 150 } });
    const a = await agentWith(s.url, [FEATURES.signatureAge]);
    try {
      assert.equal((await upload(a, 1, PROBE)).verdict, 'clean');
      writeAtomically(path.join(dir, 'b.yar'), rule('probe', 'freshness probe: flag me'));
      const told = await a.next((m) => m.t === 'generation', 10_000);
      assert.ok(told.t === 'generation' && told.signaturesAt);
      const v = await upload(a, 2, PROBE);
      assert.equal(v.verdict, 'infected');
      assert.equal(v.threat, 'YARA.b.probe');
      const good = engine.generation();
      writeAtomically(path.join(dir, 'c.yar'), 'rule broken { condition: nonsense_identifier }\n');
      await until(() => s.core.signatureReloads.failed === 1, 10_000, 'a failed reload');
      assert.equal(engine.generation(), good);
      assert.equal((await upload(a, 3, PROBE)).verdict, 'infected');
    } finally {
      a.ws.close();
      await s.close();
    }
  });
});
