import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadAgentConfig, requireSvm } from '../../src/config/agent.js';
import { parseDuration, parseSize, formatBytes } from '../../src/config/units.js';
import { ConfigError } from '../../src/errors.js';
import { tempDir } from '../helpers/procs.js';

describe('units', () => {
  it('parses human sizes', () => {
    assert.equal(parseSize('64 MiB'), 64 * 1024 * 1024);
    assert.equal(parseSize('1.5 GB'), 1_500_000_000);
    assert.equal(parseSize('10k'), 10240);
    assert.equal(parseSize(42), 42);
    assert.equal(parseSize('12 parsecs'), undefined);
    assert.equal(parseSize(-1), undefined);
    assert.equal(parseSize('1e9'), undefined);
  });
  it('parses human durations', () => {
    assert.equal(parseDuration('2s'), 2000);
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration(2), 2000);
    assert.equal(parseDuration('soon'), undefined);
    // Found by the config fuzzer (seed 932450647): `deadline: 1e+308` became an Infinity deadline.
    assert.equal(parseDuration(1e308), undefined);
    assert.equal(parseDuration(Number.POSITIVE_INFINITY), undefined);
    assert.equal(parseDuration(Number.NaN), undefined);
    assert.equal(parseDuration('99999999999999999999d'), undefined);
    assert.equal(parseDuration(-1), undefined);
  });
  it('formats bytes', () => {
    assert.equal(formatBytes(512), '512 B');
    assert.equal(formatBytes(1536), '1.50 KiB');
  });
});

describe('agent config', () => {
  const dir = tempDir('la-cfg-');
  const write = (name: string, text: string) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, text);
    return f;
  };

  it('reads YAML with human units and applies defaults', () => {
    const f = write('a.yaml', 'svm: ws://127.0.0.1:7443\ntoken: t1\ndeadline: 500ms\nmax_file_size: 8 MiB\n');
    const c = loadAgentConfig({ file: f, env: {} });
    assert.equal(c.deadline, 500);
    assert.equal(c.max_file_size, 8 * 1024 * 1024);
    assert.equal(c.on_svm_unavailable, 'allow');
    assert.deepEqual(requireSvm(c), { svm: 'ws://127.0.0.1:7443', token: 't1' });
  });

  it('reports every problem at once, each with its key path', () => {
    const f = write(
      'b.yaml',
      'svm: http://x\ndeadline: soon\nmax_file_size: lots\non_svm_unavailable: maybe\nprotect: [relative/path]\nbogus: 1\n',
    );
    try {
      loadAgentConfig({ file: f, env: {} });
      assert.fail('should throw');
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      const keys = e.issues.map((i) => i.split(':')[0]);
      for (const k of ['svm', 'deadline', 'max_file_size', 'on_svm_unavailable', 'protect.0', '(top level)'])
        assert.ok(keys.includes(k), `missing ${k} in ${keys.join(',')}`);
      assert.match(e.message, /b\.yaml/);
      assert.equal(e.code, 'LA_ERR_CONFIG');
    }
  });

  it('lets the environment, then flags, override the file', () => {
    const f = write('c.yaml', 'svm: ws://file:1\ntoken: file-token\n');
    const c = loadAgentConfig({
      file: f,
      env: { LIGHTAGENT_SVM_URL: 'ws://env:2', LIGHTAGENT_TOKEN: 'env-token' },
      flags: { token: 'flag-token' },
    });
    assert.equal(c.svm, 'ws://env:2');
    assert.equal(c.token, 'flag-token');
  });

  it('names the file when it is not YAML, and when it is missing', () => {
    const f = write('d.yaml', 'svm: [unclosed\n');
    assert.throws(
      () => loadAgentConfig({ file: f, env: {} }),
      (e: unknown) => e instanceof ConfigError && e.message.includes('d.yaml'),
    );
    assert.throws(
      () => loadAgentConfig({ file: path.join(dir, 'nope.yaml'), env: {} }),
      (e: unknown) => e instanceof ConfigError && e.message.includes('nope.yaml'),
    );
  });

  it('refuses unknown YAML tags and alias bombs as errors naming the file, printing nothing itself', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      const tag = write('tag.yaml', 'svm: !!js/function "function(){}"\n');
      assert.throws(
        () => loadAgentConfig({ file: tag, env: {} }),
        (e: unknown) => e instanceof ConfigError && e.message.includes('tag.yaml') && e.issues.some((i) => /Unresolved tag/.test(i)),
      );
      const levels = [
        'a: &a [1,1,1,1,1,1,1,1,1]',
        ...'bcde'.split('').map((k, i) => `${k}: &${k} [${Array(9).fill(`*${'abcd'[i]}`).join(',')}]`),
      ];
      const bomb = write('bomb.yaml', `${levels.join('\n')}\n`);
      assert.throws(
        () => loadAgentConfig({ file: bomb, env: {} }),
        (e: unknown) => e instanceof ConfigError && e.message.includes('bomb.yaml'),
      );
      await new Promise((r) => setImmediate(r)); // process warnings are emitted on a later tick
    } finally {
      process.off('warning', onWarning);
    }
    assert.deepEqual(warnings, [], 'the yaml package emitted process warnings');
  });

  it('requires an SVM URL and a token for commands that talk to an SVM', () => {
    const c = loadAgentConfig({ env: {}, file: write('e.yaml', '{}') });
    assert.throws(
      () => requireSvm(c),
      (e: unknown) => e instanceof ConfigError && e.issues.length === 2,
    );
  });
});
