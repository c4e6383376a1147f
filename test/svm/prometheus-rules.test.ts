/**
 * installers/prometheus: the alert rules pass `promtool check rules` and their unit tests
 * (`promtool test rules`, each alert fired and not fired), the example configuration passes
 * `promtool check config`, the Grafana dashboard's queries parse, and every metric the rules and
 * the dashboard name is one a real SVM serves.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { findBinary, needPackage, tempDir } from '../helpers/procs.js';
import { startTestSvm } from './helpers.js';

const DIR = new URL('../../../installers/prometheus/', import.meta.url).pathname;
const RULES = path.join(DIR, 'lightagent-rules.yml');
const RULE_TESTS = path.join(DIR, 'lightagent-rules.test.yml');
const DASHBOARD = path.join(DIR, 'lightagent-svm-dashboard.json');
const promtool = findBinary('promtool', ['/usr/bin/promtool']);
const skip = needPackage(promtool, 'prometheus', 'the Prometheus alert rule checks');

function run(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(promtool!, args, { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Panel {
  title: string;
  targets: Array<{ expr: string }>;
}
const dashboardExprs = (JSON.parse(fs.readFileSync(DASHBOARD, 'utf8')) as { panels: Panel[] }).panels.flatMap((p) =>
  p.targets.map((t) => ({ title: p.title, expr: t.expr })),
);

/** Served family names (`name type`) of a fresh test SVM. */
async function servedFamilies(): Promise<Set<string>> {
  const s = await startTestSvm();
  const text = await (await fetch(`${s.httpUrl}/metrics`)).text();
  await s.close();
  return new Set([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => `${m[1]} ${m[2]}`));
}

function assertServed(families: Set<string>, exprs: readonly string[], pattern: RegExp): number {
  const named = new Set(exprs.flatMap((e) => [...e.matchAll(pattern)].map((m) => m[0])));
  for (const n of named) {
    const base = n.replace(/_(bucket|count|sum)$/, '');
    const ok = base === n ? [...families].some((f) => f.startsWith(`${n} `)) : families.has(`${base} histogram`);
    assert.ok(ok, `${n} is served`);
  }
  return named.size;
}

const rules = (YAML.parse(fs.readFileSync(RULES, 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((g) => g.rules);

describe('Prometheus alert rules', () => {
  it('name a duration, a severity, a summary and a description for every alert', () => {
    assert.deepEqual(rules.map((r) => r.alert).sort(), [
      'LightagentAgentsDegraded',
      'LightagentAgentsSilent',
      'LightagentSvmDown',
      'LightagentSvmEngineUnhealthy',
      'LightagentSvmSignaturesStale',
      'LightagentSvmUploadsRefusedBusy',
      'LightagentSvmVerdictLatencyHigh',
      'LightagentSvmYaraRulesOld',
    ]);
    for (const r of rules) {
      assert.match(r.for ?? '', /^\d+[smh]$/, `${r.alert}: for`);
      assert.ok(['critical', 'warning', 'info'].includes(r.labels?.severity ?? ''), `${r.alert}: severity`);
      assert.ok((r.annotations?.summary ?? '').length > 10, `${r.alert}: summary`);
      assert.ok((r.annotations?.description ?? '').length > 40, `${r.alert}: description`);
    }
  });

  it('pass promtool check rules, and the example configuration promtool check config', { skip }, () => {
    const r = run(['check', 'rules', RULES]);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /SUCCESS: 8 rules found/);
    const c = run(['check', 'config', path.join(DIR, 'prometheus.example.yml')]);
    assert.equal(c.status, 0, c.out);
  });

  it('fire and stay quiet as their unit tests say (promtool test rules)', { skip }, () => {
    const r = run(['test', 'rules', RULE_TESTS]);
    assert.equal(r.status, 0, r.out);
    assert.match(r.out, /SUCCESS/);
  });

  it('unit tests that notice a rule firing too early or too easily', { skip }, () => {
    // The same tests against broken copies of the rules must fail: the "not yet" and "not this
    // one" cases are real checks.
    const dir = tempDir('la-prom-rules-');
    const original = fs.readFileSync(RULES, 'utf8');
    fs.copyFileSync(RULE_TESTS, path.join(dir, 'lightagent-rules.test.yml'));
    const broken = [
      original.replace(/for: \d+[smh]/g, 'for: 0m'),
      original.replace('[5m]) > 0.1', '[5m]) > 0.01'),
      original.replace('> 3 * 86400', '> 86400'),
      original.replace(
        '(lightagent_svm_inventory_agents) > 0.1\n        for: 15m',
        '(lightagent_svm_inventory_agents) > 0.01\n        for: 15m',
      ),
      original.replace(
        '(lightagent_svm_inventory_agents) > 0.1\n        for: 30m',
        '(lightagent_svm_inventory_agents) > 0.01\n        for: 30m',
      ),
    ];
    for (const text of broken) {
      assert.notEqual(text, original);
      fs.writeFileSync(path.join(dir, 'lightagent-rules.yml'), text);
      const r = run(['test', 'rules', path.join(dir, 'lightagent-rules.test.yml')]);
      assert.notEqual(r.status, 0, `a broken rule set passed (mutation ${broken.indexOf(text)}):\n${r.out}`);
      assert.match(r.out, /FAILED/);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('use only metrics a real SVM serves', async () => {
    assert.ok(
      assertServed(
        await servedFamilies(),
        rules.map((r) => r.expr),
        /\blightagent_svm_[a-z0-9_]+/g,
      ) >= 4,
    );
  });
});

describe('Grafana dashboard', () => {
  it('has queries that parse as PromQL (checked as recording rules by promtool)', { skip }, () => {
    assert.ok(dashboardExprs.length >= 10);
    const dir = tempDir('la-prom-dash-');
    // Grafana replaces $instance before the query runs; a regex that matches all stands in for it.
    const group = {
      groups: [
        {
          name: 'dashboard',
          rules: dashboardExprs.map((e, i) => ({ record: `dashboard:query_${i}`, expr: e.expr.replaceAll('$instance', '.*') })),
        },
      ],
    };
    fs.writeFileSync(path.join(dir, 'dashboard-rules.yml'), YAML.stringify(group));
    const r = run(['check', 'rules', path.join(dir, 'dashboard-rules.yml')]);
    assert.equal(r.status, 0, r.out);
    fs.writeFileSync(
      path.join(dir, 'broken.yml'),
      YAML.stringify({ groups: [{ name: 'x', rules: [{ record: 'x:y', expr: 'rate(lightagent_svm_scans_total[5m]' }] }] }),
    );
    assert.notEqual(run(['check', 'rules', path.join(dir, 'broken.yml')]).status, 0, 'promtool notices a broken query');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('uses only metrics a real SVM serves', async () => {
    const n = assertServed(
      await servedFamilies(),
      dashboardExprs.map((e) => e.expr),
      /\b(lightagent_svm|process|nodejs)_[a-z0-9_]+/g,
    );
    assert.ok(n >= 15, `${n} metrics`);
  });
});
