/**
 * The web console in a real browser: Debian's chromium driven by playwright-core, the pages
 * loaded from a real SVM with agents connected (test/console/fleet.ts), assertions on what is
 * shown. With LIGHTAGENT_CONSOLE_SCREENSHOTS=docs/console the 1280x800 screenshots of
 * docs/console.md are written there (else to a temp dir).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { CONSOLE_CSP } from '../../src/svm/console/console-route.js';
import { findBinary, needPackage, tempDir } from '../helpers/procs.js';
import { startAgent } from '../helpers/agent.js';
import { EICAR } from '../helpers/fixtures.js';
import { eventuallyAsync } from '../svm/inventory-helpers.js';
import { ADMIN_TOKEN, AGENT_TOKENS, FLEET, startConsoleFleet, VIEWER_B_TOKEN, XSS_HOST, type ConsoleFleet } from './fleet.js';

const chromiumPath = findBinary('chromium', ['/usr/bin/chromium', '/usr/bin/chromium-browser']);
const skip = needPackage(chromiumPath, 'chromium', 'the web console browser test');
const shots = path.resolve(process.env.LIGHTAGENT_CONSOLE_SCREENSHOTS ?? fs.mkdtempSync(path.join(os.tmpdir(), 'la-console-')));
const WAIT = 10_000;
// Functions passed to waitForFunction run in the page (tsc here has no DOM lib). Strings would be
// eval'd there, which the console's CSP refuses.
declare const document: {
  querySelectorAll(s: string): { length: number };
  querySelector(s: string): { getAttribute(n: string): string | null } | null;
};

describe('web console in chromium', { skip, timeout: 180_000 }, () => {
  let fleet: ConsoleFleet;
  let browser: Browser;
  let ctx: BrowserContext;
  let page: Page;
  const requests: string[] = [];
  const dialogs: string[] = [];
  const problems: string[] = [];

  before(async () => {
    fleet = await startConsoleFleet();
    browser = await chromium.launch({
      executablePath: chromiumPath!,
      headless: true,
      timeout: 30_000,
      // Root in CI and containers: chromium refuses its sandbox there.
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
    });
    ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, timezoneId: 'UTC', locale: 'en-GB' });
    ctx.setDefaultTimeout(WAIT);
    ctx.on('request', (r) => requests.push(r.url()));
    page = await ctx.newPage();
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error' && !/401|403|Failed to load resource|ERR_INTERNET_DISCONNECTED/.test(m.text())) problems.push(m.text());
    });
    fs.mkdirSync(shots, { recursive: true });
  });
  after(async () => {
    await browser?.close();
    await fleet?.close();
  });

  const shot = (name: string) => page.screenshot({ path: path.join(shots, `${name}.png`) });
  const texts = async (sel: string) => (await page.locator(sel).allInnerTexts()).map((t) => t.replace(/\s+/g, ' ').trim());
  const signIn = async (token: string) => {
    await page.goto(`${fleet.base}/console/#/signin`);
    await page.fill('#token', token);
    await page.click('button[type=submit]');
  };

  it('serves the page under its CSP and asks for a token first', async () => {
    const res = await page.goto(`${fleet.base}/console/`);
    assert.equal(res?.headers()['content-security-policy'], CONSOLE_CSP);
    assert.equal(res?.headers()['x-content-type-options'], 'nosniff');
    await page.waitForSelector('#token');
    await shot('signin');
    await signIn('not-a-token');
    assert.match(await page.locator('[data-test=signin-error]').innerText(), /not accepted/);
    await signIn(AGENT_TOKENS.a);
    assert.match(await page.locator('[data-test=signin-error]').innerText(), /agent tokens cannot open the console/);
  });

  it('fleet: totals and per tenant, in colour and text', async () => {
    await signIn(ADMIN_TOKEN);
    await page.waitForSelector('[data-test=totals]');
    const n = async (s: string) => page.locator(`[data-test=totals] [data-state=${s}] .n`).innerText();
    assert.deepEqual(
      [await n('agents'), await n('protected'), await n('degraded'), await n('off'), await n('silent')],
      ['9', '4', '2', '1', '1'],
    );
    assert.deepEqual(await texts('[data-test=totals] .badge'), ['✓ protected', '! degraded', '✕ off', '? silent']);
    const row = async (t: string) =>
      (await page.locator(`[data-test=tenants] tr[data-tenant=${t}] td`).allInnerTexts()).slice(0, 6).map((s) => s.trim());
    assert.deepEqual(await row('a'), ['a', '6', '3', '1', '1', '0']);
    assert.match(await page.locator('[data-test=fleet-note]').innerText(), /1 agent does not report a state/);
    assert.deepEqual(await row('b'), ['b', '3', '1', '1', '0', '1']);
    assert.equal(await page.locator('[data-test=whoami]').innerText(), 'admin, all tenants');
    await shot('fleet');
  });

  it('agents: filter, search, sort, silent rows stand out, hostile host names stay text', async () => {
    await page.click('a[href="#/agents"] >> nth=0');
    await page.waitForSelector('table[data-test=agents] tbody tr[data-agent]');
    assert.equal(await page.locator('tbody tr[data-agent]').count(), 9);
    assert.match(await page.locator('tr[data-agent=a-legacy-01]').innerText(), /\?\s+unknown/);
    // The XSS host name is shown literally and no element or dialog came of it.
    assert.equal(await page.locator('tr[data-agent=a-xss] a.host').innerText(), XSS_HOST);
    assert.equal(await page.locator('img[src=x]').count(), 0);
    assert.ok(await page.locator('tr[data-agent=b-desk-02]').evaluate((e) => e.classList.contains('silent')));
    assert.match(await page.locator('tr[data-agent=b-desk-02]').innerText(), /silent/);
    // The policy each agent runs, and whether it is the one the SVM has for it now.
    const cur = (id: string) => fleet.svm.core.policies.resolve(id[0]!, id, FLEET.find((f) => f.agentId === id)!.host)!;
    assert.equal(
      await texts('tr[data-agent=a-web-01] [data-test=policy]').then((t) => t[0]),
      `servers v${cur('a-web-01').version.slice(0, 8)} current`,
    );
    assert.equal(await texts('tr[data-agent=a-db-01] [data-test=policy]').then((t) => t[0]), 'servers v0badc0de not the current one');
    assert.equal(await texts('tr[data-agent=a-build-07] [data-test=policy]').then((t) => t[0]), 'local not applied');
    assert.equal(
      await texts('tr[data-agent=b-desk-01] [data-test=policy]').then((t) => t[0]),
      `desktops v${cur('b-desk-01').version.slice(0, 8)} current`,
    );
    await shot('agents');

    await page.selectOption('select[name=state]', 'degraded');
    await page.waitForFunction((n) => document.querySelectorAll('tbody tr[data-agent]').length === n, 2);
    assert.deepEqual(await page.locator('tbody tr[data-agent]').evaluateAll((rs) => rs.map((r) => r.getAttribute('data-agent'))), [
      'a-db-01',
      'b-desk-03',
    ]);
    // Auto-refresh (1 s in this tab) keeps the filter: the next load asks for the same state.
    await page.evaluate("sessionStorage.setItem('lightagent.console.refreshMs', '1000')");
    await page.reload();
    const before = requests.length;
    await page.waitForFunction((n) => document.querySelectorAll('tbody tr[data-agent]').length === n, 2);
    const agentCalls = () => requests.slice(before).filter((u) => u.includes('/api/agents?'));
    // The first load and two refreshes, bounded (a loaded CI machine may be slow).
    for (const end = Date.now() + 8000; agentCalls().length < 3 && Date.now() < end;) await page.waitForTimeout(250);
    const later = agentCalls();
    assert.ok(later.length >= 3, `loaded ${later.length} times`);
    assert.ok(
      later.every((u) => u.includes('state=degraded')),
      later.join('\n'),
    );
    assert.equal(await page.locator('select[name=state]').inputValue(), 'degraded');

    await page.selectOption('select[name=state]', '');
    await page.fill('input[name=q]', 'desk');
    await page.waitForFunction((n) => document.querySelectorAll('tbody tr[data-agent]').length === n, 3);
    await page.click('button[data-sort=host]');
    await page.waitForFunction(() => document.querySelector('tbody tr[data-agent]')?.getAttribute('data-agent') === 'b-desk-03');
    assert.equal(await page.locator('th[aria-sort=descending]').innerText(), 'Host ▼');
    // Paging (50 a page): an offset in the hash, then back with Previous.
    await page.goto(`${fleet.base}/console/#/agents?sort=host&offset=6`);
    await page.waitForSelector('[data-test=count]:text("7–9 of 9 agents")');
    assert.equal(await page.locator('tbody tr[data-agent]').count(), 3);
    assert.ok(await page.locator('button:text("Next")').isDisabled());
    await page.click('button:text("Previous")');
    await page.waitForSelector('[data-test=count]:text("1–9 of 9 agents")');
    await page.fill('input[name=q]', 'no-such-host');
    await page.waitForSelector('td.empty');
    assert.equal(await page.locator('td.empty').innerText(), 'No agent matches these filters.');
    await page.evaluate("sessionStorage.removeItem('lightagent.console.refreshMs')");
  });

  it('agent page: state, reasons, history and detections', async () => {
    await page.goto(`${fleet.base}/console/#/agents?q=build`);
    await page.click('tr[data-agent=a-build-07] a.host');
    await page.waitForSelector('[data-test=history]');
    assert.equal(await page.locator('[data-test=agent-host]').innerText(), 'build-07.ci.example');
    assert.deepEqual(await texts('[data-test=reasons] li'), ['fanotify-unavailable', 'watcher-stopped']);
    assert.deepEqual(await texts('[data-test=history] tbody td:nth-child(2)'), ['✕ off', '! degraded', '✓ protected']);
    assert.deepEqual(await texts('[data-test=detections] tbody td.path'), ['/home/ci/eicar.txt']);
    assert.match(await page.locator('[data-test=policy-expected]').innerText(), /the current one is servers\/ci v[0-9a-f]{16}/);
    await shot('agent');
    // Another agent's page (usePoll never shows the previous agent's facts while it loads).
    await page.goto(`${fleet.base}/console/#/agent/a/a-db-01`);
    await page.waitForSelector('[data-test=agent-host]:text("db-01.prod.example")');
    assert.match(await page.locator('[data-test=generation]').innerText(), /behind the SVM/);
    assert.equal(await page.locator('[data-test=deferred]').innerText(), '37 waiting for an SVM');
    assert.equal(await page.locator('[data-test=cache]').innerText(), '9120 entries, hit rate 71 %');
    const servers = fleet.svm.core.policies.resolve('a', 'a-db-01', 'db-01.prod.example')!;
    assert.equal(
      (await page.locator('[data-test=policy]').innerText()).replace(/\s+/g, ' ').trim(),
      `servers v0badc0de0badc0de (the current one is servers v${servers.version})`,
    );
  });

  it('detections: timeline bars and the list, hostile strings as text', async () => {
    await page.click('a[href="#/detections"]');
    await page.waitForSelector('[data-test=timeline] rect.bar');
    const counts = await page.locator('[data-test=timeline] rect').evaluateAll((rs) => rs.map((r) => Number(r.getAttribute('data-count'))));
    assert.equal(counts.length, 24);
    assert.equal(
      counts.reduce((a, b) => a + b, 0),
      5,
    );
    assert.ok(counts.filter((c) => c > 0).length >= 3);
    assert.equal(await page.locator('[data-test=detections] tbody tr').count(), 5);
    assert.ok((await texts('[data-test=detections] td.threat')).includes('<script>alert(2)</script>'));
    assert.ok((await texts('[data-test=detections] td.path')).includes('/tmp/<b>bold</b>.bin'));
    assert.equal(await page.locator('[data-test=detections] b').count(), 0);
    await shot('detections');
  });

  it('SVM health: engine, signatures and their age, cache, load, agents', async () => {
    await page.click('a[href="#/svm"]');
    await page.waitForSelector('[data-test=svm]');
    const info = (await (await fetch(`${fleet.base}/api/svm`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json()) as {
      signatureAgeSeconds: number | null;
      signaturesStale: boolean;
    };
    assert.match(await page.locator('[data-test=engine]').innerText(), /^builtin \(healthy\)$/);
    const age = await page.locator('[data-test=age]').innerText();
    if (info.signatureAgeSeconds === null) assert.match(age, /^unknown/);
    else assert.match(age, /^\d+ (s|min|h|d)/);
    assert.equal(/stale/.test(age), info.signaturesStale, `${age} vs signaturesStale ${info.signaturesStale}`);
    assert.match(await page.locator('[data-test=cache]').innerText(), /^memory, \d+ entries \(healthy\)$/);
    assert.equal(await page.locator('[data-test=agents-connected]').innerText(), '8');
    assert.match(await page.locator('[data-test=load]').innerText(), /^\d+ %$/);
    await shot('svm');
  });

  it('network down: a banner, then back', async () => {
    await page.evaluate("sessionStorage.setItem('lightagent.console.refreshMs', '1000')");
    await page.reload();
    await page.waitForSelector('[data-test=svm]');
    await ctx.setOffline(true);
    await page.waitForSelector('[data-test=offline]');
    assert.equal(await page.locator('[data-test=svm]').count(), 1, 'the last data stays on the page');
    await shot('offline');
    await ctx.setOffline(false);
    await page.waitForSelector('[data-test=offline]', { state: 'detached' });
    await page.evaluate("sessionStorage.removeItem('lightagent.console.refreshMs')");
  });

  it('a viewer sees its tenant only; a refused token goes back to sign-in', async () => {
    await page.click('text=Sign out');
    await page.waitForSelector('#token');
    assert.equal(await page.evaluate('sessionStorage.length'), 0);
    await signIn(VIEWER_B_TOKEN);
    await page.waitForSelector('[data-test=totals]');
    assert.equal(await page.locator('[data-test=totals] [data-state=agents] .n').innerText(), '3');
    assert.equal(await page.locator('[data-test=whoami]').innerText(), 'viewer of tenant b');
    // The token is revoked under the page: the next call answers 401.
    await page.evaluate("sessionStorage.setItem('lightagent.console.token', 'revoked-token')");
    await page.click('a[href="#/agents"] >> nth=0');
    await page.waitForSelector('[data-test=signin-message]');
    assert.match(await page.locator('[data-test=signin-message]').innerText(), /not accepted/);
    assert.equal(await page.evaluate("sessionStorage.getItem('lightagent.console.token')"), null);
  });

  it('/ redirects to the console; detections filter by agent', async () => {
    const r = await fetch(`${fleet.base}/`, { redirect: 'manual' });
    assert.equal(r.status, 302);
    assert.equal(r.headers.get('location'), '/console/');
    await signIn(ADMIN_TOKEN);
    await page.waitForSelector('[data-test=totals]');
    await page.goto(`${fleet.base}/console/#/detections?agent=a-web-01`);
    await page.waitForSelector('[data-test=agent-filter]');
    const own = (await (
      await fetch(`${fleet.base}/api/detections?agent=a-web-01`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
    ).json()) as { detections: Array<{ path: string }> };
    assert.ok(own.detections.length >= 1 && own.detections.length < 5);
    await page.waitForFunction((n) => document.querySelectorAll('[data-test=detections] tbody tr').length === n, own.detections.length);
    assert.deepEqual((await texts('[data-test=detections] td.path')).sort(), own.detections.map((d) => d.path).sort());
    await page.fill('input[name=agent]', '');
    await page.press('input[name=agent]', 'Enter');
    await page.waitForFunction((n) => document.querySelectorAll('[data-test=detections] tbody tr').length === n, 5);
  });

  it('Scan now: a real agent scans when the button is clicked, and its row shows the job', async () => {
    const tree = tempDir('la-console-scan-');
    fs.mkdirSync(path.join(tree, 'inbox'));
    for (let i = 0; i < 6; i++) fs.writeFileSync(path.join(tree, `inbox/mail-${i}.txt`), `message ${i}\n`);
    fs.writeFileSync(path.join(tree, 'inbox/attachment.com'), EICAR);
    const agent = await startAgent({ svm: fleet.svm.url, token: AGENT_TOKENS.a, protect: tree, mode: 'watcher' });
    try {
      await page.evaluate("sessionStorage.setItem('lightagent.console.refreshMs', '1000')");
      await page.goto(`${fleet.base}/console/#/agents?tenant=a&state=protected`);
      // The real agent is the one row of tenant a whose id is not one of the fleet's.
      const id = await eventuallyAsync(async () => {
        const ids = await page.locator('tbody tr[data-agent]').evaluateAll((rs) => rs.map((r) => r.getAttribute('data-agent') ?? ''));
        return ids.find((x) => !x.startsWith('a-'));
      }, 20_000);
      assert.equal(await page.locator(`tr[data-agent="${id}"] [data-test=scan]`).innerText(), '—');
      await page.click(`tr[data-agent="${id}"] a.host`);
      await page.locator('[data-test=scan]', { hasText: 'no scan reported' }).waitFor();
      await page.click('[data-test=scan-now]');
      assert.match(await page.locator('[data-test=scan-message]').innerText(), /Scan asked of 1 agent/);
      await page.locator('[data-test=scan]', { hasText: 'done' }).waitFor({ timeout: 30_000 });
      assert.match(await page.locator('[data-test=scan]').innerText(), /7 scanned, 1 infected \(svm\)/);
      await shot('scan');
      const s = await agent.status();
      assert.equal(s.scan?.trigger, 'svm');
      assert.equal(s.scan?.state, 'done');
      assert.ok(!fs.existsSync(path.join(tree, 'inbox/attachment.com')), 'the agent quarantined it');
      // The tenant button: the fleet's raw agents did not list scan-command; they are skipped, the real one asked.
      await page.goto(`${fleet.base}/console/#/agents?tenant=a`);
      await page.click('[data-test=scan-now]');
      assert.match(
        await page.locator('[data-test=scan-message]').innerText(),
        /Scan asked of 1 agent, \d+ skipped \(LA_ERR_SCAN_UNSUPPORTED\)/,
      );
      const first = s.scan!.id;
      const second = await eventuallyAsync(async () => {
        const now = (await agent.status()).scan;
        return now && now.id !== first && now.state === 'done' ? now : undefined;
      }, 20_000);
      assert.equal(second.trigger, 'svm');
      await page.locator(`tr[data-agent="${id}"] [data-test=scan]`, { hasText: 'done' }).waitFor();
    } finally {
      await page.evaluate("sessionStorage.removeItem('lightagent.console.refreshMs')");
      await agent.stop();
    }
  });

  it('a viewer has no Scan now button and the API refuses it', async () => {
    await signIn(VIEWER_B_TOKEN);
    await page.waitForSelector('[data-test=totals]');
    await page.goto(`${fleet.base}/console/#/agent/b/b-desk-03`);
    await page.waitForSelector('[data-test=agent-host]');
    assert.equal(await page.locator('[data-test=scan-now]').count(), 0);
    const r = await fetch(`${fleet.base}/api/agents/b/b-desk-03/scan`, {
      method: 'POST',
      headers: { authorization: `Bearer ${VIEWER_B_TOKEN}`, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(r.status, 403);
  });

  it('nothing left the SVM: no other origin, no token in a URL, no dialog, no CSP report', async () => {
    const origin = new URL(fleet.base).origin;
    assert.ok(requests.length > 20);
    assert.deepEqual(
      requests.filter((u) => new URL(u).origin !== origin),
      [],
    );
    for (const t of [ADMIN_TOKEN, VIEWER_B_TOKEN]) assert.ok(!requests.some((u) => u.includes(t)));
    assert.equal(await page.evaluate('localStorage.length'), 0);
    assert.deepEqual(dialogs, []);
    assert.deepEqual(problems, []);
  });
});
