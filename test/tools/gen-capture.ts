// Generates a realistic capture of a large node, deterministically from a seed, for the benchmark
// and the scale tests:
//   npm run gen-capture -- --guests 5000 --out /tmp/big [--seed 1]
// The node `pve-bench` is one of three cluster nodes: VMs and containers on two thin pools, a
// shared SAN VG on multipath and a local thick VG; templates, linked clones, snapshots, cloud-init
// and state volumes (a linked clone on lvmthin is recorded as a plain `vm-` volume); and, as on real nodes, a few percent of leftovers: tombstones of each kind and
// duplicates by name and by table. Every entry's intended status is counted as it is made, so a
// test can hold the classification to it.
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { CAPTURE_FILES, VERSION, writeCapture, type Capture, type ConfigFile, type Status, type Summary } from '../../pve-dm.ts';
import { lvmDmName, lvmUuid, lvsLine, pvsLine, segmentsLine } from '../support/lvm.ts';

export const NODE = 'pve-bench';
const OTHER_NODES = ['pve-bench-b', 'pve-bench-c'];

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
function random(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    chance: (p: number) => next() < p,
    int: (min: number, max: number) => min + Math.floor(next() * (max - min + 1)),
    pick: <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T,
    hex: (n: number) => Array.from({ length: n }, () => '0123456789abcdef'[Math.floor(next() * 16)]).join(''),
  };
}

interface Storage {
  id: string;
  vg: string;
  /** Thin pool name, or null for a thick VG. */
  pool: string | null;
  shared: boolean;
}
const THIN_LOCAL: Storage = { id: 'local-lvm', vg: 'pve', pool: 'data', shared: false };
const THIN_NVME: Storage = { id: 'nvme-thin', vg: 'nvme', pool: 'vmstore', shared: false };
const SAN: Storage = { id: 'san-lvm', vg: 'san01', pool: null, shared: true };
const HDD: Storage = { id: 'hdd-lvm', vg: 'hdd', pool: null, shared: false };
const STORAGE_CFG = `dir: local
\tpath /var/lib/vz
\tcontent iso,vztmpl,backup

lvmthin: local-lvm
\tthinpool data
\tvgname pve
\tcontent rootdir,images

lvmthin: nvme-thin
\tthinpool vmstore
\tvgname nvme
\tcontent rootdir,images
\tnodes ${NODE}

lvm: san-lvm
\tvgname san01
\tcontent rootdir,images
\tshared 1
\tsaferemove 1

lvm: hdd-lvm
\tvgname hdd
\tcontent images
\tnodes ${NODE}

nfs: backup
\texport /srv/backup
\tpath /mnt/pve/backup
\tserver 10.20.0.5
\tcontent backup
\tprune-backups keep-daily=7,keep-weekly=4
`;

interface VolumeShape {
  active: boolean;
  open?: number;
  status?: Status;
  tags?: string;
  /** false: removed from LVM elsewhere, its dm entry left behind. */
  inLvs?: boolean;
  /** Carries LVM's skip-activation flag (thin snapshots, template volumes). */
  snapshot?: boolean;
}

export interface Generated {
  capture: Capture;
  /** What each entry was made to be, counted as it was made. */
  expected: Summary;
  guests: number;
}

export function generateCapture({ guests, seed = 1 }: { guests: number; seed?: number }): Generated {
  const rng = random(seed);
  const dmInfo: string[] = [];
  const dmTable: string[] = [];
  const lvs: string[] = [];
  // What LVM's metadata says each active LV maps: its tables are the kernel's, so none is stale.
  const segments: string[] = [];
  const pvs = [pvsLine('/dev/sda3', 'pve', '8:3'), pvsLine('/dev/mapper/mpathb', SAN.vg, '253:0'), pvsLine('/dev/sdb', HDD.vg, '253:1')];
  const running: number[] = [];
  const configs: ConfigFile[] = [];
  const expected: Summary = { entries: 0, valid: 0, conflict: 0, duplicate: 0, tombstone: 0, ignored: 0, unjudged: 0, orphanLvs: 0, poolProblems: 0 };
  let minor = 0;
  const sectorsAt = new Map<string, number>();

  const entry = (name: string, uuid: string, table: string, open: number, status: Status) => {
    dmInfo.push(`${name}|252|${minor++}|${open}|L--w|${uuid}`);
    dmTable.push(`${name}: ${table}`);
    expected.entries++;
    expected[status]++;
  };
  /** An LV as lvs prints it, and its dm entry when active. */
  const volume = (storage: Storage, lv: string, { active, open = 0, status = 'valid', tags = '', inLvs = true, snapshot = false }: VolumeShape) => {
    const sectors = rng.pick([8, 16, 32, 64, 128, 256]) * 2097152;
    const thin = storage.pool !== null;
    if (inLvs) {
      const attr = snapshot ? 'Vri---tz-k' : `${thin ? 'V' : '-'}wi-${active ? 'a' : '-'}${open > 0 ? 'o' : '-'}${thin ? 'tz--' : '----'}`;
      lvs.push(lvsLine(storage.vg, lv, attr, tags, storage.pool ?? ''));
    }
    if (!active) return null;
    const at = sectorsAt.get(storage.vg) ?? 2048;
    sectorsAt.set(storage.vg, at + sectors);
    const table = thin ? `0 ${sectors} thin 252:${poolMinor.get(storage.vg)} ${minor}` : `0 ${sectors} linear 253:${storage.vg === SAN.vg ? 0 : 1} ${at}`;
    if (inLvs) {
      const attr = `${thin ? 'V' : '-'}wi-a${open > 0 ? 'o' : '-'}${thin ? 'tz--' : '----'}`;
      const first = (at - 2048) / 8192;
      const pv = storage.vg === SAN.vg ? '/dev/mapper/mpathb' : '/dev/sdb';
      const shape = thin
        ? { type: 'thin', thinId: minor, pool: storage.pool as string }
        : { type: 'linear', ranges: `${pv}:${first}-${first + sectors / 8192 - 1}` };
      segments.push(segmentsLine(storage.vg, lv, attr, { size: sectors, device: `252:${minor}`, ...shape }));
    }
    const name = lvmDmName(storage.vg, lv);
    entry(name, lvmUuid(storage.vg, lv), table, open, status);
    return { name, table };
  };

  // The node's own devices: multipath maps under the SAN VG, a LUKS volume under the HDD VG, the
  // thin pools' layers, root and swap, and a Ceph OSD.
  entry('mpatha', 'mpath-3600a098038314d6f4f5d4c6a6b4d3171', '0 8589934592 multipath 1 queue_if_no_path 1 alua 2 1 service-time 0 2 2 8:32 1 1 8:64 1 1', 1, 'ignored');
  entry('mpatha-part1', 'part1-mpath-3600a098038314d6f4f5d4c6a6b4d3171', '0 8589932544 linear 252:0 2048', 1, 'ignored');
  entry('cryptdata', 'CRYPT-LUKS2-6f1c3e0a9b7d4c2e8a5f1b3d7c9e0a2b-cryptdata', '0 7814037168 crypt aes-xts-plain64 :64:logon:cryptsetup:6f1c3e0a-d0 0 8:16 32768', 1, 'ignored');
  for (const [vg, lv] of [['pve', 'root'], ['pve', 'swap']] as const) {
    lvs.push(lvsLine(vg, lv, '-wi-ao----'));
    const [size, at] = lv === 'root' ? [201326592, 34816] : [16777216, 201361408];
    segments.push(segmentsLine(vg, lv, '-wi-ao----', { size, type: 'linear', ranges: `/dev/sda3:${(at - 2048) / 8192}-${(at - 2048 + size) / 8192 - 1}`, device: `252:${minor}` }));
    entry(lvmDmName(vg, lv), lvmUuid(vg, lv), `0 ${size} linear 8:3 ${at}`, 1, 'ignored');
  }
  const poolMinor = new Map<string, number>();
  const poolStatus: string[] = [];
  for (const storage of [THIN_LOCAL, THIN_NVME]) {
    const pool = storage.pool as string;
    const size = 1_900_000_000_000;
    lvs.push(
      lvsLine(storage.vg, pool, 'twi-aotz--', '', '', size, { data: '41.27', metadata: '12.83', metadataSize: '4294967296' }),
      lvsLine(storage.vg, `[${pool}_tdata]`, 'Twi-ao----', '', '', size),
      lvsLine(storage.vg, `[${pool}_tmeta]`, 'ewi-ao----', '', '', 4294967296),
    );
    entry(lvmDmName(storage.vg, `${pool}_tmeta`), lvmUuid(storage.vg, pool, 'tmeta'), '0 8388608 linear 8:3 218138624', 1, 'ignored');
    entry(lvmDmName(storage.vg, `${pool}_tdata`), lvmUuid(storage.vg, pool, 'tdata'), '0 3710937088 linear 8:3 226527232', 1, 'ignored');
    poolMinor.set(storage.vg, minor);
    segments.push(segmentsLine(storage.vg, pool, 'twi-aotz--', { size: 3710937088, type: 'thin-pool', ranges: `${pool}_tdata:0-452995`, device: `252:${minor}` }));
    entry(lvmDmName(storage.vg, pool, 'tpool'), lvmUuid(storage.vg, pool, 'tpool'), `0 3710937088 thin-pool 252:${minor - 2} 252:${minor - 1} 128 0 1 skip_block_zeroing`, 2 * guests, 'ignored');
    entry(lvmDmName(storage.vg, pool), lvmUuid(storage.vg, pool, 'pool'), `0 3710937088 linear 252:${minor - 1} 0`, 0, 'ignored');
    // As the kernel prints it: 41.27% of the data blocks, 12.83% of the metadata blocks in use.
    poolStatus.push(`${lvmDmName(storage.vg, pool, 'tpool')}: 0 3710937088 thin-pool 7 134521/1048576 11964877/28991696 - rw no_discard_passdown queue_if_no_space - 1024`);
  }
  const osd = `osd-block-${rng.hex(8)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(12)}`;
  const cephVg = `ceph-${rng.hex(8)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(12)}`;
  lvs.push(lvsLine(cephVg, osd, '-wi-ao----', 'ceph.osd_id=0', '', 2_000_381_018_112));
  entry(lvmDmName(cephVg, osd), lvmUuid(cephVg, osd), '0 3907018752 linear 8:48 2048', 1, 'ignored');

  const configFile = (node: string, type: 'qemu' | 'lxc', vmid: number, text: string) =>
    configs.push({ path: `${CAPTURE_FILES.nodes}/${node}/${type === 'qemu' ? 'qemu-server' : 'lxc'}/${vmid}.conf`, node, type, vmid, text });
  const mac = () => `BC:24:11:${rng.hex(2)}:${rng.hex(2)}:${rng.hex(2)}`.toUpperCase();

  for (let i = 0; i < guests; i++) {
    const vmid = 100 + i;
    const isCt = rng.chance(0.25);
    const storage = rng.pick([THIN_LOCAL, THIN_LOCAL, THIN_NVME, SAN, SAN, HDD]);
    const thin = storage.pool !== null;
    const template = !isCt && thin && rng.chance(0.02);
    const isRunning = !template && rng.chance(0.7);
    if (isRunning) running.push(vmid);
    // Thin volumes stay active; a shared VG's volumes are active only where their guest runs.
    const active = !template && (storage !== SAN || isRunning);
    const open = isRunning ? 1 : 0;
    const tags = thin ? '' : `pve-vm-${vmid}`;
    const prefix = template ? 'base' : 'vm';
    const disks = isCt ? rng.pick([1, 2, 2, 3]) : rng.pick([2, 3, 4, 4, 5, 6]);
    const keys = new Map<string, string>();
    const made: string[] = [];
    for (let d = 0; d < disks; d++) {
      const lv = `${prefix}-${vmid}-disk-${d}`;
      volume(storage, lv, { active, open, tags, snapshot: template });
      made.push(lv);
      const size = `${rng.pick([8, 16, 32, 64, 128])}G`;
      if (isCt) keys.set(d === 0 ? 'rootfs' : `mp${d - 1}`, `${storage.id}:${lv},${d === 0 ? '' : `mp=/srv/data${d},`}size=${size}`);
      else keys.set(`scsi${d}`, `${storage.id}:${lv},discard=on,iothread=1,size=${size}`);
    }
    if (!isCt && rng.chance(0.3)) {
      const lv = `${prefix}-${vmid}-disk-${disks}`;
      volume(storage, lv, { active, open, tags, snapshot: template });
      keys.set('efidisk0', `${storage.id}:${lv},efitype=4m,pre-enrolled-keys=1,size=4M`);
      if (rng.chance(0.4)) {
        const tpm = `${prefix}-${vmid}-disk-${disks + 1}`;
        volume(storage, tpm, { active, open, tags, snapshot: template });
        keys.set('tpmstate0', `${storage.id}:${tpm},size=4M,version=v2.0`);
      }
    }
    if (!isCt && !template && rng.chance(0.15)) {
      volume(storage, `vm-${vmid}-cloudinit`, { active, open, tags });
      keys.set('ide2', `${storage.id}:vm-${vmid}-cloudinit,media=cdrom`);
    }
    const snapshots: string[] = [];
    if (thin && !template && rng.chance(0.08)) {
      const name = rng.pick(['before-upgrade', 'pre-patch', 'golden', 'test1']);
      snapshots.push(name);
      // Thin snapshots carry LVM's skip-activation flag: inactive, except one being read by a backup.
      const mounted = rng.chance(0.25);
      volume(storage, `snap_${made[0]}_${name}`, { active: mounted, snapshot: !mounted, status: 'valid' });
      if (!isCt && rng.chance(0.3)) {
        volume(storage, `vm-${vmid}-state-${name}`, { active: true, open: 0 });
        keys.set('__vmstate', `${storage.id}:vm-${vmid}-state-${name}`);
      }
    }
    // Leftovers, a few percent of guests each.
    const leftover = rng.int(0, 999);
    // A leftover LVM still knows is an orphan LV too: it blocks its name.
    if (leftover < 15 && thin && !template) {
      volume(storage, `snap_${made[0]}_old-kernel`, { active: true, status: 'tombstone' });
      expected.orphanLvs++;
    } else if (leftover < 35 && !template) {
      volume(storage, `${prefix}-${vmid}-disk-${disks + 5}`, { active: true, status: 'tombstone', tags });
      expected.orphanLvs++;
    } else if (leftover < 45 && active && !template) {
      const original = lvmDmName(storage.vg, made[0] as string);
      const table = dmTable.find((line) => line.startsWith(`${original}: `))?.slice(original.length + 2) as string;
      // By name and by table, in turn.
      if (expected.duplicate % 2 === 0) entry(`${original}-dup`, '', table, 0, 'duplicate');
      else entry(`rescue${vmid}`, '', table, 0, 'duplicate');
    } else if (leftover < 55 && !isRunning && !template) {
      // Migrated away: the guest lives on another node, its shared volume still active here.
      const lv = `vm-${vmid + 100000}-disk-0`;
      volume(SAN, lv, { active: true, status: 'tombstone', tags: `pve-vm-${vmid + 100000}` });
      configFile(rng.pick(OTHER_NODES), 'qemu', vmid + 100000, `memory: 4096\nname: migrated-${vmid}\nscsi0: ${SAN.id}:${lv},size=32G\n`);
    } else if (leftover < 60) {
      // Removed on another node of the shared VG: LVM no longer knows the LV (bug 4997).
      volume(SAN, `vm-${vmid + 200000}-disk-0`, { active: true, status: 'tombstone', inLvs: false });
    } else if (leftover < 65) {
      volume(storage, `vm-${vmid + 300000}-disk-0`, { active: true, status: 'tombstone', tags });
      expected.orphanLvs++;
    }

    const description = rng.chance(0.2) ? `#Owner%3A team-${rng.int(1, 40)}%0A#Ticket OPS-${rng.int(1000, 9999)}\n` : '';
    const parent = snapshots.length > 0 ? `parent: ${snapshots[0]}\n` : '';
    let text: string;
    if (isCt) {
      text = `${description}arch: amd64\ncores: ${rng.pick([1, 2, 4])}\nhostname: ct-${vmid}\nmemory: ${rng.pick([512, 1024, 2048])}\n${[...keys].filter(([k]) => k.startsWith('mp')).map(([k, v]) => `${k}: ${v}\n`).join('')}net0: name=eth0,bridge=vmbr0,hwaddr=${mac()},ip=dhcp,type=veth\nostype: debian\n${parent}rootfs: ${keys.get('rootfs')}\nswap: 512\nunprivileged: 1\n`;
    } else {
      const disksText = [...keys].filter(([k]) => !k.startsWith('__')).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}: ${v}\n`).join('');
      text = `${description}agent: 1\nboot: order=scsi0;net0\ncores: ${rng.pick([2, 4, 8])}\ncpu: x86-64-v2-AES\nmemory: ${rng.pick([2048, 4096, 8192, 16384])}\nmeta: creation-qemu=9.2.0,ctime=${1700000000 + i}\nname: vm-${vmid}\nnet0: virtio=${mac()},bridge=vmbr0,firewall=1\nostype: l26\n${parent}${disksText}scsihw: virtio-scsi-single\nsmbios1: uuid=${rng.hex(8)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(12)}\n${template ? 'template: 1\n' : ''}vmgenid: ${rng.hex(8)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(4)}-${rng.hex(12)}\n`;
    }
    for (const name of snapshots) {
      const vmstate = keys.get('__vmstate');
      const snapKeys = [...keys].filter(([k]) => !k.startsWith('__') && k !== 'scsi0').map(([k, v]) => `${k}: ${v}\n`).join('');
      text += `\n[${name}]\n${isCt ? `rootfs: ${keys.get('rootfs')}\n` : `scsi0: ${keys.get('scsi0')}\n${snapKeys}`}snaptime: ${1700000000 + i}\n${vmstate ? `vmstate: ${vmstate}\n` : ''}`;
    }
    configFile(NODE, isCt ? 'lxc' : 'qemu', vmid, text);
  }
  // Proxmox's saferemove wiping a deleted volume.
  volume(SAN, `del-vm-${100 + guests + 1}-disk-0`, { active: true, status: 'ignored' });

  const sortedInfo = dmInfo.map((line, i) => [line, dmTable[i] as string] as const).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const capture: Capture = {
    hostname: NODE,
    dmsetupInfo: `${sortedInfo.map(([line]) => line).join('\n')}\n`,
    dmsetupTable: `${sortedInfo.map(([, line]) => line).join('\n')}\n`,
    lvs: `${lvs.join('\n')}\n`,
    poolStatus: `${poolStatus.join('\n')}\n`,
    lvsSegments: `${segments.join('\n')}\n`,
    pvs: `${pvs.join('\n')}\n`,
    running: `${running.join('\n')}\n`,
    system: {
      pveVersion: '9.1.2', kernel: '6.14.11-4-pve', uptimeSeconds: 8_640_000, cpuPercent: 41.5,
      memory: { totalBytes: 1_099_511_627_776, usedBytes: 721_554_505_728 }, rootfs: { totalBytes: 101_203_132_416, usedBytes: 14_495_514_624 },
    },
    meta: { capturedAt: '2026-11-25T12:00:00Z', pveDm: VERSION, commands: {} },
    storageCfg: STORAGE_CFG,
    configs,
    root: null,
    warnings: [],
  };
  return { capture, expected, guests };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  const { values } = parseArgs({ options: { guests: { type: 'string', default: '500' }, out: { type: 'string' }, seed: { type: 'string', default: '1' } } });
  const guests = Number(values.guests);
  if (!Number.isInteger(guests) || guests < 1 || values.out === undefined) {
    process.stderr.write('usage: npm run gen-capture -- --guests N --out DIR [--seed N]\n');
    process.exit(64);
  }
  const { capture, expected } = generateCapture({ guests, seed: Number(values.seed) });
  await writeCapture(values.out, capture);
  process.stdout.write(`${values.out}: ${guests} guests, ${expected.entries} dm entries (${expected.valid} valid, ${expected.duplicate} duplicate, ${expected.tombstone} tombstone, ${expected.ignored} ignored, ${expected.orphanLvs} orphan LVs)\n`);
}
