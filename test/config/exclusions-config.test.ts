/** `exclude:` in the agent's config file: the old list form, the mapping, flags, key-path errors. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadAgentConfig } from '../../src/config/agent.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../helpers/procs.js';

const dir = tempDir('la-cfg-ex-');
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
};

describe('agent config: exclude', () => {
  it('defaults to nothing excluded', () => {
    assert.deepEqual(loadAgentConfig({ env: {}, file: file('empty.yaml', 'deadline: 2s\n') }).exclude, {
      paths: [],
      extensions: [],
      processes: [],
      sha256: [],
      threats: [],
    });
  });
  it('the old list form still means paths', () => {
    const c = loadAgentConfig({ env: {}, file: file('old.yaml', 'exclude: [/srv/cache, /var/lib/postgresql]\n') });
    assert.deepEqual(c.exclude.paths, ['/srv/cache', '/var/lib/postgresql']);
    assert.deepEqual(c.exclude.processes, []);
  });
  it('the mapping, as in the docs', () => {
    const h = 'a'.repeat(64);
    const c = loadAgentConfig({
      env: {},
      file: file(
        'new.yaml',
        [
          'exclude:',
          '  paths: [/var/lib/postgresql/**, /srv/build/*.o]',
          '  extensions: [.log, TMP]',
          '  processes: [{path: /usr/bin/rsync, children: true}, /usr/sbin/mysqld]',
          `  sha256: [${h}]`,
          '  threats: [PUA.Win.Tool.*]',
          '',
        ].join('\n'),
      ),
    });
    assert.deepEqual(c.exclude, {
      paths: ['/var/lib/postgresql/**', '/srv/build/*.o'],
      extensions: ['.log', '.tmp'],
      processes: [
        { path: '/usr/bin/rsync', children: true },
        { path: '/usr/sbin/mysqld', children: false },
      ],
      sha256: [h],
      threats: ['PUA.Win.Tool.*'],
    });
  });
  it('--exclude replaces the paths only; the other kinds stay', () => {
    const f = file('flags.yaml', 'exclude:\n  paths: [/a]\n  extensions: [.log]\n');
    const c = loadAgentConfig({ env: {}, file: f, flags: { exclude: ['/b'] } });
    assert.deepEqual(c.exclude.paths, ['/b']);
    assert.deepEqual(c.exclude.extensions, ['.log']);
    const old = loadAgentConfig({ env: {}, file: file('flags-old.yaml', 'exclude: [/a]\n'), flags: { exclude: ['/c'] } });
    assert.deepEqual(old.exclude.paths, ['/c']);
  });
  it('every problem is listed with its key path', () => {
    const f = file(
      'bad.yaml',
      [
        'exclude:',
        '  paths: [relative, /ok, "/a/../b"]',
        '  processes: [{path: /x, children: maybe}]',
        '  sha256: [abc]',
        '  colour: red',
        '',
      ].join('\n'),
    );
    try {
      loadAgentConfig({ env: {}, file: f });
      assert.fail('accepted');
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      const text = e.issues.join('\n');
      for (const k of ['exclude.paths.0', 'exclude.paths.2', 'exclude.processes.0', 'exclude.sha256.0', 'exclude'])
        assert.match(text, new RegExp(`^${k.replaceAll('.', '\\.')}:`, 'm'), text);
      assert.doesNotMatch(text, /exclude\.paths\.1:/);
      assert.match(text, /colour/);
    }
    assert.throws(
      () => loadAgentConfig({ env: {}, file: file('bad-old.yaml', 'exclude: [relative/x]\n') }),
      /exclude\.paths\.0: .*absolute/,
    );
  });
});
