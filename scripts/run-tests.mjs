#!/usr/bin/env node
// Runs every compiled test file (build/test/**/*.test.js, or under the folders given) with node:test.
// Node 20 has no glob support in `node --test`, so the file list is built here.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const roots = process.argv.slice(2).length ? process.argv.slice(2) : ['test'];
const files = [];
function walk(dir) {
  if (!fs.existsSync(dir)) return;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.name.endsWith('.test.js')) files.push(p);
  }
}
for (const r of roots) walk(path.join('build', r));
files.sort();
if (files.length === 0) {
  process.stderr.write(`no test files under ${roots.map((r) => path.join('build', r)).join(', ')}\n`);
  process.exit(1);
}
// --test-timeout bounds each file as a whole (Node 20). The QEMU guests of test/e2e take 5-7 minutes
// with the image cached, plus a debootstrap of 2.5-12 minutes on a first run: they get their own bound.
const E2E_TIMEOUT_MS = 3_600_000;
const isE2e = (f) => f.split(path.sep).includes('e2e');
let status = 0;
for (const [group, timeout] of [
  [files.filter((f) => !isE2e(f)), 300_000],
  [files.filter(isE2e), E2E_TIMEOUT_MS],
]) {
  if (group.length === 0) continue;
  const args = ['--test', '--test-concurrency=1', `--test-timeout=${timeout}`];
  if (process.env.TEST_REPORTER) args.push(`--test-reporter=${process.env.TEST_REPORTER}`);
  const r = spawnSync(process.execPath, [...args, ...group], { stdio: 'inherit' });
  if (r.status !== 0) status = r.status ?? 1;
}
process.exit(status);
