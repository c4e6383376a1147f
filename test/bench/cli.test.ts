/**
 * Every benchmark script that takes options answers --help and refuses an unknown option in one
 * line with exit 2 (bench/lib/cli.ts), before it starts, mounts or installs anything.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';

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
