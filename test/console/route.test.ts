/**
 * The console route without a browser: only the fixed table of files is served, every answer
 * carries the CSP and the other security headers, and no request path reaches the file system.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { CONSOLE_CSP, CONSOLE_STATIC_FILES, consoleRoute, loadConsoleFiles } from '../../src/svm/console/console-route.js';
import type { SvmServer } from '../../src/svm/server.js';
import { startTestSvm } from '../svm/helpers.js';

/** A raw GET (fetch would normalise `..` away before sending). */
function get(port: number, path: string, headers: http.OutgoingHttpHeaders = {}, method = 'GET') {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, headers, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

describe('console route', () => {
  let svm: SvmServer;
  before(async () => {
    svm = await startTestSvm();
    svm.addRoute(consoleRoute());
  });
  after(() => svm.close());

  it('serves the page with a strict CSP, nosniff and no referrer', async () => {
    const r = await get(svm.address.port, '/console/');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(r.headers['content-security-policy'], CONSOLE_CSP);
    assert.match(CONSOLE_CSP, /script-src 'self';/);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
    assert.equal(r.headers['referrer-policy'], 'no-referrer');
    assert.match(r.body, /<script type="module" src="app.js"><\/script>/);
    assert.doesNotMatch(r.body, /<script>|<style|style=|https?:\/\//, 'no inline script or style, no external URL');
  });

  it('serves every file of the table and the front-end library, nothing else', async () => {
    for (const f of CONSOLE_STATIC_FILES) assert.equal((await get(svm.address.port, `/console/${f}`)).status, 200, f);
    const hooks = await get(svm.address.port, '/console/vendor/hooks.mjs');
    assert.equal(hooks.headers['content-type'], 'text/javascript; charset=utf-8');
    assert.match(hooks.body, /from"\.\/preact\.mjs"/, 'the bare "preact" import is rewritten to a path');
    for (const p of [
      '/console/../package.json',
      '/console/%2e%2e/%2e%2e/package.json',
      '/console/vendor/../../../../etc/passwd',
      '/console/pages/',
      '/console/app.js.map',
      '/console//etc/passwd',
      '/console/%00',
    ]) {
      const r = await get(svm.address.port, p);
      assert.ok(r.status === 404 || r.status === 400, `${p} -> ${r.status}`);
      assert.equal(r.headers['content-security-policy'] ?? CONSOLE_CSP, CONSOLE_CSP);
    }
  });

  it('redirects /console, answers HEAD and If-None-Match, refuses other methods', async () => {
    const redirect = await get(svm.address.port, '/console');
    assert.equal(redirect.status, 308);
    assert.equal(redirect.headers.location, '/console/');
    const head = await get(svm.address.port, '/console/app.js', {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.body, '');
    const again = await get(svm.address.port, '/console/app.js', { 'if-none-match': head.headers.etag });
    assert.equal(again.status, 304);
    const post = await get(svm.address.port, '/console/', {}, 'POST');
    assert.equal(post.status, 405);
    assert.equal((await get(svm.address.port, '/metrics')).status, 200, 'the SVM’s own endpoints are untouched');
  });

  it('keeps its files small and reads them all at start', () => {
    const files = loadConsoleFiles();
    const bytes = [...files.values()].reduce((n, f) => n + f.body.length, 0);
    assert.equal(files.size, CONSOLE_STATIC_FILES.length + 3);
    assert.ok(bytes < 200_000, `${bytes} bytes`);
    assert.throws(() => loadConsoleFiles({ staticDir: '/nonexistent' }), /LA_ERR_CONSOLE_FILES|cannot be read/);
  });
});
