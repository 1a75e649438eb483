// Cleanup against a fake node: the real runner, journal, locks (flock on files of a temporary
// tree) and re-checks, with dmsetup, lvs and lvchange answered by a model of the kernel's state.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import {
  createRunner, defaultStages, executeCleanup, flockLocker, guestLockFile, main, planCleanup, PVE_DM_LOCK, readJournal, runPipeline, UserError,
  type CommandResult, type Exec,
} from '../pve-dm.ts';
import { tempDir, test } from './harness.ts';

const VG_PVE = 'Uv0zN6dKv1Lw3Ry9mG1zQ3f2p7cTnIkR';
const VG_SSD = 'ez0TI5tS7zWJAgfqqCWPQKkNZthHBwsT';
const lvUuid = (vg: string, n: number) => `LVM-${vg}${String(n).padStart(32, 'x')}`;

interface Device {
  minor: number;
  open: number;
  uuid: string;
  table: string;
}

/** The kernel's and LVM's state as dmsetup, lvs and lvchange see and change it. */
class FakeNode {
  dm = new Map<string, Device>();
  lvs = new Set<string>();
  inactive = new Map<string, Device>();
  calls: string[][] = [];
  /** Journal lines present when each changing command ran. */
  journalAtChange: number[] = [];
  busy = new Set<string>();
  constructor(readonly root: string, readonly journal: string) {}

  add(name: string, device: Partial<Device> & { lv?: string }): void {
    this.dm.set(name, { minor: this.dm.size + 10, open: 0, uuid: '', table: `0 2048 linear 8:0 ${this.dm.size * 4096}`, ...device });
    if (device.lv) this.lvs.add(device.lv);
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
    if (command === 'lvs') return ok([...this.lvs].map((key) => `  ${key.replace('/', '|')}|-wi-a-----|`).join('\n') + '\n');
    if (command === 'pveversion') return ok('pve-manager/9.1.2/0123456789abcdef (running kernel: 6.14.11-4-pve)\n');
    this.journalAtChange.push(readJournal(this.journal).length);
    if (command === 'lvchange' && a[0] === '-an') {
      const [vg = '', lv = ''] = (a[1] ?? '').split('/');
      const name = `${vg.replaceAll('-', '--')}-${lv.replaceAll('-', '--')}`;
      const d = this.dm.get(name);
      if (d && d.open > 0) return fail(5, `  Logical volume ${a[1]} in use.\n`);
      if (d) this.inactive.set(name, d);
      this.dm.delete(name);
      return ok();
    }
    if (command === 'lvchange' && a[0] === '-ay') {
      const [vg = '', lv = ''] = (a[1] ?? '').split('/');
      const name = `${vg.replaceAll('-', '--')}-${lv.replaceAll('-', '--')}`;
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
      return ok();
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

function put(root: string, file: string, text: string): void {
  mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
  writeFileSync(path.join(root, file), text);
}

/** A node pve1 with the problems cleanup must handle, and the ones it must leave alone. */
function scenario() {
  const root = tempDir('pve-dm-cleanup-');
  const journal = path.join(root, 'var/lib/pve-dm/journal.jsonl');
  const node = new FakeNode(root, journal);
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
  const cli = async (...argv: string[]) => {
    let stdout = '';
    let stderr = '';
    const io = { stdout: { write: (t: string) => ((stdout += t), true) }, stderr: { write: (t: string) => ((stderr += t), true) }, isTty: false };
    const code = await main([...argv, '--journal', journal, '--no-plugins', '--html', path.join(root, 'report.html')], io as never, { exec: node.exec, liveRoot: root, hostname: 'pve1' });
    return { code, stdout, stderr };
  };
  return { root, journal, node, cli, done: () => rmSync(root, { recursive: true, force: true }) };
}

const changing = (calls: string[][]) =>
  calls.filter(([command, ...args]) => command === 'lvchange' || (command === 'dmsetup' && (args.includes('remove') || args.includes('create')))).map((call) => call.join(' '));

test('--yes removes exactly the stale entries that pass the checks, in order, journalling each first', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    const before = new Set(node.lvs);
    const run = await cli('--yes');
    assert.is(run.code, 2, run.stdout + run.stderr);
    assert.equal(changing(node.calls), [
      'dmsetup remove ssd--ha01-vm--119--disk--0-dup',
      'dmsetup remove pve-vm--150--disk--0p1',
      'lvchange -an pve/vm-100-disk-7',
      'lvchange -an pve/vm-888-disk-0',
      'dmsetup remove ssd--ha01-vm--301--disk--0',
    ]);
    assert.equal([...node.dm.keys()].sort(), [
      'pve-root', 'pve-vm--100--disk--0', 'pve-vm--150--disk--0', 'pve-vm--200--disk--0', 'pve-vm--200--disk--3', 'pve-vm--889--disk--0', 'ssd--ha01-vm--119--disk--0',
    ]);
    assert.equal(node.lvs, before, 'no LV is ever removed');
    const records = readJournal(journal);
    assert.equal(records.map((r) => [r.name, r.action, r.reason]), [
      ['ssd--ha01-vm--119--disk--0-dup', 'dmsetup remove', 'duplicate-name'],
      ['pve-vm--150--disk--0p1', 'dmsetup remove', 'partition-of-problem'],
      ['pve-vm--100--disk--7', 'lvchange -an', 'volume-unreferenced'],
      ['pve-vm--888--disk--0', 'lvchange -an', 'guest-missing'],
      ['ssd--ha01-vm--301--disk--0', 'dmsetup remove', 'lv-missing'],
    ]);
    assert.equal(node.journalAtChange, [1, 2, 3, 4, 5], 'each line was on disk before its command ran');
    assert.is(records[0]?.table, '0 65536 linear 7:1 2048');
    assert.is(records[3]?.uuid, lvUuid(VG_PVE, 4));
    assert.ok(records.every((r) => r.run === records[0]?.run && r.open === 0 && r.node === 'pve1'));
    assert.match(run.stdout, /skipped  pve-vm--889--disk--0: open 1 time\(s\)/);
    assert.match(run.stdout, /skipped  pve-vm--150--disk--0: open 1 time\(s\)/);
    assert.match(run.stdout, /skipped  pve-vm--200--disk--3: guest 200 is running/);
    assert.match(run.stdout, /5 removed, 3 skipped, 0 failed; undo with: pve-dm.ts restore --last/);
  } finally {
    done();
  }
});

test('without --yes nothing changes and the plan is printed; --dry-run and --report-only change nothing either', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    const plain = await cli();
    assert.match(plain.stdout, /would run: lvchange -an pve\/vm-888-disk-0/);
    const dry = await cli('--yes', '--dry-run');
    assert.match(dry.stdout, /Cleanup, dry run \(nothing was changed\):/);
    assert.match(dry.stdout, /skipped  pve-vm--888--disk--0: refused to run "lvchange -an pve\/vm-888-disk-0": this run may not change the system/);
    const reportOnly = await cli('--report-only', '--yes');
    assert.is(reportOnly.code, 3);
    assert.match(reportOnly.stderr, /--report-only changes nothing/);
    assert.equal(changing(node.calls), []);
    assert.equal(readJournal(journal), [], 'nothing journalled');
  } finally {
    done();
  }
});

test('selectors narrow the cleanup: --only, --vmid, --name', async () => {
  for (const [args, expected] of [
    [['--only', 'duplicates'], ['dmsetup remove ssd--ha01-vm--119--disk--0-dup']],
    [['--only', 'tombstones', '--vmid', '888'], ['lvchange -an pve/vm-888-disk-0']],
    [['--name', 'ssd--ha01-vm--301--disk--0', '--name', 'pve-vm--100--disk--7'], ['lvchange -an pve/vm-100-disk-7', 'dmsetup remove ssd--ha01-vm--301--disk--0']],
  ] as [string[], string[]][]) {
    const { node, cli, done } = scenario();
    try {
      const run = await cli('--yes', ...args);
      assert.equal(changing(node.calls), expected, args.join(' '));
      assert.is(run.stderr.includes('internal error'), false);
    } finally {
      done();
    }
  }
});

/** A plan made from the node as it was, carried out after the world changed under it. */
async function planThenChange(change: (s: ReturnType<typeof scenario>) => void) {
  const s = scenario();
  const runner = createRunner({ allowChanges: true, exec: s.node.exec });
  const { capture, result, plan } = await runPipeline(defaultStages, { vmids: [], json: false, console: false, html: false, color: false, runner, liveRoot: s.root, hostname: 'pve1' });
  change(s);
  const outcome = await executeCleanup(plan, { runner, capture, liveRoot: s.root, journal: s.journal, run: 'r1', lockWaitSeconds: 1 });
  return { ...s, outcome, result };
}

test('right before acting, each entry is classified again: referenced now, open now, locked, running, replaced or gone: left alone', async () => {
  const cases: [string, (s: ReturnType<typeof scenario>) => void, string, RegExp][] = [
    ['referenced', (s) => put(s.root, 'etc/pve/nodes/pve1/qemu-server/100.conf', 'name: web\nscsi0: local-lvm:vm-100-disk-0\nscsi1: local-lvm:vm-100-disk-7\n'), 'pve-vm--100--disk--7', /^now valid \(referenced\)$/],
    ['open', (s) => ((s.node.dm.get('pve-vm--888--disk--0') as { open: number }).open = 1), 'pve-vm--888--disk--0', /^open 1 time\(s\)$/],
    ['locked', (s) => put(s.root, 'etc/pve/nodes/pve1/qemu-server/100.conf', 'lock: backup\nname: web\nscsi0: local-lvm:vm-100-disk-0\n'), 'pve-vm--100--disk--7', /^guest 100 is locked \(backup\)$/],
    ['running', (s) => {
      put(s.root, 'run/qemu-server/100.pid', '4242\n');
      put(s.root, 'proc/4242/cmdline', '/usr/bin/kvm\0-pidfile\0/var/run/qemu-server/100.pid\0');
    }, 'pve-vm--100--disk--7', /^guest 100 is running$/],
    ['replaced', (s) => ((s.node.dm.get('pve-vm--888--disk--0') as { uuid: string }).uuid = lvUuid(VG_PVE, 77)), 'pve-vm--888--disk--0', /its uuid changed/],
    ['gone', (s) => s.node.dm.delete('pve-vm--888--disk--0'), 'pve-vm--888--disk--0', /^gone already$/],
    ['migrating in', (s) => put(s.root, 'etc/pve/nodes/pve2/qemu-server/888.conf', 'lock: migrate\nscsi0: local-lvm:vm-888-disk-0\n'), 'pve-vm--888--disk--0', /^guest 888 is locked \(migrate\)$/],
  ];
  for (const [what, change, name, why] of cases) {
    const { outcome, node, done } = await planThenChange(change);
    try {
      const skipped = outcome.skipped.find((s) => s.name === name);
      assert.ok(skipped, `${what}: ${name} not skipped: ${JSON.stringify(outcome)}`);
      assert.match(skipped.why, why, what);
      assert.not.ok(changing(node.calls).some((call) => call.includes(name.includes('100--disk--7') ? 'vm-100-disk-7' : 'vm-888-disk-0')), `${what}: no command for ${name}`);
      assert.ok(outcome.removed.length >= 3, `${what}: the others still go`);
    } finally {
      done();
    }
  }
});

test('one failed removal (EBUSY) is reported with the kernel\'s message, and the rest go on', async () => {
  const { outcome, done } = await planThenChange((s) => s.node.busy.add('ssd--ha01-vm--119--disk--0-dup'));
  try {
    assert.equal(outcome.failed, [{ name: 'ssd--ha01-vm--119--disk--0-dup', error: 'device-mapper: remove ioctl on ssd--ha01-vm--119--disk--0-dup  failed: Device or resource busy' }]);
    assert.is(outcome.removed.length, 4);
  } finally {
    done();
  }
});

test('a guest whose Proxmox lock someone holds is skipped (after waiting), the others go', async () => {
  // Hold VM 888's lock (as `qm create 888` would) for the whole cleanup.
  const s = scenario();
  try {
    const held = await flockLocker(path.join(s.root, guestLockFile(888, 'qemu')), 0);
    assert.ok(held);
    const runner = createRunner({ allowChanges: true, exec: s.node.exec });
    const { capture, plan } = await runPipeline(defaultStages, { vmids: [], json: false, console: false, html: false, color: false, runner, liveRoot: s.root, hostname: 'pve1' });
    const started = Date.now();
    const result = await executeCleanup(plan, { runner, capture, liveRoot: s.root, journal: s.journal, run: 'r2', lockWaitSeconds: 1 });
    await held?.();
    assert.ok(Date.now() - started >= 900, 'waited for the lock');
    assert.equal(result.skipped.find((x) => x.name === 'pve-vm--888--disk--0')?.why, `guest 888's lock is held by someone else (${path.join(s.root, '/var/lock/qemu-server/lock-888.conf')})`);
    assert.not.ok(changing(s.node.calls).includes('lvchange -an pve/vm-888-disk-0'));
    assert.is(result.removed.length, 4);
  } finally {
    s.done();
  }
});

test('two cleanups cannot run at once: the pve-dm lock', async () => {
  const s = scenario();
  try {
    const held = await flockLocker(path.join(s.root, PVE_DM_LOCK), 0);
    const runner = createRunner({ allowChanges: true, exec: s.node.exec });
    const { capture, result } = await runPipeline(defaultStages, { vmids: [], json: false, console: false, html: false, color: false, runner, liveRoot: s.root, hostname: 'pve1' });
    await executeCleanup(planCleanup(result), { runner, capture, liveRoot: s.root, journal: s.journal, run: 'r3' }).then(
      () => assert.unreachable('must refuse'),
      (error: Error) => {
        assert.instance(error, UserError);
        assert.is(error.message, 'another pve-dm cleanup holds /run/lock/pve-dm.lock');
      },
    );
    await held?.();
    assert.equal(changing(s.node.calls), []);
  } finally {
    s.done();
  }
});

test('restore --last brings back what the last run removed (LVs activated, mappings re-created with uuid and table); then refuses', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    const before = new Map([...node.dm].map(([name, d]) => [name, `${d.uuid} ${d.table}`]));
    await cli('--yes');
    const listed = await cli('journal');
    assert.is(listed.code, 0);
    assert.is(listed.stdout.trim().split('\n').length, 6, listed.stdout);
    const restored = await cli('restore', '--last');
    assert.is(restored.code, 0, restored.stdout + restored.stderr);
    assert.equal(changing(node.calls).slice(-5), [
      `dmsetup --manglename none create ssd--ha01-vm--301--disk--0 --uuid ${lvUuid(VG_SSD, 2)}`,
      'lvchange -ay pve/vm-888-disk-0',
      'lvchange -ay pve/vm-100-disk-7',
      `dmsetup --manglename none create pve-vm--150--disk--0p1 --uuid part1-${lvUuid(VG_PVE, 6)}`,
      'dmsetup --manglename none create ssd--ha01-vm--119--disk--0-dup',
    ]);
    const after = new Map([...node.dm].map(([name, d]) => [name, `${d.uuid} ${d.table}`]));
    assert.equal(after, before, 'every entry back, with its uuid and table');
    assert.is(readJournal(journal).length, 5, 'restoring adds no journal line');
    const again = await cli('restore', '--last');
    assert.is(again.code, 1);
    assert.is((again.stdout.match(/refused/g) ?? []).length, 5);
  } finally {
    done();
  }
});

test('restore ID restores one entry; an unknown ID is a clear error', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    await cli('--yes');
    const id = readJournal(journal).find((r) => r.name === 'pve-vm--888--disk--0')?.id ?? '';
    const one = await cli('restore', id);
    assert.is(one.code, 0, one.stderr);
    assert.ok(node.dm.has('pve-vm--888--disk--0'));
    assert.not.ok(node.dm.has('pve-vm--100--disk--7'));
    const unknown = await cli('restore', 'nope-1');
    assert.is(unknown.code, 3);
    assert.match(unknown.stderr, /^pve-dm: no journal entry nope-1 in .*journal\.jsonl \(see pve-dm\.ts journal\)\n$/);
  } finally {
    done();
  }
});

test.run();
