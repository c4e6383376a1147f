/**
 * Every benchmark script that takes options answers --help and refuses an unknown option in one
 * line with exit 2 (bench/lib/cli.ts), before it starts, mounts or installs anything; the same for
 * a value of a numeric option that is not a number of its kind (benchArgs's `number`), an unknown
 * name in a list and a trace directory that is not there. A good value still passes: it is given
 * before --help, which benchArgs answers only after checking the numbers, so no benchmark runs.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { benchArgs, type BenchOption } from '../../bench/lib/cli.js';

const BENCH = new URL('../../bench/', import.meta.url).pathname;

/** The compiled scripts that parse their options through benchArgs (read from their sources). */
function scripts(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.js') && !p.includes(`${path.sep}lib${path.sep}`) && fs.readFileSync(p, 'utf8').includes('benchArgs('))
        out.push(p);
    }
  };
  walk(BENCH);
  return out.sort();
}

describe('bench scripts: --help and bad options', () => {
  const all = scripts();
  it('finds the scripts', () => assert.ok(all.length >= 15, all.join('\n')));
  for (const script of all) {
    const name = path.relative(BENCH, script).replace(/\.js$/, '');
    it(`bench/${name}`, () => {
      const help = spawnSync(process.execPath, [script, '--help'], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(help.status, 0, help.stderr);
      assert.match(help.stdout, new RegExp(`^usage: (sudo )?node (--\\S+ )?build/bench/${name}\\.js \\[options\\]`));
      assert.match(help.stdout, /^ {2}-h, --help +this text$/m);
      const bad = spawnSync(process.execPath, [script, '--no-such-option'], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(bad.status, 2, bad.stderr);
      assert.equal(bad.stderr, `bench/${name}: Unknown option '--no-such-option' (see --help)\n`);
    });
  }
});

/**
 * Every `number` option of every script, with a value it takes (`list`: a comma-separated list).
 * The test below checks this table against the scripts' sources: a new numeric option needs a row.
 */
const NUMERIC: Record<string, Array<[option: string, good: string, list?: 'list']>> = {
  'cache/cache-bench': [['entries', '1000']],
  'fleet/boot-storm': [
    ['guests', '2'],
    ['files', '10'],
  ],
  'fleet/noisy-neighbour': [
    ['seconds', '0.5'],
    ['rounds', '2'],
    ['stallers', '10'],
    ['flooders', '2'],
    ['fair-read-bytes', '0'],
    ['prefill', '0'],
    ['agents', '3'],
  ],
  'micro/exclusions': [['iterations', '1e6']],
  'micro/rtt-floor': [
    ['n', '100'],
    ['reps', '1'],
  ],
  'micro/svm-scale': [
    ['seconds', '0.5'],
    ['agents', '1,10', 'list'],
  ],
  'micro/verdict-cache': [['sizes', '1,10000000', 'list']],
  'onaccess/gate-open-latency': [
    ['n', '1000'],
    ['rounds', '1'],
  ],
  'onaccess/idle-memory': [
    ['rounds', '1'],
    ['idle-s', '1.5'],
    ['work-files', '0'],
    ['after-s', '1'],
  ],
  'onaccess/open-latency': [['files', '100']],
  'onaccess/signature-refresh': [['reps', '1']],
  'onaccess/workloads': [
    ['reps', '1'],
    ['first-reps', '2'],
  ],
  'process/process-bench': [['counts', '10,100', 'list']],
  'svm/sizing': [
    ['agents', '0,10', 'list'],
    ['rate-at', '0', 'list'],
    ['seconds', '0.5'],
  ],
  'svm/svm-bench': [
    ['seconds', '0.5'],
    ['agents', '2'],
    ['file-size', '4096'],
  ],
  'svm/window-probe': [
    ['files', '10'],
    ['tries', '1'],
  ],
  'windows/rdcw-probe': [
    ['expect', '10'],
    ['buf', '4096'],
    ['idle-ms', '500'],
    ['max-ms', '1000'],
    ['prime', '1'],
  ],
  'windows/rdcw-vs-fswatch': [
    ['n', '10'],
    ['reps', '1'],
    ['subdirs', '2'],
  ],
};

interface Ran {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** A script run without blocking, so that one script's runs go at once. */
function run(script: string, args: string[], as?: { uid: number; gid: number }): Promise<Ran> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, ...args], { timeout: 30_000, ...as });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

/** One line on stderr, exit 2: `bench/<name>: <starts> ... (see --help)`. */
function assertUsageError(r: Ran, name: string, starts: string, has: string): void {
  assert.equal(r.status, 2, `${r.stderr}${r.stdout.slice(0, 500)}`);
  assert.equal(r.stdout, '');
  assert.ok(r.stderr.startsWith(`bench/${name}: ${starts}`), r.stderr);
  assert.ok(r.stderr.includes(has), r.stderr);
  assert.match(r.stderr, /^[^\n]* \(see --help\)\n$/);
}

describe('bench scripts: numeric options', () => {
  const all = new Map(scripts().map((s) => [path.relative(BENCH, s).replace(/\.js$/, ''), s]));
  it('the table names every numeric option of every script', () => {
    for (const [name, script] of all) {
      const declared = fs.readFileSync(script, 'utf8').match(/\bnumber: '(int|float)'/g)?.length ?? 0;
      assert.equal(
        NUMERIC[name]?.length ?? 0,
        declared,
        `bench/${name}: ${declared} numeric options, ${NUMERIC[name]?.length ?? 0} in NUMERIC`,
      );
    }
    for (const name of Object.keys(NUMERIC)) assert.ok(all.has(name), `NUMERIC names bench/${name}, which has no benchArgs`);
  });
  for (const [name, options] of Object.entries(NUMERIC)) {
    it(`bench/${name}`, async () => {
      const script = all.get(name)!;
      await Promise.all(
        options.flatMap(([option, good, list]) => {
          // --help last: were a bad value let through, the usage would answer, not the benchmark.
          const bad = list ? `${good.split(',')[0]},abc` : 'abc';
          return [
            run(script, [`--${option}`, bad, '--help']).then((r) => assertUsageError(r, name, `--${option} ${bad}: `, 'abc')),
            run(script, [`--${option}=${list ? '' : '1.5x'}`, '--help']).then((r) => assertUsageError(r, name, `--${option} `, 'not')),
            run(script, [`--${option}`, good, '--help']).then((r) => {
              assert.equal(r.status, 0, r.stderr);
              assert.match(r.stdout, new RegExp(`^usage: (sudo )?node (--\\S+ )?build/bench/${name}\\.js \\[options\\]`));
              assert.equal(r.stderr, '');
            }),
          ];
        }),
      );
    });
  }
});

describe('bench scripts: names, lists and directories', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'la-bench-cli-'));
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const js = (name: string) => path.join(BENCH, `${name}.js`);

  it('bench/svm/svm-bench refuses an engine it does not know, naming those it knows', async () => {
    const r = await run(js('svm/svm-bench'), ['--engines', 'builtin,clamv']);
    assertUsageError(r, 'svm/svm-bench', '--engines: no engine named clamv ', '(engines: builtin, clamav)');
  });
  it('bench/onaccess/rtt-breakdown refuses a DIR that is not there, or not a trace, or lacks a phase', async () => {
    const name = 'onaccess/rtt-breakdown';
    const gone = path.join(tmp, 'no-such-dir');
    assertUsageError(await run(js(name), [gone]), name, `DIR ${gone}: no such directory`, 'open-latency');
    assertUsageError(await run(js(name), [tmp]), name, `DIR ${tmp}: no svm/ in it`, 'open-latency');
    for (const d of ['svm', 'miss', 'second-guest']) fs.mkdirSync(path.join(tmp, d));
    assertUsageError(await run(js(name), [tmp, 'miss', 'mis']), name, `no phase mis under ${tmp}`, '(phases there: ');
    const ok = await run(js(name), [tmp]);
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /^\nmiss: hop-by-hop[^]*\nsecond-guest: hop-by-hop/);
  });
  it('bench/svm/sizing refuses a --rate-at that is not one of --agents, and steps that go down', async () => {
    const name = 'svm/sizing';
    assertUsageError(await run(js(name), ['--agents', '0,100', '--rate-at', '50']), name, '--rate-at: 50 not among --agents 0,100', '');
    assertUsageError(await run(js(name), ['--agents', '100,0']), name, '--agents 100,0: the steps must not go down', '');
  });
  it('bench/fleet/noisy-neighbour refuses a --quiet-sched it does not know', async () => {
    const r = await run(js('fleet/noisy-neighbour'), ['--quiet-sched', 'rt']);
    assertUsageError(r, 'fleet/noisy-neighbour', '--quiet-sched rt: fifo or nice', '');
  });
  it('bench/windows/rdcw-vs-fswatch refuses a scenario it does not know', async () => {
    const r = await run(js('windows/rdcw-vs-fswatch'), ['--only', 'throughput,existnig']);
    assertUsageError(r, 'windows/rdcw-vs-fswatch', '--only: no scenario named existnig ', 'throughput, existing, new-dirs');
  });
  it('bench/onaccess/gate-open-latency says its own name when it is not root', async () => {
    // As root (CI), run it as nobody: the check under test is the one a non-root user meets.
    const r = await run(js('onaccess/gate-open-latency'), [], process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : undefined);
    assert.equal(r.status, 2, r.stderr);
    assert.ok(r.stderr.startsWith('bench/onaccess/gate-open-latency: needs root'), r.stderr);
  });
});

describe('benchArgs: numeric options', () => {
  /** benchArgs in this process, process.exit and stderr caught: the values, or the exit code and the line. */
  function parse(
    options: Record<string, BenchOption>,
    args: string[],
  ): { values?: Record<string, unknown>; exit?: number; stderr: string } {
    const exit = process.exit;
    const write = process.stderr.write;
    let stderr = '';
    process.exit = ((code?: number) => {
      throw Object.assign(new Error('exit'), { exitCode: code });
    }) as typeof process.exit;
    process.stderr.write = ((s: string) => ((stderr += s), true)) as typeof process.stderr.write;
    try {
      return { values: { ...benchArgs({ name: 'bench/x/y', summary: 's' }, options, args).values }, stderr };
    } catch (e) {
      const code = (e as { exitCode?: number }).exitCode;
      if (code === undefined) throw e;
      return { exit: code, stderr };
    } finally {
      process.exit = exit;
      process.stderr.write = write;
    }
  }
  const int: BenchOption = { type: 'string', number: 'int', min: 1, help: 'h' };
  const float: BenchOption = { type: 'string', number: 'float', above: 0, help: 'h' };
  const ranged: BenchOption = { type: 'string', number: 'int', min: 0, max: 1, help: 'h', list: true };

  it('takes what Number() reads as a finite number of the kind, and leaves it a string', () => {
    for (const v of ['1', '20000', '1e6', ' 7 ', '+3', '0x10'])
      assert.deepEqual(parse({ n: int }, ['--n', v]), { values: { n: v }, stderr: '' }, v);
    for (const v of ['0.5', '1e-3', '3', '.25']) assert.deepEqual(parse({ s: float }, ['--s', v]), { values: { s: v }, stderr: '' }, v);
    assert.deepEqual(parse({ p: ranged }, ['--p', '0,1, 1']), { values: { p: '0,1, 1' }, stderr: '' });
    assert.deepEqual(parse({ n: int }, []), { values: {}, stderr: '' });
  });
  it('refuses anything else in one line naming the option and the value', () => {
    const cases: Array<[BenchOption, string, string]> = [
      [int, 'abc', '--n abc: not a whole number >= 1'],
      [int, '1.5', '--n 1.5: not a whole number >= 1'],
      [int, '0', '--n 0: not a whole number >= 1'],
      [int, '-3', '--n -3: not a whole number >= 1'],
      [int, '', '--n "": not a whole number >= 1'],
      [int, ' ', '--n " ": not a whole number >= 1'],
      [int, 'Infinity', '--n Infinity: not a whole number >= 1'],
      [int, '12abc', '--n 12abc: not a whole number >= 1'],
      [float, '0', '--n 0: not a number > 0'],
      [float, 'NaN', '--n NaN: not a number > 0'],
      [float, '1e400', '--n 1e400: not a number > 0'],
      [ranged, '2', '--n 2: 2 is not a whole number from 0 to 1'],
      [ranged, '0,x', '--n 0,x: x is not a whole number from 0 to 1'],
      [ranged, '1,,0', '--n 1,,0: "" is not a whole number from 0 to 1'],
      [ranged, '', '--n "": "" is not a whole number from 0 to 1'],
    ];
    for (const [o, v, line] of cases)
      assert.deepEqual(parse({ n: o }, [`--n=${v}`]), { exit: 2, stderr: `bench/x/y: ${line} (see --help)\n` }, v);
  });
  it('checks a default as well, and every value of a multiple option', () => {
    assert.equal(parse({ n: { ...int, default: 'many' } }, []).stderr, 'bench/x/y: --n many: not a whole number >= 1 (see --help)\n');
    assert.equal(
      parse({ n: { ...int, multiple: true } }, ['--n', '2', '--n', 'x']).stderr,
      'bench/x/y: --n x: not a whole number >= 1 (see --help)\n',
    );
    assert.deepEqual(parse({ n: { ...int, multiple: true } }, ['--n', '2', '--n', '3']).values, { n: ['2', '3'] });
  });
  it('checks before --help, so that --help after a value says the value would do', () => {
    assert.deepEqual(parse({ n: int }, ['--n', 'x', '--help']), {
      exit: 2,
      stderr: 'bench/x/y: --n x: not a whole number >= 1 (see --help)\n',
    });
  });
  it('refuses `number` on a boolean option (a mistake in the script)', () => {
    assert.throws(() => parse({ b: { type: 'boolean', number: 'int', help: 'h' } }, []), /--b has number but is not a string option/);
  });
});
