import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError } from '../../src/errors.js';
import { loadSvmConfig } from '../../src/svm/config.js';
import { tempDir } from '../helpers/procs.js';

const dir = tempDir('la-svmcfg-');
const file = (name: string, text: string) => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
};
const issues = (fn: () => unknown): readonly string[] => {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    return e.issues;
  }
  assert.fail('expected a ConfigError');
};

describe('SVM config', () => {
  it('has defaults for everything but the tokens', () => {
    const c = loadSvmConfig({ env: {}, flags: { tokens: ['a-long-token'] } });
    assert.deepEqual(c.listen, { host: '127.0.0.1', port: 7443 });
    assert.deepEqual(c.tokens, [{ tenant: 'default', token: 'a-long-token' }]);
    assert.equal(c.engine, 'builtin');
    assert.deepEqual(c.signatures, []);
    assert.equal(c.max_file_size, 64 << 20);
    assert.equal(c.max_chunk, 1 << 20);
    assert.equal(c.max_in_flight, 32);
    assert.equal(c.upload_timeout, 30_000);
    assert.equal(c.hello_timeout, 5_000);
    assert.equal(c.upload_memory, 512 << 20);
    assert.equal(c.cache.entries, 1_000_000);
    assert.equal(c.log.level, 'info');
    assert.equal(c.insecure_plain_ws, false);
  });

  it('reads YAML with human sizes and durations, tenant tokens, and LIGHTAGENT_SVM_TOKEN', () => {
    const f = file(
      'svm.yaml',
      [
        'listen: "[::1]:9000"',
        'tokens:',
        '  - plain-token-1',
        '  - {tenant: acme, token: acme-token-1}',
        'signatures: [/x/a.hdb]',
        'max_file_size: 8 MiB',
        'upload_timeout: 1500ms',
        'hello_timeout: 2',
        'upload_memory: 1 GiB',
        'cache: {entries: 5000}',
        'log: {file: /tmp/svm.log, level: debug}',
      ].join('\n'),
    );
    const c = loadSvmConfig({ file: f, env: { LIGHTAGENT_SVM_TOKEN: 'from-the-env' } });
    assert.deepEqual(c.listen, { host: '::1', port: 9000 });
    assert.deepEqual(
      c.tokens.map((t) => t.tenant),
      ['default', 'acme', 'default'],
    );
    assert.equal(c.tokens[2]!.token, 'from-the-env');
    assert.equal(c.max_file_size, 8 << 20);
    assert.equal(c.upload_timeout, 1500);
    assert.equal(c.hello_timeout, 2000);
    assert.equal(c.upload_memory, 1 << 30);
    assert.equal(c.cache.entries, 5000);
    assert.deepEqual(c.log, { file: '/tmp/svm.log', level: 'debug' });
  });

  it('reports every problem at once with its key path', () => {
    const f = file('bad.yaml', 'listen: nowhere\ntokens: [short]\nmax_chunk: 10 MiB\nupload_timeout: soon\nengine: sophos\ncolour: blue\n');
    const list = issues(() => loadSvmConfig({ file: f, env: {} }));
    for (const key of ['listen', 'tokens.0.token', 'max_chunk', 'upload_timeout', 'engine'])
      assert.ok(
        list.some((i) => i.startsWith(`${key}:`)),
        `${key} in ${list.join(' | ')}`,
      );
    assert.ok(
      list.some((i) => i.includes('colour')),
      'unknown keys are named',
    );
  });

  it('needs at least one token, and one token per tenant', () => {
    assert.match(issues(() => loadSvmConfig({ env: {} })).join('\n'), /tokens: at least one tenant token/);
    assert.match(
      issues(() => loadSvmConfig({ env: {}, flags: { tokens: ['same-token-x', { tenant: 'b', token: 'same-token-x' }] } })).join('\n'),
      /tokens\.1: the same token/,
    );
  });

  it('refuses plain ws on a non-loopback address unless insecure_plain_ws is set', () => {
    assert.match(
      issues(() => loadSvmConfig({ env: {}, flags: { listen: '0.0.0.0:7443', tokens: ['a-long-token'] } })).join('\n'),
      /listen: 0\.0\.0\.0 is not a loopback address.*insecure_plain_ws/,
    );
    const c = loadSvmConfig({ env: {}, flags: { listen: '0.0.0.0:7443', tokens: ['a-long-token'], insecure_plain_ws: true } });
    assert.equal(c.listen.host, '0.0.0.0');
    assert.equal(loadSvmConfig({ env: {}, flags: { listen: 'localhost:0', tokens: ['a-long-token'] } }).listen.port, 0);
  });

  it('refuses an upload budget smaller than the largest file', () => {
    assert.match(
      issues(() => loadSvmConfig({ env: {}, flags: { tokens: ['a-long-token'], max_file_size: '1 GiB' } })).join('\n'),
      /upload_memory: .* less than max_file_size/,
    );
  });

  it('names a config file it cannot read', () => {
    assert.match(issues(() => loadSvmConfig({ file: path.join(dir, 'missing.yaml'), env: {} })).join('\n'), /cannot read the file/);
  });
});
