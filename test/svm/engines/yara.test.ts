/**
 * The yara engine (YARA-X through @litko/yara-x, an optional dependency that `npm ci` installs):
 * the engine conformance suite with an EICAR rule, hex patterns with conditions, rule errors
 * naming file and line (at start and on reload, which keeps the old rules), generations, the size
 * limit, a missing package (LA_ERR_ENGINE_UNAVAILABLE, and the SVM's other engines still start
 * without it), and a real SVM process with --engine yara judging a real `lightagent scan`,
 * reloading on SIGHUP.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError } from '../../../src/errors.js';
import { EngineLimitError } from '../../../src/svm/engines/engine.js';
import { EngineUnavailableError, YaraEngine, loadYaraModule, ruleNames } from '../../../src/svm/engines/yara.js';
import { loadSvmConfig } from '../../../src/svm/config.js';
import { CLI, inCi, run, spawnNode, startSvmProcess, SVM_CLI, tempDir, waitFor } from '../../helpers/procs.js';
import { EICAR_BYTES as EICAR, EICAR as EICAR_TEXT, noise } from '../../helpers/fixtures.js';
import { runEngineConformance } from './conformance.js';

/** Skip reason when the optional package is absent; under CI=true its absence fails instead. */
async function needYara(): Promise<string | undefined> {
  try {
    await loadYaraModule();
    return undefined;
  } catch (e) {
    if (inCi)
      throw new Error(`CI=true: the yara engine tests may not skip, and @litko/yara-x cannot be loaded: ${(e as Error).message}`, {
        cause: e,
      });
    process.stderr.write(`\n*** SKIPPING yara engine tests: ${(e as Error).message} ***\n\n`);
    return 'needs @litko/yara-x';
  }
}
const skip = await needYara();

const root = tempDir('la-yara-');
after(() => fs.rmSync(root, { recursive: true, force: true }));
let n = 0;
const write = (name: string, text: string, dir = root): string => {
  fs.mkdirSync(dir, { recursive: true });
  const f = path.join(dir, name);
  fs.writeFileSync(f, text);
  return f;
};
const freshDir = (): string => fs.mkdtempSync(path.join(root, `d${n++}-`));

/** A YARA text string for `s` (backslash and quote escaped). */
const yaraString = (s: string): string => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
const EICAR_RULE = `rule EICAR_Test_File {\n  meta:\n    description = "EICAR anti-virus test file"\n  strings:\n    $eicar = ${yaraString(EICAR_TEXT)}\n  condition:\n    $eicar\n}\n`;

/** A dozen rules of the usual kinds: text (nocase, wide), hex with jumps and wildcards, regexes. */
function dozenRules(): string {
  const out = [EICAR_RULE];
  for (let i = 0; i < 11; i++) {
    out.push(
      `rule Bench_${i} {\n  strings:\n    $t = "malware-marker-${i}" nocase wide ascii\n    $h = { 4D 5A ?? ?? 50 45 0${i % 10} [2-8] FF EE }\n    $r = /evil[0-9]{2,4}x${i}/\n  condition:\n    any of them\n}\n`,
    );
  }
  return out.join('\n');
}

runEngineConformance('yara', async () => YaraEngine.create({ rules: write('eicar.yar', EICAR_RULE) }), { skip });

describe('yara engine', { skip }, () => {
  it('names threats YARA.<file>.<rule> and judges a hex pattern with a condition (offset, filesize)', async () => {
    const f = write(
      'pe-ish.yara',
      `// a comment with rule Fake_Name in it\nrule Hex_At_Start : tag1 {\n  strings:\n    $mz = { 4D 5A [2-4] 50 45 00 00 }\n  condition:\n    $mz at 0 and filesize < 1KB\n}\n\nprivate rule Helper { strings: $x = "helper-bytes" condition: $x }\nrule Needs_Helper { condition: Helper and filesize > 100 }\n`,
    );
    const e = await YaraEngine.create({ rules: f });
    try {
      const pe = Buffer.concat([Buffer.from([0x4d, 0x5a, 0x90, 0x00, 0x50, 0x45, 0x00, 0x00]), Buffer.alloc(100)]);
      assert.deepEqual(await e.scan(pe), { infected: true, threat: 'YARA.pe-ish.Hex_At_Start' });
      assert.equal(
        (await e.scan(Buffer.concat([Buffer.from([0x4d, 0x5a, 0x90, 0x00, 0x00, 0x50, 0x45, 0x00, 0x00]), Buffer.alloc(10)]))).infected,
        true,
        'a jump of 3',
      );
      assert.equal(
        (await e.scan(Buffer.concat([Buffer.from([0x4d, 0x5a, 0x90, 0x00, 0x00, 0x00, 0x00, 0x50, 0x45, 0x00, 0x00])]))).infected,
        false,
        'a jump of 5 is beyond [2-4]',
      );
      assert.equal((await e.scan(Buffer.concat([Buffer.alloc(1), pe]))).infected, false, 'not at offset 0');
      assert.equal((await e.scan(Buffer.concat([pe, Buffer.alloc(2048)]))).infected, false, 'filesize over 1KB');
      assert.deepEqual(await e.scan(Buffer.concat([Buffer.from('helper-bytes'), Buffer.alloc(200)])), {
        infected: true,
        threat: 'YARA.pe-ish.Needs_Helper',
      });
      assert.equal(
        (await e.scan(Buffer.from('helper-bytes'))).infected,
        false,
        'the private rule alone is no detection; filesize too small',
      );
      assert.equal((await e.scan(EICAR)).infected, false, 'only its own rules: no built-in EICAR');
      assert.equal(e.ruleCount, 3);
    } finally {
      await e.close();
    }
  });

  it('loads a directory (.yar and .yara, sorted, other files ignored); each threat names its own file', async () => {
    const d = freshDir();
    write('a-eicar.yar', EICAR_RULE, d);
    write('b-text.yara', 'rule Text_Marker { strings: $a = "TEXT-MARKER-42" condition: $a }\n', d);
    write('README.txt', 'this is not a rule file {', d);
    write('.hidden.yar', 'this is not a rule either {', d);
    const e = await YaraEngine.create({ rules: d });
    try {
      assert.deepEqual(await e.scan(EICAR), { infected: true, threat: 'YARA.a-eicar.EICAR_Test_File' });
      assert.deepEqual(await e.scan(Buffer.from('xx TEXT-MARKER-42 yy')), { infected: true, threat: 'YARA.b-text.Text_Marker' });
      assert.deepEqual(await e.scan(Buffer.from('TEXT-MARKER-43')), { infected: false });
    } finally {
      await e.close();
    }
  });

  it('a broken rule file at start is a config error naming the file, line and column', async () => {
    const bad = write(
      'broken.yar',
      `rule Ok { condition: true }\n\nrule Broken {\n  strings:\n    $a = "x"\n  condition:\n    $a and\n}\n`,
    );
    await assert.rejects(YaraEngine.create({ rules: bad }), (err: unknown) => {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.code, 'LA_ERR_CONFIG');
      assert.match(err.message, new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:8:1: syntax error`));
      return true;
    });
    // In a directory, the bad file is named with its own line numbers, not the combined source's.
    const d = freshDir();
    write('a.yar', EICAR_RULE, d);
    const b = write('b.yar', `\n\nrule Also_Broken { strings: $a = { 4D ZZ } condition: $a }\n`, d);
    await assert.rejects(YaraEngine.create({ rules: d }), (err: unknown) => err instanceof ConfigError && err.message.includes(`${b}:3:`));
    // Valid alone, wrong together: one rule name in two files names the second file and its line.
    const d2 = freshDir();
    write('a.yar', EICAR_RULE, d2);
    const dup = write('b.yar', `rule Other { condition: false }\n${EICAR_RULE}`, d2);
    await assert.rejects(
      YaraEngine.create({ rules: d2 }),
      (err: unknown) =>
        err instanceof ConfigError && err.message.includes(`${dup}:2:`) && /duplicate rule `EICAR_Test_File`/.test(err.message),
    );
    // Missing path, empty directory, include (disabled: it would read any file into the log).
    await assert.rejects(
      YaraEngine.create({ rules: path.join(root, 'nope.yar') }),
      (err: unknown) => err instanceof ConfigError && /cannot read .*nope\.yar \(ENOENT\)/.test(err.message),
    );
    await assert.rejects(
      YaraEngine.create({ rules: freshDir() }),
      (err: unknown) => err instanceof ConfigError && /has no \.yar or \.yara files/.test(err.message),
    );
    const inc = write('inc.yar', `include "/etc/passwd"\nrule I { condition: true }\n`);
    await assert.rejects(
      YaraEngine.create({ rules: inc }),
      (err: unknown) =>
        err instanceof ConfigError && err.message.includes(`${inc}:1:1: include statements not allowed`) && !err.message.includes('root:'),
    );
  });

  it('reload: a new rule changes the generation and detects its pattern; a broken file keeps the old rules', async () => {
    const d = freshDir();
    write('eicar.yar', EICAR_RULE, d);
    const e = await YaraEngine.create({ rules: d });
    try {
      const g1 = e.generation();
      assert.match(g1, /^yara-[0-9a-f]{16}$/);
      const sample = Buffer.concat([noise(4096, 7), Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x13, 0x37]), noise(100, 8)]);
      assert.equal((await e.scan(sample)).infected, false);
      assert.equal(e.reload().generation, g1, 'same rules, same generation');
      const added = write('new.yar', 'rule New_Hex { strings: $h = { DE AD BE EF ?? 37 } condition: #h == 1 }\n', d);
      const r = e.reload();
      assert.notEqual(r.generation, g1);
      assert.equal(e.generation(), r.generation);
      assert.deepEqual({ files: r.files, rules: r.rules }, { files: 2, rules: 2 });
      assert.deepEqual(await e.scan(sample), { infected: true, threat: 'YARA.new.New_Hex' });
      const g2 = e.generation();
      // Broken on reload: an error naming file and line, and the rules in force stay.
      fs.writeFileSync(added, 'rule New_Hex { strings: $h = { DE AD BE EF ?? 37 } condition: #h == 1 }\nrule Oops { condition: $nope }\n');
      assert.throws(
        () => e.reload(),
        (err: unknown) => err instanceof ConfigError && err.message.includes(`${added}:2:`) && /unknown pattern `\$nope`/.test(err.message),
      );
      assert.equal(e.generation(), g2);
      assert.equal(e.healthy(), true);
      assert.equal((await e.scan(sample)).infected, true, 'old rules still judge');
      // An edit of an existing rule (same names) changes the generation too.
      fs.writeFileSync(added, 'rule New_Hex { strings: $h = { DE AD BE EF ?? 38 } condition: #h == 1 }\n');
      assert.notEqual(e.reload().generation, g2);
      assert.equal((await e.scan(sample)).infected, false);
    } finally {
      await e.close();
    }
  });

  it('refuses content over max_file_size with LA_ERR_ENGINE_LIMIT; is unhealthy and refuses scans once closed', async () => {
    const e = await YaraEngine.create({ rules: write('eicar2.yar', EICAR_RULE), maxFileSize: 1000 });
    await assert.rejects(
      e.scan(Buffer.alloc(1001)),
      (err: unknown) => err instanceof EngineLimitError && err.code === 'LA_ERR_ENGINE_LIMIT',
    );
    assert.equal((await e.scan(Buffer.concat([EICAR, Buffer.alloc(1000 - EICAR.length)]))).infected, true);
    await e.close();
    assert.equal(e.healthy(), false);
    await assert.rejects(e.scan(EICAR), /closed/);
  });

  it('scan time with a dozen rules: 1 MiB and 64 MiB (measured, bounded loosely)', async () => {
    const e = await YaraEngine.create({ rules: write('dozen.yar', dozenRules()), maxFileSize: 64 << 20 });
    try {
      const times: Record<string, number> = {};
      for (const [label, size] of [
        ['1MiB', 1 << 20],
        ['64MiB', 64 << 20],
      ] as const) {
        const content = Buffer.concat([crypto.randomBytes(size - EICAR.length), EICAR]);
        const t0 = performance.now();
        const r = await e.scan(content);
        times[label] = Math.round(performance.now() - t0);
        assert.equal(r.threat, 'YARA.dozen.EICAR_Test_File');
      }
      process.stderr.write(
        `yara scan time, 12 rules: 1 MiB ${times['1MiB']} ms, 64 MiB ${times['64MiB']} ms (blocks the event loop that long)\n`,
      );
      assert.ok(times['64MiB']! < 15_000, `64 MiB took ${times['64MiB']} ms`);
    } finally {
      await e.close();
    }
  });

  it('finds rule names for threat names past comments and strings', () => {
    assert.deepEqual(
      ruleNames(
        '/* rule A {} */ rule B { strings: $a = "rule C" condition: $a }\n// rule D\nprivate global rule E { condition: true }\nrule F:tag{condition:true}',
      ),
      ['B', 'E', 'F'],
    );
  });

  it('config: engine yara needs yara_rules; the flag key sets it', () => {
    const c = loadSvmConfig({ env: {}, flags: { tokens: ['a-long-token'], engine: 'yara', yara_rules: '/etc/lightagent/yara' } });
    assert.equal(c.engine, 'yara');
    assert.equal(c.yara_rules, '/etc/lightagent/yara');
    assert.throws(
      () => loadSvmConfig({ env: {}, flags: { tokens: ['a-long-token'], engine: 'yara' } }),
      (err: unknown) => err instanceof ConfigError && /yara_rules: engine yara needs its rules/.test(err.message),
    );
  });
});

describe('yara engine: package missing', () => {
  it('create() with a loader that cannot find the package: LA_ERR_ENGINE_UNAVAILABLE saying what to install', async () => {
    const load = async () => {
      try {
        return (await import('@litko/yara-x-not-there' as string)) as never;
      } catch (e) {
        throw new EngineUnavailableError(`cannot load (${(e as NodeJS.ErrnoException).code})`, 'install it', { cause: e });
      }
    };
    await assert.rejects(
      YaraEngine.create({ rules: '/nonexistent', load }),
      (err: unknown) => err instanceof EngineUnavailableError && err.code === 'LA_ERR_ENGINE_UNAVAILABLE',
    );
  });

  it('an SVM built without node_modules/@litko: engine yara exits 2 saying to install it; engine builtin starts and never needs it', async () => {
    // The compiled tree with a node_modules that has every package but @litko.
    const buildRoot = path.resolve(path.dirname(SVM_CLI), '../..');
    const tree = tempDir('la-yara-nopkg-');
    try {
      fs.symlinkSync(path.join(buildRoot, 'src'), path.join(tree, 'src'));
      fs.writeFileSync(path.join(tree, 'package.json'), JSON.stringify({ type: 'module' }));
      const realModules = path.resolve(buildRoot, '..', 'node_modules');
      fs.mkdirSync(path.join(tree, 'node_modules'));
      for (const name of fs.readdirSync(realModules)) {
        if (name === '@litko' || name === '.bin') continue;
        fs.symlinkSync(path.join(realModules, name), path.join(tree, 'node_modules', name));
      }
      // Symlinked src/ would resolve packages from its real path: copy instead.
      fs.rmSync(path.join(tree, 'src'));
      fs.cpSync(path.join(buildRoot, 'src'), path.join(tree, 'src'), { recursive: true });
      const cli = path.join(tree, 'src/cli/lightagent-svm.js');
      const rules = write('eicar-np.yar', EICAR_RULE);
      const r = run(
        process.execPath,
        [cli, '--listen', '127.0.0.1:0', '--token', 'test-token', '--engine', 'yara', '--yara-rules', rules],
        20_000,
      );
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /LA_ERR_ENGINE_UNAVAILABLE/);
      assert.match(r.stderr, /npm install @litko\/yara-x/);
      const p = spawnNode(cli, ['--listen', '127.0.0.1:0', '--token', 'test-token', '--json'], { watchdogMs: 30_000 });
      try {
        await waitFor(p, /"event":"listening".*"engine":"builtin"/);
      } finally {
        await p.stop();
      }
    } finally {
      fs.rmSync(tree, { recursive: true, force: true });
    }
  });
});

describe('lightagent-svm --engine yara: a real agent scan', { skip }, () => {
  let svm: Awaited<ReturnType<typeof startSvmProcess>>;
  const rulesDir = path.join(root, 'svm-rules');
  const tree = path.join(root, 'scan-tree');
  before(async () => {
    write('eicar.yar', EICAR_RULE, rulesDir);
    fs.mkdirSync(path.join(tree, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'sub/eicar.com'), EICAR_TEXT);
    fs.writeFileSync(path.join(tree, 'big.bin'), Buffer.concat([noise(2 << 20, 21), Buffer.from(EICAR_TEXT), noise(1000, 22)]));
    fs.writeFileSync(path.join(tree, 'marker.txt'), 'nothing to see: LATER-MARKER-77 here\n');
    fs.writeFileSync(path.join(tree, 'clean.txt'), 'hello\n');
    svm = await startSvmProcess(['--engine', 'yara', '--yara-rules', rulesDir]);
  });
  after(async () => {
    await svm?.stop();
  });
  const scan = () => {
    const r = run(process.execPath, [CLI, 'scan', '--svm', svm.url, '--token', 'test-token', '--json', '--no-cache', tree], 60_000);
    return { ...r, doc: r.stdout ? (JSON.parse(r.stdout) as { infected: { path: string; threat: string }[] }) : undefined };
  };

  it('detects EICAR (alone and inside a multi-chunk file) end to end', async () => {
    await waitFor(svm, /"event":"listening".*"engine":"yara".*"rules":1/);
    const r = scan();
    assert.equal(r.status, 1, r.stderr);
    const found = r.doc!.infected.map((i) => [path.relative(tree, i.path), i.threat]).sort();
    assert.deepEqual(found, [
      ['big.bin', 'YARA.eicar.EICAR_Test_File'],
      ['sub/eicar.com', 'YARA.eicar.EICAR_Test_File'],
    ]);
  });

  it('SIGHUP: a new rule is loaded and detects; a broken one is refused naming file and line, the SVM keeps serving', async () => {
    const g1 = /"generation":"(yara-[0-9a-f]+)"/.exec(svm.output())![1]!;
    write('later.yar', 'rule Later_Marker { strings: $m = "LATER-MARKER-77" condition: $m }\n', rulesDir);
    svm.child.kill('SIGHUP');
    const m = await waitFor(svm, /"event":"reloaded","generation":"(yara-[0-9a-f]+)"/);
    assert.notEqual(m[1], g1);
    const r = scan();
    assert.equal(r.status, 1, r.stderr);
    assert.ok(
      r.doc!.infected.some((i) => i.path.endsWith('marker.txt') && i.threat === 'YARA.later.Later_Marker'),
      JSON.stringify(r.doc),
    );
    const broken = write('zz-broken.yar', 'rule Broken {\n  condition:\n    filesize >\n}\n', rulesDir);
    const before = svm.output().length;
    svm.child.kill('SIGHUP');
    await waitFor(svm, /reload failed, keeping the previous signatures/);
    const said = svm.output().slice(before);
    assert.ok(said.includes(`${broken}:4:1`), said);
    const again = scan();
    assert.equal(again.status, 1);
    assert.equal(again.doc!.infected.length, 3, 'the rules in force still judge');
    fs.rmSync(broken);
  });

  it('a broken rule file at start: exit 2 naming the file and line', () => {
    const bad = write('start-broken.yar', 'rule X {\n  strings: $a = "x"\n  condition: $b\n}\n');
    const r = run(
      process.execPath,
      [SVM_CLI, '--listen', '127.0.0.1:0', '--token', 'test-token', '--engine', 'yara', '--yara-rules', bad],
      20_000,
    );
    assert.equal(r.status, 2);
    assert.match(r.stderr, /LA_ERR_CONFIG/);
    assert.ok(r.stderr.includes(`${bad}:3:`), r.stderr);
  });
});
