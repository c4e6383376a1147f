/**
 * The command-definition helper (src/cli/command.ts) every `lightagent` command is made with:
 * --help, unknown options, missing and bad values, typed values, --json. Run through a child
 * process so stdout, stderr and the exit code are the real ones.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { formatDurationFlag, parseDurationFlag } from '../../src/cli/command.js';

const CHILD = new URL('./fixtures/command-child.js', import.meta.url).pathname;

function probe(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CHILD, ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, ...env } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function parsed(args: string[], env?: NodeJS.ProcessEnv): { values: Record<string, unknown>; positionals: string[] } {
  const r = probe(['--json', ...args], env);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, '');
  return JSON.parse(r.stdout);
}

describe('defineCommand', () => {
  it('--help and -h print the usage on stdout and exit 0, before any other check', () => {
    for (const args of [['--help'], ['-h'], ['--count', 'lots', '--help']]) {
      const r = probe(args);
      assert.equal(r.status, 0, args.join(' '));
      assert.equal(r.stderr, '');
      assert.match(r.stdout, /^Usage: lightagent probe \[options\] \[WORD\.\.\.\]\n\nPrints what it was given\.\n\nOptions:\n/);
      assert.match(r.stdout, /^ {2}--wait DUR +a wait\n {18}\(second help line\)$/m);
      assert.match(r.stdout, /^ {2}-v, --verbose +say more$/m);
      assert.match(r.stdout, /^ {2}-h, --help +show this help$/m);
      assert.match(r.stdout, /\n\nExit status: 0 done, 2 error\.\n$/);
    }
  });

  it('an unknown option exits 2 naming it, with the usage on stderr and nothing on stdout', () => {
    for (const bad of ['--frob', '-x']) {
      const r = probe([bad]);
      assert.equal(r.status, 2);
      assert.equal(r.stdout, '');
      assert.ok(r.stderr.startsWith(`lightagent probe: unknown option "${bad}"\n\nUsage: lightagent probe`), r.stderr);
    }
  });

  it('a missing value exits 2 naming the option and what it takes', () => {
    const end = probe(['--name']);
    assert.equal(end.status, 2);
    assert.match(end.stderr, /^lightagent probe: --name needs a value \(--name NAME\)\n/);
    // The next word looks like an option: parseArgs refuses to take it as the value.
    const dash = probe(['--name', '--json']);
    assert.equal(dash.status, 2);
    assert.match(
      dash.stderr,
      /^lightagent probe: --name needs a value \(--name NAME\); a value that starts with "-" is given as --name=VALUE\n/,
    );
    assert.equal(parsed(['--name=--json']).values.name, '--json');
    const boolWithValue = probe(['--verbose=yes']);
    assert.equal(boolWithValue.status, 2);
    assert.match(boolWithValue.stderr, /^lightagent probe: --verbose takes no value\n/);
  });

  it('a bad duration exits 2 naming the option, the range and the value', () => {
    for (const bad of ['soon', '-5', '2 fortnights', '50ms', '2m', '1e3']) {
      const r = probe([`--wait=${bad}`]);
      assert.equal(r.status, 2, bad);
      assert.equal(r.stdout, '');
      assert.equal(
        r.stderr,
        `lightagent probe: --wait must be a duration from 100ms to 1m (e.g. 3s, 500ms; a bare number is milliseconds), not ${JSON.stringify(bad)}\n`,
      );
    }
  });

  it('durations: units as in the config files, a bare number is milliseconds, the default when absent', () => {
    assert.equal(parsed([]).values.wait, 3000);
    assert.equal(parsed(['--wait', '250']).values.wait, 250);
    assert.equal(parsed(['--wait', '2s']).values.wait, 2000);
    assert.equal(parsed(['--wait', '1.5s']).values.wait, 1500);
    assert.equal(parsed(['--wait=500ms']).values.wait, 500);
    assert.equal(parsed(['--wait', '1m']).values.wait, 60_000);
  });

  it('integers: whole numbers within the bounds only', () => {
    assert.equal(parsed(['--count', '7']).values.count, 7);
    assert.equal(parsed([]).values.count, undefined);
    for (const bad of ['0', '11', '1e1', '0x5', '2.5', 'lots', '']) {
      const r = probe(['--count', bad]);
      assert.equal(r.status, 2, bad);
      assert.equal(r.stderr, `lightagent probe: --count must be a whole number from 1 to 10, not ${JSON.stringify(bad)}\n`);
    }
  });

  it('choices, repeated options, short booleans and --json', () => {
    const v = parsed(['--mode', 'slow', '--tag', 'a', '--tag', 'b', '-v', '--name', 'x']).values;
    assert.deepEqual(v, { name: 'x', wait: 3000, tag: ['a', 'b'], mode: 'slow', verbose: true, throw: false, json: true });
    const none = parsed([]).values;
    assert.equal(none.verbose, false, 'a boolean is false when absent');
    assert.equal(none.tag, undefined);
    const bad = probe(['--mode', 'warp']);
    assert.equal(bad.status, 2);
    assert.equal(bad.stderr, 'lightagent probe: --mode must be fast, slow or off, not "warp"\n');
    const text = probe(['--name', 'plain']);
    assert.equal(text.stdout, 'name=plain\n', 'without --json the handler prints text');
  });

  it('positionals only where the command takes them', () => {
    const r = probe(['word']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /^lightagent probe: unexpected argument "word": this command takes options only\n\nUsage:/);
    assert.deepEqual(parsed(['a', '--name', 'n', 'b'], { PROBE_POSITIONALS: '1' }).positionals, ['a', 'b']);
  });

  it('an error the handler throws is printed with its code and hint, exit 2', () => {
    const r = probe(['--throw']);
    assert.equal(r.status, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^lightagent probe: the probe failed on purpose.*LA_ERR_RELOAD/s);
    assert.match(r.stderr, /do not pass --throw/);
  });
});

describe('duration flags', () => {
  it('parses a bare number as milliseconds and anything else as the config does', () => {
    assert.equal(parseDurationFlag('5000'), 5000);
    assert.equal(parseDurationFlag('5s'), 5000);
    assert.equal(parseDurationFlag('2m'), 120_000);
    assert.equal(parseDurationFlag('1h'), 3_600_000);
    assert.equal(parseDurationFlag('soon'), undefined);
    assert.equal(parseDurationFlag('-1'), undefined);
    assert.equal(parseDurationFlag('9'.repeat(30)), undefined, 'beyond a safe integer');
  });
  it('formats bounds the way a person types them', () => {
    assert.deepEqual([1, 100, 1000, 1500, 60_000, 600_000, 3_600_000].map(formatDurationFlag), [
      '1ms',
      '100ms',
      '1s',
      '1500ms',
      '1m',
      '10m',
      '1h',
    ]);
  });
});
