/**
 * The folder layout is the architecture (docs/architecture.md, "Parts and folders"): each file of
 * src/ may import only from its own room or from a room below it in ROOMS, and no files import
 * each other in a circle. A new import that runs upward fails here, naming the two files.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

/** Top first. `.` is src/'s own files (errors.ts, log.ts, backoff.ts): the ground floor. */
const ROOMS = [
  'sea',
  'cli',
  'tray',
  'agent',
  'control',
  'watchers',
  'scan',
  'processes',
  'store',
  'svm',
  'svm-link',
  'cache',
  'config',
  'platform',
  'protocol',
  '.',
];

const SRC = path.resolve(new URL('../../src', import.meta.url).pathname.replace(/build\/src$/, 'src'));

function sources(dir: string, out: string[] = []): string[] {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) sources(p, out);
    else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

const room = (file: string) => {
  const rel = path.relative(SRC, file).split(path.sep);
  return rel.length === 1 ? '.' : rel[0]!;
};

/** Relative imports of a file, resolved to .ts paths (import, export-from and dynamic import). */
function imports(file: string): string[] {
  // Comments out: an example in a comment is not an import.
  const text = fs
    .readFileSync(file, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/^\s*\/\/.*$/gm, '');
  const out: string[] = [];
  for (const m of text.matchAll(
    /(?:^|\s)(?:import|export)\s[^'"]*?from\s*['"](\.{1,2}\/[^'"]+)['"]|import\(\s*['"](\.{1,2}\/[^'"]+)['"]\s*\)|new URL\(\s*['"](\.{1,2}\/[^'"]+\.js)['"]/gm,
  )) {
    const spec = m[1] ?? m[2] ?? m[3]!;
    out.push(path.resolve(path.dirname(file), spec).replace(/\.js$/, '.ts'));
  }
  return out.filter((p) => p.startsWith(SRC));
}

describe('architecture: the folders are the layers', () => {
  const files = sources(SRC);
  const graph = new Map(files.map((f) => [f, imports(f)]));

  it('every room of src/ is in the layer list', () => {
    const rooms = new Set(files.map(room));
    assert.deepEqual(
      [...rooms].filter((r) => !ROOMS.includes(r)),
      [],
      'a new folder under src/ needs its place in ROOMS and in docs/architecture.md',
    );
  });

  it('imports run downward: no file imports a room above its own', () => {
    const upward: string[] = [];
    for (const [from, targets] of graph) {
      for (const to of targets) {
        const a = ROOMS.indexOf(room(from));
        const b = ROOMS.indexOf(room(to));
        if (b < a) upward.push(`${path.relative(SRC, from)} -> ${path.relative(SRC, to)}`);
      }
    }
    assert.deepEqual(upward, []);
  });

  it('no import circle between files', () => {
    const state = new Map<string, 1 | 2>();
    const circles: string[] = [];
    const visit = (f: string, stack: string[]) => {
      state.set(f, 1);
      for (const t of graph.get(f) ?? []) {
        if (state.get(t) === 1) circles.push([...stack.slice(stack.indexOf(t)), t].map((x) => path.relative(SRC, x)).join(' -> '));
        else if (!state.has(t) && graph.has(t)) visit(t, [...stack, t]);
      }
      state.set(f, 2);
    };
    for (const f of files) if (!state.has(f)) visit(f, [f]);
    assert.deepEqual(circles, []);
  });

  it('the check sees imports: a known downward import is found', () => {
    const daemon = path.join(SRC, 'agent', 'daemon.ts');
    assert.ok(
      graph.get(daemon)!.some((t) => room(t) === 'watchers' || room(t) === 'scan' || path.basename(path.dirname(t)) === 'steps'),
      'daemon.ts imports something below it',
    );
  });
});
