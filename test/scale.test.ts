// The generated captures of the benchmark (test/tools/gen-capture.ts): deterministic, and every
// entry classified as the generator made it. Speed itself is measured by `npm run bench`, never here.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { classify, grade, parse } from '../pve-dm.ts';
import { generateCapture } from './tools/gen-capture.ts';
import { PROJECT, runCli, tempDir, test } from './harness.ts';

const analyse = (guests: number, seed = 1) => {
  const generated = generateCapture({ guests, seed });
  const classification = classify(parse(generated.capture));
  return { generated, classification, graded: grade(classification) };
};

test('the same seed gives the same capture, byte for byte; another seed another one', () => {
  const a = generateCapture({ guests: 200 });
  const b = generateCapture({ guests: 200 });
  const c = generateCapture({ guests: 200, seed: 2 });
  assert.equal(a, b);
  assert.is.not(a.capture.dmsetupInfo, c.capture.dmsetupInfo);
});

for (const guests of [50, 500]) {
  test(`${guests} guests: every entry gets the status the generator gave it`, () => {
    const { generated, classification, graded } = analyse(guests);
    assert.equal(graded.summary, generated.expected);
    assert.equal(classification.warnings, [], 'a generated capture is well formed');
    assert.is(classification.guests.length, guests);
  });
}

test('500 guests hold every kind of entry a real node has, each with its own reason', () => {
  const { classification, generated } = analyse(500);
  const reasons = new Set(classification.entries.map((entry) => entry.reason));
  for (const reason of [
    'referenced', 'snapshot-in-config', 'duplicate-name', 'duplicate-table', 'lv-missing', 'guest-on-other-node', 'guest-missing', 'volume-unreferenced',
    'lvm-internal', 'not-guest-volume', 'multipath', 'crypt', 'ceph-osd', 'partition', 'saferemove-in-flight',
  ]) assert.ok(reasons.has(reason as never), `no ${reason} entry`);
  const kinds = new Set(classification.entries.map((entry) => entry.kind));
  for (const kind of ['disk', 'cloudinit', 'state', 'snapshot']) assert.ok(kinds.has(kind as never), `no ${kind} volume`);
  assert.ok(classification.guests.some((guest) => guest.template) && classification.guests.some((guest) => guest.type === 'lxc'));
  assert.ok(generated.expected.entries > 3.4 * 500, `about four entries a guest: ${generated.expected.entries}`);
});

test('npm run gen-capture writes a capture pve-dm reads back to the same result', async () => {
  const out = path.join(tempDir(), 'capture');
  const made = spawnSync(process.execPath, ['--import', 'tsx', path.join(PROJECT, 'test/tools/gen-capture.ts'), '--guests', '50', '--out', out], { encoding: 'utf8' });
  assert.is(made.status, 0, made.stderr);
  const { generated, graded } = analyse(50);
  assert.is(made.stdout, `${out}: 50 guests, ${generated.expected.entries} dm entries (${generated.expected.valid} valid, ${generated.expected.duplicate} duplicate, ${generated.expected.tombstone} tombstone, ${generated.expected.ignored} ignored, ${generated.expected.orphanLvs} orphan LVs)\n`);
  const run = await runCli(['--root', out, '--report-only', '--json']);
  const report = JSON.parse(run.stdout);
  assert.equal(report.summary, generated.expected);
  assert.is(run.code, graded.exitCode);
  const usage = spawnSync(process.execPath, ['--import', 'tsx', path.join(PROJECT, 'test/tools/gen-capture.ts'), '--guests', '0'], { encoding: 'utf8' });
  assert.is(usage.status, 64);
  assert.is(usage.stderr, 'usage: npm run gen-capture -- --guests N --out DIR [--seed N]\n');
});

test.run();
