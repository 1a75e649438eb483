// Issue 19: cleanup of conflicts against a model node (test/support/fake-node.ts), through the real
// runner, journal, locks and re-checks. A stale table is refreshed from LVM's metadata, kpartx
// partitions and a guest's VG on the host go; `restore` puts back what was there, tables included.
import * as assert from 'uvu/assert';
import { readJournal } from '../pve-dm.ts';
import { at, conflicts, kvm } from './support/conflict-node.ts';
import { changing, put, type FakeNode } from './support/fake-node.ts';
import { lvmUuid } from './support/lvm.ts';
import { test } from './harness.ts';

const tables = (node: FakeNode) => Object.fromEntries([...node.dm].map(([name, d]) => [name, d.table]));
const SCAN_LVS = "vgchange --config devices { scan_lvs = 1 } -an vg-archlinux";

test('--yes fixes the conflicts first, each with its remedy, once each: partitions, the guest VG at once, the stale table refreshed', async () => {
  const { node, cli, journal, done } = conflicts();
  try {
    const before = tables(node);
    const run = await cli('--yes');
    assert.equal(changing(node.calls), [
      'dmsetup --manglename none remove pve-vm--101--disk--0p1',
      'dmsetup --manglename none remove pve-vm--101--disk--0p2',
      SCAN_LVS,
      'lvchange --refresh san01/vm-201-disk-0',
      'lvchange -an pve/vm-888-disk-0',
    ], run.stdout);
    assert.is(node.dm.get('san01-vm--201--disk--0')?.table, `0 32768 linear 8:16 ${at(10)}`, 'the table LVM\'s metadata describes');
    assert.is(node.dm.get('san01-vm--202--disk--0')?.table, before['san01-vm--202--disk--0'], 'a running guest\'s table is never refreshed');
    assert.is(node.dm.get('san01-vm--203--disk--0')?.table, before['san01-vm--203--disk--0'], 'nor a migrating guest\'s');
    for (const gone of ['pve-vm--101--disk--0p1', 'pve-vm--101--disk--0p2', 'vg--archlinux-root', 'vg--archlinux-swap', 'pve-vm--888--disk--0'])
      assert.not.ok(node.dm.has(gone), gone);
    assert.is(node.dm.get('pve-vm--101--disk--0')?.open, 0, 'VM 101\'s disk is free again');
    assert.is(node.dm.get('pve-vm--102--disk--0')?.open, 0, 'VM 102\'s disk is free again');
    const records = readJournal(journal);
    assert.equal(records.map((r) => [r.name, r.status, r.action, r.outcome]), [
      ['pve-vm--101--disk--0p1', 'conflict', 'dmsetup remove', 'removed'],
      ['pve-vm--101--disk--0p2', 'conflict', 'dmsetup remove', 'removed'],
      ['vg--archlinux-root', 'conflict', 'vgchange -an', 'removed'],
      ['vg--archlinux-swap', 'conflict', 'vgchange -an', 'removed'],
      ['san01-vm--201--disk--0', 'conflict', 'lvchange --refresh', 'refreshed'],
      ['pve-vm--888--disk--0', 'tombstone', 'lvchange -an', 'removed'],
    ]);
    assert.equal(node.journalAtChange, [1, 2, 4, 5, 6], 'both lines of the guest VG were on disk before its one command');
    assert.is(records[4]?.table, before['san01-vm--201--disk--0'], 'the old table, to put back');
    assert.match(run.stdout, /refreshed  san01-vm--201--disk--0 +\(lvchange --refresh san01\/vm-201-disk-0; journal \S+-5\)/);
    assert.match(run.stdout, /skipped  san01-vm--202--disk--0: open 1 time\(s\)/, 'its VM holds it');
    assert.match(run.stdout, /skipped  san01-vm--203--disk--0: VM 203 is locked \(migrate\)/);
    assert.match(run.stdout, /5 removed, 1 refreshed, 2 skipped, 0 failed; undo with: /);
    const after = JSON.parse((await cli('--json', '--report-only')).stdout);
    assert.is(after.summary.conflict, 2, 'VM 202 and VM 203 are left, with their advice');
  } finally {
    done();
  }
});

test('restore --last puts every entry back as it was: the mappings with their uuids, the old table loaded and resumed', async () => {
  const { node, cli, done } = conflicts();
  try {
    const before = tables(node);
    const uuids = Object.fromEntries([...node.dm].map(([name, d]) => [name, d.uuid]));
    await cli('--yes');
    node.calls = [];
    const restored = await cli('restore', '--last');
    assert.is(restored.code, 0, restored.stdout + restored.stderr);
    const calls = changing(node.calls);
    const load = calls.indexOf('dmsetup --manglename none load san01-vm--201--disk--0');
    assert.ok(load >= 0, calls.join('\n'));
    assert.is(calls[load + 1], 'dmsetup --manglename none resume san01-vm--201--disk--0');
    assert.equal(tables(node), before, 'every table is the one before the cleanup');
    for (const [name, uuid] of Object.entries(uuids)) assert.is(node.dm.get(name)?.uuid, uuid, name);
    assert.match(restored.stdout, /restored san01-vm--201--disk--0: its stale table again, which maps other blocks than LVM's metadata says/);
    assert.match(restored.stdout, /restored vg--archlinux-root\n/, 'no such word beside what was no stale table');
  } finally {
    done();
  }
});

test('restore of a refresh is refused while the device is open (its guest runs), and needs nothing when it holds the old table already', async () => {
  const { node, cli, done } = conflicts();
  try {
    await cli('--yes', '--only', 'conflicts');
    const device = node.dm.get('san01-vm--201--disk--0');
    if (device === undefined) throw new Error('vm-201 is gone');
    device.open = 1;
    node.calls = [];
    const refused = await cli('restore', '--last');
    assert.match(refused.stdout, /refused  san01-vm--201--disk--0: it is open 1 time\(s\): stop what holds it \(its guest\) first/);
    assert.not.ok(changing(node.calls).some((call) => call.includes('san01-vm--201')), 'no table loaded under it');
    assert.is(refused.code, 1);
    device.open = 0;
    device.table = `0 32768 linear 8:16 ${at(2)}`;
    node.calls = [];
    const again = await cli('restore', '--last');
    assert.match(again.stdout, /already  san01-vm--201--disk--0: back already as journalled \(same uuid and table\)/);
    assert.not.ok(changing(node.calls).some((call) => call.includes('san01-vm--201')), 'no table loaded again');
  } finally {
    done();
  }
});

test('--dry-run names each command and changes nothing; --only conflicts leaves the tombstone alone', async () => {
  const { node, cli, journal, done } = conflicts();
  try {
    const before = tables(node);
    const dry = await cli('--yes', '--dry-run');
    assert.equal(changing(node.calls), []);
    assert.equal(tables(node), before);
    // (Long lines are wrapped at 80 columns: read joined, a space where they broke.)
    assert.match(dry.stdout, /would refresh  san01-vm--201--disk--0 +\(lvchange --refresh san01\/vm-201-disk-0\)/);
    assert.match(dry.stdout, /would remove  vg--archlinux-root +\(vgchange --config 'devices \{ scan_lvs = 1 \}' -an vg-archlinux\)/);
    assert.match(dry.stdout, /would remove  vg--archlinux-swap +\(vgchange --config 'devices \{ scan_lvs = 1 \}' -an vg-archlinux\)/);
    assert.match(dry.stdout, /5 would be removed, 1 refreshed, 2 skipped, 0 failed/);
    assert.equal(readJournal(journal), [], 'a dry run journals nothing');
    await cli('--yes', '--only', 'conflicts');
    assert.ok(node.dm.has('pve-vm--888--disk--0'), 'the tombstone is not a conflict');
    assert.not.ok(changing(node.calls).some((call) => call.includes('888')));
  } finally {
    done();
  }
});

test('a guest VG is taken off whole or not at all: one LV picked alone, one open, one activated since the analysis', async () => {
  const one = conflicts();
  try {
    const run = await one.cli('--yes', '--name', 'vg--archlinux-root');
    assert.match(run.stdout, /skipped  vg--archlinux-root: it takes vg--archlinux-swap away too: select them as well/);
    assert.equal(changing(one.node.calls), []);
  } finally {
    one.done();
  }
  const open = conflicts((_, node) => Object.assign(node.dm.get('vg--archlinux-swap') ?? {}, { open: 1 }));
  try {
    const run = await open.cli('--yes', '--only', 'conflicts');
    assert.match(run.stdout, /skipped  vg--archlinux-swap: open 1 time\(s\)/);
    assert.match(run.stdout, /skipped  vg--archlinux-root: goes with vg--archlinux-swap, which cannot: open 1 time\(s\)/);
    assert.not.ok(changing(open.node.calls).some((call) => call.startsWith('vgchange')));
  } finally {
    open.done();
  }
  const late = conflicts();
  try {
    // Right before acting (its re-check), a third LV of the guest's VG appears.
    const exec = late.node.exec;
    late.node.exec = async (command, args, options) => {
      if (args.includes('info') && args.at(-1) === 'vg--archlinux-root' && !late.node.dm.has('vg--archlinux-home'))
        late.node.add('vg--archlinux-home', { uuid: lvmUuid('vg-archlinux', 'home'), table: '0 2048 linear 252:13 20480' });
      return exec(command, args, options);
    };
    const run = await late.cli('--yes', '--only', 'conflicts');
    assert.match(run.stdout, /skipped  vg--archlinux-root: it would take vg--archlinux-home away too, unchecked/);
    assert.not.ok(changing(late.node.calls).some((call) => call.startsWith('vgchange')));
    assert.equal(readJournal(late.journal).filter((r) => r.name.startsWith('vg--')), [], 'nothing journalled for it');
  } finally {
    late.done();
  }
});

test('a refresh that leaves the old table is a failure, journalled as one; its guest started meanwhile: skipped', async () => {
  const { cli, journal, done } = conflicts((_, n) => n.stubborn.add('san01-vm--201--disk--0'));
  try {
    const run = await cli('--yes', '--only', 'conflicts');
    assert.match(run.stdout, /FAILED   san01-vm--201--disk--0: lvchange --refresh san01\/vm-201-disk-0 succeeded, but the kernel's table is still not LVM's: "0 32768 linear 8:16 18432"/);
    assert.equal(readJournal(journal).find((r) => r.name === 'san01-vm--201--disk--0')?.outcome, 'failed');
  } finally {
    done();
  }
  const started = conflicts();
  try {
    const exec = started.node.exec;
    // VM 201 starts between the analysis and the refresh: its re-check sees it run.
    started.node.exec = async (command, args, options) => {
      if (args.includes('info') && args.at(-1) === 'san01-vm--201--disk--0') {
        put(started.root, 'run/qemu-server/201.pid', '4343\n');
        put(started.root, 'proc/4343/cmdline', kvm(201));
      }
      return exec(command, args, options);
    };
    const run = await started.cli('--yes', '--only', 'conflicts');
    assert.match(run.stdout, /skipped  san01-vm--201--disk--0: VM 201 is running/);
    assert.not.ok(changing(started.node.calls).some((call) => call.includes('--refresh')));
  } finally {
    started.done();
  }
});

test.run();
