#!/usr/bin/env node
// Runs every test/**/*.test.ts in its own process (uvu under tsx) and prints one closing line,
// `N passed, N failed`. uvu prints no such line and exits 0 when a file runs nothing or dies on
// import, so each file's own totals are read and checked here:
// - a file that exits non-zero, prints no totals, or runs no test counts as a failure;
// - a file that runs longer than FILE_TIMEOUT_MS is killed and counts as a failure
//   (each test has its own time limit too: test/harness.ts).
// A property-based test's `[fuzz] <property>: N cases` lines (and `[limits]` measures) are shown
// under its file's line.
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const FILE_TIMEOUT_MS = Number(process.env.PVE_DM_TEST_FILE_TIMEOUT_MS ?? 300_000);
const root = path.dirname(fileURLToPath(import.meta.url));
const only = process.argv.slice(2);
const files = readdirSync(root, { recursive: true })
  .map(String)
  .filter((file) => file.endsWith('.test.ts') && !file.startsWith('kernel/'))
  .filter((file) => only.length === 0 || only.some((pattern) => file.includes(pattern)))
  .sort();

// What the tests need beyond Node and npm (OpenSSH for the cluster test), installed when missing.
if (files.some((file) => file.startsWith('cluster'))) spawnSync(path.join(root, 'support', 'prerequisites.sh'), { stdio: 'inherit' });

const stripAnsi = (text) => text.replace(/\u001b\[[0-9;]*[A-Za-z]/g, '');

function runFile(file) {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(root, file)], {
      cwd: path.dirname(root),
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const timer = setTimeout(() => {
      output += `\n[run] killed after ${FILE_TIMEOUT_MS} ms\n`;
      child.kill('SIGKILL');
    }, FILE_TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const text = stripAnsi(output);
      const number = (label) => Number(new RegExp(`^\\s*${label}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? NaN);
      const total = number('Total');
      const passed = number('Passed');
      const skipped = number('Skipped');
      let failed = Number.isNaN(total) ? 0 : total - passed - (Number.isNaN(skipped) ? 0 : skipped);
      const problems = [];
      if (Number.isNaN(total)) problems.push('printed no totals (died on import?)');
      else if (total === 0) problems.push('ran no test');
      if (skipped > 0) problems.push(`${skipped} skipped test(s): a skipped test is a defect`);
      if (code !== 0 || signal) problems.push(`exited ${signal ?? code}`);
      if (problems.length > 0 && failed === 0) failed = 1;
      resolve({ file, passed: Number.isNaN(passed) ? 0 : passed, failed, problems, text, ms: Date.now() - started });
    });
  });
}

const started = Date.now();
const results = [];
const queue = [...files];
const workers = Array.from({ length: Math.max(1, Math.min(os.availableParallelism?.() ?? 2, 4)) }, async () => {
  while (queue.length > 0) {
    const result = await runFile(queue.shift());
    results.push(result);
    const status = result.problems.length > 0 || result.failed > 0 ? 'FAIL' : 'ok  ';
    process.stdout.write(`${status} ${result.file}  ${result.passed} passed, ${result.failed} failed  (${result.ms} ms)\n`);
    // What each property ran (test/support/fuzz.ts) and what the limits cost: figures a run can quote.
    if (status === 'ok  ') for (const line of result.text.match(/^\[(?:fuzz|limits)\] .*$/gm) ?? []) process.stdout.write(`     ${line}\n`);
    if (status === 'FAIL') {
      process.stdout.write(`${result.problems.map((p) => `     ${p}\n`).join('')}${result.text.split('\n').map((l) => `     | ${l}`).join('\n')}\n`);
    }
  }
});
await Promise.all(workers);

const passed = results.reduce((sum, r) => sum + r.passed, 0);
const failed = results.reduce((sum, r) => sum + r.failed, 0) + (files.length === 0 ? 1 : 0);
if (files.length === 0) process.stdout.write('no test files found\n');
process.stdout.write(`\n${files.length} files in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exitCode = failed > 0 ? 1 : 0;
