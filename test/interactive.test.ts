// The interactive cleanup as an administrator meets it: a real pseudo-terminal (util-linux
// `script`), keys typed at @clack/prompts, on a model node (test/support/interactive-node.ts).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { PROJECT, tempDir, test } from './harness.ts';
import { buildBundle } from './tools/build.ts';

const stripAnsi = (text: string) => text.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, '');

/** pve-dm (or the module given) on a terminal: read what it shows, type keys, and see what became of the node. */
function terminal(module = '', env: NodeJS.ProcessEnv = {}) {
  const out = path.join(tempDir('pve-dm-tty-'), 'state.json');
  // A terminal of a real size (a fresh pseudo-terminal has none), then pve-dm on it.
  const command = `stty cols 200 rows 60; exec ${process.execPath} --import tsx test/support/interactive-node.ts ${out} ${module}`;
  const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], { cwd: PROJECT, env: { ...process.env, NO_COLOR: '1', COLUMNS: '200', LINES: '60', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let screen = '';
  child.stdout.on('data', (chunk) => (screen += stripAnsi(chunk.toString())));
  child.stderr.on('data', (chunk) => (screen += stripAnsi(chunk.toString())));
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  return {
    screen: () => screen,
    async waitFor(text: string, ms = 20_000) {
      const started = Date.now();
      while (!screen.includes(text)) {
        if (Date.now() - started > ms) {
          child.kill('SIGKILL');
          throw new Error(`"${text}" never shown; the screen:\n${screen.slice(-3000)}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async type(keys: string) {
      child.stdin.write(keys);
      await new Promise((resolve) => setTimeout(resolve, 300));
    },
    async finish(): Promise<{ code: number; changes: string[]; devices: string[]; journal: { kind?: string; vmid: number; command: string[]; volumes: string[]; outcome?: string }[]; config100: string }> {
      await exited;
      return JSON.parse(readFileSync(out, 'utf8'));
    },
  };
}

const ENTER = '\r';
const SPACE = ' ';
const CTRL_C = '\u0003';
const ESCAPE = '\u001b';

test('picks shown with who and where; open and running ones cannot be picked; confirm runs exactly the summary', async () => {
  const tty = terminal();
  await tty.waitFor('Entries to fix or remove');
  assert.match(tty.screen(), /tombstone  pve-vm--889--disk--0 \(VMID 889 \(no config on any node\) · pve\/vm-889-disk-0 · guest-missing · open 1 · cannot: open 1 time\(s\)\)/);
  assert.match(tty.screen(), /tombstone  pve-vm--100--disk--7 \(VM 100 web on pve1 · pve\/vm-100-disk-7 · volume-unreferenced · open 0\)/);
  await tty.type(' '); // the first (the duplicate) is picked by default: leave it
  await tty.type(ENTER);
  await tty.waitFor('Run these 5 command(s)?');
  assert.ok(!tty.screen().split('Run these')[1]?.includes('ssd--ha01-vm--119--disk--0-dup'), 'the unpicked entry is not in the summary');
  await tty.type('y');
  await tty.type(ENTER);
  await tty.waitFor('5 removed, 0 skipped, 0 failed');
  const node = await tty.finish();
  assert.equal(node.changes, [
    'dmsetup --manglename none remove pve-vm--150--disk--0p1', 'lvchange -an pve/vm-100-disk-7', 'lvchange -an pve/vm-888-disk-0',
    // Open only through its partition, removed just before: pickable, and taken after it.
    'lvchange -an pve/vm-150-disk-0', 'dmsetup --manglename none remove ssd--ha01-vm--301--disk--0',
  ]);
  assert.ok(node.devices.includes('ssd--ha01-vm--119--disk--0-dup'));
}, 60_000);

test('Ctrl-C at the pick: nothing is done', async () => {
  const tty = terminal();
  await tty.waitFor('Entries to fix or remove');
  await tty.type(CTRL_C);
  await tty.waitFor('Cancelled: nothing was changed.');
  const node = await tty.finish();
  assert.equal(node.changes, []);
  assert.is(node.code, 2, 'the exit code still says what was found');
}, 60_000);

test('Escape at the confirmation, or answering no: nothing is done', async () => {
  for (const key of [ESCAPE, 'n']) {
    const tty = terminal();
    await tty.waitFor('Entries to fix or remove');
    await tty.type(ENTER);
    await tty.waitFor('Run these 6 command(s)?');
    await tty.type(key);
    if (key === 'n') await tty.type(ENTER);
    await tty.waitFor('Cancelled: nothing was changed.');
    assert.equal((await tty.finish()).changes, [], JSON.stringify(key));
  }
}, 90_000);

test('the bundle, with @clack/prompts compiled when first used: pick, confirm, answer no', async () => {
  const { file } = await buildBundle(path.join(tempDir('pve-dm-bundle-'), 'dist'));
  const tty = terminal(file);
  await tty.waitFor('Entries to fix or remove');
  await tty.type(ENTER);
  await tty.waitFor('Run these 6 command(s)?');
  await tty.type('n');
  await tty.type(ENTER);
  await tty.waitFor('Cancelled: nothing was changed.');
  assert.equal((await tty.finish()).changes, []);
}, 90_000);

test('the rescan offer: nothing picked by default; picked, qm disk rescan runs (journalled), and no entry is removed unless picked too', async () => {
  const tty = terminal('', { FAKE_NODE_THIN: '1' });
  await tty.waitFor('Orphan LVs to attach to their guests as unused disks (rescan; nothing is removed)');
  assert.match(tty.screen(), /qm disk rescan --vmid 100 \(pve\/vm-100-disk-7\)/);
  await tty.type(SPACE);
  await tty.type(ENTER);
  await tty.waitFor('Entries to fix or remove');
  await tty.type(CTRL_C);
  await tty.waitFor('Cancelled: no entry was removed.');
  await tty.waitFor('rescanned  VMID 100  (qm disk rescan --vmid 100)');
  const node = await tty.finish();
  assert.equal(node.changes, ['qm disk rescan --vmid 100']);
  assert.equal(node.journal.filter((line) => line.kind === 'rescan').map((line) => [line.vmid, line.command.join(' '), line.volumes, line.outcome ?? 'before']), [
    [100, 'qm disk rescan --vmid 100', ['pve/vm-100-disk-7'], 'before'],
    [100, 'qm disk rescan --vmid 100', ['pve/vm-100-disk-7'], 'rescanned'],
  ]);
  assert.match(node.config100, /^unused0: local-lvm:vm-100-disk-7$/m);
}, 60_000);

test('conflicts come first, each with its remedy; a guest VG\'s one command is shown once and run once', async () => {
  const tty = terminal('', { FAKE_NODE: 'conflicts' });
  await tty.waitFor('Entries to fix or remove');
  const shown = tty.screen();
  const order = ['CONFLICT  pve-vm--101--disk--0p1', 'CONFLICT  vg--archlinux-root', 'CONFLICT  san01-vm--201--disk--0', 'tombstone  pve-vm--888--disk--0'];
  const places = order.map((label) => shown.indexOf(label));
  assert.ok(places.every((place, i) => place >= 0 && (i === 0 || place > (places[i - 1] ?? 0))), `in order: ${places.join(', ')}`);
  assert.match(shown, /CONFLICT  san01-vm--202--disk--0 \(VM 202 on pve1 · san01\/vm-202-disk-0 · stale-table · open 1 · cannot: open 1 time\(s\)\)/);
  await tty.type(ENTER);
  await tty.waitFor('Run these 5 command(s)?');
  const summary = tty.screen().split('Run these')[1] ?? '';
  assert.is(summary.split('vgchange').length - 1, 1, 'the guest VG\'s command once');
  assert.match(summary, /lvchange --refresh san01\/vm-201-disk-0/);
  await tty.type('y');
  await tty.type(ENTER);
  await tty.waitFor('5 removed, 1 refreshed, 0 skipped, 0 failed');
  const node = await tty.finish();
  assert.equal(node.changes, [
    'dmsetup --manglename none remove pve-vm--101--disk--0p1', 'dmsetup --manglename none remove pve-vm--101--disk--0p2',
    "vgchange --config devices { scan_lvs = 1 } -an vg-archlinux", 'lvchange --refresh san01/vm-201-disk-0', 'lvchange -an pve/vm-888-disk-0',
  ]);
}, 60_000);

test.run();
