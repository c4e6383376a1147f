/**
 * The exclusion matcher (src/scan/exclusions.ts): property tests with fast-check for paths, globs
 * and extensions (never wider than the rule, picomatch's own semantics for globs, no exception on
 * any input), and the process lineage walk against a scripted /proc.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import picomatch from 'picomatch';
import { NO_EXCLUSIONS, exclusionsSchema, type ExclusionsConfig } from '../../src/config/exclusions.js';
import { expandBraces, GlobSet, hasGlobSyntax } from '../../src/config/glob.js';

/** picomatch with the meaning src/config/glob.ts implements: dot files included, no extglobs, no negation. */
const GLOB_OPTIONS = { dot: true, nonegate: true, noextglob: true, windows: false };
import { Exclusions } from '../../src/scan/exclusions.js';
import { someAncestor, type LineageReader } from '../../src/processes/lineage.js';

const cfg = (c: Partial<ExclusionsConfig>): ExclusionsConfig => ({ ...NO_EXCLUSIONS, ...c });
const RUNS = Number(process.env.LIGHTAGENT_FC_RUNS ?? 500);

/** Path segments from a small alphabet, so that generated paths often share prefixes with rules. */
const segment = fc.oneof(
  fc.constantFrom('a', 'ab', 'b', 'srv', 'x.o', 'x.log', 'X.LOG', '.hidden', 'build', 'a b', 'é', '日本'),
  fc.string({ minLength: 1, maxLength: 6 }).filter((s) => !s.includes('/') && s !== '.' && s !== '..'),
);
/** Literal folders: no glob syntax (a path that holds some must escape it with `\\`). */
const literalSegment = segment.filter((s) => !/[*?[\]{}()!+@\\|^$]/.test(s)); // `|` and `(`: picomatch leaks them into its regex
const literalPath = fc.array(literalSegment, { minLength: 1, maxLength: 6 }).map((segs) => `/${segs.join('/')}`);
const absPath = fc.array(segment, { minLength: 1, maxLength: 6 }).map((segs) => `/${segs.join('/')}`);

describe('exclusions: paths', () => {
  it('a path under an excluded folder is always excluded, a sibling with the same prefix never', () => {
    fc.assert(
      fc.property(literalPath, fc.array(segment, { maxLength: 4 }), segment, (dir, below, suffix) => {
        const ex = new Exclusions(cfg({ paths: [dir] }));
        const inside = [dir, ...below].join('/');
        assert.equal(ex.path(inside), 'path', `${inside} under ${dir}`);
        // `/srv/a` must not exclude `/srv/ab`
        const sibling = `${dir}${suffix}`;
        assert.equal(ex.path(sibling), undefined, `${sibling} is not under ${dir}`);
        // the same folder as a DIR/** glob is the same rule (given to the worker as a prefix)
        const glob = new Exclusions(cfg({ paths: [`${dir}/**`] }));
        assert.deepEqual(glob.prefixes, [dir]);
        assert.equal(glob.path(inside), 'path');
        assert.equal(glob.path(sibling), undefined);
      }),
      { numRuns: RUNS },
    );
  });

  it('a path that matches no rule is never excluded', () => {
    fc.assert(
      fc.property(fc.array(literalPath, { maxLength: 5 }), absPath, (dirs, p) => {
        const ex = new Exclusions(cfg({ paths: dirs }));
        const covered = dirs.some((d) => p === d || p.startsWith(`${d}/`));
        assert.equal(ex.path(p) !== undefined, covered, `${p} vs ${JSON.stringify(dirs)}`);
      }),
      { numRuns: RUNS },
    );
  });

  it('globs agree with picomatch (dot files included, no extglobs) on generated paths', () => {
    // picomatch also reads `"` as a quote (`/"a/b` matches `/a/b`, `"*"` a literal `*`); glob.ts
    // takes it as itself (the literal-folder properties above cover names that hold one).
    const globPart = fc.oneof(
      literalSegment.filter((s) => !s.includes('"')),
      fc.constantFrom('*', '**', '*.o', '*.log', 'a*', '*a*b', '?', '?b', '[ab]', '[^a]', '[a-c]x', '{a,b}', 'x.{o,log}', '{a,ab}*', '\\*'),
    );
    // A final `**` is left to the examples: there picomatch and glob.ts differ on purpose (glob.ts).
    const glob = fc
      .array(globPart, { minLength: 1, maxLength: 5 })
      .map((parts) => `/${parts.join('/')}`)
      .filter((g) => !g.endsWith('/**') || !hasGlobSyntax(g.slice(0, -3)));
    fc.assert(
      fc.property(glob, fc.array(absPath, { minLength: 1, maxLength: 8 }), (g, paths) => {
        const ex = new Exclusions(cfg({ paths: [g] }));
        const isMatch = picomatch(g, GLOB_OPTIONS);
        const folder = g.replace(/\/\*\*$/, '');
        const literal = !hasGlobSyntax(folder);
        // picomatch also lets `[ab]` match the text "[ab]" itself, and reads `[!a]` as `!` or `a`
        // with nonegate: glob.ts does neither (POSIX classes), so no path holds a class's own text.
        const own = g.includes('[') ? [] : paths.map((x) => `${folder}${x}`);
        for (const p of [...paths, ...own]) {
          const expected = literal ? p === folder || p.startsWith(`${folder}/`) : isMatch(p);
          assert.equal(ex.path(p) === 'path', expected, `${p} vs ${g}`);
        }
      }),
      { numRuns: RUNS },
    );
  });

  it('globs match in linear time: patterns that make regexes backtrack, on hostile names', () => {
    const hostile = [
      '/**/*/**/*/**/*/**/z',
      '/*a*a*a*a*a*a*a*a*a*a*b',
      '/**/a*a*a*a*a*a*a*b',
      '/**/**/**/**/**/**/x',
      '/[a-z]*[a-z]*[a-z]*[a-z]*!',
    ];
    const set = new GlobSet(hostile);
    const paths = [`/${'a'.repeat(4000)}`, `${'/a'.repeat(2000)}y`, `/${'a/'.repeat(2000)}`, `/${'a'.repeat(255)}/`.repeat(15)];
    const t0 = performance.now();
    for (const p of paths) assert.equal(set.match(p), false, p.slice(0, 40));
    const ms = performance.now() - t0;
    assert.ok(ms < 2000, `took ${ms.toFixed(0)} ms`); // ~10-100 ms here; picomatch's regexes: minutes to forever
  });

  it('braces: expanded, nested, bounded', () => {
    assert.deepEqual(expandBraces('/a/{b,c{d,e}}/f'), ['/a/b/f', '/a/cd/f', '/a/ce/f']);
    assert.deepEqual(expandBraces('/a/{b}/{c'), ['/a/{b}/{c'], 'no comma, or not closed: literal');
    assert.deepEqual(expandBraces('/a/\\{b,c}'), ['/a/\\{b,c}'], 'escaped');
    assert.equal(expandBraces(`/${'{a,b}'.repeat(9)}`), undefined, '512 alternatives: refused');
    assert.equal(expandBraces(`/${'{a,b}'.repeat(8)}`)?.length, 256);
    assert.equal(exclusionsSchema.safeParse({ paths: [`/${'{a,b}'.repeat(9)}`] }).success, false);
    const many = exclusionsSchema.safeParse({ paths: Array.from({ length: 17 }, (_, i) => `/p${i}/${'{a,b}'.repeat(8)}`) });
    assert.ok(!many.success && many.error.issues.some((i) => i.path.join('.') === 'paths' && /at most 4096/.test(i.message)));
  });

  it('examples: the issue text', () => {
    const ex = new Exclusions(cfg({ paths: ['/var/lib/postgresql/**', '/srv/build/*.o', '/srv/a'] }));
    assert.equal(ex.path('/var/lib/postgresql/16/main/base/1'), 'path');
    assert.equal(ex.path('/var/lib/postgresql'), 'path');
    assert.equal(ex.path('/var/lib/postgresqlx/1'), undefined);
    assert.equal(ex.path('/srv/build/x.o'), 'path');
    assert.equal(ex.path('/srv/build/.x.o'), 'path');
    assert.equal(ex.path('/srv/build/sub/x.o'), undefined, '* stops at /');
    assert.equal(ex.path('/srv/build/x.o.sh'), undefined);
    assert.equal(ex.path('/srv/a'), 'path');
    assert.equal(ex.path('/srv/a/b/c'), 'path');
    assert.equal(ex.path('/srv/ab'), undefined);
    assert.deepEqual([...ex.prefixes].sort(), ['/srv/a', '/var/lib/postgresql']);
    const folders = new Exclusions(cfg({ paths: ['/srv/*/**', '/m/**/x/**'] }));
    assert.equal(folders.path('/srv/a/f'), 'path');
    assert.equal(folders.path('/srv/a/b/c/f'), 'path');
    assert.equal(folders.path('/srv/f'), undefined, '/srv/*/** is what lies in the folders of /srv, not its files');
    assert.equal(folders.path('/m/x/f'), 'path', 'a ** inside may take no segment');
    assert.equal(folders.path('/m/x'), undefined);
    const escaped = new Exclusions(cfg({ paths: ['/srv/\\[old\\]/*', '/srv/Program (x86)'] }));
    assert.equal(escaped.path('/srv/[old]/x'), 'path');
    assert.equal(escaped.path('/srv/o/x'), undefined);
    assert.equal(escaped.path('/srv/Program (x86)/app.exe'), 'path', 'parentheses are literal');
  });

  it('never throws, whatever the input (huge, NUL, odd unicode, not a string)', () => {
    const ex = new Exclusions(cfg({ paths: ['/a/**', '/b/*.o', '/c/{x,y}/**'], extensions: ['.log', '.tar.gz', '.ü'] }));
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.string({ unit: 'grapheme', maxLength: 300 })), (s) => {
        ex.path(s);
        ex.path(`/a/${s}`);
        ex.path(`/b/${s}`);
        ex.threat(s);
        ex.sha256(s);
      }),
      { numRuns: RUNS },
    );
    for (const odd of ['', '/', '\0', '/a\0/b', `/${'x'.repeat(200_000)}`, `/b/${'y'.repeat(100_000)}.o`, '\uD800', '/b/\uDFFF.o'])
      assert.doesNotThrow(() => ex.path(odd));
    assert.equal(ex.path(undefined as unknown as string), undefined);
  });
});

describe('exclusions: extensions', () => {
  const ext = fc.stringMatching(/^\.[a-zA-Z0-9]{1,6}(\.[a-zA-Z0-9]{1,4})?$/);
  it('match case-insensitively, on the end of the file name only, never a bare name', () => {
    fc.assert(
      fc.property(ext, absPath, segment, fc.boolean(), (e, dir, stem, upper) => {
        const ex = new Exclusions(cfg({ extensions: [e.toLowerCase()] }));
        const name = `${stem}${upper ? e.toUpperCase() : e}`;
        assert.equal(ex.path(`${dir}/${name}`), 'extension');
        assert.equal(ex.path(`${dir}/${name}x`), undefined, 'not the end of the name');
        assert.equal(ex.path(`${dir}/${e}`), undefined, 'a file called just the extension has none');
        assert.equal(ex.path(`${dir}${e}/file`), undefined, 'a folder name does not count');
      }),
      { numRuns: RUNS },
    );
  });

  it('agrees with a plain lower-case endsWith on any name (unicode too)', () => {
    const exts = ['.log', '.tmp', '.ü', '.tar.gz', '.ǅ'].map((e) => e.toLowerCase());
    const ex = new Exclusions(cfg({ extensions: exts }));
    fc.assert(
      fc.property(
        fc.string({ unit: 'grapheme-composite', maxLength: 12 }),
        fc.constantFrom('', '.LOG', '.Tmp', '.Ü', '.TAR.GZ', '.ǅ', '.ǆ'),
        (stem, e) => {
          const name = `${stem}${e}`.replaceAll('/', '_').replaceAll('\\', '_');
          const lower = name.toLowerCase();
          const expected = exts.some((x) => lower.length > x.length && lower.endsWith(x));
          assert.equal(ex.path(`/d/${name}`) === 'extension', expected, JSON.stringify(name));
        },
      ),
      { numRuns: RUNS },
    );
  });
});

describe('exclusions: sha256 and threats', () => {
  it('sha256: exact hashes, any case', () => {
    const h = 'ab'.repeat(32);
    const ex = new Exclusions(cfg({ sha256: [h] }));
    assert.equal(ex.sha256(h), true);
    assert.equal(ex.sha256(h.toUpperCase()), true);
    assert.equal(ex.sha256('ab'.repeat(31) + 'ac'), false);
    assert.equal(ex.sha256(undefined), false);
  });
  it('threats: exact names, or * and ? wildcards, anchored and case-sensitive', () => {
    const ex = new Exclusions(cfg({ threats: ['PUA.Win.Tool.*', 'Eicar-Test-Signature', 'A?C'] }));
    assert.equal(ex.threat('PUA.Win.Tool.Nirsoft-1'), true);
    assert.equal(ex.threat('PUA.Win.Tool.'), true);
    assert.equal(ex.threat('PUA.Win.ToolX'), false, 'the dot is literal');
    assert.equal(ex.threat('xPUA.Win.Tool.y'), false, 'anchored');
    assert.equal(ex.threat('Eicar-Test-Signature'), true);
    assert.equal(ex.threat('Eicar-Test-Signature-Embedded'), false);
    assert.equal(ex.threat('eicar-test-signature'), false);
    assert.equal(ex.threat('ABC'), true);
    assert.equal(ex.threat('AC'), false);
    assert.equal(ex.threat(undefined), false);
    // Linear: a pattern that makes a regex backtrack, on a long name.
    const slow = new Exclusions(cfg({ threats: ['a*a*a*a*a*a*a*a*a*b'] }));
    const t0 = performance.now();
    assert.equal(slow.threat('a'.repeat(4096)), false);
    assert.ok(performance.now() - t0 < 1000);
    // Agrees with the regex it stands for, on short names.
    fc.assert(
      fc.property(fc.stringMatching(/^[ab*?.]{0,8}$/), fc.stringMatching(/^[ab.]{0,10}$/), (pat, name) => {
        const re = new RegExp(
          `^${pat
            .replace(/[.+^${}()|[\]\\]/g, '\\$&')
            .replace(/\*/g, '.*')
            .replace(/\?/g, '.')}$`,
          's',
        );
        assert.equal(new Exclusions(cfg({ threats: [pat] })).threat(name), re.test(name), `${pat} vs ${name}`);
      }),
      { numRuns: RUNS },
    );
    fc.assert(
      fc.property(fc.string({ maxLength: 40 }), (t) => {
        const exact = new Exclusions(cfg({ threats: [t.replace(/[*?]/g, '')] }));
        const name = t.replace(/[*?]/g, '');
        assert.equal(name === '' || exact.threat(name), true);
        assert.equal(exact.threat(`${name}x`), false);
      }),
      { numRuns: RUNS },
    );
  });
});

describe('exclusions: processes', () => {
  /** A scripted /proc: pid -> [ppid, exe], start time 1 unless `starts` says otherwise. */
  function procs(tree: Record<number, [number, string]>, starts: Record<number, number> = {}): LineageReader & { tree: typeof tree } {
    return {
      tree,
      exe: (pid) => tree[pid]?.[1],
      stat: (pid) => (tree[pid] ? { ppid: tree[pid][0], startTicks: starts[pid] ?? 1 } : undefined),
    };
  }
  const config = cfg({
    processes: [
      { path: '/usr/bin/rsync', children: true },
      { path: '/usr/sbin/mysqld', children: false },
    ],
  });

  it('the opener itself, or with children: true an ancestor', () => {
    const r = procs({
      1: [0, '/sbin/init'],
      10: [1, '/usr/bin/rsync'],
      11: [10, '/usr/bin/ssh'],
      12: [11, '/bin/cat'],
      20: [1, '/usr/sbin/mysqld'],
      21: [20, '/bin/sh'],
      30: [1, '/bin/bash'],
    });
    const ex = new Exclusions(config, [], r);
    assert.equal(ex.process(10), true, 'rsync itself');
    assert.equal(ex.process(12), true, "rsync's grandchild");
    assert.equal(ex.process(20), true, 'mysqld itself');
    assert.equal(ex.process(21), false, "mysqld's child: children is false");
    assert.equal(ex.process(30), false);
    assert.equal(ex.process(99), false, 'gone');
    assert.equal(ex.process(-1), false);
  });

  it('bounded: no further than the depth, no loop, stops on a parent it cannot verify', () => {
    const deep: Record<number, [number, string]> = { 1: [0, '/usr/bin/rsync'] };
    for (let pid = 2; pid <= 40; pid++) deep[pid] = [pid - 1, '/bin/sh'];
    assert.equal(new Exclusions(config, [], procs(deep)).process(10), true, '9 up');
    assert.equal(new Exclusions(config, [], procs(deep)).process(40), false, '39 up: beyond 16');
    const loop = procs({ 5: [6, '/bin/sh'], 6: [5, '/bin/sh'] });
    assert.equal(new Exclusions(config, [], loop).process(5), false);
    // the parent exits after its exe was read: the child is reparented, the walk stops
    let reads = 0;
    const racing: LineageReader = {
      exe: (pid) => ({ 10: '/usr/bin/rsync', 12: '/bin/cat' })[pid],
      stat: (pid) => (pid === 12 ? { ppid: reads++ === 0 ? 10 : 1, startTicks: 1 } : pid === 10 ? { ppid: 1, startTicks: 1 } : undefined),
    };
    assert.equal(
      someAncestor(12, (e) => e === '/usr/bin/rsync', 16, racing),
      false,
    );
  });

  it('the real /proc: this process by its own executable', () => {
    const me = new Exclusions(cfg({ processes: [{ path: process.execPath, children: false }] }));
    if (process.platform === 'linux') assert.equal(me.process(process.pid), true);
    assert.equal(new Exclusions(cfg({ processes: [{ path: '/nonexistent/x', children: true }] })).process(process.pid), false);
  });
});

describe('exclusions: the config shape', () => {
  const parse = (v: unknown) => exclusionsSchema.safeParse(v);
  it('a plain list still means paths', () => {
    const r = parse(['/srv/a', '/srv/b/**']);
    assert.ok(r.success);
    assert.deepEqual(r.data, { paths: ['/srv/a', '/srv/b/**'], extensions: [], processes: [], sha256: [], threats: [] });
  });
  it('normalizes extensions, processes and hashes', () => {
    const h = 'AB'.repeat(32);
    const r = parse({
      extensions: ['LOG', '.Tmp'],
      processes: ['/usr/sbin/mysqld', { path: '/usr/bin/rsync', children: true }],
      sha256: [h],
    });
    assert.ok(r.success, JSON.stringify(r.error?.issues));
    assert.deepEqual(r.data.extensions, ['.log', '.tmp']);
    assert.deepEqual(r.data.processes, [
      { path: '/usr/sbin/mysqld', children: false },
      { path: '/usr/bin/rsync', children: true },
    ]);
    assert.deepEqual(r.data.sha256, [h.toLowerCase()]);
  });
  it('lists every problem with its key path', () => {
    const r = parse({
      paths: ['relative/x', '/ok', '/a/../b', '/c\u0000'],
      extensions: ['', '.a/b'],
      processes: ['bin/sh', { path: '/x', children: 'yes' }, { path: '/y', other: 1 }],
      sha256: ['abc'],
      threats: [''],
      bogus: 1,
    });
    assert.ok(!r.success);
    const keys = r.error.issues.map((i) => i.path.join('.'));
    for (const k of [
      'paths.0',
      'paths.2',
      'paths.3',
      'extensions.0',
      'extensions.1',
      'processes.0',
      'processes.1',
      'processes.2',
      'sha256.0',
      'threats.0',
    ])
      assert.ok(keys.includes(k), `${k} in ${JSON.stringify(keys)}`);
    assert.ok(!keys.includes('paths.1'));
  });
  it('bounds the number of rules', () => {
    const r = parse({ paths: Array.from({ length: 5000 }, (_, i) => `/p${i}`) });
    assert.ok(!r.success);
  });
});
