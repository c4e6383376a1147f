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
const args = ['--test', '--test-concurrency=1', '--test-timeout=300000'];
if (process.env.TEST_REPORTER) args.push(`--test-reporter=${process.env.TEST_REPORTER}`);
const r = spawnSync(process.execPath, [...args, ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
