// Issue 19: the mappings that corrupt data silently, on the real kernel's own output
// (test/fixtures/real/conflicts, made by test/kernel/make-fixtures.sh conflicts): stale tables
// found by comparing the kernel's table with what lvs --segments and pvs say it should be, and
// devices stacked on guest volumes.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { analyseCluster, classify, createRunner, defaultStages, expectedTable, notificationSubject, parse, parseDmsetupTable, parseLvsSegments, parsePvs, runPipeline, splitLvmName, toJson } from '../pve-dm.ts';
import { execFileSync, spawnSync } from 'node:child_process';
import { capture, config, PROJECT, REAL, resultOf, runMain, SAMPLES, test } from './harness.ts';

const STATES = path.join(REAL, 'conflicts');
const STORAGE = 'lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\nlvm: san\n\tvgname san01\n\tshared 1\n\tcontent images\n';
// A guest for every volume, each referencing its own (and VM 203 its snapshot).
const GUESTS = [100, 101, 102, 104, 105, 106, 107].map((vmid) => config(vmid, `scsi0: local-lvm:vm-${vmid}-disk-0\n`))
  .concat([200, 201, 202, 204, 205].map((vmid) => config(vmid, `scsi0: san:vm-${vmid}-disk-0\n`)))
  .concat([config(203, 'scsi0: san:vm-203-disk-0\n[before]\nscsi0: san:vm-203-disk-0\n')]);

function node(state: string, running = '') {
  const read = (file: string) => readFileSync(path.join(STATES, state, file), 'utf8');
  return capture({
    dmsetupInfo: read('dmsetup.txt'), dmsetupTable: read('dmsetup-table.txt'), lvs: read('lvs.txt'),
    lvsSegments: read('lvs-segments.txt'), pvs: read('pvs.txt'), storageCfg: STORAGE, configs: GUESTS, running,
  });
}
const verdicts = (state: string, running = '') =>
  Object.fromEntries(classify(parse(node(state, running))).entries.filter((e) => e.status === 'conflict').map((e) => [e.name, e.reason]));

test('lvs --segments and pvs give, for every plain, striped and thin LV, exactly the kernel\'s table when nothing is stale', () => {
  const read = (file: string) => readFileSync(path.join(STATES, 'consistent', file), 'utf8');
  const segments = parseLvsSegments(read('lvs-segments.txt'));
  const pvs = parsePvs(read('pvs.txt'));
  assert.equal([...segments.warnings, ...pvs.warnings], []);
  const lvm = { lvs: segments.layouts, pvs: pvs.pvs };
  const kernel = parseDmsetupTable(read('dmsetup-table.txt')).tables;
  const info = read('dmsetup.txt').trim().split('\n').map((line) => line.split('|'));
  const checked = info.flatMap(([name = '', , , , , uuid = '']) => {
    const split = splitLvmName(name);
    const expected = split === null || split.layer !== '' ? null : expectedTable(lvm, split.vg, split.lv, uuid);
    return expected === null ? [] : [{ name, expected }];
  });
  assert.ok(checked.length >= 12, `linear over two PVs, striped, thin volumes, root and swap: ${checked.length}`);
  for (const { name, expected } of checked) assert.is(expected, kernel.get(name), name);
  const other = 'LVM-' + '0'.repeat(64);
  assert.ok(checked.some(({ name }) => name === 'pve-root'));
  assert.is(expectedTable(lvm, 'pve', 'root', other), null, 'a device of another uuid is another LV: not checked');
  // The striped one, worked out in test/fixtures/real/conflicts/README.md.
  assert.is(kernel.get('san01-vm--202--disk--0'), '0 65536 striped 2 128 7:1 83968 7:2 34816');
  assert.equal(verdicts('consistent'), {});
});

test('the four stale tables are conflicts with their expected and actual tables; the stacked maps too; nothing else', () => {
  assert.equal(verdicts('conflicting'), {
    'pve-vm--104--disk--0': 'stale-table', // extended in LVM, the old (shorter) table loaded back
    'pve-vm--105--disk--0': 'stale-table', // a thin id reused: two devices write one thin volume
    'san01-vm--201--disk--0': 'stale-table', // pvmoved: the kernel maps extents LVM counts as free
    'san01-vm--204--disk--0': 'stale-table', // reduced in metadata only; vm-205 got the extents
    'pve-vm--101--disk--0p1': 'stacked-on-guest-volume', // kpartx -a on VM 101's disk
    'pve-vm--101--disk--0p2': 'stacked-on-guest-volume',
    'vg--archlinux-root': 'stacked-on-guest-volume', // the guest's own VG, active on the host
    'vg--archlinux-swap': 'stacked-on-guest-volume',
  });
  const result = resultOf(node('conflicting'));
  const stale = result.entries.find((e) => e.name === 'san01-vm--201--disk--0');
  assert.equal(stale?.conflict, { expected: '0 32768 linear 7:2 83968', actual: '0 32768 linear 7:1 34816' });
  assert.is(stale?.remedy, 'lvchange --refresh san01/vm-201-disk-0', 'the guest is stopped: the refresh the real kernel proved');
  assert.equal(toJson(result).entries.find((e) => e.name === 'san01-vm--201--disk--0')?.conflict, stale?.conflict, 'in the JSON');
  assert.is(result.grade, 'F');
  assert.is(result.summary.conflict, 8);
  assert.is(result.entries.find((e) => e.name === 'vg--archlinux-root')?.remedy, "vgchange --config 'devices { scan_lvs = 1 }' -an vg-archlinux");
});

test('a stale table under a running guest: no command, the advice says to stop it first and why', () => {
  const entry = resultOf(node('conflicting', '201\n')).entries.find((e) => e.name === 'san01-vm--201--disk--0');
  assert.is(entry?.remedy, null);
  assert.match(entry?.advice ?? '', /^VM 201 runs on the old table: stop it first \(a refresh under a running guest moves its disk/);
});

test('after the remedies (lvchange --refresh, kpartx -d, vgchange -an) the node has no conflict left', () => {
  assert.equal(verdicts('remedies'), {});
});

test('an LV LVM lists as inactive has no table to compare: a mapping with its uuid stays what it was (lv-mismatch)', () => {
  const c = node('conflicting');
  const inactive = (c.lvsSegments ?? '').replace(/(\|vm-201-disk-0\|[^|]*\|[^|]*\|)-wi-[^|]*\|/, '$1-wi-------|');
  assert.not.equal(inactive, c.lvsSegments, 'the segments line of vm-201 changed');
  const entry = classify(parse({ ...c, lvsSegments: inactive })).entries.find((e) => e.name === 'san01-vm--201--disk--0');
  assert.is.not(entry?.reason, 'stale-table');
});

test('without lvs-segments.txt or pvs.txt (an older capture): not checked, never stale', () => {
  const older = { ...node('conflicting'), lvsSegments: null };
  const conflicts = classify(parse(older)).entries.filter((e) => e.reason === 'stale-table');
  assert.equal(conflicts, []);
});

// ── pve-dm guard VMID PHASE: a guest's hookscript ─────────────────────────────────────────
const STALE = path.join(SAMPLES, 'stale-tables');

test('guard at pre-start refuses a guest with a conflict, naming what and the remedy, and lets a clean guest start', async () => {
  const refused = await runMain(['guard', '201', 'pre-start', '--root', STALE]);
  assert.is(refused.code, 1);
  assert.is(refused.stdout, '');
  assert.is(refused.stderr, 'pve-dm guard: VM 201 must not start: san01-vm--201--disk--0 (stale-table); lvchange --refresh san01/vm-201-disk-0 (pve-dm --vmid 201 shows all)\n');
  const stacked = await runMain(['guard', '102', 'pre-start', '--root', STALE]);
  assert.is(stacked.code, 1);
  assert.match(stacked.stderr, /^pve-dm guard: VM 102 must not start: vg--archlinux-root \(stacked-on-guest-volume\), vg--archlinux-swap/);
  for (const vmid of ['100', '107', '205']) {
    const clean = await runMain(['guard', vmid, 'pre-start', '--root', STALE]);
    assert.equal([clean.code, clean.stdout, clean.stderr], [0, '', ''], `VM ${vmid}`);
  }
});

test('guard: every phase but pre-start passes without looking; a bad VMID or an error of its own lets the guest start, saying so', async () => {
  for (const phase of ['post-start', 'pre-stop', 'post-stop']) {
    const run = await runMain(['guard', '201', phase, '--root', STALE]);
    assert.equal([run.code, run.stderr], [0, ''], phase);
  }
  const bad = await runMain(['guard', 'abc', 'pre-start', '--root', STALE]);
  assert.equal([bad.code, bad.stderr], [0, 'pve-dm guard: "abc" is not a VMID: not checked, the guest may start\n']);
  const broken = await runMain(['guard', '201', 'pre-start', '--root', path.join(STALE, 'no-such-capture')]);
  assert.is(broken.code, 0);
  assert.match(broken.stderr, /^pve-dm guard: could not check VMID 201 \(capture .*no-such-capture does not exist\); it may start\n$/);
  const usage = await runMain(['guard', '201']);
  assert.is(usage.code, 3, 'run by hand without a phase: a usage error');
});

test('guard as Proxmox runs a hookscript: a script given the VMID and the phase, its exit code the verdict', () => {
  // What qm start does with a guest's hookscript: `<script> <vmid> pre-start`, the start refused on a non-zero exit.
  const hook = `exec "${process.execPath}" --import tsx pve-dm.ts guard "$1" "$2" --root "${STALE}"`;
  const refused = spawnSync('sh', ['-c', hook, 'pve-dm-guard', '204', 'pre-start'], { cwd: PROJECT, encoding: 'utf8' });
  assert.is(refused.status, 1, refused.stderr);
  assert.match(refused.stderr, /^pve-dm guard: VM 204 must not start: san01-vm--204--disk--0 \(stale-table\)/);
  assert.is(execFileSync('sh', ['-c', hook, 'pve-dm-guard', '200', 'pre-start'], { cwd: PROJECT, encoding: 'utf8' }), '');
});

test('a cluster: the shared LV active on two nodes with different tables is critical, the stale node named; there it is deactivated', () => {
  // Node pve-san2 after the remedies (its table is LVM's); node pve-san1 holds the real stale table of
  // VM 201's disk (pvmoved behind it). VM 201 lives and runs on pve-san2.
  const read = (state: string, file: string) => readFileSync(path.join(STATES, state, file), 'utf8');
  const stale = read('conflicting', 'dmsetup-table.txt').split('\n').find((line) => line.startsWith('san01-vm--201--disk--0:'));
  const guests = [config(201, 'scsi0: san:vm-201-disk-0\n', { node: 'pve-san2' })];
  const on = (hostname: string, table: string, running: string) => capture({
    hostname, dmsetupInfo: read('remedies', 'dmsetup.txt'), dmsetupTable: table, lvs: read('remedies', 'lvs.txt'),
    lvsSegments: read('remedies', 'lvs-segments.txt'), pvs: read('remedies', 'pvs.txt'), storageCfg: STORAGE, configs: guests, running,
  });
  const current = read('remedies', 'dmsetup-table.txt');
  const nodes = [
    on('pve-san1', current.replace(/^san01-vm--201--disk--0: .*$/m, stale ?? ''), ''),
    on('pve-san2', current, '201\n'),
  ];
  assert.not.equal(nodes[0]?.dmsetupTable, current, 'the stale line is in');
  const runs = nodes.map((c) => ({ capture: c, result: resultOf(c) }));
  const one = runs[0]?.result.entries.find((e) => e.name === 'san01-vm--201--disk--0');
  assert.equal([one?.status, one?.reason, one?.otherNode, one?.remedy], ['conflict', 'stale-table', 'pve-san2', 'lvchange -an san01/vm-201-disk-0']);
  assert.match(one?.advice ?? '', /^VM 201 lives on pve-san2: lvchange -an san01\/vm-201-disk-0 here/);
  const finding = analyseCluster(runs, [], '2026-12-06T12:00:00.000Z').cluster.findings.find((f) => f.vmid === 201);
  assert.equal([finding?.severity, finding?.kind], ['critical', 'active-on-several-nodes']);
  assert.is(finding?.summary, "san01/vm-201-disk-0 is active on pve-san1 and pve-san2 with different tables: pve-san1's table is not LVM's");
  assert.equal(finding?.activeOn.map((a) => [a.node, a.staleTable, a.remedy]), [
    ['pve-san1', true, 'lvchange -an san01/vm-201-disk-0'],
    ['pve-san2', false, null],
  ]);
  // Without lvs --segments on a node, that node's table is not known: never called current.
  const unknown = analyseCluster([runs[0], { ...runs[1], capture: { ...nodes[1], lvsSegments: null } }] as typeof runs, [], '2026-12-06T12:00:00.000Z');
  assert.is(unknown.cluster.findings.find((f) => f.vmid === 201)?.activeOn[1]?.staleTable, null);
});

test('a guest VG active on the host over a VM\'s zvol: a conflict of that VM, its VG taken off, the zvol filter advised', () => {
  const storage = 'zfspool: local-zfs\n\tpool rpool/data\n\tcontent images,rootdir\n';
  const node = (zvols: string | null, running = '134\n') => capture({
    dmsetupInfo: `vg--archlinux-root|252|0|0|L--w|LVM-${'a'.repeat(32)}${'b'.repeat(32)}\nvg--archlinux-swap|252|1|0|L--w|LVM-${'a'.repeat(32)}${'c'.repeat(32)}\n`,
    dmsetupTable: 'vg--archlinux-root: 0 4096 linear 230:16 2048\nvg--archlinux-swap: 0 4096 linear 230:16 6144\n',
    lvs: '', storageCfg: storage, running, zvols,
    configs: [config(134, 'scsi0: local-zfs:vm-134-disk-0,size=32G\n')],
  });
  // udev's links under /dev/zvol and /sys/block/zdN/dev, as liveZvols writes them.
  const zvols = '230:0 rpool/data/vm-100-disk-0\n230:16 rpool/data/vm-134-disk-0\n230:32 rpool/swap\n';
  const root = resultOf(node(zvols)).entries.find((e) => e.name === 'vg--archlinux-root');
  assert.equal([root?.status, root?.reason, root?.vmid, root?.relatedTo], ['conflict', 'stacked-on-guest-volume', 134, null]);
  assert.is(root?.remedy, 'vgchange -an vg-archlinux', 'no scan_lvs needed: the host found the VG on the zvol');
  assert.match(root?.advice ?? '', /^stacked on zvol rpool\/data\/vm-134-disk-0: VM 134 runs: whatever on the host mounts or uses this writes under/);
  assert.match(root?.advice ?? '', /global_filter = \[ "r\|\/dev\/zd\.\*\|", \.\.\. \]/);
  assert.equal(toJson(resultOf(node(zvols))).entries.find((e) => e.name === 'vg--archlinux-root')?.conflict, { guestVg: 'vg-archlinux', zvol: 'rpool/data/vm-134-disk-0' });
  // A zvol that is no guest's disk, and no zvols.txt at all (not known): not a conflict.
  assert.not.equal(resultOf(node('230:16 rpool/swap\n')).entries.find((e) => e.name === 'vg--archlinux-root')?.status, 'conflict');
  assert.not.equal(resultOf(node(null)).entries.find((e) => e.name === 'vg--archlinux-root')?.status, 'conflict');
  const broken = classify(parse(node('230:16\n')));
  assert.ok(broken.warnings.some((w) => w.source === 'zvols.txt' && w.line === 1), 'a bad line names the file and the line');
});

test('samples/cluster-stale and cluster-stale-pve2 as one cluster: VM 201\'s disk active on both, pve-san1\'s table stale: critical, deactivated there', async () => {
  // The real kernel's tables after the remedies on both nodes, but pve-san1 still maps VM 201's LV as before its pvmove.
  const runs = await Promise.all(['cluster-stale', 'cluster-stale-pve2'].map((name) => runPipeline(defaultStages, {
    root: path.join(SAMPLES, name), vmids: [], json: false, console: false, html: false, color: false, runner: createRunner({ allowChanges: false }),
  })));
  assert.equal(runs.map(({ result }) => [result.node, result.grade, result.exitCode]), [['pve-san1', 'F', 2], ['pve-san2', 'A+', 0]]);
  const [one, two] = runs.map(({ result }) => result.entries.find((e) => e.name === 'san01-vm--201--disk--0'));
  assert.equal([one?.status, one?.reason, one?.otherNode, one?.remedy], ['conflict', 'stale-table', 'pve-san2', 'lvchange -an san01/vm-201-disk-0']);
  assert.equal(one?.conflict, { expected: '0 32768 linear 7:2 83968', actual: '0 32768 linear 7:1 34816' });
  assert.equal([two?.status, two?.reason, two?.remedy], ['valid', 'referenced', null], 'where VM 201 runs, its table is LVM\'s');
  const result = analyseCluster(runs, [], '2026-12-06T12:00:00.000Z');
  assert.equal([result.grade, result.exitCode], ['F', 2]);
  assert.is(result.cluster.findings.length, 1, 'every other shared LV is active on one node, its guest\'s');
  const finding = result.cluster.findings[0];
  assert.equal([finding?.severity, finding?.kind, finding?.vmid, finding?.home, finding?.running], ['critical', 'active-on-several-nodes', 201, 'pve-san2', true]);
  assert.is(finding?.summary, "san01/vm-201-disk-0 is active on pve-san1 and pve-san2 with different tables: pve-san1's table is not LVM's");
  assert.equal(finding?.activeOn.map((a) => a.staleTable), [true, false]);
  assert.equal(finding?.activeOn.map((a) => [a.node, a.remedy]), [['pve-san1', 'lvchange -an san01/vm-201-disk-0'], ['pve-san2', null]]);
});

test('the headline says which conflicts: stale tables apart from mappings stacked on guest disks', () => {
  const subject = notificationSubject(resultOf(node('conflicting')));
  assert.is(subject, '🚨 [pve1] CRITICAL: 4 stale tables (guests write other blocks than LVM gave them) and 4 mappings stacked on guest disks (host and guest can write one filesystem)! Grade: F');
  assert.match(notificationSubject(resultOf(node('remedies'))), /^(?!.*stale)/);
});

test.run();
