// One test (at least) per classification rule of the core issue, on small captures built here.
import * as assert from 'uvu/assert';
import { classify, grade, notificationSubject, notificationText, parse, planCleanup, renderConsole, renderHtml, type Capture, type Classification } from '../pve-dm.ts';
import { capture, config, resultOf, test, unwrapConsole } from './harness.ts';
import { lvmDmName, lvmUuid, lvsLine as lvsLineOf } from './support/lvm.ts';

interface Dm {
  name: string;
  uuid?: string;
  open?: number;
  table?: string;
}
let minor = 0;
/** An entry LVM made for vg/lv: dm name by LVM's rule, LVM uuid. */
const lvm = (vg: string, lv: string, extra: Partial<Dm> & { layer?: string } = {}): Dm => ({
  name: lvmDmName(vg, lv, extra.layer),
  uuid: lvmUuid(vg, lv, extra.layer),
  table: `0 2097152 thin 252:3 ${++minor}`,
  ...extra,
});
const handMade = (name: string, table = '0 204800 zero', uuid = ''): Dm => ({ name, uuid, table });

function node(entries: Dm[], parts: Partial<Capture> = {}): Capture {
  const info = entries.map((e, i) => `${e.name}|252|${i}|${e.open ?? 0}|L--w|${e.uuid ?? ''}`).join('\n');
  const table = entries.map((e) => `${e.name}: ${e.table ?? '0 8 zero'}`).join('\n');
  return capture({ dmsetupInfo: `${info}\n`, dmsetupTable: `${table}\n`, ...parts });
}

function run(c: Capture): Classification {
  return classify(parse(c));
}
const verdict = (result: Classification, name: string) => {
  const entry = result.entries.find((e) => e.name === name);
  assert.ok(entry, `no entry ${name}`);
  return `${entry.status}/${entry.reason}`;
};

const VM100 = config(100, 'boot: order=scsi0\nname: web\nscsi0: local-lvm:vm-100-disk-0,iothread=1,size=32G\nmemory: 2048\n');

// ── 1. What an entry is: uuid first, then name ──────────────────────────────────────────────
test('LVM layer uuids and sub-LV names are LVM\'s own: ignored lvm-internal', () => {
  const entries = [
    lvm('pve', 'data', { layer: 'tpool' }), lvm('pve', 'data', { uuid: lvmUuid('pve', 'data', 'pool') }),
    lvm('pve', 'data_tdata', { uuid: lvmUuid('pve', 'data', 'tdata') }), lvm('pve', 'data_tmeta', { uuid: lvmUuid('pve', 'data', 'tmeta') }),
    lvm('pve', 'vm-100-disk-0', { layer: 'real' }), lvm('pve', 'snap1', { layer: 'cow' }),
    lvm('pve', 'vm-101-disk-0_rimage_0'), lvm('pve', 'vm-101-disk-0_rmeta_1'), lvm('pve', 'vm-102-disk-0_corig'),
    lvm('pve', 'vm-103-disk-0_mimage_0'), lvm('pve', 'cache_cdata', { uuid: lvmUuid('pve', 'cache', 'cdata') }),
  ];
  const result = run(node(entries));
  for (const e of entries) assert.is(verdict(result, e.name), 'ignored/lvm-internal', e.name);
});

test('a never-used thin pool is one entry named like the pool, known by its -tpool uuid', () => {
  const result = run(node([{ name: 'pve-data2', uuid: lvmUuid('pve', 'data2', 'tpool'), table: '0 1 thin-pool 252:1 252:2 128 0 0' }]));
  assert.is(verdict(result, 'pve-data2'), 'ignored/lvm-internal');
});

test('multipath, LUKS, Ceph OSD, root and swap are ignored with their own reasons', () => {
  const result = run(node([
    { name: 'mpatha', uuid: 'mpath-3600140512345678901234567890abcde' },
    { name: '3600a098038303053453f463045727a4b', uuid: 'mpath-3600a098038303053453f463045727a4b' },
    { name: 'luks-data', uuid: 'CRYPT-LUKS2-0123456789abcdef0123456789abcdef-luks-data' },
    { name: 'cryptswap', uuid: 'CRYPT-PLAIN-cryptswap' },
    lvm('ceph-6a1f0a5c-7d2e-4f4b-9c39-2e1d5b0c9a11', 'osd-block-0b8a1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d'),
    lvm('pve', 'root'), lvm('pve', 'swap'),
    handMade('mytest', '0 8 linear 8:0 0'),
    { name: 'stratis-1-private', uuid: 'stratis-1-private-0123' },
  ]));
  assert.is(verdict(result, 'mpatha'), 'ignored/multipath');
  assert.is(verdict(result, '3600a098038303053453f463045727a4b'), 'ignored/multipath');
  assert.is(verdict(result, 'luks-data'), 'ignored/crypt');
  assert.is(verdict(result, 'cryptswap'), 'ignored/crypt');
  assert.is(verdict(result, 'ceph--6a1f0a5c--7d2e--4f4b--9c39--2e1d5b0c9a11-osd--block--0b8a1c2d--3e4f--4a5b--8c6d--7e8f9a0b1c2d'), 'ignored/ceph-osd');
  assert.is(verdict(result, 'pve-root'), 'ignored/not-guest-volume');
  assert.is(verdict(result, 'pve-swap'), 'ignored/not-guest-volume');
  assert.is(verdict(result, 'mytest'), 'ignored/foreign');
  assert.is(verdict(result, 'stratis-1-private'), 'ignored/foreign');
});

test('a kpartx partition of a duplicate is a tombstone (REASONS says so), removed just before its parent, with it under --only duplicates', () => {
  const good = lvm('pve', 'vm-100-disk-0');
  // A hand-made copy of VM 100's disk (the same table) given a uuid, and kpartx's partition of it.
  const copy = { name: 'rescue100', uuid: 'CUSTOM-rescue100', table: good.table };
  const result = run(node([good, copy, { name: 'rescue100p1', uuid: `part1-${copy.uuid}`, table: '0 100 linear 252:1 2048' }], { configs: [VM100] }));
  assert.is(verdict(result, 'rescue100'), 'duplicate/duplicate-table');
  assert.is(verdict(result, 'rescue100p1'), 'tombstone/partition-of-problem');
  const full = resultOf(result);
  assert.equal([full.summary.duplicate, full.summary.tombstone, full.grade], [1, 1, 'F']);
  assert.equal(planCleanup(full).actions.map((a) => a.name), ['rescue100p1', 'rescue100']);
  const onlyDuplicates = planCleanup(full, { only: 'duplicates', vmids: [], names: [] });
  assert.equal(onlyDuplicates.actions.map((a) => a.name), ['rescue100p1', 'rescue100'], 'the partition goes with its duplicate parent');
  assert.equal(planCleanup(full, { only: 'tombstones', vmids: [], names: [] }).actions, []);
});

test('a kpartx partition follows a problem parent (and goes first); of a valid guest volume it is a conflict; of anything else ignored', () => {
  const stale = lvm('pve', 'vm-150-disk-0');
  const good = lvm('pve', 'vm-100-disk-0');
  const result = run(node([
    stale, { name: 'pve-vm--150--disk--0p1', uuid: `part1-${stale.uuid}`, table: '0 100 linear 252:0 2048' },
    good, { name: 'pve-vm--100--disk--0p1', uuid: `part1-${good.uuid}`, table: '0 100 linear 252:2 2048' },
    { name: 'mpatha', uuid: 'mpath-3600140512345678901234567890abcde' }, { name: 'mpatha-part1', uuid: 'part1-mpath-3600140512345678901234567890abcde' },
  ], { configs: [VM100] }));
  assert.is(verdict(result, 'pve-vm--150--disk--0'), 'tombstone/guest-missing');
  assert.is(verdict(result, 'pve-vm--150--disk--0p1'), 'tombstone/partition-of-problem');
  assert.is(result.entries.find((e) => e.name === 'pve-vm--150--disk--0p1')?.remedy, 'dmsetup remove pve-vm--150--disk--0p1');
  // It holds VM 100's disk open, and the host could write the guest's filesystem: a conflict, taken away by dmsetup.
  assert.is(verdict(result, 'pve-vm--100--disk--0p1'), 'conflict/stacked-on-guest-volume');
  const partition = result.entries.find((e) => e.name === 'pve-vm--100--disk--0p1');
  assert.equal([partition?.vmid, partition?.relatedTo, partition?.remedy], [100, 'pve-vm--100--disk--0', 'dmsetup remove pve-vm--100--disk--0p1']);
  assert.is(verdict(result, 'pve-vm--100--disk--0'), 'valid/referenced', 'the guest volume keeps its verdict');
  assert.equal(result.entries.find((e) => e.name === 'pve-vm--100--disk--0')?.holders, ['pve-vm--100--disk--0p1'], 'and names what holds it');
  assert.is(result.guests.find((g) => g.vmid === 100)?.health, 'conflict');
  assert.is(verdict(result, 'mpatha-part1'), 'ignored/partition');
});

test('an LV of a guest\'s own VG active on the host, stacked on the guest volume: a conflict, its VG deactivated as LVM can find it', () => {
  const disk = lvm('pve', 'vm-100-disk-0');
  const inner = lvm('vg-archlinux', 'root', { table: '0 100 linear 252:0 2048' });
  const result = run(node([disk, inner, lvm('vg-archlinux', 'swap', { table: '0 100 linear 252:0 4096', open: 1 })], { configs: [VM100], running: '100\n' }));
  assert.is(verdict(result, 'vg--archlinux-root'), 'conflict/stacked-on-guest-volume');
  const root = result.entries.find((e) => e.name === 'vg--archlinux-root');
  assert.is(root?.remedy, "vgchange --config 'devices { scan_lvs = 1 }' -an vg-archlinux");
  assert.match(root?.advice ?? '', /VM 100 runs: whatever on the host mounts or uses this writes under the guest's own filesystem/, 'root: open 0');
  assert.match(result.entries.find((e) => e.name === 'vg--archlinux-swap')?.advice ?? '', /VM 100 runs and the host holds this open: host and guest write one filesystem now/);
  assert.match(root?.advice ?? '', /global_filter/);
  const swap = result.entries.find((e) => e.name === 'vg--archlinux-swap');
  assert.is(swap?.remedy, null, 'open on the host: no command works as printed');
  assert.match(swap?.advice ?? '', /unmount it first/);
  assert.equal(result.entries.find((e) => e.name === 'pve-vm--100--disk--0')?.holders, ['vg--archlinux-root', 'vg--archlinux-swap']);
});

// ── 2. LVM's name rule; hand-made entries ──────────────────────────────────────────────────
test('a hand-made entry (no uuid) whose name splits into a VG and a guest volume is a guest volume', () => {
  const result = run(node([handMade('pve-vm--100--disk--0', '0 8 linear 8:0 0'), handMade('pve-vm--888--disk--0')], { configs: [VM100] }));
  assert.is(verdict(result, 'pve-vm--100--disk--0'), 'valid/referenced');
  assert.is(verdict(result, 'pve-vm--888--disk--0'), 'tombstone/guest-missing');
  assert.is(result.entries.find((e) => e.name === 'pve-vm--888--disk--0')?.remedy, 'dmsetup remove pve-vm--888--disk--0');
});

test('VG names with hyphens split by LVM\'s rule (the seed\'s storage extraction cases)', () => {
  const storageCfg = 'lvm: iscsi-lun1\n\tvgname prd-network-01-lun01-vg01\n\tcontent images\n\nlvm: t1-ha05\n\tvgname t1-ha05\n\tcontent images\n';
  const result = run(node([lvm('prd-network-01-lun01-vg01', 'vm-113-disk-0'), lvm('t1-ha05', 'vm-183-disk-0')], {
    storageCfg,
    configs: [config(113, 'scsi0: iscsi-lun1:vm-113-disk-0,size=8G\n'), config(183, 'scsi0: t1-ha05:vm-183-disk-0,size=8G\n')],
  }));
  assert.is(verdict(result, 'prd--network--01--lun01--vg01-vm--113--disk--0'), 'valid/referenced');
  assert.is(verdict(result, 't1--ha05-vm--183--disk--0'), 'valid/referenced');
});

// ── 3. Storage IDs map to VGs through storage.cfg ──────────────────────────────────────────
test('the default install (local-lvm on VG pve) is valid: the seed flagged every disk here', () => {
  const result = run(node([lvm('pve', 'vm-100-disk-0')], { configs: [VM100] }));
  assert.is(verdict(result, 'pve-vm--100--disk--0'), 'valid/referenced');
});

test('aliases, disabled storages and storages limited to other nodes still map', () => {
  const storageCfg = [
    'lvm: SSD-HA01', '\tvgname ssd-ha01', '\tshared 1', '\tcontent images', '',
    'lvm: ssd-alias', '\tvgname ssd-ha01', '\tdisable', '', 'lvm: far', '\tvgname far-vg', '\tnodes pve2,pve3', '',
  ].join('\n');
  const result = run(node([lvm('ssd-ha01', 'vm-100-disk-0'), lvm('ssd-ha01', 'vm-100-disk-1'), lvm('far-vg', 'vm-100-disk-2')], {
    storageCfg,
    configs: [config(100, 'scsi0: SSD-HA01:vm-100-disk-0\nscsi1: ssd-alias:vm-100-disk-1\nscsi2: far:vm-100-disk-2\n')],
  }));
  assert.is(verdict(result, 'ssd--ha01-vm--100--disk--0'), 'valid/referenced');
  assert.is(verdict(result, 'ssd--ha01-vm--100--disk--1'), 'valid/referenced');
  assert.is(verdict(result, 'far--vg-vm--100--disk--2'), 'valid/referenced');
});

test('storage IDs are case-sensitive, and a VG no storage names gives storage-unknown', () => {
  const storageCfg = 'lvm: SSD-HA01\n\tvgname ssd-ha01\n';
  const result = run(node([lvm('ssd-ha01', 'vm-100-disk-0'), lvm('oldvg', 'vm-100-disk-1')], {
    storageCfg,
    configs: [config(100, 'scsi0: ssd-ha01:vm-100-disk-0\n')],
  }));
  assert.is(verdict(result, 'ssd--ha01-vm--100--disk--0'), 'tombstone/volume-unreferenced');
  assert.is(verdict(result, 'oldvg-vm--100--disk--1'), 'tombstone/storage-unknown');
  assert.ok(result.warnings.some((w) => w.message.includes('storage ssd-ha01 is not defined')));
});

// ── 4. Guest volume names ─────────────────────────────────────────────────────────────────
test('every guest volume kind is recognised; saferemove\'s del- volume is ignored', () => {
  const names = ['vm-100-disk-0', 'base-100-disk-1', 'vm-100-cloudinit', 'vm-100-state-before', 'vm-100-disk-2.qcow2', 'vm-100-fleece-0', 'snap_vm-100-disk-0_before'];
  const result = run(node([...names.map((n) => lvm('pve', n)), lvm('pve', 'del-vm-100-disk-9')], {
    configs: [config(100, `${names.slice(0, 6).map((n, i) => (n.startsWith('vm-100-state') ? `vmstate: local-lvm:${n}` : `scsi${i}: local-lvm:${n}`)).join('\n')}\n[before]\nscsi0: local-lvm:vm-100-disk-0\n`)],
  }));
  for (const n of names.slice(0, 6)) assert.is(verdict(result, lvm('pve', n).name), 'valid/referenced', n);
  assert.is(verdict(result, 'pve-snap_vm--100--disk--0_before'), 'valid/snapshot-in-config');
  assert.is(verdict(result, 'pve-del--vm--100--disk--9'), 'ignored/saferemove-in-flight');
  assert.equal(result.entries.map((e) => e.kind), ['disk', 'base', 'cloudinit', 'state', 'disk', 'fleece', 'snapshot', null]);
});

// ── 5. Valid: any section, whoever owns the VMID ───────────────────────────────────────────
test('referenced in any section: current, snapshot, [PENDING], vmstate, unused, [special:fleecing]', () => {
  const vm = config(100, [
    'scsi0: local-lvm:vm-100-disk-0,size=8G', 'unused0: local-lvm:vm-100-disk-5', '',
    '[PENDING]', 'scsi1: local-lvm:vm-100-disk-1,size=4G', '',
    '[special:fleecing]', 'fleecing-images: local-lvm:vm-100-fleece-0,local-lvm:vm-100-fleece-1', '',
    '[before]', 'scsi2: local-lvm:vm-100-disk-2', 'vmstate: local-lvm:vm-100-state-before', 'snaptime: 1700000000', '',
  ].join('\n'));
  const vols = ['vm-100-disk-0', 'vm-100-disk-5', 'vm-100-disk-1', 'vm-100-fleece-0', 'vm-100-fleece-1', 'vm-100-disk-2', 'vm-100-state-before'];
  const result = run(node(vols.map((v) => lvm('pve', v)), { configs: [vm] }));
  for (const v of vols) assert.is(verdict(result, lvm('pve', v).name), 'valid/referenced', v);
});

test('containers: rootfs, mpN, unusedN and [pve:pending] reference volumes', () => {
  const ct = config(200, 'arch: amd64\nhostname: ct200\nrootfs: local-lvm:vm-200-disk-0,size=8G\nmp0: local-lvm:vm-200-disk-1,mp=/data,backup=1\nmp1: /srv/bind,mp=/bind\nunused0: local-lvm:vm-200-disk-2\n\n[pve:pending]\nmp2: local-lvm:vm-200-disk-3,mp=/new\n', { type: 'lxc' });
  const result = run(node(['vm-200-disk-0', 'vm-200-disk-1', 'vm-200-disk-2', 'vm-200-disk-3'].map((v) => lvm('pve', v)), { configs: [ct] }));
  for (const e of result.entries) assert.is(`${e.status}/${e.reason}`, 'valid/referenced', e.name);
  assert.equal(result.guests.map((g) => [g.vmid, g.type, g.name]), [[200, 'lxc', 'ct200']]);
});

test('a disk of VM 199 attached to VM 116 is valid, and its health is VM 116\'s', () => {
  const result = run(node([lvm('pve', 'vm-199-disk-0', { open: 1 })], {
    configs: [config(116, 'scsi1: local-lvm:vm-199-disk-0,size=8G\n')],
    running: '116\n',
  }));
  assert.is(verdict(result, 'pve-vm--199--disk--0'), 'valid/referenced');
  assert.is(result.entries[0]?.vmid, 116);
  assert.equal(result.missingGuests, []);
});

test('linked clones: lvmthin records just vm-Y-disk-N; the base/vm form references both', () => {
  const storageCfg = 'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\nlvm: other\n\tvgname other\n';
  const result = run(node([lvm('pve', 'base-900-disk-0'), lvm('pve', 'vm-111-disk-0'), lvm('other', 'base-901-disk-0'), lvm('other', 'vm-112-disk-0')], {
    storageCfg,
    configs: [
      config(900, 'template: 1\nscsi0: local-lvm:base-900-disk-0,size=8G\n'),
      config(111, 'scsi0: local-lvm:vm-111-disk-0,size=8G\n'),
      config(112, 'scsi0: other:base-901-disk-0/vm-112-disk-0,size=8G\n'),
    ],
  }));
  for (const e of result.entries) assert.is(`${e.status}/${e.reason}`, 'valid/referenced', e.name);
  assert.is(result.guests.find((g) => g.vmid === 900)?.template, true);
});

test('a template\'s base volume belongs to the template, even when a clone\'s config comes first', () => {
  const storageCfg = 'lvm: other\n\tvgname other\n';
  const result = run(node([lvm('other', 'base-9000-disk-0'), lvm('other', 'vm-101-disk-0')], {
    storageCfg,
    configs: [config(101, 'scsi0: other:base-9000-disk-0/vm-101-disk-0,size=8G\n'), config(9000, 'template: 1\nscsi0: other:base-9000-disk-0,size=8G\n')],
  }));
  assert.equal(result.entries.map((e) => [e.name, e.vmid]), [['other-base--9000--disk--0', 9000], ['other-vm--101--disk--0', 101]]);
});

test('a thin snapshot is valid while its guest has that snapshot; a leftover one is a tombstone', () => {
  const result = run(node([lvm('pve', 'vm-201-disk-0'), lvm('pve', 'snap_vm-201-disk-0_vzdump'), lvm('pve', 'snap_vm-201-disk-0_keep')], {
    configs: [config(201, 'hostname: ct\nrootfs: local-lvm:vm-201-disk-0,size=8G\nparent: keep\n\n[keep]\nrootfs: local-lvm:vm-201-disk-0,size=8G\nsnaptime: 1\n', { type: 'lxc' })],
  }));
  assert.is(verdict(result, 'pve-snap_vm--201--disk--0_keep'), 'valid/snapshot-in-config');
  assert.is(verdict(result, 'pve-snap_vm--201--disk--0_vzdump'), 'tombstone/volume-unreferenced');
  assert.is(result.entries.find((e) => e.name === 'pve-snap_vm--201--disk--0_vzdump')?.remedy, 'lvchange -an pve/snap_vm-201-disk-0_vzdump');
});

test('PVE 9 volume chains: qcow2 volumes and chain snapshots are volumes of their own', () => {
  const storageCfg = 'lvm: san2\n\tvgname san02\n\tshared 1\n\tsnapshot-as-volume-chain 1\n';
  const result = run(node([lvm('san02', 'vm-120-disk-0.qcow2'), lvm('san02', 'snap_vm-120-disk-0_snap1.qcow2'), lvm('san02', 'snap_vm-120-disk-0_gone.qcow2')], {
    storageCfg,
    configs: [config(120, 'scsi0: san2:vm-120-disk-0.qcow2,size=32G\n\n[snap1]\nscsi0: san2:vm-120-disk-0.qcow2,size=32G\n')],
  }));
  assert.is(verdict(result, 'san02-vm--120--disk--0.qcow2'), 'valid/referenced');
  assert.is(verdict(result, 'san02-snap_vm--120--disk--0_snap1.qcow2'), 'valid/snapshot-in-config');
  assert.is(verdict(result, 'san02-snap_vm--120--disk--0_gone.qcow2'), 'tombstone/volume-unreferenced');
  assert.is(result.duplicates.length, 0, 'snapshot LVs are never copies of their origin');
});

test('a device path in a config (/dev/VG/LV, /dev/mapper/NAME) references the volume', () => {
  const result = run(node([lvm('pve', 'vm-100-disk-7'), lvm('ssd', 'vm-100-disk-8')], {
    configs: [config(100, 'scsi0: /dev/pve/vm-100-disk-7\nscsi1: /dev/mapper/ssd-vm--100--disk--8,size=1G\n')],
  }));
  assert.is(verdict(result, 'pve-vm--100--disk--7'), 'valid/referenced');
  assert.is(verdict(result, 'ssd-vm--100--disk--8'), 'valid/referenced');
});

// ── 6. Tombstone reasons ──────────────────────────────────────────────────────────────────
test('guest-missing, guest-on-other-node, volume-unreferenced, lv-missing, storage-unknown', () => {
  const storageCfg = 'lvm: san\n\tvgname san01\n\tshared 1\n';
  const result = run(node([
    lvm('san01', 'vm-300-disk-0'), lvm('san01', 'vm-301-disk-0'), lvm('san01', 'vm-302-disk-1'), lvm('san01', 'vm-305-disk-0'), lvm('gone', 'vm-302-disk-0'),
  ], {
    storageCfg,
    lvs: '  san01|vm-300-disk-0|-wi-a-----|pve-vm-300\n  san01|vm-302-disk-1|-wi-a-----|pve-vm-302\n  san01|vm-305-disk-0|-wi-a-----|pve-vm-305\n  gone|vm-302-disk-0|-wi-a-----|\n',
    configs: [config(300, 'scsi0: san:vm-300-disk-0\n', { node: 'pve2' }), config(302, 'scsi0: san:vm-302-disk-0\n')],
  }));
  assert.is(verdict(result, 'san01-vm--300--disk--0'), 'tombstone/guest-on-other-node');
  assert.is(result.entries[0]?.otherNode, 'pve2');
  assert.is(result.entries[0]?.remedy, 'lvchange -an san01/vm-300-disk-0');
  assert.is(verdict(result, 'san01-vm--301--disk--0'), 'tombstone/lv-missing');
  assert.is(result.entries[1]?.remedy, 'dmsetup remove san01-vm--301--disk--0');
  assert.is(verdict(result, 'san01-vm--302--disk--1'), 'tombstone/volume-unreferenced');
  assert.is(result.entries[2]?.remedy, 'qm disk rescan --vmid 302');
  assert.is(verdict(result, 'san01-vm--305--disk--0'), 'tombstone/guest-missing');
  assert.is(result.entries[3]?.remedy, 'lvchange -an san01/vm-305-disk-0');
  assert.is(verdict(result, 'gone-vm--302--disk--0'), 'tombstone/storage-unknown');
  assert.equal(result.missingGuests, [{ vmid: 305, entries: ['san01-vm--305--disk--0'] }]);
});

test('without lvs.txt, LVM\'s knowledge is "not known", never "missing"', () => {
  const result = run(node([lvm('pve', 'vm-100-disk-3')], { configs: [VM100] }));
  assert.is(verdict(result, 'pve-vm--100--disk--3'), 'tombstone/volume-unreferenced');
  assert.is(result.entries[0]?.lvmKnown, null);
});

test('a container\'s unreferenced disk gets pct rescan', () => {
  const result = run(node([lvm('pve', 'vm-200-disk-1')], { configs: [config(200, 'rootfs: local-lvm:vm-200-disk-0,size=8G\n', { type: 'lxc' })] }));
  assert.is(result.entries[0]?.remedy, 'pct rescan --vmid 200');
});

// ── 7. Duplicates ─────────────────────────────────────────────────────────────────────────
test('a hand-made copy named volume+suffix is a duplicate; the referenced member stays valid', () => {
  const storageCfg = 'lvm: SSD-HA01\n\tvgname ssd-ha01\n';
  const own = lvm('ssd-ha01', 'vm-169-disk-0', { table: '0 204800 linear 8:16 2048', open: 1 });
  const result = run(node([own, handMade('ssd--ha01-vm--169--disk--0-dup', '0 204800 linear 8:16 2048')], {
    storageCfg,
    configs: [config(169, 'name: db\nscsi0: SSD-HA01:vm-169-disk-0,size=100M\n')],
  }));
  assert.is(verdict(result, own.name), 'valid/referenced');
  assert.is(verdict(result, 'ssd--ha01-vm--169--disk--0-dup'), 'duplicate/duplicate-name');
  assert.equal(result.duplicates, [{ vg: 'ssd-ha01', lv: 'vm-169-disk-0', vmid: 169, kept: own.name, extras: ['ssd--ha01-vm--169--disk--0-dup'] }]);
  assert.is(result.guests[0]?.health, 'duplicate');
  assert.is(grade(result).summary.duplicate, 1, 'summary.duplicate counts the extras');
  assert.is(grade(result).grade, 'F');
});

test('the seed\'s own test: two hand-made entries, the -dup one is the extra', () => {
  const storageCfg = 'lvm: test-ha01\n\tvgname test-ha01\n';
  const result = run(node([handMade('test--ha01-vm--999--disk--0', '0 204800 linear 8:0 0'), handMade('test--ha01-vm--999--disk--0-dup', '0 204800 linear 8:0 0')], { storageCfg }));
  assert.is(verdict(result, 'test--ha01-vm--999--disk--0'), 'tombstone/guest-missing');
  assert.is(verdict(result, 'test--ha01-vm--999--disk--0-dup'), 'duplicate/duplicate-name');
});

test('a hand-made copy whose volume has no entry here is judged as itself, not as the volume (fuzz-pipeline)', () => {
  // multi-pool with the line of ssd--ha01-vm--169--disk--0 cut from dmsetup.txt: VM 169 references
  // vm-169-disk-0, so "no config references ssd-ha01/vm-169-disk-0" would be a lie.
  const storageCfg = 'lvm: SSD-HA01\n\tvgname ssd-ha01\n';
  const result = run(node([handMade('ssd--ha01-vm--169--disk--0-dup', '0 204800 linear 8:16 2048')], {
    storageCfg,
    configs: [config(169, 'name: db\nscsi0: SSD-HA01:vm-169-disk-0,size=100M\n')],
  }));
  const [entry] = result.entries;
  assert.equal([entry?.status, entry?.reason, entry?.vg, entry?.lv, entry?.remedy], ['tombstone', 'volume-unreferenced', 'ssd-ha01', 'vm-169-disk-0-dup', 'dmsetup remove ssd--ha01-vm--169--disk--0-dup']);
});

test('a second mapping with the identical table is a duplicate, whatever its name', () => {
  const own = lvm('pve', 'vm-100-disk-0', { table: '0 67108864 thin 252:4 1' });
  const result = run(node([handMade('rescue', '0 67108864 thin 252:4 1'), own], { configs: [VM100] }));
  assert.is(verdict(result, 'rescue'), 'duplicate/duplicate-table');
  assert.is(result.entries[0]?.relatedTo, own.name);
  assert.is(result.entries[0]?.remedy, 'dmsetup remove rescue');
  assert.is(verdict(result, own.name), 'valid/referenced');
});

test('error and zero tables never make duplicates; disk-0 on two VGs is not a duplicate', () => {
  const storageCfg = 'lvm: SSD-HA01\n\tvgname ssd-ha01\n\nlvm: SSD-HA07\n\tvgname ssd-ha07\n';
  const result = run(node([
    handMade('a', '0 8 zero'), handMade('b', '0 8 zero'), handMade('c', '0 8 error'), handMade('d', '0 8 error'),
    lvm('ssd-ha07', 'vm-119-disk-0'), lvm('ssd-ha01', 'vm-119-disk-0'),
  ], { storageCfg, configs: [config(119, 'efidisk0: SSD-HA07:vm-119-disk-0,size=4M\nscsi1: SSD-HA01:vm-119-disk-0,size=32G\n')] }));
  assert.is(result.duplicates.length, 0);
  assert.is(verdict(result, 'ssd--ha07-vm--119--disk--0'), 'valid/referenced');
  assert.is(verdict(result, 'ssd--ha01-vm--119--disk--0'), 'valid/referenced');
});

test('suffixes that LVM owns (-real, _rimage_0) are never duplicates', () => {
  const result = run(node([lvm('pve', 'vm-115-disk-0'), lvm('pve', 'vm-115-disk-0', { layer: 'real' }), lvm('pve', 'vm-115-disk-0_rimage_0')], {
    configs: [config(115, 'scsi0: local-lvm:vm-115-disk-0\n')],
  }));
  assert.is(result.duplicates.length, 0);
});

// ── 8. Locks and unreadable configs ───────────────────────────────────────────────────────
test('a guest with a lock: its unreferenced volumes are in flight, not judged, shown with the lock; a settled lock judges as usual with no command', () => {
  const result = run(node([lvm('pve', 'vm-100-disk-0'), lvm('pve', 'vm-100-disk-4'), lvm('pve', 'vm-101-disk-4')], {
    configs: [config(100, 'lock: migrate\nscsi0: local-lvm:vm-100-disk-0\n'), config(101, 'lock: suspended\nscsi0: local-lvm:vm-101-disk-0\nvmstate: local-lvm:vm-101-state-suspend-2026-12-01\n')],
  }));
  assert.is(result.guests[0]?.lock, 'migrate');
  assert.is(verdict(result, 'pve-vm--100--disk--0'), 'valid/referenced');
  const inFlight = result.entries.find((e) => e.name === 'pve-vm--100--disk--4');
  assert.equal([inFlight?.status, inFlight?.reason, inFlight?.lock, inFlight?.remedy], ['ignored', 'in-flight', 'migrate', null]);
  assert.match(inFlight?.advice ?? '', /^VM 100 is locked \(migrate\): wait for that operation to end\. .*qm unlock 100 clears it/);
  // A hibernated VM's lock stays while nothing runs: its leftover is a tombstone, and no command touches it.
  const settled = result.entries.find((e) => e.name === 'pve-vm--101--disk--4');
  assert.equal([settled?.status, settled?.reason, settled?.remedy], ['tombstone', 'volume-unreferenced', null]);
  assert.match(settled?.advice ?? '', /^VM 101 is hibernated \(lock: suspended\)/);
  const plan = planCleanup(resultOf(result));
  assert.equal(plan.actions.map((a) => [a.name, a.blockedBy]), [['pve-vm--101--disk--4', 'VM 101 is locked (suspended)']]);
});

test('a config that cannot be read or parsed: its guest\'s unreferenced entries are unjudged, with a warning', () => {
  const unreadable = { ...config(140, ''), text: null, readError: 'EACCES' };
  const binary = config(141, 'scsi0: local-lvm:vm-141-disk-0\n\u0000\u0001garbage\n');
  const garbled = config(142, 'scsi0: local-lvm:vm-142-disk-0\nthis is not a key line\n');
  const empty = config(143, '\u0000\u0000\n');
  const entries = ['vm-140-disk-0', 'vm-141-disk-0', 'vm-141-disk-1', 'vm-142-disk-0', 'vm-142-disk-1', 'vm-143-disk-0'].map((v) => lvm('pve', v));
  const result = run(node(entries, { configs: [unreadable, binary, garbled, empty] }));
  assert.is(verdict(result, 'pve-vm--140--disk--0'), 'unjudged/config-unreadable');
  assert.is(verdict(result, 'pve-vm--141--disk--0'), 'valid/referenced', 'the lines that parse still count');
  assert.is(verdict(result, 'pve-vm--141--disk--1'), 'unjudged/config-unreadable', 'the skipped line might have referenced it');
  assert.is(verdict(result, 'pve-vm--142--disk--0'), 'valid/referenced');
  assert.is(verdict(result, 'pve-vm--142--disk--1'), 'unjudged/config-unreadable');
  assert.is(verdict(result, 'pve-vm--143--disk--0'), 'unjudged/config-unreadable');
  const where = result.warnings.map((w) => `${w.source.split('/').pop()}:${w.line}`);
  assert.equal(where, ['140.conf:null', '141.conf:2', '142.conf:2', '143.conf:1', '143.conf:null']);
});

test('a migration in flight: the target\'s copy is in flight, carrying the remote guest\'s lock; cleanup plans nothing for it', () => {
  const storageCfg = 'lvm: san\n\tvgname san01\n\tshared 1\n';
  const result = run(node([lvm('san01', 'vm-300-disk-0'), lvm('san01', 'vm-301-disk-0')], {
    storageCfg,
    configs: [config(300, 'lock: migrate\nscsi0: san:vm-300-disk-0\n', { node: 'pve2' }), config(301, 'scsi0: san:vm-301-disk-0\n', { node: 'pve2' })],
  }));
  assert.equal(result.entries.map((e) => [e.reason, e.lock]), [['in-flight', 'migrate'], ['guest-on-other-node', null]]);
  const plan = planCleanup(resultOf(result));
  assert.equal(plan.actions.map((a) => [a.name, a.blockedBy, a.command.join(' ')]), [['san01-vm--301--disk--0', null, 'lvchange -an san01/vm-301-disk-0']]);
});

// ── 9. Open counts and running state ──────────────────────────────────────────────────────
test('each entry\'s open count and each guest\'s running state are recorded', () => {
  const result = run(node([lvm('pve', 'vm-100-disk-0', { open: 1 })], { configs: [VM100, config(101, 'name: idle\n')], running: '100\n' }));
  assert.is(result.entries[0]?.open, 1);
  assert.equal(result.guests.map((g) => [g.vmid, g.running]), [[100, true], [101, false]]);
  const garbled = run(node([], { configs: [VM100], running: '100\nabc\n' }));
  assert.equal(garbled.warnings.map((w) => `${w.source}:${w.line}`), ['running.txt:2']);
  const unknown = run(node([], { configs: [VM100] }));
  assert.is(unknown.guests[0]?.running, null, 'no running.txt: not known');
});

// ── 10. Grade ─────────────────────────────────────────────────────────────────────────────
test('grade: duplicates F; tombstones 0 A+, 1-5 B, 6-20 C, 21-50 D, more F; exit codes', () => {
  const entries = (tombstones: number) => Array.from({ length: tombstones }, () => ({ status: 'tombstone' }) as never);
  const cases: [number, string, number][] = [[0, 'A+', 0], [1, 'B', 1], [5, 'B', 1], [6, 'C', 1], [20, 'C', 1], [21, 'D', 1], [50, 'D', 1], [51, 'F', 2]];
  for (const [n, letter, exit] of cases) {
    const graded = grade({ entries: entries(n), warnings: [] });
    assert.is(graded.grade, letter, `${n} tombstones`);
    assert.is(graded.exitCode, exit, `${n} tombstones exit`);
  }
  assert.is(grade({ entries: [{ status: 'duplicate' } as never], warnings: [] }).grade, 'F');
  assert.is(grade({ entries: [{ status: 'duplicate' } as never], warnings: [] }).exitCode, 2);
  assert.is(grade({ entries: [], warnings: [{ source: 'x', line: 1, message: 'y' }] }).exitCode, 1, 'warnings: exit 1');
});

// ── 11. Read as Proxmox reads, remedies that work, work in flight (issue 14) ─────────────────
const lvsLine = (vg: string, lv: string, attr = '-wi-a-----', tags = '', pool = '') => lvsLineOf(vg, lv, attr, tags, pool);

test('the oracle\'s minimal inputs: a volume not first, an empty first item, cdrom, a doubled vgname, a snapshot of a name with `_`: all valid', () => {
  const cases: [string, string, Partial<Capture>][] = [
    ['scsi0: size=8G,local-lvm:vm-100-disk-0\n', 'vm-100-disk-0', {}],
    ['scsi0: ,local-lvm:vm-100-disk-0\n', 'vm-100-disk-0', {}],
    ['cdrom: local-lvm:vm-100-disk-0\n', 'vm-100-disk-0', {}],
    ['scsi0: local-lvm:vm-100-disk-0\n', 'vm-100-disk-0', { storageCfg: 'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tvgname other\n' }],
    ['scsi0: local-lvm:vm-100-my_disk\n[s1]\nscsi0: local-lvm:vm-100-my_disk\n', 'snap_vm-100-my_disk_s1', {}],
    // `_` and `-` in both the volume's and the snapshot's name.
    ['scsi0: local-lvm:vm-100-my_disk-2\nparent: pre_up-1\n[pre_up-1]\nscsi0: local-lvm:vm-100-my_disk-2\n', 'snap_vm-100-my_disk-2_pre_up-1', {}],
  ];
  for (const [text, lv, parts] of cases) {
    const result = run(node([lvm('pve', lv, { open: 1 })], { configs: [config(100, text)], ...parts }));
    assert.match(verdict(result, lvmDmName('pve', lv)), /^valid\/(referenced|snapshot-in-config)$/, text);
  }
  const ct = run(node([lvm('pve', 'vm-101-disk-1')], { configs: [config(101, 'hostname: ct\nmp0: mp=/x,local-lvm:vm-101-disk-1\n', { type: 'lxc' })] }));
  assert.is(verdict(ct, 'pve-vm--101--disk--1'), 'valid/referenced', 'lxc: the volume after mp=');
});

test('an LV LVM knows but calls inactive, or whose uuid is not the entry\'s: lv-mismatch, removed with dmsetup remove (lvchange -an would do nothing)', () => {
  const inactive = lvm('pve', 'vm-100-disk-4');
  const renamed = { ...lvm('pve', 'vm-100-disk-5'), uuid: lvmUuid('pve', 'vm-100-disk-5-old') };
  const own = lvm('pve', 'vm-100-disk-6');
  const lvs = [lvsLine('pve', 'vm-100-disk-4', '-wi-------'), lvsLine('pve', 'vm-100-disk-5'), lvsLine('pve', 'vm-100-disk-6')].join('\n');
  const result = run(node([inactive, renamed, own], { configs: [config(100, 'name: web\n')], lvs: `${lvs}\n` }));
  for (const name of ['pve-vm--100--disk--4', 'pve-vm--100--disk--5']) {
    const entry = result.entries.find((e) => e.name === name);
    assert.equal([entry?.status, entry?.reason, entry?.lvmKnown, entry?.remedy], ['tombstone', 'lv-mismatch', false, `dmsetup remove ${name}`], name);
  }
  const kept = result.entries.find((e) => e.name === 'pve-vm--100--disk-6' || e.name === 'pve-vm--100--disk--6');
  assert.equal([kept?.reason, kept?.lvmKnown, kept?.remedy], ['volume-unreferenced', true, 'lvchange -an pve/vm-100-disk-6'], 'LVM\'s own mapping: deactivated through LVM (a thick LV on lvmthin storage is not one rescan lists)');
  const plan = planCleanup(resultOf(result));
  assert.equal(plan.actions.map((a) => a.command.join(' ')), [
    'dmsetup --manglename none remove pve-vm--100--disk--4', 'dmsetup --manglename none remove pve-vm--100--disk--5', 'lvchange -an pve/vm-100-disk-6',
  ]);
});

test('qm disk rescan is the remedy only where it attaches the volume: enabled here, for images, listed by the storage (tags, pool)', () => {
  const thin = (lv: string) => lvsLine('pve', lv, 'Vwi-a-tz--', '', 'data');
  const cases: [string, string, string][] = [
    ['lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n', thin('vm-100-disk-4'), 'qm disk rescan --vmid 100'],
    ['lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tdisable\n', thin('vm-100-disk-4'), 'lvchange -an pve/vm-100-disk-4'],
    ['lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tnodes pve2\n', thin('vm-100-disk-4'), 'lvchange -an pve/vm-100-disk-4'],
    ['lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir\n', thin('vm-100-disk-4'), 'lvchange -an pve/vm-100-disk-4'],
    ['lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n', lvsLine('pve', 'vm-100-disk-4', 'Vwi-a-tz--', '', 'data2'), 'lvchange -an pve/vm-100-disk-4'],
    ['lvm: thick\n\tvgname pve\n\ttagged_only 1\n', lvsLine('pve', 'vm-100-disk-4'), 'lvchange -an pve/vm-100-disk-4'],
    ['lvm: thick\n\tvgname pve\n\ttagged_only 1\n', lvsLine('pve', 'vm-100-disk-4', '-wi-a-----', 'pve-vm-100'), 'qm disk rescan --vmid 100'],
  ];
  for (const [storageCfg, lvs, remedy] of cases) {
    const result = run(node([lvm('pve', 'vm-100-disk-4')], { storageCfg, lvs: `${lvs}\n`, configs: [config(100, 'name: web\n')] }));
    assert.is(result.entries[0]?.remedy, remedy, `${storageCfg} ${lvs}`);
  }
});

test('a clone in flight: the new guest\'s config holds only `lock: clone`, its disk is active and open; not a tombstone, no remedy', () => {
  const result = run(node([lvm('pve', 'vm-120-disk-0', { open: 1 }), lvm('pve', 'vm-100-disk-0')], {
    configs: [VM100, config(120, '# qmclone temporary file\nlock: clone\n')],
  }));
  const target = result.entries.find((e) => e.name === 'pve-vm--120--disk--0');
  assert.equal([target?.status, target?.reason, target?.lock, target?.remedy], ['ignored', 'in-flight', 'clone', null]);
  assert.equal(grade(result).exitCode, 0, 'a long clone raises no warning on a healthy node');
  for (const lock of ['create', 'migrate', 'backup', 'rollback', 'snapshot', 'snapshot-delete', 'suspending', 'disk', 'destroyed', 'import']) {
    const other = run(node([lvm('pve', 'vm-120-disk-0')], { configs: [config(120, `lock: ${lock}\n`)] }));
    assert.is(verdict(other, 'pve-vm--120--disk--0'), 'ignored/in-flight', lock);
  }
});

test('a guest volume in a VG no LVM storage names: not judged when storage.cfg has a plugin\'s storage or the entry is open; else storage-unknown', () => {
  const drbd = 'drbd: drbdstorage\n\tcontent images,rootdir\n\tcontroller 10.0.0.1\n\nlvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n';
  // LINSTOR's backing LV of a DRBD resource, held open by DRBD.
  const backing = lvm('drbdpool', 'vm-100-disk-1_00000', { open: 2 });
  const linstor = run(node([backing], { storageCfg: drbd, configs: [VM100] }));
  const entry = linstor.entries[0];
  assert.equal([entry?.status, entry?.reason, entry?.remedy], ['ignored', 'foreign-vg', null]);
  assert.match(entry?.advice ?? '', /types pve-dm does not know \(drbd\)/);
  assert.equal(linstor.notes.map((n) => `${n.source}:${n.line}`), ['etc/pve/storage.cfg:1']);
  assert.is(grade(linstor).exitCode, 0, 'a healthy node with a storage plugin reads OK');
  const open = run(node([lvm('oldvg', 'vm-100-disk-1', { open: 1 })], { configs: [VM100] }));
  assert.is(verdict(open, 'oldvg-vm--100--disk--1'), 'ignored/foreign-vg');
  const stale = run(node([lvm('oldvg', 'vm-100-disk-1')], { configs: [VM100] }));
  assert.is(verdict(stale, 'oldvg-vm--100--disk--1'), 'tombstone/storage-unknown');
});

test('an entry held open by a mapping stacked on it: the remedy removes a leftover holder first, else names what holds it and runs nothing', () => {
  const parent = { ...lvm('pve', 'vm-150-disk-0', { open: 1 }) };
  const part = { name: 'pve-vm--150--disk--0p1', uuid: `part1-${parent.uuid}`, table: '0 1000 linear 252:0 2048' };
  const chained = run(node([parent, part]));
  assert.is(chained.entries[0]?.remedy, 'dmsetup remove pve-vm--150--disk--0p1 && lvchange -an pve/vm-150-disk-0');
  assert.equal(chained.entries[0]?.holders, ['pve-vm--150--disk--0p1']);
  // The guest's own LVM activated on the host: an LV of another VG whose table maps the guest disk.
  const guestVg = { ...lvm('vg-guest', 'root'), table: '0 2048 linear 252:0 2048' };
  const held = run(node([{ ...lvm('pve', 'vm-150-disk-0', { open: 1 }) }, guestVg]));
  assert.is(held.entries[0]?.remedy, null);
  assert.is(held.entries[0]?.advice, 'open 1 time(s), held by vg--guest-root (ignored: not a leftover): no command takes it away while it is open');
  const byProcess = run(node([lvm('pve', 'vm-150-disk-0', { open: 2 }), part]));
  assert.is(byProcess.entries[0]?.remedy, null, 'a partition and a process: removing the partition would not free it');
  assert.match(byProcess.entries[0]?.advice ?? '', /held by pve-vm--150--disk--0p1 \(tombstone, remove it first\), 1 opener\(s\) that are no dm device .*fuser -vm \/dev\/dm-0/);
});

test('a container is CT <id>, a VM VM <id>, a VMID without config VMID <id>, in every reason\'s words', () => {
  const result = run(node([lvm('pve', 'vm-200-disk-5'), lvm('pve', 'vm-300-disk-0'), lvm('pve', 'vm-777-disk-0')], {
    configs: [config(200, 'hostname: ct\nlock: mounted\nrootfs: local-lvm:vm-200-disk-0\n', { type: 'lxc' }), config(300, 'scsi0: local-lvm:vm-300-disk-0\n', { node: 'pve2' })],
  }));
  assert.equal(result.entries.map((e) => [e.guestType, e.advice ?? e.remedy]), [
    ['lxc', "CT 200's volumes are mounted on the host (lock: mounted): pct unmount 200 once done, then look again"],
    ['qemu', 'lvchange -an pve/vm-300-disk-0'],
    [null, 'lvchange -an pve/vm-777-disk-0'],
  ]);
  const text = unwrapConsole(renderConsole(resultOf(result), false));
  assert.ok(text.includes('VM 300 lives on node pve2 and uses it there'), text);
  assert.ok(text.includes('VMID 777 has no config on any node'), text);
});

// ── Orphan LVs: guest volumes LVM knows that no config references ───────────────────────────

const SAN_CFG = '\nlvm: san\n\tvgname san01\n\tcontent images\n\tshared 1\n\nlvm: thick\n\tvgname vmdata\n\tcontent images,rootdir\n';
/** A node with only lvs lines (no dm entries): the LVs, active or not, as lvs prints them. */
const lvsNode = (lines: string[], parts: Partial<Capture> = {}) =>
  node([], { lvs: `${lines.join('\n')}\n`, storageCfg: `${capture({}).storageCfg}${SAN_CFG}`, ...parts });
const orphansOf = (c: Capture) => {
  const result = run(c);
  assert.equal(result.warnings.filter((w) => w.source === 'lvs.txt'), [], 'every lvs line read');
  return result.orphanLvs.map((o) => [`${o.vg}/${o.lv}`, o.reason, o.active]);
};
const POOL = [lvsLineOf('pve', 'data', 'twi-aotz--'), lvsLineOf('pve', '[data_tdata]', 'Twi-ao----')];

test('orphan LVs: an inactive LV of a deleted guest and one of a failed clone are found; what a config uses is not', () => {
  const c = lvsNode([
    ...POOL,
    lvsLineOf('pve', 'vm-100-disk-0', 'Vwi---tz--', '', 'data'),
    lvsLineOf('pve', 'vm-100-disk-1', 'Vwi---tz--', '', 'data', 34359738368),
    lvsLineOf('pve', 'vm-555-disk-0', 'Vwi---tz--', '', 'data'),
    lvsLineOf('pve', 'root', '-wi-ao----'),
  ], { configs: [VM100] });
  const result = run(c);
  assert.equal(orphansOf(c), [['pve/vm-100-disk-1', 'volume-unreferenced', false], ['pve/vm-555-disk-0', 'guest-missing', false]]);
  const [unreferenced, missing] = result.orphanLvs;
  assert.is(unreferenced?.sizeBytes, 34359738368);
  assert.is(unreferenced?.blocks, 'VM 100 cannot create vm-100-disk-1 on local-lvm');
  assert.is(unreferenced?.remedy, 'qm disk rescan --vmid 100', 'the guest is here and its storage lists the volume: a rescan attaches it');
  assert.is(missing?.blocks, 'VMID 555 cannot create vm-555-disk-0 on local-lvm');
  assert.is(missing?.remedy, null, 'pve-dm never removes an LV');
  assert.is(missing?.advice, 'look at its data first (it may be the only copy); if nothing needs it: pvesm free local-lvm:vm-555-disk-0.');
  // Inactive: no dm entry, so no tombstone; the orphans alone grade the node.
  assert.equal([result.entries.length, grade(result).grade, grade(result).exitCode, grade(result).summary.orphanLvs], [0, 'B', 1, 2]);
});

test('orphan LVs: an active one is both a tombstone and an orphan, counted once, and says that deactivating does not free the name', () => {
  const c = node([lvm('pve', 'vm-555-disk-0')], { lvs: `${[...POOL, lvsLineOf('pve', 'vm-555-disk-0', 'Vwi-a-tz--', '', 'data')].join('\n')}\n` });
  const result = run(c);
  assert.is(verdict(result, 'pve-vm--555--disk--0'), 'tombstone/guest-missing');
  assert.equal(result.orphanLvs.map((o) => [o.reason, o.active]), [['guest-missing', true]]);
  assert.match(result.orphanLvs[0]?.advice ?? '', /Deactivating it \(lvchange -an\) alone does not free the name\.$/);
  const graded = grade(result);
  assert.equal([graded.grade, graded.summary.tombstone, graded.summary.orphanLvs], ['B', 1, 1]);
});

test('orphan LVs: on a shared VG a guest of another node uses the LV; on a node\'s own VG its copy here is left over', () => {
  const elsewhere = config(300, 'scsi0: san:vm-300-disk-0,size=8G\nscsi1: thick:vm-300-disk-1,size=8G\n', { node: 'pve2' });
  const c = lvsNode([lvsLineOf('san01', 'vm-300-disk-0', '-wi-------'), lvsLineOf('vmdata', 'vm-300-disk-1', '-wi-------')], { configs: [elsewhere] });
  const result = run(c);
  assert.equal(orphansOf(c), [['vmdata/vm-300-disk-1', 'guest-on-other-node', false]]);
  assert.is(result.orphanLvs[0]?.otherNode, 'pve2');
  assert.match(result.orphanLvs[0]?.advice ?? '', /pvesm free thick:vm-300-disk-1\. Its guest lives on another node: this copy was left here\.$/);
});

test('orphan LVs: never work in flight, never a guest whose config cannot be read, never LVM\'s own LVs or a storage pve-dm does not see', () => {
  const cloning = config(200, 'lock: clone\nscsi0: local-lvm:vm-200-disk-0,size=8G\n');
  const unreadable = config(201, 'scsi0: local-lvm:vm-201-disk-0\n\u0000\u0000\u0001\n');
  const c = lvsNode([
    ...POOL,
    lvsLineOf('pve', 'vm-200-disk-1', 'Vwi---tz--', '', 'data'),
    lvsLineOf('pve', 'vm-201-disk-1', 'Vwi---tz--', '', 'data'),
    lvsLineOf('pve', '[vm-202-disk-0_rimage_0]', 'iwi-------'),
    lvsLineOf('other', 'vm-203-disk-0', '-wi-------'),
    lvsLineOf('pve', 'vm-204-extra', 'Vwi---tz--', '', 'data'),
  ], { configs: [cloning, unreadable] });
  assert.equal(orphansOf(c), [['pve/vm-204-extra', 'guest-missing', false]], 'a clone in flight, a partial config, a sub-LV and a VG no storage names are left alone');
});

test('orphan LVs: a snapshot volume no snapshot section names blocks taking that snapshot, and goes by its LVM name', () => {
  const vm = config(112, 'scsi0: local-lvm:vm-112-disk-0,size=8G\nparent: before\n\n[before]\nscsi0: local-lvm:vm-112-disk-0,size=8G\nsnaptime: 1\n');
  const c = lvsNode([
    ...POOL,
    lvsLineOf('pve', 'vm-112-disk-0', 'Vwi-a-tz--', '', 'data'),
    lvsLineOf('pve', 'snap_vm-112-disk-0_before', 'Vri---tz-k', '', 'data'),
    lvsLineOf('pve', 'snap_vm-112-disk-0_gone', 'Vri---tz-k', '', 'data'),
  ], { configs: [vm] });
  const result = run(c);
  assert.equal(orphansOf(c), [['pve/snap_vm-112-disk-0_gone', 'volume-unreferenced', false]]);
  assert.is(result.orphanLvs[0]?.blocks, 'VM 112 cannot take snapshot gone of vm-112-disk-0 on local-lvm');
  assert.match(result.orphanLvs[0]?.advice ?? '', /lvremove pve\/snap_vm-112-disk-0_gone\.$/);
});

test('orphan LVs: --vmid narrows them too; the console shows each with what it blocks', () => {
  const c = lvsNode([...POOL, lvsLineOf('pve', 'vm-555-disk-0', 'Vwi---tz--', '', 'data'), lvsLineOf('pve', 'vm-556-disk-0', 'Vwi---tz--', '', 'data')]);
  const result = run(c);
  const text = unwrapConsole(renderConsole(resultOf(result), false));
  assert.ok(text.includes('\n  Grade B   0 dm entries: 0 valid, 0 duplicate, 0 tombstone, 0 ignored\n  Orphan LVs: 2 (LVM volumes no config uses: below)\n'), text);
  const graded = resultOf(result);
  assert.is(notificationSubject(graded), '⚠️ [pve1] Proxmox DM Health: 2 orphan LV(s) block guest volume names - Grade B', 'never "EXCELLENT" over orphans');
  assert.ok(renderHtml(graded).includes('<strong>2 orphan LVs will block disk creation</strong>'), 'the HTML headline names them');
  assert.ok(text.includes('\nOrphan LVs (warning): 2\n  pve/vm-555-disk-0  guest-missing (inactive, 4.0 GiB): VMID 555 cannot create vm-555-disk-0 on local-lvm\n'), text);
  assert.ok(text.includes('\n    by hand: look at its data first (it may be the only copy); if nothing needs it: pvesm free local-lvm:vm-555-disk-0.\n'), text);
  const told = notificationText(resultOf(result));
  assert.ok(told.includes('\n- orphan LV pve/vm-555-disk-0: guest-missing; VMID 555 cannot create vm-555-disk-0 on local-lvm; by hand\n'), told);
});

test.run();
