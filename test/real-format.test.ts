// What a real kernel's dmsetup and LVM printed (test/fixtures/real, made by test/kernel/make-fixtures.sh
// under qemu): every line parses, and the whole node classifies as an administrator would expect.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { classify, mangleDmName, mapsLv, parse, parseDmsetupInfo, parseDmsetupTable, parseLvs, type Capture, type LogicalVolume } from '../pve-dm.ts';
import { lvmDmName } from './support/lvm.ts';
import { capture, config, REAL, test } from './harness.ts';

const read = (dir: string, file: string) => readFileSync(path.join(REAL, dir, file), 'utf8');

test('an empty node: dmsetup prints "No devices found", lvs prints nothing', () => {
  assert.equal(parseDmsetupInfo(read('empty', 'dmsetup.txt')), { entries: [], warnings: [] });
  assert.equal(parseDmsetupTable(read('empty', 'dmsetup-table.txt')).tables.size, 0);
  assert.equal(parseLvs(read('empty', 'lvs.txt')).lvs.size, 0);
});

test('every real dmsetup info line parses, names the kernel holds raw (spaces, $) or mangled (|, UTF-8) included', () => {
  const text = read('full', 'dmsetup.txt');
  const { entries, warnings } = parseDmsetupInfo(text);
  assert.equal(warnings, []);
  assert.is(entries.length, text.trim().split('\n').length);
  const byName = new Map(entries.map((e) => [e.name, e]));
  // Two kernel names dmsetup's default mode shows alike: two entries, each known by its own name.
  assert.equal(byName.get('odd\\x20name\\x24x')?.realName, 'odd name$x');
  assert.equal(byName.get('odd name$x')?.realName, 'odd name$x');
  assert.is(mangleDmName('odd\\x20name\\x24x'), 'odd\\x20name\\x24x', 'a mangled kernel name: dmsetup takes it as it is');
  assert.is(mangleDmName('odd name$x'), "$'odd\\x20name\\x24x'", 'a raw one: shown as the bash word that gives its bytes');
  assert.equal(byName.get('pipe\\x7cname')?.realName, 'pipe|name');
  assert.equal(byName.get('caf\\xc3\\xa9')?.realName, 'café');
  assert.equal(byName.get('pve-vm--100--disk--0')?.open, 2, 'held by a process and by its p1 partition');
  assert.match(byName.get('pve-data')?.uuid ?? '', /^LVM-[A-Za-z0-9]{64}-pool$/);
  assert.is(byName.get('pve-data')?.attr, 'L--r');
});

test('dmsetup\'s default mode refuses to list a node holding a raw name: pve-dm asks with --manglename none', () => {
  assert.is(read('full', 'dmsetup-default-mangling.rc'), '1\n');
  assert.is(read('full', 'dmsetup-default-mangling.txt'), '');
  assert.match(read('full', 'dmsetup-default-mangling.stderr'), /The name "odd name\$x" should be mangled but it contains blacklisted characters/);
  assert.is(read('full', 'dmsetup-table-default-mangling.rc'), '1\n');
});

test('every real dmsetup table line parses: trailing spaces, two segments, multipath, crypt', () => {
  const { tables, warnings } = parseDmsetupTable(read('full', 'dmsetup-table.txt'));
  assert.equal(warnings, []);
  assert.is(tables.get('prd--network--01--lun01--vg01-vm--113--disk--0'), '0 65536 linear 7:2 2048\n65536 32768 linear 7:2 83968');
  assert.is(tables.get('pve-data-tpool'), '0 1048576 thin-pool 254:2 254:3 128 0 0');
  assert.is(tables.get('odd\\x20name\\x24x'), '0 8 zero');
  assert.is(tables.get('odd name$x'), '0 16 zero');
  assert.match(tables.get('mpatha') ?? '', /^0 131072 multipath 1 queue_if_no_path/);
  assert.is(tables.size, parseDmsetupInfo(read('full', 'dmsetup.txt')).entries.length);
});

test('every real lvs line parses: hidden LVs, ceph tags, thin attrs', () => {
  const { lvs, warnings } = parseLvs(read('full', 'lvs.txt'));
  assert.equal(warnings, []);
  assert.is(lvs.get('pve', 'data_tdata')?.hidden, true);
  assert.is(lvs.get('pve', 'base-9000-disk-0')?.attr, 'Vri-a-tz-k');
  assert.ok(lvs.get('ceph-6a1f0a5c-7d2e-4f4b-9c39-2e1d5b0c9a11', 'osd-block-0b8a1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d')?.tags.includes('ceph.type=block'));
  assert.not.ok(lvs.has('ssd-ha01', 'vm-301-disk-0'), 'removed with --driverloaded n: LVM forgot it, dm kept it');
  assert.is(lvs.get('pve', 'vm-100-disk-0')?.pool, 'data');
  assert.is(lvs.get('ssd-ha01', 'vm-778-disk-0')?.attr, '-wi-------', 'made inactive (lvcreate -an)');
  // LVM's uuids as it prints them give the dm uuid of each LV's own mapping: LVM- + VG uuid + LV uuid.
  const dm = parseDmsetupInfo(read('full', 'dmsetup.txt')).entries;
  let mapped = 0;
  for (const lv of lvs.values()) {
    const entry = dm.find((e) => e.name === lvmDmName(lv.vg, lv.lv));
    if (entry === undefined || !entry.uuid.startsWith('LVM-') || entry.uuid.length !== 68 || lv.lv === 'vm-778-disk-0') continue;
    assert.is(mapsLv(lv, entry.uuid), true, `${lv.vg}/${lv.lv}`);
    mapped++;
  }
  assert.ok(mapped >= 20, `${mapped} LVs checked`);
  const stale = dm.find((e) => e.name === 'ssd--ha01-vm--778--disk--0')?.uuid ?? '';
  assert.is(mapsLv(lvs.get('ssd-ha01', 'vm-778-disk-0') as LogicalVolume, stale), false, 'the stale mapping has another uuid');
});

test('the real kernel\'s node, with Proxmox configs, classifies entry by entry', () => {
  const node: Capture = capture({
    hostname: 'pve1',
    dmsetupInfo: read('full', 'dmsetup.txt'),
    dmsetupTable: read('full', 'dmsetup-table.txt'),
    lvs: read('full', 'lvs.txt'),
    running: '100\n',
    storageCfg: [
      'lvmthin: local-lvm', '\tthinpool data', '\tvgname pve', '\tcontent rootdir,images', '',
      'lvm: SSD-HA01', '\tvgname ssd-ha01', '\tcontent images,rootdir', '\tshared 1', '\tsnapshot-as-volume-chain 1', '',
      'lvm: iscsi-lun1', '\tvgname prd-network-01-lun01-vg01', '\tcontent images', '\tshared 1', '',
    ].join('\n'),
    configs: [
      config(100, 'name: web\nefidisk0: local-lvm:vm-100-disk-1,size=4M\nide2: local-lvm:vm-100-cloudinit,media=cdrom\nparent: before-upgrade\nscsi0: local-lvm:vm-100-disk-0,size=32G\n\n[before-upgrade]\nscsi0: local-lvm:vm-100-disk-0,size=32G\nvmstate: local-lvm:vm-100-state-before-upgrade\n'),
      config(101, 'name: clone\nscsi0: local-lvm:vm-101-disk-0,size=8G\n'),
      config(9000, 'name: tmpl\ntemplate: 1\nscsi0: local-lvm:base-9000-disk-0,size=8G\n'),
      config(200, 'hostname: ct\nrootfs: local-lvm:vm-200-disk-0,size=16G\n', { type: 'lxc' }),
      config(113, 'name: db\nscsi0: iscsi-lun1:vm-113-disk-0,size=48M\n'),
      config(119, 'name: app\nscsi0: SSD-HA01:vm-119-disk-0,size=64M\n'),
      config(120, 'name: chain\nscsi0: SSD-HA01:vm-120-disk-0.qcow2,size=32M\n\n[snap1]\nscsi0: SSD-HA01:vm-120-disk-0.qcow2,size=32M\n'),
      config(121, 'name: wiped\nscsi0: local-lvm:vm-121-disk-1,size=8G\n'),
      config(300, 'name: moved\nscsi0: SSD-HA01:vm-300-disk-0,size=32M\n', { node: 'pve2' }),
    ],
  });
  const result = classify(parse(capture(node)));
  assert.equal(result.warnings, []);
  const got = Object.fromEntries(result.entries.map((e) => [e.name, `${e.status} ${e.reason}${e.remedy ? ` | ${e.remedy}` : ''}`]));
  assert.equal(got, {
    'caf\\xc3\\xa9': 'ignored foreign',
    'ceph--6a1f0a5c--7d2e--4f4b--9c39--2e1d5b0c9a11-osd--block--0b8a1c2d--3e4f--4a5b--8c6d--7e8f9a0b1c2d': 'ignored ceph-osd',
    'luks-data': 'ignored crypt',
    mpatha: 'ignored multipath',
    'mpatha-part1': 'ignored partition',
    'odd\\x20name\\x24x': 'ignored foreign',
    'odd name$x': 'ignored foreign',
    'pipe\\x7cname': 'ignored foreign',
    'prd--network--01--lun01--vg01-vm--113--disk--0': 'valid referenced',
    'prd--network--01--lun01--vg01-vm--113--disk--1': 'tombstone volume-unreferenced | qm disk rescan --vmid 113',
    'pve-base--9000--disk--0': 'valid referenced',
    'pve-data': 'ignored lvm-internal',
    'pve-data-tpool': 'ignored lvm-internal',
    'pve-data2': 'ignored lvm-internal',
    'pve-data2_tdata': 'ignored lvm-internal',
    'pve-data2_tmeta': 'ignored lvm-internal',
    'pve-data_tdata': 'ignored lvm-internal',
    'pve-data_tmeta': 'ignored lvm-internal',
    'pve-root': 'ignored not-guest-volume',
    'pve-snap_vm--100--disk--0_before--upgrade': 'valid snapshot-in-config',
    'pve-snap_vm--200--disk--0_vzdump': 'tombstone volume-unreferenced | lvchange -an pve/snap_vm-200-disk-0_vzdump',
    'pve-swap': 'ignored not-guest-volume',
    'pve-vm--100--cloudinit': 'valid referenced',
    'pve-vm--100--disk--0': 'valid referenced',
    'pve-vm--100--disk--0p1': 'conflict stacked-on-guest-volume | dmsetup remove pve-vm--100--disk--0p1',
    'pve-vm--100--disk--1': 'valid referenced',
    'pve-vm--100--state--before--upgrade': 'valid referenced',
    'pve-vm--101--disk--0': 'valid referenced',
    'pve-vm--200--disk--0': 'valid referenced',
    'ssd--ha01-del--vm--121--disk--0': 'ignored saferemove-in-flight',
    'ssd--ha01-snap_vm--120--disk--0_snap1.qcow2': 'valid snapshot-in-config',
    'ssd--ha01-vm--119--disk--0': 'valid referenced',
    'ssd--ha01-vm--119--disk--0-dup': 'duplicate duplicate-name | dmsetup remove ssd--ha01-vm--119--disk--0-dup',
    'ssd--ha01-vm--119--disk--0-real': 'ignored lvm-internal',
    // A classic LVM snapshot someone named like a guest volume. LVMPlugin list_images takes only LVs
    // of lv_type -, m, M, r or R, not this `s`: `qm disk rescan` would not attach it.
    'ssd--ha01-vm--119--snaptest': 'tombstone volume-unreferenced | lvchange -an ssd-ha01/vm-119-snaptest',
    'ssd--ha01-vm--119--snaptest-cow': 'ignored lvm-internal',
    'ssd--ha01-vm--120--disk--0.qcow2': 'valid referenced',
    // Held open by a process: no command would work as printed.
    'ssd--ha01-vm--300--disk--0': 'tombstone guest-on-other-node',
    'ssd--ha01-vm--301--disk--0': 'tombstone lv-missing | dmsetup remove ssd--ha01-vm--301--disk--0',
    // LVM knows vm-778-disk-0 but calls it inactive, and this mapping has another uuid: lvchange -an would do nothing.
    'ssd--ha01-vm--778--disk--0': 'tombstone lv-mismatch | dmsetup remove ssd--ha01-vm--778--disk--0',
    'ssd--ha01-vm--888--disk--0': 'tombstone guest-missing | dmsetup remove ssd--ha01-vm--888--disk--0',
  });
  assert.equal(result.duplicates.map((d) => [d.kept, d.extras]), [['ssd--ha01-vm--119--disk--0', ['ssd--ha01-vm--119--disk--0-dup']]]);
  assert.equal(result.guests.map((g) => `${g.vmid}:${g.health}`), ['100:conflict', '101:clean', '113:tombstone', '119:duplicate', '120:clean', '121:clean', '200:tombstone', '9000:clean']);
});

test.run();
