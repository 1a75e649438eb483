// Discovery: live (against a fake node tree and a recording runner), captures read and written,
// anonymisation, and the one command runner.
import { existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import {
  anonymiseCapture, createRunner, discover, main, DM_INFO_ARGS, DM_TABLE_ARGS, liveRunningGuests, LVS_ARGS, LVS_SEGMENTS_ARGS, POOL_STATUS_ARGS, PVS_ARGS, readCapture, UserError, writeCapture,
  type Runner,
} from '../pve-dm.ts';
import { REAL, SAMPLES, tempDir, test } from './harness.ts';

const real = (file: string) => readFileSync(path.join(REAL, 'full', file), 'utf8');

function put(root: string, file: string, text: string) {
  mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
  writeFileSync(path.join(root, file), text);
}

/** A node's file tree: /etc/pve, /run/qemu-server pid files, /proc entries of live QEMUs, LXC sockets. */
function fakeNode(guests: number): string {
  const root = tempDir('pve-dm-live-');
  put(root, 'etc/pve/storage.cfg', 'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n');
  const unix = ['Num       RefCount Protocol Flags    Type St Inode Path'];
  for (let i = 0; i < guests; i++) {
    const vmid = 100 + i;
    const lxc = i % 3 === 2;
    put(root, `etc/pve/nodes/pve1/${lxc ? 'lxc' : 'qemu-server'}/${vmid}.conf`, lxc ? `hostname: ct${vmid}\nrootfs: local-lvm:vm-${vmid}-disk-0,size=8G\n` : `name: vm${vmid}\nscsi0: local-lvm:vm-${vmid}-disk-0,size=8G\n`);
    if (i % 2 === 0 && !lxc) {
      const pid = 5000 + i;
      put(root, `run/qemu-server/${vmid}.pid`, `${pid}\n`);
      put(root, `proc/${pid}/cmdline`, ['/usr/bin/kvm', '-id', String(vmid), '-name', `vm${vmid}`, '-pidfile', `/var/run/qemu-server/${vmid}.pid`, ''].join('\0'));
    }
    if (lxc && i % 2 === 0) unix.push(`0000000000000000: 00000002 00000000 00010000 0001 01 ${40000 + i} @/var/lib/lxc/${vmid}/command`);
  }
  // A stale pid file whose process is gone, and one whose pid now belongs to another program.
  put(root, 'run/qemu-server/990.pid', '4242\n');
  put(root, 'run/qemu-server/991.pid', '4343\n');
  put(root, 'proc/4343/cmdline', '/usr/sbin/sshd\0-D\0');
  put(root, 'proc/net/unix', `${unix.join('\n')}\n0000000000000000: 00000002 00000000 00010000 0001 01 1 @/var/lib/lxc/999/other\n`);
  put(root, 'proc/stat', 'cpu  100 0 100 800 0 0 0 0 0 0\n');
  put(root, 'proc/meminfo', 'MemTotal:       65536000 kB\nMemFree:        1000000 kB\nMemAvailable:   32768000 kB\n');
  return root;
}

function recordingRunner(calls: string[][]): Runner {
  return async (command, args) => {
    calls.push([command, ...args]);
    if (command === 'dmsetup' && args.includes('info')) return { exitCode: 0, stdout: real('dmsetup.txt'), stderr: '' };
    if (command === 'dmsetup' && args.includes('table')) return { exitCode: 0, stdout: real('dmsetup-table.txt'), stderr: '' };
    if (command === 'dmsetup' && args.includes('status')) return { exitCode: 0, stdout: '', stderr: '' };
    if (command === 'lvs' && args.includes('--segments')) return { exitCode: 0, stdout: '', stderr: '' };
    if (command === 'pvs') return { exitCode: 0, stdout: '', stderr: '' };
    if (command === 'lvs') return { exitCode: 0, stdout: real('lvs.txt'), stderr: '' };
    if (command === 'pveversion') return { exitCode: 0, stdout: 'pve-manager/9.1.2/9d436f37a0ac4172 (running kernel: 6.14.11-4-pve)\n', stderr: '' };
    return { exitCode: 127, stdout: '', stderr: `${command}: not expected` };
  };
}

test('live discovery spawns the same seven commands for 3 guests and for 300', async () => {
  for (const guests of [3, 300]) {
    const root = fakeNode(guests);
    const calls: string[][] = [];
    const capture = await discover({ runner: recordingRunner(calls), liveRoot: root });
    const expected = [['dmsetup', ...DM_INFO_ARGS], ['dmsetup', ...DM_TABLE_ARGS], ['dmsetup', ...POOL_STATUS_ARGS], ['lvs', ...LVS_ARGS], ['lvs', ...LVS_SEGMENTS_ARGS], ['pvs', ...PVS_ARGS], ['pveversion']];
    assert.equal(calls.sort(), expected.sort(), `${guests} guests`);
    assert.is(capture.configs.length, guests);
    assert.is(capture.system?.pveVersion, '9.1.2');
    assert.equal(capture.system?.memory, { totalBytes: 65536000 * 1024, usedBytes: (65536000 - 32768000) * 1024 });
    assert.equal(Object.keys(capture.meta?.commands ?? {}), ['dmsetup info', 'dmsetup table', 'dmsetup status', 'lvs', 'lvs --segments', 'pvs', 'pveversion']);
    rmSync(root, { recursive: true });
  }
});

test('zvols: read from udev\'s links under /dev/zvol and /sys/block/zdN/dev, no process; partitions and loose files left out', async () => {
  const root = fakeNode(3);
  const link = (file: string, target: string) => {
    mkdirSync(path.dirname(path.join(root, file)), { recursive: true });
    symlinkSync(target, path.join(root, file));
  };
  link('dev/zvol/rpool/data/vm-134-disk-0', '../../../zd16');
  link('dev/zvol/rpool/data/vm-134-disk-0-part1', '../../../zd16p1');
  link('dev/zvol/rpool/swap', '../../zd0');
  link('dev/zvol/tank/gone', '../../zd48'); // its device went: no line
  put(root, 'dev/zvol/tank/README', 'not a link\n');
  link('dev/zvol/tank/x\n230:0 rpool/data/vm-100-disk-0', '../../zd16'); // a forged line: never written
  put(root, 'sys/block/zd16/dev', '230:16\n');
  put(root, 'sys/block/zd0/dev', '230:0\n');
  const calls: string[][] = [];
  const capture = await discover({ runner: recordingRunner(calls), liveRoot: root });
  assert.is(capture.zvols, '230:0 rpool/swap\n230:16 rpool/data/vm-134-disk-0\n');
  assert.is(calls.length, 7, 'no process of its own');
  const without = await discover({ runner: recordingRunner([]), liveRoot: fakeNode(1) });
  assert.is(without.zvols, null, 'no /dev/zvol: no ZFS here, not known');
  const dir = path.join(tempDir(), 'capture');
  await writeCapture(dir, capture);
  assert.is(readFileSync(path.join(dir, 'zvols.txt'), 'utf8'), capture.zvols);
  assert.is((await readCapture(dir)).zvols, capture.zvols);
  rmSync(root, { recursive: true });
});

test('the live dmsetup commands ask for kernel (mangled) names, never through a shell', () => {
  assert.equal(DM_INFO_ARGS, ['--manglename', 'none', 'info', '-c', '--noheadings', '--separator', '|', '-o', 'name,major,minor,open,attr,uuid']);
  assert.equal(DM_TABLE_ARGS, ['--manglename', 'none', 'table']);
  assert.equal(POOL_STATUS_ARGS, ['--manglename', 'none', 'status', '--target', 'thin-pool']);
  const columns = 'vg_name,lv_name,lv_attr,lv_tags,lv_uuid,vg_uuid,pool_lv,lv_size,data_percent,metadata_percent,lv_metadata_size,vg_attr,vg_free';
  assert.equal(LVS_ARGS, ['-a', '--noheadings', '--separator', '|', '--units', 'b', '--nosuffix', '-o', columns]);
});

test('running guests: QEMU pid files checked against a live kvm started with that pid file; LXC command sockets', async () => {
  const root = fakeNode(9);
  // VMs at even i that are not containers (0, 4, 6) have live pid files; containers at i = 2 and 8 have command sockets.
  assert.equal(await liveRunningGuests(root), [100, 102, 104, 106, 108]);
  rmSync(root, { recursive: true });
});

test('live discovery: a failing lvs is "not known" with a warning; a failing dmsetup stops the run', async () => {
  const root = fakeNode(2);
  const base = recordingRunner([]);
  const noLvs: Runner = (command, args, options) => (command === 'lvs' ? Promise.resolve({ exitCode: 5, stdout: '', stderr: '  Volume group "x" not found\n' }) : base(command, args, options));
  const capture = await discover({ runner: noLvs, liveRoot: root });
  assert.is(capture.lvs, null);
  assert.ok(capture.warnings.some((w) => w.source === 'lvs' && w.message.includes('exit 5')));
  const noDm: Runner = (command, args, options) => (command === 'dmsetup' ? Promise.resolve({ exitCode: 1, stdout: '', stderr: '/dev/mapper/control: open failed: No such file or directory\n' }) : base(command, args, options));
  try {
    await discover({ runner: noDm, liveRoot: root });
    assert.unreachable('a failing dmsetup must stop the run');
  } catch (error) {
    assert.instance(error, UserError);
    assert.match((error as Error).message, /dmsetup info failed \(exit 1\): \/dev\/mapper\/control/);
  }
  rmSync(root, { recursive: true });
});

test('readCapture: required files missing are one clear error; optional ones are "not known"', async () => {
  const dir = tempDir();
  put(dir, 'hostname', 'pve1\n');
  put(dir, 'etc/pve/storage.cfg', '');
  await readCapture(dir).then(
    () => assert.unreachable('dmsetup.txt is required'),
    (error: Error) => assert.is(error.message, `capture ${dir}: required file dmsetup.txt is missing`),
  );
  put(dir, 'dmsetup.txt', 'No devices found\n');
  const capture = await readCapture(dir);
  assert.equal([capture.dmsetupTable, capture.lvs, capture.running, capture.system, capture.meta], [null, null, null, null, null]);
  put(dir, 'system.json', '{not json');
  assert.ok((await readCapture(dir)).warnings.some((w) => w.source === 'system.json'));
  await readCapture(path.join(dir, 'nope')).then(
    () => assert.unreachable(),
    (error: Error) => assert.instance(error, UserError),
  );
  rmSync(dir, { recursive: true });
});

test('a capture written by writeCapture reads back to the same capture', async () => {
  const original = await readCapture(path.join(SAMPLES, 'cluster-migrated'));
  const dir = path.join(tempDir(), 'copy');
  await writeCapture(dir, original);
  const copy = await readCapture(dir);
  assert.equal({ ...copy, root: null }, { ...original, root: null });
  await writeCapture(dir, original).then(
    () => assert.unreachable('must not write into a non-empty directory'),
    (error: Error) => assert.match(error.message, /is not empty/),
  );
  rmSync(path.dirname(dir), { recursive: true });
});

test('anonymise: names, descriptions, keys, passwords, IPs, MACs and iSCSI names replaced consistently', async () => {
  const original = await readCapture(path.join(SAMPLES, 'default-install'));
  const secretVm = [
    '#Payroll server of ACME, call Bob 555-1234',
    'name: payroll-acme',
    'cipassword: $5$secret',
    'sshkeys: ssh-ed25519%20AAAAsecretkey%20bob%40acme',
    'ipconfig0: ip=203.0.113.7/24,gw=203.0.113.1,ip6=2001:4860:4860::8888/64',
    'nameserver: 203.0.113.53',
    'net0: virtio=BC:24:11:AA:BB:CC,bridge=vmbr0',
    'scsi0: local-lvm:vm-150-disk-0,size=8G',
    '',
    '[special:cloudinit]',
    'name: payroll-acme',
    'ipconfig0: ip=203.0.113.7/24,gw=203.0.113.1',
  ].join('\n');
  const input = {
    ...original,
    storageCfg: `${original.storageCfg}\niscsi: san\n\tportal 198.51.100.20\n\ttarget iqn.2003-01.com.acme:storage.lun1\n\tnodes pve,pve-b\n\nnfs: nas\n\tserver nas01.acme.example\n\texport /tank\n\tpath /mnt/pve/nas\n\ncifs: win\n\tserver 198.51.100.21\n\tdomain ACMECORP\n\tusername bob\n`,
    configs: [...original.configs, { path: 'etc/pve/nodes/pve/qemu-server/150.conf', node: 'pve', type: 'qemu' as const, vmid: 150, text: secretVm }],
  };
  const anonymous = anonymiseCapture(input);
  const all = JSON.stringify(anonymous);
 for (const secret of ['payroll', 'ACME', 'acme', 'Bob', 'username bob', 'nas01', '198.51.100.21', '$5$secret', 'AAAAsecretkey', '203.0.113.', '2001:4860', 'BC:24:11:AA:BB:CC', '198.51.100.20', 'iqn.2003-01.com.acme', 'web01']) {
    assert.not.ok(all.includes(secret), `${secret} survived`);
  }
  assert.is(anonymous.hostname, 'node1');
  const vm = anonymous.configs.find((c) => c.vmid === 150);
  assert.is(vm?.path, 'etc/pve/nodes/node1/qemu-server/150.conf');
  const lines = vm?.text?.split('\n') ?? [];
  assert.is(lines[1], lines[10], 'the same name gets the same alias everywhere');
  assert.match(lines[4] ?? '', /^ipconfig0: ip=198\.18\.0\.\d+\/24,gw=198\.18\.0\.\d+,ip6=2001:db8::\w+\/64$/);
  assert.is(lines[7], 'scsi0: local-lvm:vm-150-disk-0,size=8G', 'volumes, VMIDs and storage IDs stay');
  assert.ok(anonymous.storageCfg.includes('\tnodes node1,node2'));
  assert.ok(anonymous.storageCfg.includes('\tserver host1.example.org'));
  assert.ok(anonymous.storageCfg.includes('\tpath /mnt/pve/nas'), 'storage IDs and paths stay');
  assert.is(anonymous.dmsetupInfo, original.dmsetupInfo);
});

test('the runner refuses a changing command unless changes are allowed, and never uses a shell', async () => {
  const readOnly = createRunner({ allowChanges: false });
  await readOnly('dmsetup', ['remove', 'x'], { mutates: true }).then(
    () => assert.unreachable('must refuse'),
    (error: Error) => assert.match(error.message, /refused to run "dmsetup remove x"/),
  );
  const hostile = ['x;reboot', '$(id)', '`id`', "a'b", 'two words', '|cat /etc/shadow'];
  const echoed = await readOnly(process.execPath, ['-e', 'process.stdout.write(JSON.stringify(process.argv.slice(1)))', ...hostile]);
  assert.equal(JSON.parse(echoed.stdout), hostile);
  const slow = await readOnly(process.execPath, ['-e', 'setTimeout(() => {}, 5000)'], { timeoutMs: 200 });
  assert.ok(slow.exitCode !== 0);
  assert.match(slow.stderr, /timed out after 200 ms/);
  const fed = await readOnly(process.execPath, ['-e', 'process.stdin.pipe(process.stdout)'], { input: 'secret on stdin\n' });
  assert.is(fed.stdout, 'secret on stdin\n');
  const missing = await readOnly('/nonexistent/dmsetup', []);
  assert.is(missing.exitCode, 127);
});

/** main() with its output captured, against a fake live node. */
async function mainOn(argv: string[], liveRoot: string, calls: string[][] = []) {
  let stdout = '';
  let stderr = '';
  const io = { stdout: { write: (text: string) => ((stdout += text), true) }, stderr: { write: (text: string) => ((stderr += text), true) }, isTty: false };
  const code = await main(argv, io as never, { exec: recordingRunner(calls), liveRoot, hostname: 'pve1' });
  return { code, stdout, stderr };
}

test('pve-dm.ts capture DIR writes the live node\'s capture, which --root then analyses the same', async () => {
  const root = fakeNode(6);
  const dir = path.join(tempDir(), 'capture');
  const calls: string[][] = [];
  const captured = await mainOn(['capture', dir], root, calls);
  assert.is(captured.code, 0, captured.stderr);
  assert.is(calls.length, 7);
  assert.match(captured.stderr, /capture of \S+ written to /);
  const live = await mainOn(['--json', '--report-only'], root);
  const offline = await mainOn(['--json', '--report-only', '--root', dir], root);
  const comparable = (text: string) => {
    const { generatedAt, capturedAt, system, ...rest } = JSON.parse(text);
    return rest;
  };
  assert.equal(comparable(offline.stdout), comparable(live.stdout));
  assert.is(JSON.parse(live.stdout).guests.filter((g: { running: boolean }) => g.running).length, 3);
  assert.equal(readFileSync(path.join(dir, 'dmsetup.txt'), 'utf8'), real('dmsetup.txt'));
  const anonymised = path.join(path.dirname(dir), 'anonymous');
  assert.is((await mainOn(['capture', anonymised, '--anonymise'], root)).code, 0);
  assert.is(readFileSync(path.join(anonymised, 'hostname'), 'utf8'), 'node1\n');
  assert.ok(existsSync(path.join(anonymised, 'etc/pve/nodes/node1/qemu-server/100.conf')));
  assert.is((await mainOn(['capture', anonymised], root)).code, 3, 'never writes into a non-empty directory');
  rmSync(root, { recursive: true });
  rmSync(path.dirname(dir), { recursive: true });
});

test('an HTML report that cannot be written is one line on stderr and exit at least 1', async () => {
  const root = fakeNode(1);
  // A folder at the report's name: the analysis runs, the rename over it fails.
  const blocker = path.join(tempDir(), 'x.html');
  mkdirSync(blocker);
  const run = await mainOn(['--root', path.join(SAMPLES, 'default-install'), '--report-only', '--html', blocker], root);
  assert.is(run.code, 1);
  assert.match(run.stderr, /^pve-dm: cannot write the HTML report to .*x\.html: EISDIR\n$/, run.stderr);
  rmSync(root, { recursive: true });
});

test('--html or --prometheus into a folder that does not exist: exit 3, one line, nothing created', async () => {
  const root = fakeNode(1);
  const missing = path.join(tempDir(), 'textfile-collector');
  for (const option of ['--html', '--prometheus']) {
    const file = path.join(missing, 'pve-dm.out');
    const run = await mainOn(['--root', path.join(SAMPLES, 'default-install'), '--report-only', option, file], root);
    assert.is(run.code, 3, run.stderr);
    assert.is(run.stderr, `pve-dm: ${option} ${file}: the folder ${missing} does not exist (pve-dm does not create it)\n`);
    assert.is(run.stdout, '', 'no report: the run stops before the analysis');
    assert.not.ok(existsSync(missing), 'the folder is not created');
  }
  rmSync(root, { recursive: true });
});

test.run();
