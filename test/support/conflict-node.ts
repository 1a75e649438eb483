// A model node with conflicts (issue 19) for cleanup tests: kpartx partitions and a guest's VG on
// guest disks, three stale tables on shared LVM (test/cleanup-conflicts.test.ts, test/interactive.test.ts).
import { fakeNode, put, type FakeNode } from './fake-node.ts';
import { displayId, lvmDmName, lvmId, lvmUuid } from './lvm.ts';

const EXTENT = 8192; // sectors: LVM's default 4 MiB extents
const PE_START = 2048;
export const at = (extent: number) => PE_START + extent * EXTENT;
/** `lvs --segments` (LVS_SEGMENTS_ARGS) of a one-segment linear LV of san01 on /dev/sdb (8:16). */
const segment = (lv: string, first: number, minor: number) =>
  [
    'san01', lv, displayId(lvmId(`lv:san01/${lv}`)), displayId(lvmId('vg:san01')), '-wi-a-----', EXTENT, 0, 4 * EXTENT,
    'linear', 1, 0, 0, `/dev/sdb:${first}-${first + 3}`, '', '', '', 252, minor,
  ].join('|');

/**
 * pve1: VM 101's disk with kpartx partitions, VM 102's disk with the guest's VG vg-archlinux active
 * on the host, and three stale san01 LVs (LVM says extents 10-13, 20-23, 30-33; the kernel maps
 * 2-5, 14-17, 40-43): VM 201 stopped, VM 202 running, VM 203 migrating. VM 888 is gone (a tombstone).
 */
export function conflicts(more: (root: string, node: FakeNode) => void = () => undefined) {
  return fakeNode((root, node) => {
    put(root, 'etc/pve/storage.cfg', 'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\nlvm: san\n\tvgname san01\n\tshared 1\n');
    for (const [vmid, volume] of [[101, 'local-lvm:vm-101-disk-0'], [102, 'local-lvm:vm-102-disk-0'], [201, 'san:vm-201-disk-0'], [202, 'san:vm-202-disk-0']])
      put(root, `etc/pve/nodes/pve1/qemu-server/${vmid}.conf`, `scsi0: ${volume},size=16M\n`);
    put(root, 'etc/pve/nodes/pve1/qemu-server/203.conf', 'lock: migrate\nscsi0: san:vm-203-disk-0,size=16M\n');
    put(root, 'run/qemu-server/202.pid', '4242\n');
    put(root, 'proc/4242/cmdline', kvm(202));
    put(root, 'proc/stat', 'cpu  1 0 1 8 0 0 0 0 0 0\n');
    const lv = (vg: string, name: string, extra: Parameters<FakeNode['add']>[1] = {}) =>
      node.add(lvmDmName(vg, name), { uuid: lvmUuid(vg, name), lv: `${vg}/${name}`, ...extra });
    lv('pve', 'vm-101-disk-0', { open: 2 });
    const disk101 = node.dm.get('pve-vm--101--disk--0')?.minor;
    for (const n of [1, 2])
      node.add(`pve-vm--101--disk--0p${n}`, { uuid: `part${n}-${lvmUuid('pve', 'vm-101-disk-0')}`, table: `0 1000 linear 252:${disk101} ${n * 2048}` });
    lv('pve', 'vm-102-disk-0', { open: 2 });
    const disk102 = node.dm.get('pve-vm--102--disk--0')?.minor;
    // The guest's own VG: the host's LVM does not list it (scan_lvs = 0), the kernel maps it.
    for (const [name, offset] of [['root', 2048], ['swap', 8192]] as const)
      node.add(lvmDmName('vg-archlinux', name), { uuid: lvmUuid('vg-archlinux', name), table: `0 4096 linear 252:${disk102} ${offset}` });
    for (const [vmid, metadata, kernel] of [[201, 10, 2], [202, 20, 14], [203, 30, 40]] as const) {
      const name = `vm-${vmid}-disk-0`;
      lv('san01', name, { table: `0 32768 linear 8:16 ${at(kernel)}`, open: vmid === 202 ? 1 : 0 });
      node.segments.push(segment(name, metadata, node.dm.get(lvmDmName('san01', name))?.minor ?? 0));
      node.metadataTables.set(lvmDmName('san01', name), `0 32768 linear 8:16 ${at(metadata)}`);
    }
    node.pvs.push(`/dev/sdb|${displayId(lvmId('pv:sdb'))}|san01|${displayId(lvmId('vg:san01'))}|${PE_START}|8|16`);
    lv('pve', 'vm-888-disk-0');
    more(root, node);
  });
}

/** A running VM's command line as /proc shows it (pve-dm reads its pidfile). */
export const kvm = (vmid: number) => ['/usr/bin/kvm', '-id', vmid, '-pidfile', `/var/run/qemu-server/${vmid}.pid`, ''].join('\0');
