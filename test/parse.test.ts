// Every parser against a table of lines as Proxmox, LVM and dmsetup write them, odd cases included.
import * as assert from 'uvu/assert';
import {
  lvKey, parseDmsetupInfo, parseDmsetupTable, parseGuestConfig, parseGuestVolumeName, parseLvs, parsePveVersion,
  parseStorageCfg, splitLvmName, stripCopySuffix, unmangleDmName, volumesOfPropertyString,
} from '../pve-dm.ts';
import { config, test } from './harness.ts';
import { lvmDmName } from './support/lvm.ts';

test('splitLvmName: LVM\'s rule (single - separates, -- is a - inside a name)', () => {
  const table: [string, [string, string, string] | null][] = [
    ['pve-vm--100--disk--0', ['pve', 'vm-100-disk-0', '']],
    ['pve-root', ['pve', 'root', '']],
    ['pve-data_tdata', ['pve', 'data_tdata', '']],
    ['pve-data-tpool', ['pve', 'data', 'tpool']],
    ['ssd--ha01-vm--119--disk--0', ['ssd-ha01', 'vm-119-disk-0', '']],
    ['prd--network--01--lun01--vg01-vm--113--disk--0', ['prd-network-01-lun01-vg01', 'vm-113-disk-0', '']],
    ['pve-snap_vm--112--disk--0_before--upgrade', ['pve', 'snap_vm-112-disk-0_before-upgrade', '']],
    ['FC--XXX--01-vm--101--disk--0.qcow2', ['FC-XXX-01', 'vm-101-disk-0.qcow2', '']],
    ['ssd--ha01-vm--119--snaptest-cow', ['ssd-ha01', 'vm-119-snaptest', 'cow']],
    ['ssd--ha01-vm--169--disk--0-dup', ['ssd-ha01', 'vm-169-disk-0', 'dup']],
    ['vg-lv-layer-extra', ['vg', 'lv', 'layer']],
    ['mpatha', null],
    ['-bad', null],
    ['trailing-', null],
    ['a-b-', ['a', 'b-', '']],
  ];
  for (const [name, expected] of table) {
    const split = splitLvmName(name);
    assert.equal(split && [split.vg, split.lv, split.layer], expected, name);
  }
  assert.is(splitLvmName('ssd--ha01-vm--169--disk--0-dup')?.rest, 'vm-169-disk-0-dup');
});

test('LVM names built from any legal VG and LV name split back any legal VG and LV name', () => {
  const vgs = ['pve', 'ssd-ha01', 'a--b', 'x.y_z', 'v-', 'VG+1'];
  const lvs = ['vm-100-disk-0', 'snap_vm-1-disk-0_a-b', 'lv--', 'data', 'x-y-z', 'base-9000-disk-1.qcow2'];
  for (const vg of vgs) for (const lv of lvs) {
    const split = splitLvmName(lvmDmName(vg, lv));
    assert.equal([split?.vg, split?.lv, split?.layer], [vg, lv, ''], `${vg}/${lv}`);
  }
});

test('unmangleDmName: \\xNN escapes back to bytes (UTF-8)', () => {
  assert.is(unmangleDmName('odd\\x20name\\x24x'), 'odd name$x');
  assert.is(unmangleDmName('caf\\xc3\\xa9'), 'café');
  assert.is(unmangleDmName('plain-name'), 'plain-name');
  assert.is(unmangleDmName('broken\\xZZ'), 'broken\\xZZ');
});

test('parseDmsetupInfo: real lines, "No devices found", and malformed lines named by line number', () => {
  const text = [
    'pve-swap|252|0|2|L--w|LVM-Uv0zN6dKv1Lw3Ry9mG1zQ3f2p7cTnIkRWq7ueL3lA7xvZr2ZbT3dSv3xkeNYvQxN',
    'pve-data_tmeta|252|2|1|L--w|LVM-Uv0zN6dKv1Lw3Ry9mG1zQ3f2p7cTnIkRTwG8U1rh2ljXJ4mxQoGr6sqZ3iBpW1Lw-tmeta',
    'pve-data|252|5|0|L--r|LVM-Uv0zN6dKv1Lw3Ry9mG1zQ3f2p7cTnIkRTwG8U1rh2ljXJ4mxQoGr6sqZ3iBpW1Lw-pool',
    'ssd--ha01-vm--888--disk--0|252|12|0|L--w|',
    'odd\\x20name\\x24x|252|13|0|L--w|',
    'truncated|252',
    'x|a|b|c|L--w|',
    'susp|252|14|0|L-sw|',
    'inactive-only|252|15|0|-I-w|',
  ].join('\n');
  const { entries, warnings } = parseDmsetupInfo(`${text}\n`);
  assert.equal(entries.map((e) => [e.name, e.minor, e.open, e.attr, e.uuid.slice(-5)]), [
    ['pve-swap', 0, 2, 'L--w', 'YvQxN'], ['pve-data_tmeta', 2, 1, 'L--w', 'tmeta'], ['pve-data', 5, 0, 'L--r', '-pool'],
    ['ssd--ha01-vm--888--disk--0', 12, 0, 'L--w', ''], ['odd\\x20name\\x24x', 13, 0, 'L--w', ''], ['susp', 14, 0, 'L-sw', ''], ['inactive-only', 15, 0, '-I-w', ''],
  ]);
  assert.is(entries[4]?.realName, 'odd name$x');
  assert.equal(warnings.map((w) => [w.source, w.line]), [['dmsetup.txt', 6], ['dmsetup.txt', 7]]);
  assert.equal(parseDmsetupInfo('No devices found\n'), { entries: [], warnings: [] });
  assert.equal(parseDmsetupInfo('a|1|2|0|L--w|\r\nb|1|3|0|L--w|\r\n').entries.map((e) => e.name), ['a', 'b'], 'CRLF');
  assert.equal(parseDmsetupInfo('a|1|2|0|L--w|\na|1|3|0|L--w|\n').warnings.map((w) => [w.line, w.message]), [[2, 'device a listed twice; second line skipped']]);
  const notUtf8 = parseDmsetupInfo(`${Buffer.from([0x78, 0xff]).toString('utf8')}|252|1|0|L--w|\n`);
  assert.equal([notUtf8.entries, notUtf8.warnings.map((w) => [w.line, w.message])], [[], [[1, "bytes that are not UTF-8: the device's name cannot be known exactly; entry skipped"]]]);
});

test('parseDmsetupTable: one line per segment, empty tables, names with colons', () => {
  const text = [
    'pve-data-tpool: 0 29360128 thin-pool 252:2 252:3 128 0 1 skip_block_zeroing ',
    'pve-vm--100--disk--0: 0 67108864 thin 252:4 1',
    'raidish: 0 1024 linear 7:0 2048',
    'raidish: 1024 1024 linear 7:1 2048',
    'empty: ',
    'a:b: 0 8 zero',
    'garbage line without table',
  ].join('\n');
  const { tables, warnings } = parseDmsetupTable(`${text}\n`);
  assert.is(tables.get('pve-data-tpool'), '0 29360128 thin-pool 252:2 252:3 128 0 1 skip_block_zeroing');
  assert.is(tables.get('pve-vm--100--disk--0'), '0 67108864 thin 252:4 1');
  assert.is(tables.get('raidish'), '0 1024 linear 7:0 2048\n1024 1024 linear 7:1 2048');
  assert.is(tables.get('empty'), '');
  assert.is(tables.get('a:b'), '0 8 zero');
  assert.equal(warnings.map((w) => w.line), [7]);
});

test('parseLvs: leading spaces, hidden [sub-LVs], tags', () => {
  const text = [
    '  pve|data|twi-aotz--|',
    '  pve|[data_tdata]|Twi-ao----|',
    '  pve|[lvol0_pmspare]|ewi-------|',
    '  pve|base-9000-disk-0|Vri---tz-k|',
    '  ssd-ha01|vm-119-disk-0|-wi-ao----|pve-vm-119',
    '  san02|vm-120-disk-0.qcow2|-wi-a-----|pve-vm-120,@pve-vm-120-disk-0.qcow2',
    '  broken',
  ].join('\n');
  const { lvs, warnings } = parseLvs(`${text}\n`);
  assert.equal([...lvs.values()].map((lv) => lvKey(lv.vg, lv.lv)), ['pve/data', 'pve/data_tdata', 'pve/lvol0_pmspare', 'pve/base-9000-disk-0', 'ssd-ha01/vm-119-disk-0', 'san02/vm-120-disk-0.qcow2']);
  assert.is(lvs.get('pve', 'data_tdata')?.hidden, true);
  assert.equal(lvs.get('san02', 'vm-120-disk-0.qcow2')?.tags, ['pve-vm-120', '@pve-vm-120-disk-0.qcow2']);
  assert.equal(warnings.map((w) => w.line), [7]);
});

test('parseStorageCfg: as pve-storage writes it; unknown types and junk are named by line', () => {
  const text = [
    'dir: local', '\tpath /var/lib/vz', '\tcontent iso,vztmpl,backup', '',
    'lvmthin: local-lvm', '\tthinpool data', '\tvgname pve', '\tcontent rootdir,images', '',
    'iscsi: san-iscsi', '\tportal 10.0.0.5', '\ttarget iqn.2003-01.org.linux-iscsi.san:lun1', '\tcontent none', '',
    'LVM: SSD-HA01', '\tvgname ssd-ha01', '\tbase san-iscsi:0.0.1.scsi-36001405', '\tshared 1', '\tnodes pve1,pve2', '\tdisable', '',
    'foostore: custom', '\tpath /x', '',
    'not a line',
    'lvm: novg', '\tcontent images', '',
    'lvm: 1bad', '\tvgname x', '\tcontent images',
  ].join('\n');
  const { storages, warnings, notes } = parseStorageCfg(`${text}\n`);
  assert.equal(storages.map((s) => [s.id, s.type, s.vg]), [['local', 'dir', null], ['local-lvm', 'lvmthin', 'pve'], ['san-iscsi', 'iscsi', null], ['SSD-HA01', 'lvm', 'ssd-ha01'], ['custom', 'foostore', null], ['novg', 'lvm', null]]);
  const ssd = storages[3];
  assert.equal([ssd?.shared, ssd?.disabled, ssd?.nodes], [true, true, ['pve1', 'pve2']]);
  assert.is(storages[1]?.thinpool, 'data');
  assert.equal(warnings.map((w) => [w.line, w.message.split(' ').slice(0, 3).join(' ')]), [[25, 'cannot parse line:'], [26, 'lvm storage novg'], [29, 'invalid storage ID']], 'an invalid section is skipped whole');
  // A storage plugin's type is noted, not warned about: a healthy node with a plugin reads OK.
  assert.equal(notes.map((w) => [w.line, w.message]), [[22, 'storage custom has type "foostore", which pve-dm does not know (a storage plugin): guest volumes in a volume group no lvm or lvmthin storage names are not judged']]);
});

test('parseStorageCfg: a key given twice keeps the first, as SectionConfig does ("duplicate attribute"), with a warning', () => {
  // The oracle's minimal input: Proxmox reads VG pve; keeping the last made every volume storage-unknown.
  const { storages, warnings } = parseStorageCfg('lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tvgname other-pve\n');
  assert.equal(storages.map((s) => [s.id, s.vg, s.thinpool]), [['local-lvm', 'pve', 'data']]);
  assert.equal(warnings.map((w) => [w.line, w.message]), [[4, '"vgname" given twice in storage local-lvm; the first is kept, as Proxmox keeps it']]);
});

test('parseStorageCfg: content, tagged_only, nodes and disable as pve-storage reads them', () => {
  const { storages } = parseStorageCfg('lvm: a1\n\tvgname v1\n\tcontent images;rootdir\n\ttagged_only 1\n\tnodes n1,n2;n3 n4\n\tdisable\n\nlvmthin: t1\n\tvgname pve\n\tthinpool data\n');
  assert.equal(storages.map((s) => [s.id, s.content, s.taggedOnly, s.nodes, s.disabled]), [
    ['a1', ['images', 'rootdir'], true, ['n1', 'n2', 'n3', 'n4'], true],
    ['t1', null, false, null, false],
  ]);
});

test('parseGuestConfig (qemu): description, sections, drives, vmstate, fleecing, lock, template', () => {
  const text = [
    '#Web server%3A nginx',
    '#second line',
    'agent: 1',
    'boot: order=scsi0;ide2;net0',
    'cores: 2',
    'efidisk0: local-lvm:vm-100-disk-1,efitype=4m,pre-enrolled-keys=1,size=4M',
    'ide2: local-lvm:vm-100-cloudinit,media=cdrom',
    'ide0: none,media=cdrom',
    'ide1: local:iso/debian-13.iso,media=cdrom,size=700M',
    'lock: backup',
    'name: web01',
    'net0: virtio=BC:24:11:2A:3B:4C,bridge=vmbr0,firewall=1',
    'parent: before-upgrade',
    'scsi0: file=local-lvm:vm-100-disk-0,iothread=1,size=32G',
    'scsi1: /dev/disk/by-id/ata-SAMSUNG_1234,size=100G',
    'tpmstate0: local-lvm:vm-100-disk-2,size=4M,version=v2.0',
    'unused0: local-lvm:vm-100-disk-3',
    'virtio1: local-lvm:vm-100-disk-4,cache=writeback',
    'sata0: local-lvm:vm-100-disk-5,size=1G',
    '',
    '[PENDING]',
    'scsi2: local-lvm:vm-100-disk-6,size=8G',
    'delete: virtio1',
    '',
    '[special:fleecing]',
    'fleecing-images: local-lvm:vm-100-fleece-0,local-lvm:vm-100-fleece-1',
    '',
    '[before-upgrade]',
    'scsi0: local-lvm:vm-100-disk-0,iothread=1,size=32G',
    'snaptime: 1731000000',
    'vmstate: local-lvm:vm-100-state-before-upgrade',
    'runningmachine: pc-i440fx-9.2+pve1',
    '',
  ].join('\n');
  const { config: guest, warnings } = parseGuestConfig(config(100, text));
  assert.equal(warnings, []);
  assert.is(guest.name, 'web01');
  assert.is(guest.lock, 'backup');
  assert.equal(guest.snapshots, ['before-upgrade']);
  assert.equal(guest.refs.map((r) => [r.key, r.section, r.volume]), [
    ['efidisk0', 'current', 'local-lvm:vm-100-disk-1'],
    ['ide2', 'current', 'local-lvm:vm-100-cloudinit'],
    ['ide1', 'current', 'local:iso/debian-13.iso'],
    ['scsi0', 'current', 'local-lvm:vm-100-disk-0'],
    ['scsi1', 'current', '/dev/disk/by-id/ata-SAMSUNG_1234'],
    ['tpmstate0', 'current', 'local-lvm:vm-100-disk-2'],
    ['unused0', 'current', 'local-lvm:vm-100-disk-3'],
    ['virtio1', 'current', 'local-lvm:vm-100-disk-4'],
    ['sata0', 'current', 'local-lvm:vm-100-disk-5'],
    ['scsi2', 'pending', 'local-lvm:vm-100-disk-6'],
    ['fleecing-images', 'special:fleecing', 'local-lvm:vm-100-fleece-0'],
    ['fleecing-images', 'special:fleecing', 'local-lvm:vm-100-fleece-1'],
    ['scsi0', 'before-upgrade', 'local-lvm:vm-100-disk-0'],
    ['vmstate', 'before-upgrade', 'local-lvm:vm-100-state-before-upgrade'],
  ]);
  assert.is(parseGuestConfig(config(9000, 'template: 1\nscsi0: local-lvm:base-9000-disk-0,size=8G\n')).config.template, true);
});

test('parseGuestConfig (lxc): hostname, rootfs, mount points, bind mounts, [pve:pending], raw lxc keys', () => {
  const text = [
    'arch: amd64',
    'cores: 1',
    'hostname: ct200',
    'lxc.cgroup2.devices.allow: c 10:200 rwm',
    'mp0: local-lvm:vm-200-disk-1,mp=/srv/data,backup=1,size=16G',
    'mp1: /mnt/bindsrc,mp=/mnt/bind',
    'mp2: volume=local-lvm:vm-200-disk-2,mp=/x',
    'rootfs: local-lvm:vm-200-disk-0,size=8G',
    'unprivileged: 1',
    '',
    '[pve:pending]',
    'mp3: local-lvm:vm-200-disk-3,mp=/y',
    '',
    '[vzdump]',
    'rootfs: local-lvm:vm-200-disk-0,size=8G',
    'snapstate: prepare',
  ].join('\n');
  const { config: guest, warnings } = parseGuestConfig(config(200, text, { type: 'lxc' }));
  assert.equal(warnings, []);
  assert.is(guest.name, 'ct200');
  assert.equal(guest.snapshots, ['vzdump']);
  assert.equal(guest.refs.map((r) => `${r.section}:${r.key}=${r.volume}`), [
    'current:mp0=local-lvm:vm-200-disk-1', 'current:mp1=/mnt/bindsrc', 'current:mp2=local-lvm:vm-200-disk-2',
    'current:rootfs=local-lvm:vm-200-disk-0', 'pending:mp3=local-lvm:vm-200-disk-3', 'vzdump:rootfs=local-lvm:vm-200-disk-0',
  ]);
});

test('parseGuestConfig: garbled and unreadable configs are flagged, with file and line', () => {
  const partial = parseGuestConfig(config(101, 'name: a\nscsi0: local-lvm:vm-101-disk-0\n=== merge conflict ===\n[strange section!]\n'));
  assert.is(partial.config.partial, true);
  assert.equal(partial.warnings.map((w) => [w.source, w.line]), [['etc/pve/nodes/pve1/qemu-server/101.conf', 3], ['etc/pve/nodes/pve1/qemu-server/101.conf', 4]]);
  assert.is(parseGuestConfig(config(102, '\u0000\u0000\u0000')).config.readable, false);
  assert.is(parseGuestConfig(config(103, '\n\n# only a comment\n')).config.readable, false);
  assert.is(parseGuestConfig(config(104, 'name: crlf\r\nscsi0: local-lvm:vm-104-disk-0,size=1G\r\n')).config.refs[0]?.volume, 'local-lvm:vm-104-disk-0');
});

test('volume names: every kind Proxmox makes, and what is not a guest volume', () => {
  const table: [string, string | null][] = [
    ['vm-100-disk-0', 'disk 100'], ['vm-100-disk-1023', 'disk 100'], ['base-9000-disk-0', 'base 9000'],
    ['vm-100-cloudinit', 'cloudinit 100'], ['vm-100-state-before-upgrade', 'state 100'], ['vm-100-state-suspend-2025-01-01', 'state 100'],
    ['vm-100-disk-0.qcow2', 'disk 100'], ['vm-100-fleece-0', 'fleece 100'], ['vm-999999999-disk-0', 'disk 999999999'],
    ['snap_vm-112-disk-0_before-upgrade', 'snapshot 112 vm-112-disk-0 before-upgrade'],
    ['snap_vm-120-disk-0_snap1.qcow2', 'snapshot 120 vm-120-disk-0.qcow2 snap1'],
    ['snap_vm-201-disk-0_vzdump', 'snapshot 201 vm-201-disk-0 vzdump'],
    ['snap_base-9000-disk-0_a_b', 'snapshot 9000 base-9000-disk-0 a_b'],
    ['vm-100-mydata', 'other 100'],
    ['root', null], ['data', null], ['swap', null], ['osd-block-0b8a', null], ['vm-disk-0', null], ['snap_foo_bar', null],
  ];
  for (const [name, expected] of table) {
    const v = parseGuestVolumeName(name);
    assert.is(v && [v.kind, v.vmid, v.origin, v.snapshot].filter((x) => x !== null).join(' '), expected, name);
  }
  assert.is(stripCopySuffix('vm-169-disk-0-dup'), 'vm-169-disk-0');
  assert.is(stripCopySuffix('vm-120-disk-0.qcow2.bak'), 'vm-120-disk-0.qcow2');
  assert.is(stripCopySuffix('vm-100-cloudinit_old'), 'vm-100-cloudinit');
  assert.is(stripCopySuffix('vm-100-disk-10'), null, 'disk-10 is not disk-1 plus a suffix');
  assert.is(stripCopySuffix('vm-100-disk-0-\n'), 'vm-100-disk-0', 'a suffix holding a line break (fuzz-parsers)');
});

test('volumesOfPropertyString: the item without = wherever it stands, or file=/volume=; blank items skipped; none and cdrom are no volume', () => {
  // The oracle's minimal inputs (parse_property_string: pve-common PVE::JSONSchema), and what qemu-server and pve-container write.
  const table: [string, string[]][] = [
    ['local-lvm:vm-100-disk-0,iothread=1,size=32G', ['local-lvm:vm-100-disk-0']],
    ['size=8G,local-lvm:vm-100-disk-0', ['local-lvm:vm-100-disk-0']],
    [',local-lvm:vm-100-disk-0', ['local-lvm:vm-100-disk-0']],
    ['mp=/x,local-lvm:vm-101-disk-1', ['local-lvm:vm-101-disk-1']],
    ['mp=/mnt/x,size=8G,local-lvm:vm-201-disk-9', ['local-lvm:vm-201-disk-9']],
    ['iothread=1,file=local-lvm:vm-100-disk-0', ['local-lvm:vm-100-disk-0']],
    ['volume=local-lvm:vm-100-disk-6,mp=/y', ['local-lvm:vm-100-disk-6']],
    ['x:y,, ,size=8G,', ['x:y']],
    ['local-lvm:vm-100-cloudinit,media=cdrom', ['local-lvm:vm-100-cloudinit']],
    ['none,media=cdrom', []], ['cdrom,media=cdrom', []], ['media=cdrom', []], ['', []], ['file=', []],
    ['/dev/pve/vm-100-disk-7', ['/dev/pve/vm-100-disk-7']],
    // Proxmox refuses a value naming two volumes and drops the line; pve-dm reads both (the side of valid).
    ['local-lvm:vm-100-disk-0,local-lvm:vm-100-disk-1', ['local-lvm:vm-100-disk-0', 'local-lvm:vm-100-disk-1']],
    ['file=a:b,c:d', ['a:b', 'c:d']],
  ];
  for (const [value, expected] of table) assert.equal(volumesOfPropertyString(value), expected, value);
});

test('parsePveVersion: pveversion\'s first line', () => {
  assert.is(parsePveVersion('pve-manager/9.1.2/9d436f37a0ac4172 (running kernel: 6.14.11-4-pve)\n'), '9.1.2');
  assert.is(parsePveVersion('pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-9-pve)'), '8.4.1');
  assert.is(parsePveVersion('command not found'), null);
});

test.run();
