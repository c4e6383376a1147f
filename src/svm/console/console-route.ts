/**
 * The web console: static files only (one HTML page, one CSS file, ES modules, and preact + htm
 * from node_modules), served under /console/ on the SVM's own port and TLS. No data is ever in
 * these files: the pages fetch the admin API (/api/) with the token the user typed.
 *
 * Only the files of a fixed table are served, read once at start (about 60 KiB): no path from the
 * request ever reaches the file system. In the single executable (scripts/release.mjs) the same
 * files are SEA assets named `console/<name>`.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import type http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { LightagentError } from '../../errors.js';
import { seaApi } from '../../platform/private-dir.js';
import type { HttpRoute } from '../server.js';

/** The console's own files, in src/svm/console/static/. */
export const CONSOLE_STATIC_FILES = [
  'index.html',
  'console.css',
  'app.js',
  'api.js',
  'format.js',
  'vendor-html.js',
  'chart.js',
  'scan.js',
  'pages/signin.js',
  'pages/fleet.js',
  'pages/agents.js',
  'pages/agent.js',
  'pages/detections.js',
  'pages/svm.js',
  'favicon.svg',
] as const;

/** Front-end library files, served as /console/vendor/<name>: [package, file inside it]. */
export const CONSOLE_VENDOR_FILES = {
  'preact.mjs': ['preact', 'dist/preact.mjs'],
  'hooks.mjs': ['preact', 'hooks/dist/hooks.mjs'],
  'htm.mjs': ['htm', 'dist/htm.mjs'],
} as const;

export const CONSOLE_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.svg': 'image/svg+xml',
};

interface ConsoleFile {
  type: string;
  body: Buffer;
  etag: string;
}

export interface ConsoleRouteOptions {
  /** Where the static files are (default: found beside the build, or in the executable). */
  staticDir?: string;
}

/** Headers on every console answer, including errors and redirects. */
export function securityHeaders(): Record<string, string> {
  return {
    'content-security-policy': CONSOLE_CSP,
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'x-frame-options': 'DENY',
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-resource-policy': 'same-origin',
  };
}

/** The console route, with every file read now (a missing one fails the SVM's start, not a page). */
export function consoleRoute(o: ConsoleRouteOptions = {}): HttpRoute {
  const files = loadConsoleFiles(o);
  return {
    prefix: '/console',
    handle(req: http.IncomingMessage, res: http.ServerResponse, url: URL) {
      const head = req.method === 'HEAD';
      const send = (status: number, headers: Record<string, string>, body?: Buffer | string) => {
        res.writeHead(status, { ...securityHeaders(), ...headers });
        res.end(head ? undefined : body);
      };
      if (req.method !== 'GET' && !head)
        return send(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }, 'method not allowed\n');
      const p = url.pathname;
      if (p === '/console') return send(308, { location: '/console/' });
      if (!p.startsWith('/console/')) return send(404, { 'content-type': 'text/plain; charset=utf-8' }, 'not found\n');
      const name = p === '/console/' ? 'index.html' : p.slice('/console/'.length);
      const f = files.get(name);
      if (!f) return send(404, { 'content-type': 'text/plain; charset=utf-8' }, 'not found\n');
      const base = { etag: f.etag, 'cache-control': 'no-cache' };
      if (req.headers['if-none-match'] === f.etag) return send(304, base);
      send(200, { ...base, 'content-type': f.type, 'content-length': String(f.body.length) }, f.body);
    },
  };
}

/** Every file of the console by its name under /console/ (vendor files as `vendor/<name>`). */
export function loadConsoleFiles(o: ConsoleRouteOptions = {}): Map<string, ConsoleFile> {
  const sea = seaApi();
  const read = sea && !o.staticDir ? seaReader(sea.getRawAsset.bind(sea)) : diskReader(o.staticDir);
  const out = new Map<string, ConsoleFile>();
  const add = (name: string, body: Buffer) => {
    const type = TYPES[path.extname(name)];
    if (!type) throw new Error(`no content type for ${name}`);
    out.set(name, { type, body, etag: `"${crypto.createHash('sha256').update(body).digest('base64url').slice(0, 22)}"` });
  };
  for (const name of CONSOLE_STATIC_FILES) add(name, read.own(name));
  for (const [name, [pkg, file]] of Object.entries(CONSOLE_VENDOR_FILES)) {
    let body = read.vendor(pkg, file);
    // preact/hooks imports the bare name "preact"; a browser without an import map (an inline
    // script the CSP forbids) needs a path.
    if (name === 'hooks.mjs') {
      const text = body.toString('utf8');
      const fixed = text.replace(/from\s*(["'])preact\1/g, 'from"./preact.mjs"');
      if (fixed === text) throw new Error('preact/hooks no longer imports "preact" the expected way');
      body = Buffer.from(fixed);
    }
    add(`vendor/${name}`, body);
  }
  return out;
}

interface Reader {
  own(name: string): Buffer;
  vendor(pkg: string, file: string): Buffer;
}

function seaReader(getRawAsset: (key: string) => ArrayBuffer): Reader {
  const get = (key: string) => {
    try {
      return Buffer.from(getRawAsset(key));
    } catch (e) {
      throw missing(`asset ${key} of this executable`, e);
    }
  };
  return { own: (name) => get(`console/${name}`), vendor: (pkg, file) => get(`console/vendor/${pkg}/${file}`) };
}

function diskReader(staticDir: string | undefined): Reader {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // build/src/svm/console/ -> src/svm/console/static (the npm layout ships src/svm/console/static).
  const candidates = staticDir ? [staticDir] : [path.join(here, 'static'), path.resolve(here, '../../../../src/svm/console/static')];
  const dir = candidates.find((d) => fs.existsSync(path.join(d, 'index.html')));
  const require = createRequire(import.meta.url);
  return {
    own(name) {
      if (!dir) throw missing(`the console's files (looked in ${candidates.join(', ')})`);
      try {
        return fs.readFileSync(path.join(dir, name));
      } catch (e) {
        throw missing(path.join(dir, name), e);
      }
    },
    vendor(pkg, file) {
      let root: string;
      try {
        // Each package's main entry is under its root: walk up to the package.json naming it.
        root = path.dirname(require.resolve(pkg));
        while (!isPackageRoot(root, pkg) && path.dirname(root) !== root) root = path.dirname(root);
      } catch (e) {
        throw missing(`the npm package ${pkg}`, e);
      }
      try {
        return fs.readFileSync(path.join(root, file));
      } catch (e) {
        throw missing(`${file} of the npm package ${pkg}`, e);
      }
    },
  };
}

function isPackageRoot(dir: string, pkg: string): boolean {
  try {
    return (JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string }).name === pkg;
  } catch {
    return false;
  }
}

function missing(what: string, cause?: unknown): LightagentError {
  return new LightagentError(
    'LA_ERR_CONSOLE_FILES',
    `the web console cannot start: ${what} cannot be read${cause ? `: ${(cause as Error).message}` : ''}`,
    'reinstall lightagent (npm ci installs preact and htm), or turn the console off',
    { cause },
  );
}
