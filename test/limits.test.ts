// Input far larger than any real node's is refused, or skipped with a warning, before it is read:
// a 200 MB dmsetup.txt, a config of a million lines, more guest configs than any cluster has, a
// FIFO where a file should be, a command that never stops printing. Memory stays bounded.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { classify, execProcess, LIMITS, parse, readCapture, UserError } from '../pve-dm.ts';
import { describeRun, PROJECT, refusedWith, runNode, SAMPLES, tempDir, test } from './harness.ts';

const MiB = 1024 * 1024;

function sampleCopy(): string {
  const dir = path.join(tempDir('pve-dm-limits-'), 'capture');
  cpSync(path.join(SAMPLES, 'default-install'), dir, { recursive: true });
  return dir;
}

/** A file of `bytes` bytes that takes no room on disk (sparse): reading it would cost the memory. */
function hugeFile(file: string, bytes: number): void {
  writeFileSync(file, '');
  truncateSync(file, bytes);
}

async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    assert.instance(error, UserError);
    return (error as Error).message;
  }
  throw new Error('not refused');
}

// The child reports its own peak RSS as it exits (as test/tools/bench.ts measures it).
const PEAK_RSS_HOOK = `data:text/javascript,${encodeURIComponent("import { writeFileSync } from 'node:fs'; process.on('exit', () => writeFileSync(process.env.TEST_PEAK_RSS_FILE, String(process.resourceUsage().maxRSS)));")}`;

test('a 200 MB dmsetup.txt is refused before it is read: one line naming the file, and memory stays bounded', async () => {
  const dir = sampleCopy();
  hugeFile(path.join(dir, 'dmsetup.txt'), 200 * MiB);
  const rssFile = path.join(tempDir(), 'peak-rss');
  const run = await runNode(['--import', PEAK_RSS_HOOK, '--import', 'tsx', path.join(PROJECT, 'pve-dm.ts'), '--root', dir, '--report-only'], { env: { TEST_PEAK_RSS_FILE: rssFile } });
  refusedWith(run, `capture ${dir}: cannot read dmsetup.txt: 200.0 MiB, more than the 64.0 MiB pve-dm reads (no node's is that large)`);
  const peakMiB = Number(readFileSync(rssFile, 'utf8')) / 1024;
  process.stdout.write(`\n[limits] peak RSS refusing a 200 MB dmsetup.txt: ${peakMiB.toFixed(0)} MiB\n`);
  // Node and tsx alone take about 100 MiB; reading the file would add at least its 200 MiB.
  assert.ok(peakMiB < 180, `peak RSS ${peakMiB.toFixed(0)} MiB: ${describeRun(run)}`);
}, 60_000);

test('an oversized storage.cfg and hostname are refused; an oversized optional file is not known, with a warning naming it', async () => {
  for (const name of ['etc/pve/storage.cfg', 'hostname']) {
    const dir = sampleCopy();
    hugeFile(path.join(dir, name), LIMITS.fileBytes + 1);
    assert.match(await refusal(readCapture(dir)), `cannot read ${name}: 1.0 MiB, more than the 1.0 MiB`);
  }
  const dir = sampleCopy();
  hugeFile(path.join(dir, 'lvs.txt'), 200 * MiB);
  hugeFile(path.join(dir, 'meta.json'), 2 * MiB);
  const capture = await readCapture(dir);
  assert.is(capture.lvs, null);
  assert.is(capture.meta, null);
  assert.equal(capture.warnings.map((w) => [w.source, w.line, w.message]), [
    ['lvs.txt', null, '200.0 MiB, more than the 64.0 MiB pve-dm reads (no node\'s is that large); not read, treated as not known'],
    ['meta.json', null, '2.0 MiB, more than the 1.0 MiB pve-dm reads (no node\'s is that large); not read, treated as not known'],
  ]);
});

test('a guest config of a million lines (2 MB) is not read: a warning names it and its guest\'s entries are not judged', async () => {
  const dir = sampleCopy();
  const file = 'etc/pve/nodes/pve/qemu-server/100.conf';
  writeFileSync(path.join(dir, file), 'a\n'.repeat(1_000_000));
  const capture = await readCapture(dir);
  const state = parse(capture);
  assert.ok(state.warnings.some((w) => w.source === file && w.message.startsWith('cannot read the guest config (1.9 MiB, more than the 1.0 MiB pve-dm reads')), JSON.stringify(state.warnings));
  const entries = classify(state).entries.filter((entry) => entry.vmid === 100);
  assert.ok(entries.length > 0 && entries.every((entry) => entry.reason === 'config-unreadable'), JSON.stringify(entries.map((e) => e.reason)));
});

test(`more guest configs than any cluster has (${LIMITS.guestConfigs + 1}) are refused before one is read`, async () => {
  const dir = sampleCopy();
  const folder = path.join(dir, 'etc/pve/nodes/pve9/qemu-server');
  mkdirSync(folder, { recursive: true });
  for (let vmid = 100_000; vmid <= 100_000 + LIMITS.guestConfigs; vmid++) writeFileSync(path.join(folder, `${vmid}.conf`), '');
  assert.match(await refusal(readCapture(dir)), /etc\/pve\/nodes holds 50\d{3} guest configs, more than the 50000 pve-dm reads \(no cluster has that many guests\)$/);
}, 60_000);

test('guest configs holding more than /etc/pve can (128 MiB) are refused', async () => {
  const dir = sampleCopy();
  const folder = path.join(dir, 'etc/pve/nodes/pve9/qemu-server');
  mkdirSync(folder, { recursive: true });
  for (let n = 0; n <= LIMITS.configBytes / LIMITS.fileBytes; n++) hugeFile(path.join(folder, `${1000 + n}.conf`), LIMITS.fileBytes);
  assert.match(await refusal(readCapture(dir)), /the guest configs in .*etc\/pve\/nodes hold more than 128\.0 MiB, more than \/etc\/pve can \(pmxcfs\)$/);
}, 60_000);

test('a FIFO or a folder where a capture file should be is refused at once, never waited on', async () => {
  const dir = sampleCopy();
  assert.is(spawnSync('mkfifo', [path.join(dir, 'dmsetup.txt.fifo')]).status, 0);
  spawnSync('mv', ['-f', path.join(dir, 'dmsetup.txt.fifo'), path.join(dir, 'dmsetup.txt')]);
  assert.match(await refusal(readCapture(dir)), /cannot read dmsetup\.txt: not a regular file$/);
  const other = sampleCopy();
  rmSync(path.join(other, 'lvs.txt'));
  mkdirSync(path.join(other, 'lvs.txt'));
  const capture = await readCapture(other);
  assert.equal(capture.warnings.map((w) => `${w.source}: ${w.message}`), ['lvs.txt: not a regular file; not read, treated as not known']);
}, 10_000);

test('a live command that never stops printing is stopped at the limit, with a clear message', async () => {
  const result = await execProcess('yes', [], { timeoutMs: 20_000 });
  assert.is.not(result.exitCode, 0);
  assert.ok(result.stdout.length <= LIMITS.commandOutputBytes, `${result.stdout.length} characters kept`);
  assert.is(result.stderr, 'printed more than 64.0 MiB, more than any node\'s; stopped');
}, 30_000);

test.run();
