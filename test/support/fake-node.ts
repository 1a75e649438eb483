// A model node for cleanup tests: a temporary /etc/pve, /run and /proc tree, and dmsetup, lvs and
// lvchange answered from a model of the kernel's and LVM's state (changed by the commands run).
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { main, readJournal, type CommandResult, type Exec } from '../../pve-dm.ts';
import { tempDir, unwrapConsole } from '../harness.ts';
import { lvmDmName } from './lvm.ts';

export const VG_PVE = 'Uv0zN6dKv1Lw3Ry9mG1zQ3f2p7cTnIkR';
export const VG_SSD = 'ez0TI5tS7zWJAgfqqCWPQKkNZthHBwsT';
export const lvUuid = (vg: string, n: number) => `LVM-${vg}${String(n).padStart(32, 'x')}`;

/** What the runner answers for a command stopped at its time limit (what it did is not known). */
export const TIMED_OUT: CommandResult = { exitCode: 143, stdout: '', stderr: 'timed out after 30000 ms', timedOut: true };

interface Device {
  minor: number;
  open: number;
  uuid: string;
  table: string;
}

/** The kernel's and LVM's state as dmsetup, lvs and lvchange see and change it (dm names as the kernel holds them). */
export class FakeNode {
  dm = new Map<string, Device>();
  lvs = new Set<string>();
  /** lvs lists VG pve's LVs as thin LVs of pool data. */
  thin = false;
  inactive = new Map<string, Device>();
  calls: string[][] = [];
  /** Journal lines present when each changing command ran. */
  journalAtChange: number[] = [];
  busy = new Set<string>();
  /** Entries a command succeeds on and leaves in place (an LV LVM knows under another mapping). */
  stubborn = new Set<string>();
  /** `lvs --segments` and `pvs` lines (null: the node answers none, and tables are not checked). */
  segments: string[] = [];
  pvs: string[] = [];
  /** The table `lvchange --refresh VG/LV` loads: LVM's metadata of the LV, by dm name. */
  metadataTables = new Map<string, string>();
  /** Tables loaded (`dmsetup load`) and not yet resumed, by dm name. */
  loaded = new Map<string, string>();
  constructor(readonly root: string, readonly journal: string) {}

  add(name: string, device: Partial<Device> & { lv?: string }): void {
    this.dm.set(name, { minor: this.dm.size + 10, open: 0, uuid: '', table: `0 2048 linear 8:0 ${this.dm.size * 4096}`, ...device });
    if (device.lv) this.lvs.add(device.lv);
  }

  /** A mapping that went no longer holds open the devices its table maps (a kpartx partition its parent). */
  release(d: Device): void {
    for (const [, minor] of d.table.matchAll(/\b252:(\d+)\b/g)) {
      const held = [...this.dm.values()].find((other) => other.minor === Number(minor));
      if (held && held.open > 0) held.open--;
    }
  }

  /**
   * The command `line` (as `changing` prints it) answers `result` instead: without `change` it changes
   * nothing (a command stopped at its time limit before it did anything, a failure), with it the
   * change is made all the same (stopped after it was done).
   */
  answer(line: string, result: CommandResult, { change = false } = {}): void {
    const exec = this.exec;
    this.exec = async (command, args, options) => {
      if ([command, ...args].join(' ') !== line) return exec(command, args, options);
      if (change) await exec(command, args, options);
      else {
        this.calls.push([command, ...args]);
        this.journalAtChange.push(readJournal(this.journal).length);
      }
      return result;
    };
  }

  line(name: string, d: Device): string {
    return `${name}|252|${d.minor}|${d.open}|L--w|${d.uuid}`;
  }

  exec: Exec = async (command, args, { input }) => {
    this.calls.push([command, ...args]);
    const ok = (stdout = ''): CommandResult => ({ exitCode: 0, stdout, stderr: '' });
    const fail = (exitCode: number, stderr: string): CommandResult => ({ exitCode, stdout: '', stderr });
    const a = args.filter((arg, i) => !(arg === '--manglename' || args[i - 1] === '--manglename'));
    if (command === 'dmsetup' && a[0] === 'info') {
      const name = a.length > 7 ? a[a.length - 1] : undefined;
      if (name === undefined) return ok(this.dm.size === 0 ? 'No devices found\n' : `${[...this.dm].map(([n, d]) => this.line(n, d)).join('\n')}\n`);
      const d = this.dm.get(name);
      return d ? ok(`${this.line(name, d)}\n`) : fail(1, 'Device does not exist.\nCommand failed.\n');
    }
    if (command === 'dmsetup' && a[0] === 'table') {
      if (a[1] !== undefined) return this.dm.has(a[1]) ? ok(`${this.dm.get(a[1])?.table}\n`) : fail(1, 'Device does not exist.\n');
      return ok(`${[...this.dm].map(([n, d]) => `${n}: ${d.table}`).join('\n')}\n`);
    }
    // No thin pool in this node's tables: nothing to report.
    if (command === 'dmsetup' && a[0] === 'status') return ok('');
    // Thin LVs of local-lvm when asked (then rescan would list VM 100's disk), thick ones otherwise.
    const attr = (key: string) => (this.thin && key.startsWith('pve/') ? 'Vwi-a-tz--' : '-wi-a-----');
    // lvs --segments and pvs: this model node keeps no extents, so its tables are not checked.
    if (command === 'lvs' && a.includes('--segments')) return ok(this.segments.map((l) => `  ${l}\n`).join(''));
    if (command === 'pvs') return ok(this.pvs.map((l) => `  ${l}\n`).join(''));
    if (command === 'lvs') return ok([...this.lvs].map((key) => `  ${key.replace('/', '|')}|${attr(key)}|`).join('\n') + '\n');
    if (command === 'pveversion') return ok('pve-manager/9.1.2/0123456789abcdef (running kernel: 6.14.11-4-pve)\n');
    this.journalAtChange.push(readJournal(this.journal).length);
    if (command === 'lvchange' && a[0] === '-an') {
      const [vg = '', lv = ''] = (a[1] ?? '').split('/');
      const name = lvmDmName(vg, lv);
      const d = this.dm.get(name);
      if (d && d.open > 0) return fail(5, `  Logical volume ${a[1]} in use.\n`);
      if (this.stubborn.has(name)) return ok();
      if (d) this.inactive.set(name, d);
      this.dm.delete(name);
      return ok();
    }
    if (command === 'lvchange' && a[0] === '-ay') {
      const [vg = '', lv = ''] = (a[1] ?? '').split('/');
      const name = lvmDmName(vg, lv);
      const d = this.inactive.get(name);
      if (d) this.dm.set(name, d);
      return d ? ok() : fail(5, `  Failed to find logical volume "${a[1]}"\n`);
    }
    if (command === 'dmsetup' && a[0] === 'remove') {
      const name = a[1] ?? '';
      const d = this.dm.get(name);
      if (!d) return fail(1, `device-mapper: remove ioctl on ${name}  failed: No such device or address\nCommand failed.\n`);
      if (d.open > 0 || this.busy.has(name)) return fail(1, `device-mapper: remove ioctl on ${name}  failed: Device or resource busy\nCommand failed.\n`);
      this.dm.delete(name);
      this.release(d);
      return ok();
    }
    // qm disk rescan: the guest's config gains its unreferenced volume as unused0 (the fake knows one).
    if (command === 'qm' && a[0] === 'disk' && a[1] === 'rescan') {
      const file = path.join(this.root, `etc/pve/nodes/pve1/qemu-server/${a[3]}.conf`);
      writeFileSync(file, `${readFileSync(file, 'utf8')}unused0: local-lvm:vm-${a[3]}-disk-7\n`);
      return ok();
    }
    if (command === 'lvchange' && a[0] === '--refresh') {
      const [vg = '', lv = ''] = (a[1] ?? '').split('/');
      const d = this.dm.get(lvmDmName(vg, lv));
      const table = this.metadataTables.get(lvmDmName(vg, lv));
      if (d && table !== undefined && !this.stubborn.has(lvmDmName(vg, lv))) d.table = table;
      return d ? ok() : fail(5, `  Failed to find logical volume "${a[1]}"\n`);
    }
    // vgchange --config '...' -an VG: every LV of that VG the kernel maps, by its dm name.
    if (command === 'vgchange' && a.at(-2) === '-an') {
      const prefix = `${lvmDmName(a.at(-1) ?? '', 'x').slice(0, -1)}`;
      const lvs = [...this.dm].filter(([name]) => name.startsWith(prefix));
      if (lvs.length === 0) return fail(5, `  Volume group "${a.at(-1)}" not found\n`);
      for (const [name, d] of lvs) {
        if (d.open > 0) return fail(5, `  Logical volume ${name} in use.\n`);
        this.dm.delete(name);
        this.release(d);
      }
      return ok();
    }
    if (command === 'dmsetup' && a[0] === 'load') {
      if (!this.dm.has(a[1] ?? '')) return fail(1, 'Device does not exist.\n');
      this.loaded.set(a[1] ?? '', (input ?? '').trim());
      return ok();
    }
    if (command === 'dmsetup' && a[0] === 'resume') {
      const d = this.dm.get(a[1] ?? '');
      const table = this.loaded.get(a[1] ?? '');
      if (d && table !== undefined) d.table = table;
      this.loaded.delete(a[1] ?? '');
      return d ? ok() : fail(1, 'Device does not exist.\n');
    }
    if (command === 'dmsetup' && a[0] === 'create') {
      const name = a[1] ?? '';
      if (this.dm.has(name)) return fail(1, `device-mapper: create ioctl on ${name}  failed: Device or resource busy\n`);
      const uuid = a.includes('--uuid') ? (a[a.indexOf('--uuid') + 1] ?? '') : '';
      this.dm.set(name, { minor: 99, open: 0, uuid, table: (input ?? '').trim() });
      return ok();
    }
    return fail(127, `${command}: not in this fake node`);
  };
}

export function put(root: string, file: string, text: string): void {
  mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
  writeFileSync(path.join(root, file), text);
}

/** A node pve1 with the problems cleanup must handle, and the ones it must leave alone. */
export function scenario({ thin = false } = {}) {
  return fakeNode((root, node) => {
    node.thin = thin;
    removals(root, node);
  });
}

function removals(root: string, node: FakeNode): void {
  put(root, 'etc/pve/storage.cfg', 'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\nlvm: ssd-ha01\n\tvgname ssd-ha01\n\tshared 1\n');
  put(root, 'etc/pve/nodes/pve1/qemu-server/100.conf', 'name: web\nscsi0: local-lvm:vm-100-disk-0,size=8G\n');
  put(root, 'etc/pve/nodes/pve1/qemu-server/119.conf', 'name: app\nscsi0: ssd-ha01:vm-119-disk-0,size=8G\n');
  put(root, 'etc/pve/nodes/pve1/lxc/200.conf', 'hostname: ct\nrootfs: local-lvm:vm-200-disk-0,size=8G\n');
  put(root, 'proc/net/unix', 'Num       RefCount Protocol Flags    Type St Inode Path\n0000: 00000002 00000000 00010000 0001 01 1 @/var/lib/lxc/200/command\n');
  put(root, 'proc/stat', 'cpu  1 0 1 8 0 0 0 0 0 0\n');
  node.add('pve-root', { uuid: lvUuid(VG_PVE, 1), lv: 'pve/root' });
  node.add('pve-vm--100--disk--0', { uuid: lvUuid(VG_PVE, 2), lv: 'pve/vm-100-disk-0', open: 1 });
  node.add('pve-vm--100--disk--7', { uuid: lvUuid(VG_PVE, 3), lv: 'pve/vm-100-disk-7' });
  node.add('pve-vm--888--disk--0', { uuid: lvUuid(VG_PVE, 4), lv: 'pve/vm-888-disk-0' });
  node.add('pve-vm--889--disk--0', { uuid: lvUuid(VG_PVE, 5), lv: 'pve/vm-889-disk-0', open: 1 });
  node.add('pve-vm--150--disk--0', { uuid: lvUuid(VG_PVE, 6), lv: 'pve/vm-150-disk-0', open: 1 });
  node.add('pve-vm--150--disk--0p1', { uuid: `part1-${lvUuid(VG_PVE, 6)}`, table: '0 1000 linear 252:15 2048' });
  node.add('pve-vm--200--disk--0', { uuid: lvUuid(VG_PVE, 7), lv: 'pve/vm-200-disk-0', open: 1 });
  node.add('pve-vm--200--disk--3', { uuid: lvUuid(VG_PVE, 8), lv: 'pve/vm-200-disk-3' });
  node.add('ssd--ha01-vm--119--disk--0', { uuid: lvUuid(VG_SSD, 1), lv: 'ssd-ha01/vm-119-disk-0', table: '0 65536 linear 7:1 2048', open: 1 });
  node.add('ssd--ha01-vm--119--disk--0-dup', { table: '0 65536 linear 7:1 2048' });
  node.add('ssd--ha01-vm--301--disk--0', { uuid: lvUuid(VG_SSD, 2) });
}

/** A model node built by `build`, and pve-dm's command line run against it (in process). */
export function fakeNode(build: (root: string, node: FakeNode) => void) {
  const root = tempDir('pve-dm-cleanup-');
  const journal = path.join(root, 'var/lib/pve-dm/journal.jsonl');
  const node = new FakeNode(root, journal);
  build(root, node);
  const cli = async (...argv: string[]) => {
    let stdout = '';
    let stderr = '';
    const io = { stdout: { write: (t: string) => ((stdout += t), true) }, stderr: { write: (t: string) => ((stderr += t), true) }, isTty: false };
    const code = await main([...argv, '--journal', journal, '--no-plugins', '--html', path.join(root, 'report.html')], io as never, { exec: node.exec, liveRoot: root, hostname: 'pve1' });
    // The console's logical lines (wrapped at 80 columns, joined again): what the tests read.
    return { code, stdout: unwrapConsole(stdout), stderr };
  };
  return { root, journal, node, cli, done: () => rmSync(root, { recursive: true, force: true }) };
}

/** The commands of a run that change the system. */
export const changing = (calls: string[][]) =>
  calls
    .filter(([command, ...args]) => ['lvchange', 'vgchange', 'qm'].includes(command as string) || (command === 'dmsetup' && ['remove', 'create', 'load', 'resume'].some((verb) => args.includes(verb))))
    .map((call) => call.join(' '));
