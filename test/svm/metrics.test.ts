/**
 * GET /metrics through prom-client: the families the SVM always served (names, types, help,
 * label names, buckets, from metric-families.txt), the process's metrics, one registry per SVM,
 * verdict timings, LA_ERR_BUSY refusals, signature age, and `promtool check metrics` on a scrape.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { register } from 'prom-client';
import { encodeChunk, encodeMessage } from '../../src/protocol/index.js';
import { BuiltinEngine } from '../../src/svm/engines/builtin.js';
import { ClamavEngine } from '../../src/svm/engines/clamav.js';
import { loadYaraModule, YaraEngine } from '../../src/svm/engines/yara.js';
import { MemoryVerdictCache } from '../../src/svm/memory-verdict-cache.js';
import type { SvmServer } from '../../src/svm/server.js';
import { clamdDatabaseTime } from '../../src/svm/signature-age.js';
import { findBinary, inCi, needPackage, tempDir } from '../helpers/procs.js';
import { EICAR_BYTES as EICAR } from '../helpers/fixtures.js';
import { rawAgent, startTestSvm as startSvm, upload } from './helpers.js';

const FAMILIES = new URL('../../../test/svm/metric-families.txt', import.meta.url).pathname;

/** Every SVM a test starts is closed at the end, also when its test failed half-way (else the file never exits). */
const started: Array<{ close(): Promise<void> }> = [];
after(async () => {
  for (const s of started) await s.close().catch(() => undefined);
});
const startTestSvm: typeof startSvm = async (...args) => {
  const s = await startSvm(...args);
  started.push(s);
  return s;
};
const promtool = findBinary('promtool', ['/usr/bin/promtool']);

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}
interface Scrape {
  text: string;
  types: Map<string, string>;
  samples: Sample[];
}

async function scrape(s: SvmServer): Promise<Scrape> {
  const res = await fetch(`${s.httpUrl}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4; charset=utf-8$/);
  const text = await res.text();
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) types.set(t[1]!, t[2]!);
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return { text, types, samples };
}

function value(sc: Scrape, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels);
  return sc.samples.find(
    (x) => x.name === name && Object.keys(x.labels).length === want.length && want.every(([k, v]) => x.labels[k] === v),
  )?.value;
}

async function until(fn: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function promtoolCheck(text: string): { status: number | null; out: string } {
  const r = spawnSync(promtool!, ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const yaraMissing = await loadYaraModule().then(
  () => undefined,
  (e: Error) => {
    if (inCi) throw new Error(`CI=true: the yara signature age test may not skip: ${e.message}`);
    return `needs @litko/yara-x: ${e.message}`;
  },
);

describe('SVM /metrics (prom-client)', () => {
  it('serves every family it served before: same names, types, help, label names and buckets', async () => {
    const s = await startTestSvm();
    const a = await rawAgent(s.url);
    await upload(a, 1, EICAR);
    const sc = await scrape(s);
    const lines = new Set(sc.text.split('\n'));
    const fixture = fs.readFileSync(FAMILIES, 'utf8').trim().split('\n');
    assert.ok(fixture.length >= 80, 'the fixture lists the families');
    for (const f of fixture) {
      if (f.startsWith('#')) {
        assert.ok(lines.has(f), `line served as before: ${f}`);
        continue;
      }
      const m = /^(\w+)\{(.*)\}$/.exec(f)!;
      const keys = m[2] ? m[2].split(',').sort().join(',') : '';
      assert.ok(
        sc.samples.some((x) => x.name === m[1] && Object.keys(x.labels).sort().join(',') === keys),
        `a sample ${m[1]} with labels {${keys}}`,
      );
    }
    const le = sc.samples
      .filter((x) => x.name === 'lightagent_svm_engine_scan_seconds_bucket' && x.labels.engine === 'builtin')
      .map((x) => x.labels.le);
    assert.deepEqual(le, ['0.0005', '0.001', '0.005', '0.01', '0.05', '0.1', '0.5', '1', '5', '+Inf']);
    assert.equal(value(sc, 'lightagent_svm_engine_scan_seconds_count', { engine: 'builtin' }), 1);
    assert.equal(value(sc, 'lightagent_svm_detections_total'), 1);
    assert.equal(value(sc, 'lightagent_svm_agents_by_tenant', { tenant: 'a' }), 1);
    // The process's own metrics, from prom-client.
    assert.equal(sc.types.get('process_cpu_user_seconds_total'), 'counter');
    assert.equal(sc.types.get('nodejs_eventloop_lag_seconds'), 'gauge');
    assert.equal(sc.types.get('nodejs_gc_duration_seconds'), 'histogram');
    assert.ok(value(sc, 'process_resident_memory_bytes')! > 10e6, 'RSS measured');
    assert.ok(value(sc, 'nodejs_heap_size_used_bytes')! > 1e6, 'heap measured');
    assert.ok(value(sc, 'process_start_time_seconds')! > Date.now() / 1000 - 3600);
    // The builtin engine with its EICAR set alone has no age: a family, no series.
    assert.equal(sc.types.get('lightagent_svm_signature_age_seconds'), 'gauge');
    assert.ok(!sc.samples.some((x) => x.name === 'lightagent_svm_signature_age_seconds'));
    await s.close();
  });

  it('has one registry per SVM: two in one process count apart, and prom-client’s global registry stays empty', async () => {
    const a = await startTestSvm();
    const b = await startTestSvm();
    const agent = await rawAgent(a.url);
    await upload(agent, 1, Buffer.from('only on A'));
    const [sa, sb] = [await scrape(a), await scrape(b)];
    assert.equal(value(sa, 'lightagent_svm_scans_total'), 1);
    assert.equal(value(sb, 'lightagent_svm_scans_total'), 0);
    assert.equal(value(sa, 'lightagent_svm_agents_connected'), 1);
    assert.equal(value(sb, 'lightagent_svm_agents_connected'), 0);
    assert.ok(value(sb, 'process_resident_memory_bytes')! > 0, 'B serves the process metrics too');
    assert.equal(sa.samples.filter((x) => x.name === 'process_cpu_user_seconds_total').length, 1, 'once per scrape');
    assert.equal(register.getMetricsAsArray().length, 0, 'nothing in the global default registry');
    await a.close();
    const again = await scrape(b);
    assert.equal(value(again, 'lightagent_svm_scans_total'), 0, 'B unaffected by A closing');
    await b.close();
  });

  it('times verdicts by kind (lookup, scan) and counts uploads refused with LA_ERR_BUSY', async () => {
    const s = await startTestSvm({ uploadMemory: 10_000, maxFileSize: 10_000 });
    const a = await rawAgent(s.url);
    const b = await rawAgent(s.url);
    await a.next((m) => m.t === 'welcome');
    await b.next((m) => m.t === 'welcome');
    a.ws.send(encodeMessage({ t: 'lookup', id: 7, sha256: 'b'.repeat(64), size: 1 }));
    assert.equal((await a.verdict(7)).verdict, 'unknown');
    // Upload memory follows bytes received: a holds 8,000 of the 10,000 bytes.
    a.ws.send(encodeMessage({ t: 'scan', id: 1, size: 9000 }));
    a.ws.send(encodeChunk(1, 0, false, Buffer.alloc(8000)));
    await new Promise((r) => setTimeout(r, 50));
    b.ws.send(encodeMessage({ t: 'scan', id: 1, size: 8000 }));
    b.ws.send(encodeChunk(1, 0, true, Buffer.alloc(8000)));
    assert.equal((await b.verdict(1)).code, 'LA_ERR_BUSY');
    a.ws.send(encodeChunk(1, 1, true, Buffer.alloc(1000)));
    assert.equal((await a.verdict(1)).verdict, 'clean');
    const sc = await scrape(s);
    assert.equal(value(sc, 'lightagent_svm_uploads_busy_total'), 1);
    assert.equal(sc.types.get('lightagent_svm_verdict_seconds'), 'histogram');
    assert.equal(value(sc, 'lightagent_svm_verdict_seconds_count', { kind: 'lookup' }), 1);
    assert.equal(value(sc, 'lightagent_svm_verdict_seconds_count', { kind: 'scan' }), 1, 'the refused upload got no engine verdict');
    assert.ok(value(sc, 'lightagent_svm_verdict_seconds_sum', { kind: 'scan' })! > 0);
    assert.equal(value(sc, 'lightagent_svm_verdict_seconds_bucket', { kind: 'lookup', le: '+Inf' }), 1);
    const snap = s.metrics;
    assert.equal(snap.lightagent_svm_uploads_busy_total, 1, 'the snapshot agrees');
    assert.equal(snap['lightagent_svm_verdict_seconds_count{kind="lookup"}'], 1);
    await s.close();
  });

  it('keeps answering when a figure cannot be read: that metric keeps its last value', async () => {
    let broken = false;
    const cache = new MemoryVerdictCache(1000);
    const stats = cache.stats.bind(cache);
    cache.stats = () => {
      if (broken) throw new Error('stats unavailable');
      return stats();
    };
    const s = await startTestSvm({ cache });
    const a = await rawAgent(s.url);
    await upload(a, 1, Buffer.from('one entry'));
    assert.equal(value(await scrape(s), 'lightagent_svm_cache_entries'), 1);
    broken = true;
    const sc = await scrape(s);
    assert.equal(value(sc, 'lightagent_svm_cache_entries'), 1, 'last value kept');
    assert.equal(value(sc, 'lightagent_svm_cache_evictions_total'), 0, 'a counter does not drop');
    assert.equal(value(sc, 'lightagent_svm_scans_total'), 1, 'the rest is served');
    broken = false;
    await s.close();
  });

  it(
    'passes promtool check metrics (the lightagent families without a single lint remark)',
    { skip: needPackage(promtool, 'prometheus', 'promtool check metrics') },
    async () => {
      const s = await startTestSvm({
        tokens: [
          { tenant: 'a', token: 'tenant-a-token' },
          { tenant: 'b', token: 'tenant-b-token' },
        ],
      });
      const a = await rawAgent(s.url);
      const b = await rawAgent(s.url, 'tenant-b-token');
      await upload(a, 1, EICAR);
      await upload(b, 1, EICAR);
      b.ws.send(encodeMessage({ t: 'lookup', id: 2, sha256: 'c'.repeat(64), size: 1 }));
      await b.verdict(2);
      const sc = await scrape(s);
      const all = promtoolCheck(sc.text);
      // 3: lint remarks only (prom-client names three gauges *_total); 1 would be a parse error.
      assert.ok(all.status === 0 || all.status === 3, `promtool: ${all.status} ${all.out}`);
      assert.doesNotMatch(all.out, /lightagent_/);
      const ours = sc.text
        .split('\n')
        .filter((l) => /^(# (HELP|TYPE) )?lightagent_/.test(l))
        .join('\n');
      const strict = promtoolCheck(`${ours}\n`);
      assert.equal(strict.status, 0, strict.out);
      assert.equal(strict.out.trim(), '');
      // promtool would notice a broken exposition: this check can fail.
      assert.equal(promtoolCheck('# TYPE x counter\nx{a="1" 1\n').status, 1);
      await s.close();
    },
  );
});

describe('SVM signature age', () => {
  it('reads the database date of a clamd VERSION reply', () => {
    assert.equal(clamdDatabaseTime('ClamAV 1.4.6/27461/Mon Nov 25 08:24:02 2024'), Date.UTC(2024, 10, 25, 8, 24, 2));
    assert.equal(clamdDatabaseTime('ClamAV 1.0.7/27500/Tue Jan  7 09:30:00 2025\n'), Date.UTC(2025, 0, 7, 9, 30, 0));
    assert.equal(clamdDatabaseTime('ClamAV 1.4.6'), undefined, 'custom databases only: no date');
    assert.equal(clamdDatabaseTime('ClamAV 1.4.6/27461/not a date'), undefined);
    assert.equal(clamdDatabaseTime('nonsense'), undefined);
  });

  it('reports clamd’s database age, and the new age after clamd loads newer signatures', async () => {
    const day = 86_400_000;
    const fmt = (t: number) => {
      const d = new Date(t);
      const wd = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'][d.getUTCDay()];
      const mo = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'][d.getUTCMonth()];
      const hms = d.toISOString().slice(11, 19);
      return `${wd} ${mo} ${String(d.getUTCDate()).padStart(2, ' ')} ${hms} ${d.getUTCFullYear()}`;
    };
    let version = `ClamAV 1.4.6/27461/${fmt(Date.now() - 5 * day)}`;
    // A clamd that answers VERSION and nothing else: enough for the engine's generation and health.
    const fake = net.createServer((c) => {
      c.on('data', (d) => {
        if (d.includes('VERSION')) c.end(`${version}\0`);
      });
      c.on('error', () => {});
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const port = (fake.address() as net.AddressInfo).port;
    const engine = await ClamavEngine.create({ address: `tcp://127.0.0.1:${port}`, versionIntervalMs: 200 });
    const s = await startTestSvm({ engine });
    try {
      const age = async () => value(await scrape(s), 'lightagent_svm_signature_age_seconds', { engine: 'clamav' });
      const first = await age();
      assert.ok(first !== undefined && Math.abs(first - 5 * 86_400) < 60, `about 5 days: ${first}`);
      version = `ClamAV 1.4.6/27462/${fmt(Date.now() - 3_600_000)}`;
      // The age ticks with the clock: wait for the new database's age, not for any change of it.
      const anHour = (a: number | undefined) => a !== undefined && Math.abs(a - 3600) < 60;
      let second: number | undefined;
      await until(async () => anHour((second = await age())), 5000, 'the new database age');
      assert.ok(anHour(second), `about an hour: ${second}`);
      version = 'ClamAV 1.4.6';
      await until(async () => (await age()) === undefined, 5000, 'no date, no series');
    } finally {
      await s.close();
      await new Promise<void>((r) => fake.close(() => r()));
    }
  });

  it('reports the age of the newest YARA rule file, anew after a reload', { skip: yaraMissing }, async () => {
    const dir = tempDir('la-yara-age-');
    after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const now = Date.now() / 1000;
    const write = (name: string, rule: string, mtime: number) => {
      fs.writeFileSync(path.join(dir, name), `rule ${rule} { strings: $a = "${rule}" condition: $a }\n`);
      fs.utimesSync(path.join(dir, name), mtime, mtime);
    };
    write('old.yar', 'Old', now - 10 * 86_400);
    write('newer.yara', 'Newer', now - 4 * 86_400);
    write('.hidden.yar', 'Hidden', now); // not loaded by the engine, so it dates nothing
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'not a rule');
    const engine = await YaraEngine.create({ rules: dir });
    const s = await startTestSvm({ engine });
    try {
      const age = async () => value(await scrape(s), 'lightagent_svm_signature_age_seconds', { engine: 'yara' });
      const first = await age();
      assert.ok(first !== undefined && Math.abs(first - 4 * 86_400) < 60, `about 4 days: ${first}`);
      write('fresh.yar', 'Fresh', now - 60);
      assert.ok(engine.reload().generation !== undefined);
      const second = await age();
      assert.ok(second !== undefined && second < 200, `fresh: ${second}`);
    } finally {
      await s.close();
    }
  });

  it('reports no age for the builtin engine with no signature files (the EICAR set alone)', async () => {
    const s = await startTestSvm({ engine: new BuiltinEngine() });
    assert.equal(Object.keys(s.metrics).filter((k) => k.startsWith('lightagent_svm_signature_age_seconds')).length, 0);
    await s.close();
  });
});
