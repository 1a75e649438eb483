// kernel.test.mjs [all|classify|cleanup|conflicts] - runs INSIDE the dm-vm.sh guest, after
// kernel.guest.sh has built node pve1 (see there for what exists). Runs pve-dm against the live system, no
// capture, and checks what it says and what it does to the kernel's device-mapper table.
//
// Four parts, each with its own totals: classification (read-only), then cleanup (the --yes /
// journal / restore contract of issue 4), then pool remedies (the commands pve-dm printed for the
// thin pools of VG tank, run as printed; with cleanup in mode `cleanup`), then conflicts (issue 19:
// stale tables and maps stacked on guest disks, built then by kernel-conflicts.guest.sh in VGs of
// their own; cleanup fixes them without losing data, checked by checksum, and restore undoes it;
// alone in mode `conflicts`). The last line is `N passed, N failed`; the exit code is 1 when
// anything failed.
//
// Every command pve-dm starts goes through a logging wrapper on PATH (/tmp/trace-bin), so the
// tests see exactly which commands each run spawned, in order.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { unwrapConsole } from '../support/console.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PVE_DM = path.join(ROOT, 'pve-dm.ts');
const MODE = process.argv[2] ?? 'all';
if (!['all', 'classify', 'cleanup', 'conflicts', 'faults'].includes(MODE)) {
  process.stderr.write(`usage: kernel.test.mjs [all|classify|cleanup|conflicts|faults] (not ${MODE})\n`);
  process.exit(2);
}
const RUN_TIMEOUT_MS = Number(process.env.KERNEL_TEST_RUN_TIMEOUT_MS ?? 300_000);
const TRACE_BIN = '/tmp/trace-bin';
const TRACE = '/tmp/trace.log';
const HTML = '/tmp/pve-dm-report.html'; // console runs write their HTML here, never into the project
const JOURNAL = '/tmp/j.jsonl';
const LOCK100 = '/var/lock/qemu-server/lock-100.conf';
const FAULT_HOOK = path.join(ROOT, 'test/kernel/fault-hook.mjs');
const FAULT_LOG = '/tmp/fault.log';

// ── the node kernel.guest.sh built: every dm entry and what pve-dm must call it ──────────────
/** Made with `dmsetup --manglename none create`: the kernel holds the space raw. */
const RAW = 'ssd--ha01-vm--889--disk--0-a b';
/** Made in dmsetup's default mode from the same name: the kernel holds it mangled. */
const TWIN = 'ssd--ha01-vm--889--disk--0-a\\x20b';
const LVM = (vg, lv, vmid = null) => ({ vg, lv, vmid, lvmKnown: true });
const EXPECTED = {
  'pve-swap': { status: 'ignored', reason: 'not-guest-volume' },
  'pve-root': { status: 'ignored', reason: 'not-guest-volume' },
  'pve-data': { status: 'ignored', reason: 'lvm-internal' },
  'pve-data-tpool': { status: 'ignored', reason: 'lvm-internal' },
  'pve-data_tdata': { status: 'ignored', reason: 'lvm-internal' },
  'pve-data_tmeta': { status: 'ignored', reason: 'lvm-internal' },
  'pve-vm--100--disk--0': { status: 'valid', reason: 'referenced', ...LVM('pve', 'vm-100-disk-0', 100), open: 0 },
  'pve-vm--100--disk--1': { status: 'valid', reason: 'referenced', ...LVM('pve', 'vm-100-disk-1', 100), open: 0 },
  'pve-vm--100--cloudinit': { status: 'valid', reason: 'referenced', ...LVM('pve', 'vm-100-cloudinit', 100), open: 0 },
  'pve-snap_vm--100--disk--0_before': { status: 'valid', reason: 'snapshot-in-config', ...LVM('pve', 'snap_vm-100-disk-0_before', 100), open: 0 },
  'pve-base--9000--disk--0': { status: 'valid', reason: 'referenced', ...LVM('pve', 'base-9000-disk-0', 9000), open: 0 },
  'pve-vm--101--disk--0': { status: 'valid', reason: 'referenced', ...LVM('pve', 'vm-101-disk-0', 101), open: 1 },
  'pve-vm--200--disk--0': { status: 'valid', reason: 'referenced', ...LVM('pve', 'vm-200-disk-0', 200), open: 1 },
  'ssd--ha01-vm--119--disk--0': { status: 'valid', reason: 'referenced', ...LVM('ssd-ha01', 'vm-119-disk-0', 119), open: 0 },
  'pve-vm--100--disk--7': {
    status: 'tombstone', reason: 'volume-unreferenced', ...LVM('pve', 'vm-100-disk-7', 100), open: 0, remedy: 'qm disk rescan --vmid 100',
  },
  'pve-vm--888--disk--0': {
    status: 'tombstone', reason: 'guest-missing', ...LVM('pve', 'vm-888-disk-0', 888), open: 0, remedy: 'lvchange -an pve/vm-888-disk-0',
  },
  'ssd--ha01-vm--300--disk--0': {
    status: 'tombstone', reason: 'guest-on-other-node', ...LVM('ssd-ha01', 'vm-300-disk-0', 300), open: 0, otherNode: 'pve2',
    remedy: 'lvchange -an ssd-ha01/vm-300-disk-0',
  },
  // Held open by a process: no command works as printed, the advice says how to find the holder.
  'ssd--ha01-vm--777--disk--0': {
    status: 'tombstone', reason: 'guest-missing', ...LVM('ssd-ha01', 'vm-777-disk-0', 777), open: 1, remedy: null,
  },
  // LVM knows vm-778-disk-0 but calls it inactive, and this mapping has another uuid: lvchange -an would do nothing.
  'ssd--ha01-vm--778--disk--0': {
    status: 'tombstone', reason: 'lv-mismatch', vg: 'ssd-ha01', lv: 'vm-778-disk-0', vmid: 778, lvmKnown: false, open: 0,
    remedy: 'dmsetup remove ssd--ha01-vm--778--disk--0',
  },
  'ssd--ha01-vm--889--disk--0': {
    status: 'tombstone', reason: 'guest-missing', vg: 'ssd-ha01', lv: 'vm-889-disk-0', vmid: 889, lvmKnown: false, open: 0, uuid: '',
    remedy: 'dmsetup remove ssd--ha01-vm--889--disk--0',
  },
  'ssd--ha01-vm--119--disk--0-dup': {
    status: 'duplicate', reason: 'duplicate-name', vmid: 119, lvmKnown: false, open: 0, uuid: '', relatedTo: 'ssd--ha01-vm--119--disk--0',
    remedy: 'dmsetup remove ssd--ha01-vm--119--disk--0-dup',
  },
  // Two kernel names dmsetup's default mode shows alike: two entries, each addressed by its own name.
  [RAW]: {
    status: 'duplicate', reason: 'duplicate-name', vmid: 889, lvmKnown: false, open: 0, uuid: '', relatedTo: 'ssd--ha01-vm--889--disk--0',
    remedy: "dmsetup --manglename none remove $'ssd--ha01-vm--889--disk--0-a\\x20b'",
  },
  [TWIN]: {
    status: 'duplicate', reason: 'duplicate-name', vmid: 889, lvmKnown: false, open: 0, uuid: '', relatedTo: 'ssd--ha01-vm--889--disk--0',
    remedy: "dmsetup remove 'ssd--ha01-vm--889--disk--0-a\\x20b'",
  },
};
// VG tank: the layers of its two active pools, VM 160's disk on tank/full and the 20 linked clones
// of template 9100 on tank/clones. tank/cold is inactive and so are vm-950-disk-0 and the template's
// base volume: no dm entries.
const CLONES = Array.from({ length: 20 }, (_, i) => 210 + i);
for (const pool of ['full', 'clones']) {
  for (const layer of ['', '-tpool', '_tdata', '_tmeta']) EXPECTED[`tank-${pool}${layer}`] = { status: 'ignored', reason: 'lvm-internal' };
}
EXPECTED['tank-vm--160--disk--0'] = { status: 'valid', reason: 'referenced', ...LVM('tank', 'vm-160-disk-0', 160), open: 0 };
for (const vmid of CLONES) {
  EXPECTED[`tank-vm--${vmid}--disk--0`] = { status: 'valid', reason: 'referenced', ...LVM('tank', `vm-${vmid}-disk-0`, vmid), open: 0 };
}
const GUESTS = {
  100: { type: 'qemu', name: 'web01', running: false, health: 'tombstone', template: false, lock: null },
  101: { type: 'qemu', name: 'clone101', running: true, health: 'clean', template: false, lock: null },
  119: { type: 'qemu', name: 'fs119', running: false, health: 'duplicate', template: false, lock: null },
  200: { type: 'lxc', name: 'ct200', running: true, health: 'clean', template: false, lock: null },
  9000: { type: 'qemu', name: 'tmpl-debian', running: false, health: 'clean', template: true, lock: null },
  160: { type: 'qemu', name: 'db160', running: false, health: 'clean', template: false, lock: null },
  170: { type: 'lxc', name: 'ct170', running: false, health: 'clean', template: false, lock: null },
  9100: { type: 'qemu', name: 'tmpl-clones', running: false, health: 'clean', template: true, lock: null },
  ...Object.fromEntries(CLONES.map((vmid) => [vmid, { type: 'qemu', name: `clone${vmid}`, running: false, health: 'clean', template: false, lock: null }])),
};
const MISSING = [777, 888, 889];
// Guest volumes LVM knows that no config uses (vg/lv, reason, active, MiB): vm-300-disk-0 is not one,
// since VM 300 on pve2 uses it on the shared VG.
const ORPHANS = [
  ['pve/vm-100-disk-7', 'volume-unreferenced', true, 1024],
  ['pve/vm-888-disk-0', 'guest-missing', true, 1024],
  ['ssd-ha01/vm-777-disk-0', 'guest-missing', true, 16],
  ['ssd-ha01/vm-778-disk-0', 'guest-missing', false, 16],
  ['tank/vm-950-disk-0', 'guest-missing', false, 1024],
];
// Every thin pool LVM knows, and what pve-dm must say of it: severity, the kinds of its problems (in
// pve-dm's rule order), the VMIDs of pve1's configs with volumes on it, and the remedy of each problem.
// tank/full's data grows by 24 MiB to 88 MiB (59 MiB used: under 70 %); tank/clones' 2 MiB of
// metadata by one 4 MiB extent (+ the spare: 8 MiB of VG tank's free space).
const POOLS = {
  'pve/data': { active: true, state: 'ok', severity: 'ok', kinds: [], guests: [100, 101, 200, 9000], remedies: [] },
  'tank/full': { active: true, state: 'ok', severity: 'critical', kinds: ['data-use'], guests: [160], remedies: ['lvextend -L +24M tank/full'] },
  'tank/clones': {
    active: true, state: 'ok', severity: 'critical', kinds: ['metadata-use'], guests: [...CLONES, 9100], remedies: ['lvextend --poolmetadatasize +4M tank/clones'],
  },
  'tank/cold': { active: false, state: null, severity: 'critical', kinds: ['inactive'], guests: [170], remedies: ['lvchange -ay tank/cold'] },
};
// what --yes must remove (and restore bring back), and how
const REMOVED = {
  'ssd--ha01-vm--119--disk--0-dup': { how: 'dmsetup', vmid: 119 },
  'ssd--ha01-vm--889--disk--0': { how: 'dmsetup', vmid: 889 },
  'pve-vm--100--disk--7': { how: 'lvchange', lv: 'pve/vm-100-disk-7', vmid: 100 },
  'pve-vm--888--disk--0': { how: 'lvchange', lv: 'pve/vm-888-disk-0', vmid: 888 },
  'ssd--ha01-vm--300--disk--0': { how: 'lvchange', lv: 'ssd-ha01/vm-300-disk-0', vmid: 300 },
  'ssd--ha01-vm--778--disk--0': { how: 'dmsetup', vmid: 778 },
  [RAW]: { how: 'dmsetup', vmid: 889 },
  [TWIN]: { how: 'dmsetup', vmid: 889 },
};
/** A word as pve-dm quotes it for a shell (shellQuote, for printable text). */
const quote = (word) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`);
const HELD = 'ssd--ha01-vm--777--disk--0';
const VALID = Object.keys(EXPECTED).filter((name) => EXPECTED[name].status === 'valid');
const count = (status) => Object.values(EXPECTED).filter((e) => e.status === status).length;

// ── a minimal test runner ────────────────────────────────────────────────────────────────────
const totals = { passed: 0, failed: 0 };
let part = { name: '', passed: 0, failed: 0 };
const say = (line) => process.stdout.write(`${line}\n`);

const clip = (text, lines = 40) => {
  const all = String(text).split('\n');
  return all.length > lines ? [...all.slice(0, lines), `... (${all.length - lines} more lines)`].join('\n') : String(text);
};
function test(name, fn) {
  try {
    fn();
    part.passed++;
    say(`  ok    ${name}`);
  } catch (error) {
    part.failed++;
    say(`  FAIL  ${name}\n${clip(error?.message ?? error).replace(/^/gm, '        ')}`);
  }
}
function begin(name) {
  part = { name, passed: 0, failed: 0 };
  say(`\n== ${name} ==`);
}
function end() {
  totals.passed += part.passed;
  totals.failed += part.failed;
  say(`KERNEL-TEST ${part.name}: ${part.passed} passed, ${part.failed} failed`);
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ── the system, read directly (never through the trace wrappers) ─────────────────────────────
const SYS_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
function sh(command, args) {
  const r = spawnSync(command, args, { encoding: 'utf8', env: { ...process.env, PATH: SYS_PATH, LC_ALL: 'C' }, timeout: 120_000 });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}
const lines = (text) => text.split('\n').map((l) => l.trim()).filter(Boolean).sort();
function state() {
  // The default mode refuses to list a node holding a raw name: the kernel's names, as they are.
  const info = sh('dmsetup', ['--manglename', 'none', 'info', '-c', '--noheadings', '--separator', '|', '-o', 'open,uuid,name']);
  const uuids = {};
  const open = {};
  for (const line of lines(info.stdout)) {
    const [count, uuid, ...rest] = line.split('|');
    const name = rest.join('|');
    uuids[name] = uuid;
    open[name] = Number(count);
  }
  const lvs = {};
  for (const line of lines(sh('lvs', ['-a', '--noheadings', '--separator', '|', '-o', 'vg_name,lv_name,lv_attr']).stdout)) {
    const [vg, lv, attr] = line.split('|');
    lvs[`${vg}/${lv}`] = attr;
  }
  const tables = {};
  for (const line of lines(sh('dmsetup', ['--manglename', 'none', 'table']).stdout)) {
    const at = line.indexOf(': ');
    if (at > 0) (tables[line.slice(0, at)] ??= []).push(line.slice(at + 2));
  }
  // Each thin pool as LVM and the kernel see it: attr, sizes, use; the kernel's status line.
  const pools = {};
  const poolColumns = ['--noheadings', '--separator', '|', '--units', 'b', '--nosuffix', '-o', 'vg_name,lv_name,lv_attr,lv_size,lv_metadata_size,data_percent,metadata_percent'];
  for (const line of lines(sh('lvs', ['-a', ...poolColumns]).stdout)) {
    const [vg, lv, attr, ...rest] = line.split('|');
    if (attr.startsWith('t')) pools[`${vg}/${lv}`] = [attr, ...rest].join('|');
  }
  const kernelPools = {};
  for (const line of lines(sh('dmsetup', ['--manglename', 'none', 'status', '--target', 'thin-pool']).stdout)) {
    const at = line.indexOf(': ');
    if (at > 0) kernelPools[line.slice(0, at).replace(/-tpool$/, '')] = line.slice(at + 2);
  }
  return {
    pools,
    kernelPools,
    ls: lines(sh('dmsetup', ['--manglename', 'none', 'ls']).stdout),
    table: lines(sh('dmsetup', ['--manglename', 'none', 'table']).stdout),
    nameUuid: Object.entries(uuids).map(([n, u]) => `${n}|${u}`).sort(),
    names: Object.keys(uuids).sort(),
    uuids,
    open,
    tables,
    lvs,
  };
}
const active = (attr) => attr?.[4] === 'a';
/**
 * A pool's data and metadata use as the kernel counts it (`dmsetup status`: used/total blocks), to
 * two decimals as lvs shows it; null when the pool has no status (inactive). By `vg-lv` dm name.
 */
function kernelUse(s, dmName) {
  const m = /^\d+ \d+ thin-pool \d+ (\d+)\/(\d+) (\d+)\/(\d+) /.exec(s.kernelPools[dmName] ?? '');
  const percent = (used, total) => Math.round((10000 * Number(used)) / Number(total)) / 100;
  return m === null ? { data: null, metadata: null } : { metadata: percent(m[1], m[2]), data: percent(m[3], m[4]) };
}
const TANK_POOLS = ['tank/full', 'tank/cold', 'tank/clones'];

// ── pve-dm, as an administrator runs it, with every command it starts logged ────────────────
const TRACED = ['dmsetup', 'lvm', 'lvs', 'vgs', 'pvs', 'lvchange', 'lvremove', 'lvcreate', 'lvrename', 'lvconvert', 'lvextend',
  'lvreduce', 'lvresize', 'lvdisplay', 'lvscan', 'vgchange', 'vgremove', 'vgscan', 'pvscan', 'pveversion', 'flock', 'kpartx', 'qm', 'pct',
  'pvesm', 'lxc-info', 'fuser', 'lsof', 'udevadm', 'blockdev', 'losetup', 'wipefs'];
function installTraceWrappers() {
  fs.mkdirSync(TRACE_BIN, { recursive: true });
  for (const name of TRACED) {
    const real = SYS_PATH.split(':').map((dir) => path.join(dir, name)).find((file) => fs.existsSync(file));
    const run = real ? `exec ${real} "$@"` : `echo "${name}: not installed on this test node" >&2; exit 127`;
    // one write per call: the line is built first (pve-dm starts commands in parallel)
    fs.writeFileSync(path.join(TRACE_BIN, name),
      `#!/bin/sh\nl="$(date +%s)\t${name}"; for a in "$@"; do l="$l\t$a"; done\nprintf '%s\\n' "$l" >> ${TRACE}\n${run}\n`, { mode: 0o755 });
  }
}
function readTrace() {
  const text = fs.existsSync(TRACE) ? fs.readFileSync(TRACE, 'utf8') : '';
  return text.split('\n').filter(Boolean).map((line) => {
    const [time, prog, ...args] = line.split('\t');
    return { time: Number(time), prog, args, text: [prog, ...args].join(' ') };
  });
}
const DM_CHANGES = ['remove', 'create', 'load', 'reload', 'suspend', 'resume', 'rename', 'clear', 'remove_all', 'wipe_table', 'mknodes', 'message'];
const LVM_CHANGES = /^(lv|vg|pv)(change|remove|create|rename|convert|extend|reduce|resize|cfgrestore|import|export|merge|split)$/;
const mutating = (c) =>
  (c.prog === 'dmsetup' && c.args.some((a) => DM_CHANGES.includes(a))) ||
  LVM_CHANGES.test(c.prog) || (c.prog === 'lvm' && LVM_CHANGES.test(c.args[0] ?? '')) ||
  ['kpartx', 'qm', 'pct', 'wipefs'].includes(c.prog);

/**
 * pve-dm run as an administrator runs it. `fault`: FAULT_AT for test/kernel/fault-hook.mjs, loaded
 * before pve-dm (with `faultDo` its FAULT_DO); `bin`: a folder of stand-ins put before the trace's.
 */
function startPveDm(args, { fault = null, faultDo = null, bin = null } = {}) {
  fs.writeFileSync(TRACE, '');
  const started = Date.now();
  const hook = fault === null ? [] : ['--import', FAULT_HOOK];
  const faultEnv = fault === null ? {} : { FAULT_AT: fault, FAULT_LOG, ...(faultDo === null ? {} : { FAULT_DO: faultDo }) };
  const child = spawn(process.execPath, ['--import', 'tsx', ...hook, PVE_DM, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...faultEnv, PATH: `${bin === null ? '' : `${bin}:`}${TRACE_BIN}:${process.env.PATH ?? SYS_PATH}`, NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk));
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
  // (the child, for a test that acts while the run is in flight)
  return Object.assign(new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const output = `${unwrapConsole(stdout)}\n${stderr}`;
      const run = { args, code, signal, stdout, stderr, output, trace: readTrace(), ms: Date.now() - started };
      say(`\n$ ${fault === null ? '' : `FAULT_AT=${fault} `}pve-dm.ts ${args.join(' ')}\n  -> exit ${signal ?? code} in ${(run.ms / 1000).toFixed(1)} s; spawned ${run.trace.length} command(s)` +
        `${run.trace.some(mutating) ? `, changing: ${run.trace.filter(mutating).map((c) => c.text).join('; ')}` : ''}`);
      if (run.trace.length > 0) say(clip(run.trace.map((c) => c.text).join('\n'), 40).replace(/^/gm, '  spawned| '));
      if (stderr.trim()) say(clip(stderr.trim(), 15).replace(/^/gm, '  stderr| '));
      resolve(run);
    });
  }), { child });
}
const pveDm = (args, options) => startPveDm(args, options);
const showOutput = (run, n = 60) => say(clip(run.stdout.trimEnd(), n).replace(/^/gm, '  stdout| '));
const noChanges = (run) => assert.deepEqual(run.trace.filter(mutating).map((c) => c.text), [], 'commands that change the system were started');
function sameState(before, after, what = 'the dm table and LVM') {
  assert.deepEqual(after.ls, before.ls, `dmsetup ls differs (${what})`);
  assert.deepEqual(after.table, before.table, `dmsetup table differs (${what})`);
  assert.deepEqual(after.lvs, before.lvs, `lvs differs (${what})`);
}
const usable = (run) => assert.ok(run.code !== null && run.code !== 3, `pve-dm refused to run (exit ${run.signal ?? run.code}): ${run.stderr.trim().split('\n')[0]}`);

// ══ part 1: classification ═══════════════════════════════════════════════════════════════════
let report = null;
async function classification() {
  begin('classification');
  const before = state();
  installTraceWrappers();
  const run = await pveDm(['--report-only', '--json']);
  const after = state();

  test('pve-dm --report-only --json exits 2 (a duplicate: grade F) with a JSON report', () => {
    assert.equal(run.code, 2, `exit ${run.signal ?? run.code}\n${run.stderr}`);
    report = JSON.parse(run.stdout);
  });
  if (report === null) {
    try {
      report = JSON.parse(run.stdout);
    } catch {
      say(`  (no JSON on stdout:)\n${clip(run.stdout, 20)}`);
      end();
      return;
    }
  }
  const entries = new Map(report.entries.map((entry) => [entry.name, entry]));

  test('the dm entries this test built are what the kernel holds', () => {
    assert.deepEqual(before.names, Object.keys(EXPECTED).sort());
  });
  test('the report lists exactly the kernel\'s dm entries', () => {
    assert.deepEqual([...entries.keys()].sort(), before.names);
  });
  for (const [name, want] of Object.entries(EXPECTED)) {
    test(`${name}: ${want.status} / ${want.reason}`, () => {
      const got = entries.get(name);
      assert.ok(got, 'not in the report');
      const pick = Object.fromEntries(Object.keys(want).map((key) => [key, got[key]]));
      if ('uuid' in want) pick.uuid = got.uuid ?? ''; // no uuid: "" or null
      assert.deepEqual(pick, want);
      if (want.status === 'valid') assert.equal(got.remedy, null, 'a valid entry has no remedy');
      if (name in before.uuids && !('uuid' in want)) assert.equal(got.uuid, before.uuids[name], 'uuid as the kernel has it');
    });
  }
  test('open counts are the kernel\'s', () => {
    for (const [name, entry] of entries) assert.equal(entry.open, before.open[name], name);
  });
  const poolProblems = Object.values(POOLS).filter((p) => p.severity !== 'ok').length;
  test(`summary: ${Object.keys(EXPECTED).length} entries, ${count('valid')} valid, ${count('duplicate')} duplicate, ${count('tombstone')} tombstones, ${count('ignored')} ignored, ${poolProblems} pool problems; grade F`, () => {
    assert.deepEqual(report.summary, {
      entries: Object.keys(EXPECTED).length, valid: count('valid'), conflict: count('conflict'), duplicate: count('duplicate'), tombstone: count('tombstone'), ignored: count('ignored'),
      unjudged: 0, orphanLvs: ORPHANS.length, poolProblems,
    });
    assert.equal(report.grade, 'F');
  });
  test(`orphan LVs from real lvs output: ${ORPHANS.length}, the inactive vm-778-disk-0 among them (no dm entry of its own); sizes from lv_size`, () => {
    const got = report.orphanLvs.map((o) => [`${o.vg}/${o.lv}`, o.reason, o.active, o.sizeBytes]).sort();
    assert.deepEqual(got, ORPHANS.map(([lv, reason, active, mib]) => [lv, reason, active, mib * 1048576]).sort());
    assert.equal(report.orphanLvs.find((o) => o.lv === 'vm-100-disk-7')?.remedy, 'qm disk rescan --vmid 100');
    assert.ok(report.orphanLvs.every((o) => o.remedy === null || /^qm disk rescan /.test(o.remedy)), 'pve-dm never removes an LV');
  });
  test('duplicate sets: ssd-ha01 vm-119-disk-0 kept, -dup the extra; vm-889-disk-0 kept, its raw-named copy and its mangled twin the extras', () => {
    assert.deepEqual(report.duplicates.map((d) => [d.kept, d.extras.sort()]), [
      ['ssd--ha01-vm--119--disk--0', ['ssd--ha01-vm--119--disk--0-dup']], ['ssd--ha01-vm--889--disk--0', [RAW, TWIN].sort()],
    ]);
  });
  test('the held-open entry has no remedy, and its advice says how to find the holder', () => {
    assert.match(entries.get(HELD).advice, /^open 1 time\(s\), held by 1 opener\(s\) that are no dm device .*fuser -vm \/dev\/dm-\d+/);
  });
  test('guests of pve1: running state (VM 101 and CT 200 run), type, name, health, template', () => {
    const got = Object.fromEntries(report.guests.map((g) => [g.vmid, { type: g.type, name: g.name, running: g.running, health: g.health, template: g.template, lock: g.lock }]));
    assert.deepEqual(got, GUESTS);
  });
  test('VMIDs that exist nowhere: 777, 888, 889', () => {
    assert.deepEqual(report.missingGuests.map((g) => g.vmid).sort((a, b) => a - b), MISSING);
  });
  test('node pve1, Proxmox VE 9.1.2 from pveversion, the running kernel, no warnings', () => {
    assert.equal(report.node, 'pve1');
    assert.equal(report.system.pveVersion, '9.1.2');
    assert.equal(report.system.kernel, os.release());
    assert.deepEqual(report.warnings, []);
  });
  test('discovery started exactly seven commands: dmsetup info, table and status --target thin-pool, lvs (pool use and VG state), lvs --segments, pvs, pveversion', () => {
    const got = run.trace.map((c) => `${c.prog} ${c.args.find((a) => ['info', 'table', 'status', '--segments'].includes(a)) ?? ''}`.trim()).sort();
    assert.deepEqual(got, ['dmsetup info', 'dmsetup status', 'dmsetup table', 'lvs', 'lvs --segments', 'pveversion', 'pvs'], run.trace.map((c) => c.text).join('\n'));
    assert.ok(run.trace.filter((c) => c.prog === 'dmsetup').every((c) => c.args.includes('--manglename') && c.args.includes('none')), 'dmsetup without --manglename none');
    assert.deepEqual(run.trace.find((c) => c.args.includes('status'))?.args, ['--manglename', 'none', 'status', '--target', 'thin-pool']);
    const columns = run.trace.find((c) => c.prog === 'lvs' && !c.args.includes('--segments'))?.args.join(' ') ?? '';
    for (const column of ['data_percent', 'metadata_percent', 'lv_metadata_size', 'vg_attr', 'vg_free']) assert.ok(columns.includes(column), `lvs without ${column}: ${columns}`);
  });
  test('--report-only changed nothing (dmsetup ls, table and lvs before and after equal, VG tank included; thin pools\' size and use too; no changing command)', () => {
    noChanges(run);
    sameState(before, after);
    for (const lv of [...TANK_POOLS, 'tank/vm-950-disk-0', 'tank/vm-170-disk-0', 'tank/base-9100-disk-0']) assert.ok(lv in before.lvs, `${lv} not in the lvs compared`);
    assert.deepEqual(Object.keys(before.pools).sort(), [...Object.keys(POOLS)].sort(), 'the pools compared');
    assert.deepEqual(after.pools, before.pools, 'lvs of the thin pools (attr, size, metadata size, data and metadata percent)');
    assert.deepEqual(after.kernelPools, before.kernelPools, 'dmsetup status --target thin-pool');
  });
  poolTests(report, before);
  // The hookscript check, on the real kernel's node: VM 119 has a duplicate, VM 100 only a tombstone.
  const refused = await pveDm(['guard', '119', 'pre-start']);
  const allowed = await pveDm(['guard', '100', 'pre-start']);
  test('guard 119 pre-start refuses the start (its duplicate), guard 100 pre-start lets it start; neither changes anything', () => {
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(refused.stderr, /^pve-dm guard: VM 119 must not start: ssd--ha01-vm--119--disk--0-dup \(duplicate-name\)/);
    assert.deepEqual([allowed.code, allowed.stdout, allowed.stderr], [0, '', '']);
    noChanges(refused);
    noChanges(allowed);
  });
  end();
}

/** `tank/full critical data 92.19% metadata 12.30% [data-use]; ...` */
const showPools = (report) =>
  (report.pools ?? []).map((p) => `${p.vg}/${p.lv} ${p.severity} data ${p.dataPercent ?? '-'}% metadata ${p.metadataPercent ?? '-'}% [${p.problems.map((q) => q.kind).join(', ')}]`).join('; ');

/** What the classification says of the thin pools of pve1 (`s`: the system as it was when pve-dm ran). */
function poolTests(report, s) {
  const pools = new Map((report.pools ?? []).map((pool) => [`${pool.vg}/${pool.lv}`, pool]));
  say(`\nthin pools: ${showPools(report)}`);
  test(`thin pools: every one LVM knows is in the report (${Object.keys(POOLS).join(', ')}); no partial VG`, () => {
    assert.deepEqual([...pools.keys()].sort(), Object.keys(POOLS).sort());
    assert.deepEqual(report.volumeGroups, []);
  });
  for (const [name, want] of Object.entries(POOLS)) {
    test(`${name}: ${want.severity}${want.kinds.length > 0 ? ` (${want.kinds.join(', ')})` : ''}, ${want.active ? 'active' : 'not active'}, guests ${want.guests.length > 3 ? `${want.guests.length} VMIDs` : want.guests.join(', ')}; use as the kernel counts it`, () => {
      const got = pools.get(name);
      assert.ok(got, 'not in the report');
      assert.deepEqual(
        { active: got.active, state: got.state, severity: got.severity, kinds: got.problems.map((p) => p.kind), guests: got.guests },
        { active: want.active, state: want.state, severity: want.severity, kinds: want.kinds, guests: want.guests },
      );
      for (const p of got.problems) assert.equal(p.severity, want.severity, `${p.kind}: severity`);
      if (got.problems.length > 0) assert.equal(got.message, (got.problems.find((p) => p.severity === 'critical') ?? got.problems[0]).message, 'message: the worst problem\'s');
      const kernel = kernelUse(s, name.replace('/', '-'));
      assert.deepEqual({ data: got.dataPercent, metadata: got.metadataPercent }, kernel, 'data and metadata percent: the kernel\'s (dmsetup status)');
    });
  }
  test('the real numbers: tank/full data 90-95 %, tank/clones metadata 90-99 % (and LVM already refuses new clones there: 2 MiB of metadata, limit 75 %), pve/data under 80 %', () => {
    const full = pools.get('tank/full');
    const clones = pools.get('tank/clones');
    assert.ok(full.dataPercent >= 90 && full.dataPercent < 95, `tank/full data ${full.dataPercent}`);
    assert.ok(full.metadataPercent < 75, `tank/full metadata ${full.metadataPercent}`);
    assert.ok(clones.metadataPercent >= 90 && clones.metadataPercent < 99, `tank/clones metadata ${clones.metadataPercent}`);
    assert.ok(clones.dataPercent < 80, `tank/clones data ${clones.dataPercent}`);
    assert.match(clones.problems[0].message, /metadata \d+\.\d% used; LVM already refuses new disks/);
    const data = pools.get('pve/data');
    assert.ok(data.dataPercent < 80 && data.metadataPercent < 75, `pve/data ${data.dataPercent}/${data.metadataPercent}`);
  });
  test('tank/cold (not active): no use, no state; its message names CT 170', () => {
    const cold = pools.get('tank/cold');
    assert.deepEqual([cold.dataPercent, cold.metadataPercent, cold.state], [null, null, null]);
    assert.match(cold.message, /tank\/cold is not active: the disks of CT 170 on it cannot be used/);
  });
  for (const [name, want] of Object.entries(POOLS).filter(([, w]) => w.remedies.length > 0)) {
    test(`${name}: remedy ${want.remedies.map((r) => `"${r}"`).join(', ')}`, () => {
      const got = pools.get(name);
      assert.deepEqual(got.problems.map((p) => p.remedy), want.remedies, `advice: ${got.problems.map((p) => p.advice).join(' | ')}`);
    });
  }
  test('tank/cold: the repair\'s leftover cold_meta0 (2 MiB, lvremove once checked); no other pool has one', () => {
    const leftovers = Object.fromEntries([...pools].map(([name, pool]) => [name, pool.leftovers.map((l) => [l.lv, l.sizeBytes])]));
    assert.deepEqual(leftovers, { ...Object.fromEntries(Object.keys(POOLS).map((name) => [name, []])), 'tank/cold': [['cold_meta0', 2097152]] });
    assert.match(pools.get('tank/cold').leftovers[0].advice, /lvremove tank\/cold_meta0/);
  });
}

// ══ part 2: cleanup, journal, restore (the issue 4 contract) ═════════════════════════════════
async function cleanup() {
  begin('cleanup');
  installTraceWrappers();
  fs.rmSync(JOURNAL, { force: true });
  const before = state();
  const removable = Object.keys(REMOVED);

  // ── runs that must change nothing ──
  const reportOnly = await pveDm(['--report-only', '--yes', '--json']);
  const s1 = state();
  test('--report-only --yes: changes nothing (a report, exit 2, or refused as a usage error, exit 3)', () => {
    if (reportOnly.code === 3) assert.match(reportOnly.stderr, /--yes/, 'a usage error should say why');
    else assert.equal(reportOnly.code, 2, `exit ${reportOnly.signal ?? reportOnly.code}: ${reportOnly.stderr.trim()}`);
    noChanges(reportOnly);
    sameState(before, s1);
  });

  const dry = await pveDm(['--dry-run', '--yes', '--html', HTML]);
  const s2 = state();
  test('--dry-run --yes: runs, names every entry it would remove (and how), changes nothing, takes no lock', () => {
    usable(dry);
    for (const name of removable) assert.ok(dry.output.includes(name), `${name} not in the output`);
    assert.ok(/would remove/.test(dry.output) && !/refused to run/.test(dry.output), 'a real dry run, not refusals');
    assert.ok(!fs.existsSync('/run/lock/pve-dm.lock'), 'a dry run takes no lock');
    noChanges(dry);
    sameState(before, s2);
  });

  const plan = await pveDm(['--html', HTML]);
  const s3 = state();
  showOutput({ stdout: plan.stdout.slice(plan.stdout.lastIndexOf('Cleanup') >= 0 ? plan.stdout.lastIndexOf('Cleanup') : 0) }, 20);
  test('without --yes and without a TTY: never prompts, prints the plan, changes nothing', () => {
    assert.ok(plan.code !== null && plan.signal === null, `killed (${plan.signal}): a prompt waiting on a closed stdin?`);
    for (const [name, how] of Object.entries(REMOVED)) {
      const command = how.how === 'lvchange' ? `lvchange -an ${how.lv}` : `dmsetup --manglename none remove ${quote(name)}`;
      assert.ok(plan.output.includes(command), `plan lacks "${command}"`);
    }
    assert.ok(plan.output.split('\n').some((l) => l.includes(HELD) && /open|busy/i.test(l)), `plan does not say ${HELD} is open`);
    noChanges(plan);
    sameState(before, s3);
  });

  // ── the cleanup ──
  const yes = await pveDm(['--yes', '--journal', JOURNAL, '--html', HTML]);
  const s4 = state();
  showOutput({ stdout: yes.stdout.slice(Math.max(0, yes.stdout.lastIndexOf('\nCleanup'))) }, 30);
  const gone = before.names.filter((n) => !s4.names.includes(n));
  test('--yes removes exactly the stale entries that pass the safety checks', () => {
    usable(yes);
    assert.deepEqual(gone, [...removable].sort(), 'entries gone after --yes');
    assert.deepEqual(s4.names.filter((n) => !before.names.includes(n)), [], 'entries that appeared');
  });
  test('--yes: LVs LVM knows were deactivated with lvchange -an VG/LV and stay in lvs, inactive', () => {
    for (const [name, how] of Object.entries(REMOVED).filter(([, h]) => h.how === 'lvchange')) {
      assert.ok(yes.trace.some((c) => c.prog === 'lvchange' && c.args.includes('-an') && c.args.includes(how.lv)), `no "lvchange -an ${how.lv}" for ${name}`);
      assert.ok(how.lv in s4.lvs, `${how.lv} is gone from lvs`);
      assert.ok(!active(s4.lvs[how.lv]), `${how.lv} still active (${s4.lvs[how.lv]})`);
    }
  });
  test('--yes: hand-made and stale mappings were removed with dmsetup --manglename none remove, by the kernel\'s own name', () => {
    for (const name of Object.keys(REMOVED).filter((n) => REMOVED[n].how === 'dmsetup')) {
      assert.ok(yes.trace.some((c) => c.prog === 'dmsetup' && c.args.join(' ') === `--manglename none remove ${name}`), `no "dmsetup --manglename none remove ${name}"`);
    }
    assert.ok(yes.trace.filter((c) => c.prog === 'dmsetup').every((c) => c.args[0] === '--manglename' && c.args[1] === 'none'), 'a dmsetup call without --manglename none');
  });
  test('--yes: the inactive LV behind the stale mapping is untouched (still known, still inactive)', () => {
    assert.equal(s4.lvs['ssd-ha01/vm-778-disk-0'], before.lvs['ssd-ha01/vm-778-disk-0']);
    assert.ok(!yes.trace.some((c) => c.prog === 'lvchange' && c.args.includes('ssd-ha01/vm-778-disk-0')), 'lvchange on vm-778-disk-0');
  });
  test('--yes: every changing command was one of those (nothing else touched, no LV removed, no LV created)', () => {
    const allowed = (c) =>
      (c.prog === 'lvchange' && c.args.includes('-an') && Object.values(REMOVED).some((h) => h.lv && c.args.includes(h.lv))) ||
      (c.prog === 'dmsetup' && c.args.includes('remove') && Object.keys(REMOVED).some((n) => REMOVED[n].how === 'dmsetup' && c.args.includes(n)));
    assert.deepEqual(yes.trace.filter(mutating).filter((c) => !allowed(c)).map((c) => c.text), []);
  });
  test('--yes: no LV was removed (lvs names before and after equal)', () => {
    assert.deepEqual(Object.keys(s4.lvs).sort(), Object.keys(before.lvs).sort());
  });
  test('--yes: the held-open stale entry is still there and reported as skipped because it is open', () => {
    assert.ok(s4.names.includes(HELD), `${HELD} was removed`);
    assert.ok(yes.output.split('\n').some((l) => l.includes(HELD) && /skip/i.test(l) && /open|busy|in use/i.test(l)), `no line says ${HELD} was skipped because it is open`);
  });
  test('--yes: the skipped open entry names who holds it (the process with it open: sleep, its pid)', () => {
    const pid = fs.readFileSync('/run/holder-777.pid', 'utf8').trim();
    const line = yes.output.split('\n').find((l) => l.includes(HELD) && /skip/i.test(l)) ?? '';
    assert.ok(line.includes(pid) && line.includes('sleep'), `"${line.trim()}" does not name process ${pid} (sleep)`);
  });
  test(`--yes: the closing summary counts ${removable.length} removed, 1 skipped, 0 failed`, () => {
    assert.match(yes.output, new RegExp(`\\b${removable.length} removed\\b`));
    assert.match(yes.output, /\b1 skipped\b/);
    assert.match(yes.output, /\b0 failed\b/);
  });
  test('--yes: every valid entry is still there, with its table', () => {
    for (const name of VALID) assert.deepEqual(s4.tables[name], before.tables[name], name);
  });
  test('--yes: each removal ran under its guest\'s Proxmox lock (flock on lock-<vmid>.conf)', () => {
    for (const [name, how] of Object.entries(REMOVED)) {
      assert.ok(yes.trace.some((c) => c.prog === 'flock' && c.args.some((a) => a.endsWith(`/lock-${how.vmid}.conf`))), `no flock on lock-${how.vmid}.conf for ${name}`);
    }
  });

  // ── the journal ──
  const journalText = fs.existsSync(JOURNAL) ? fs.readFileSync(JOURNAL, 'utf8') : null;
  if (journalText !== null) say(`\n${JOURNAL}:\n${clip(journalText.trimEnd(), 12).replace(/^/gm, '  | ')}`);
  test('journal: one JSON line per removed entry, with name, uuid, open, table, reason, action, run; then its outcome line: removed', () => {
    assert.ok(journalText !== null, `${JOURNAL} was not written`);
    const parsed = journalText.split('\n').filter(Boolean).map((line) => JSON.parse(line));
    // Each cleanup run begins with a line of its own (kind "run"), written before anything changes.
    assert.equal(parsed[0]?.kind, 'run', 'the first line is the run\'s own');
    const all = parsed.filter((r) => r.kind === undefined);
    const records = all.filter((r) => !('outcome' in r));
    assert.deepEqual(all.filter((r) => 'outcome' in r).map((r) => `${r.name} ${r.outcome}`).sort(), removable.map((n) => `${n} removed`).sort());
    assert.deepEqual(records.map((r) => r.name).sort(), [...removable].sort());
    for (const r of records) {
      for (const key of ['name', 'uuid', 'open', 'table', 'reason', 'action', 'run']) assert.ok(key in r, `${r.name}: no "${key}"`);
      assert.equal(r.uuid || '', before.uuids[r.name] || '', `${r.name}: uuid`);
      assert.equal(r.open, 0, `${r.name}: open`);
      const table = (Array.isArray(r.table) ? r.table.join('\n') : String(r.table)).split('\n').map((l) => l.trim()).filter(Boolean);
      assert.deepEqual(table, before.tables[r.name], `${r.name}: table`);
      assert.equal(r.reason, EXPECTED[r.name].reason, `${r.name}: reason`);
      assert.match(JSON.stringify(r.action), REMOVED[r.name].how === 'lvchange' ? /lvchange|deactivat/i : /dmsetup|remove/i, `${r.name}: action`);
    }
    assert.equal(new Set(records.map((r) => JSON.stringify(r.run))).size, 1, 'all lines belong to one run');
  });
  test('--yes never touches a thin pool: no lvextend / lvconvert / lvchange -ay, nothing naming a pool in its plan, its commands or the journal; pools as before', () => {
    const poolWords = [...Object.keys(POOLS), ...Object.keys(POOLS).map((name) => name.replace('/', '-'))];
    const namesPool = (text) => poolWords.some((word) => text.split(/[\s'"]+/).some((w) => w === word || w.startsWith(`${word}-`) || w.startsWith(`${word}_`)));
    const planLines = (run) => run.output.split("\n").filter((l) => /^\s*(would run|would skip|would remove)/.test(l));
    for (const [what, run] of [['plan', plan], ['--dry-run --yes', dry], ['--yes', yes]]) {
      const bad = planLines(run).filter((l) => /lvextend|lvconvert|lvresize|lvchange -ay/.test(l) || namesPool(l));
      assert.deepEqual(bad, [], `${what}: plan lines about pools`);
    }
    assert.ok(planLines(plan).length > 0, 'no plan lines found (format changed?)');
    const bad = yes.trace.filter((c) => ['lvextend', 'lvconvert', 'lvresize'].includes(c.prog) || (c.prog === 'lvchange' && !c.args.includes('-an')) || namesPool(c.args.join(' ')));
    assert.deepEqual(bad.map((c) => c.text), [], '--yes: commands about pools');
    const journal = (journalText ?? '').split('\n').filter(Boolean);
    assert.deepEqual(journal.filter((line) => /lvextend|lvconvert|lvchange.{0,5}-ay/.test(line) || namesPool(line.replace(/[{}\[\],:]/g, ' '))), [], 'journal lines about pools');
    assert.deepEqual(s4.pools, before.pools, 'lvs of the thin pools');
    assert.deepEqual(s4.kernelPools, before.kernelPools, 'dmsetup status --target thin-pool');
  });

  const listed = await pveDm(['journal', '--journal', JOURNAL]);
  test('pve-dm.ts journal lists every removed entry, each as pve-dm shows it (the raw name as its bash word)', () => {
    assert.equal(listed.code, 0, `exit ${listed.signal ?? listed.code}: ${listed.stderr.trim()}`);
    const shown = (name) => (name === RAW ? "$'ssd--ha01-vm--889--disk--0-a\\x20b'" : name);
    for (const name of removable) assert.ok(listed.stdout.split(/\s+/).includes(shown(name)), `${shown(name)} not listed`);
    noChanges(listed);
  });

  // ── restore ──
  const restore = await pveDm(['restore', '--last', '--journal', JOURNAL]);
  const s5 = state();
  test('restore --last brings every removed entry back: dmsetup table and name/uuid as before', () => {
    assert.equal(restore.code, 0, `exit ${restore.signal ?? restore.code}: ${restore.stderr.trim()}`);
    assert.deepEqual(s5.table, before.table, 'dmsetup table');
    assert.deepEqual(s5.nameUuid, before.nameUuid, 'dmsetup info -c -o name,uuid');
  });
  test('restore --last: LVs active again with lvchange -ay (lvs as before), mappings re-created with dmsetup create', () => {
    assert.deepEqual(s5.lvs, before.lvs, 'lvs');
    for (const [name, how] of Object.entries(REMOVED)) {
      const done = how.how === 'lvchange'
        ? restore.trace.some((c) => c.prog === 'lvchange' && c.args.includes('-ay') && c.args.includes(how.lv))
        : restore.trace.some((c) => c.prog === 'dmsetup' && c.args.slice(0, 4).join(' ') === `--manglename none create ${name}`);
      assert.ok(done, `${name}: no ${how.how === 'lvchange' ? `lvchange -ay ${how.lv}` : `dmsetup --manglename none create ${name}`}`);
    }
  });
  const again = await pveDm(['restore', '--last', '--journal', JOURNAL]);
  const s6 = state();
  test('a second restore --last needs nothing: each entry "already" back as journalled, exit 0, nothing changed', () => {
    assert.equal(again.code, 0, `exit ${again.signal ?? again.code}`);
    assert.equal((again.output.match(/^already  .*: back already as journalled \(same uuid and table\)$/gm) ?? []).length, removable.length, again.output);
    noChanges(again);
    sameState(s5, s6, 'second restore');
  });

  // ── a guest lock held by someone else (as qm start or a migration would) ──
  await lockTest();
  end();
}

// ══ part 3: the remedies pve-dm printed for the thin pools, run as printed ═══════════════════════
async function poolRemedies() {
  begin('pool remedies');
  installTraceWrappers();
  // The classification's report (cleanup left the pools as they were: checked there), or a new one.
  let source = report;
  if (source === null) {
    const run = await pveDm(['--report-only', '--json']);
    try {
      source = JSON.parse(run.stdout);
    } catch {
      say(`  (no JSON on stdout:)\n${clip(run.stdout, 20)}`);
      end();
      return;
    }
  }
  const before = state();
  const printed = source.pools.flatMap((pool) => pool.problems.filter((p) => p.remedy !== null).map((p) => ({ pool: `${pool.vg}/${pool.lv}`, kind: p.kind, remedy: p.remedy })));
  say(`\nremedies printed: ${printed.map((r) => `${r.remedy} (${r.pool} ${r.kind})`).join('; ') || 'none'}`);
  // (A remedy missing from the report fails in the classification part, by pool.)
  test('the remedies printed are the ones the classification expects, tank/full\'s and tank/cold\'s among them', () => {
    for (const r of printed) assert.ok(POOLS[r.pool]?.remedies.includes(r.remedy), `unexpected: ${r.remedy} (${r.pool} ${r.kind})`);
    for (const name of ['tank/full', 'tank/cold']) assert.ok(printed.some((r) => r.pool === name), `no remedy for ${name}`);
  });
  const ran = [];
  for (const r of printed) {
    test(`${r.pool} ${r.kind}: "${r.remedy}" works as printed (split on spaces, no shell): exit 0`, () => {
      assert.match(r.remedy, /^(lvchange -ay|lvextend -L \+\d+[MG]|lvextend --poolmetadatasize \+\d+[MG]) [\w.+-]+\/[\w.+-]+$/, 'one LVM command on VG/POOL');
      const [command, ...args] = r.remedy.split(' ');
      const result = sh(command, args);
      say(`  $ ${r.remedy}\n${clip(`${result.stdout}${result.stderr}`.trim(), 8).replace(/^/gm, '  | ')}`);
      assert.equal(result.code, 0, result.stderr.trim());
      ran.push(r);
    });
  }
  const after = state();
  const again = await pveDm(['--report-only', '--json']);
  let report2 = null;
  test('pve-dm --report-only --json afterwards: a JSON report, no changing command', () => {
    usable(again);
    report2 = JSON.parse(again.stdout);
    noChanges(again);
  });
  if (report2 === null) {
    end();
    return;
  }
  const pools = new Map(report2.pools.map((pool) => [`${pool.vg}/${pool.lv}`, pool]));
  say(`\nthin pools afterwards: ${showPools(report2)}`);
  test('each problem a remedy was run for is gone (the inactive pool active; data and metadata use under 70 %, as the kernel counts it)', () => {
    assert.ok(ran.length > 0, 'no remedy was run');
    for (const r of ran) {
      const pool = pools.get(r.pool);
      assert.deepEqual(pool.problems.map((p) => p.kind), [], `${r.pool}: problems left after "${r.remedy}"`);
      assert.equal(pool.severity, 'ok', r.pool);
      const use = kernelUse(after, r.pool.replace('/', '-'));
      assert.deepEqual({ data: pool.dataPercent, metadata: pool.metadataPercent }, use, `${r.pool}: use as the kernel counts it`);
      if (r.kind === 'data-use' || r.kind === 'out-of-data-space') assert.ok(use.data < 70, `${r.pool}: data ${use.data}`);
      if (r.kind === 'metadata-use') assert.ok(use.metadata < 70, `${r.pool}: metadata ${use.metadata}`);
    }
    const left = report2.pools.filter((pool) => pool.severity !== 'ok').length + report2.volumeGroups.filter((vg) => vg.severity !== 'ok').length;
    assert.equal(report2.summary.poolProblems, left, 'summary.poolProblems');
  });
  test('lvs agrees: tank/full 24 MiB larger, tank/clones\' metadata 4 MiB larger and the spare metadata LV as large, tank/cold active', () => {
    const field = (s, name, i) => Number(s.pools[name]?.split('|')[i]);
    for (const r of ran) {
      const grown = /\+(\d+)M/.exec(r.remedy);
      if (r.remedy.startsWith('lvextend -L')) assert.equal(field(after, r.pool, 1) - field(before, r.pool, 1), Number(grown[1]) * 1048576, `${r.pool}: lv_size`);
      if (r.remedy.startsWith('lvextend --poolmetadatasize')) {
        assert.equal(field(after, r.pool, 2) - field(before, r.pool, 2), Number(grown[1]) * 1048576, `${r.pool}: lv_metadata_size`);
        // LVM grew its spare metadata LV along (why pve-dm wants twice the growth free in the VG)
        const vg = r.pool.split('/')[0];
        const spare = sh('lvs', ['-a', '--noheadings', '--units', 'b', '--nosuffix', '-o', 'lv_size', '-S', 'lv_name=~_pmspare', vg]).stdout.trim();
        assert.equal(Number(spare), field(after, r.pool, 2), `${vg}'s spare metadata LV`);
      }
      if (r.remedy.startsWith('lvchange -ay')) assert.ok(active(after.lvs[r.pool]), `${r.pool}: ${after.lvs[r.pool]}`);
    }
  });
  if (ran.some((r) => r.pool === 'tank/cold')) {
    const entries = new Map(report2.entries.map((entry) => [entry.name, entry]));
    test('tank/cold, active with no thin LV of it active: its dm entries (-pool, -tpool, _tdata, _tmeta) are ignored / lvm-internal; CT 170\'s disk still inactive, its guest listed', () => {
      const cold = after.names.filter((n) => n.startsWith('tank-cold'));
      assert.deepEqual(cold, ['tank-cold', 'tank-cold-tpool', 'tank-cold_tdata', 'tank-cold_tmeta']);
      for (const name of cold) assert.deepEqual([entries.get(name)?.status, entries.get(name)?.reason], ['ignored', 'lvm-internal'], name);
      assert.ok(!active(after.lvs['tank/vm-170-disk-0']), `tank/vm-170-disk-0: ${after.lvs['tank/vm-170-disk-0']}`);
      assert.deepEqual(pools.get('tank/cold').guests, [170]);
    });
  }
  end();
}

async function lockTest() {
  const name = 'pve-vm--100--disk--7';
  const journal2 = '/tmp/j2.jsonl';
  fs.rmSync(journal2, { force: true });
  const beforeLock = state();
  for (const file of ['/tmp/lock-held', '/tmp/lock-check', '/tmp/lock-seen']) fs.rmSync(file, { force: true });
  fs.writeFileSync(TRACE, '');
  // Hold VM 100's lock; once pve-dm asks for it (seen in the trace), keep it 5 s more, then look
  // whether the entry is still there while the lock is still held, and release.
  const script = [
    'echo held > /tmp/lock-held',
    `i=0; while [ $i -lt 240 ] && ! grep -q 'lock-100[.]conf' ${TRACE}; do sleep 0.5; i=$((i+1)); done`,
    `grep -q 'lock-100[.]conf' ${TRACE} && echo seen > /tmp/lock-seen`,
    'sleep 5',
    `if dmsetup --manglename none info ${name} >/dev/null 2>&1; then echo present; else echo absent; fi > /tmp/lock-check`,
  ].join('\n');
  fs.mkdirSync(path.dirname(LOCK100), { recursive: true });
  const holder = spawn('flock', [LOCK100, 'sh', '-c', script], { stdio: 'ignore', env: { ...process.env, PATH: SYS_PATH } });
  const holderDone = new Promise((resolve) => holder.on('close', resolve));
  for (let i = 0; i < 120 && !fs.existsSync('/tmp/lock-held'); i++) await sleep(250);
  say(`\n(holding ${LOCK100} with flock while pve-dm cleans ${name})`);
  const run = await startPveDm(['--yes', '--name', name, '--journal', journal2, '--html', HTML]);
  await holderDone;
  const after = state();
  const read = (file) => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() : '');
  const removed = !after.names.includes(name);
  say(`  lock: pve-dm asked for it while held: ${read('/tmp/lock-seen') === 'seen'}; entry at release: ${read('/tmp/lock-check') || '?'}; after the run: ${removed ? 'removed (pve-dm waited for the lock)' : 'still there'}`);
  test('guest lock: pve-dm asked for lock-100.conf while another process held it', () => {
    usable(run);
    assert.equal(read('/tmp/lock-seen'), 'seen', 'no flock on lock-100.conf was seen');
  });
  test('guest lock: vm-100-disk-7 was not removed while lock-100.conf was held', () => {
    assert.equal(read('/tmp/lock-check'), 'present');
  });
  test('guest lock: afterwards vm-100-disk-7 is either removed after the wait (journaled) or reported as skipped', () => {
    if (removed) {
      const records = fs.existsSync(journal2) ? fs.readFileSync(journal2, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((r) => r.kind !== 'run') : [];
      assert.deepEqual(records.map((r) => `${r.name} ${r.outcome ?? 'action'}`), [`${name} action`, `${name} removed`]);
    } else {
      assert.ok(run.output.split('\n').some((l) => l.includes(name) && /skip/i.test(l) && /lock/i.test(l)), `no line says ${name} was skipped for the lock`);
    }
    assert.deepEqual(Object.keys(after.lvs).sort(), Object.keys(beforeLock.lvs).sort(), 'no LV removed');
  });
}

// ══ part 4: conflicts (issue 19): cleanup fixes each one without losing data, restore undoes it ═══
// kernel-conflicts.guest.sh builds them after the other parts, in VGs csan and cthin of their own, so
// that nothing those parts expect changes (see there for how each is made). The checksums are of the
// data as LVM's metadata places it: read through a read-only device made from the table lvs --segments
// and pvs imply (made and removed while no pve-dm runs), never through the device under test.
const CONFLICT_SETUP = path.join(ROOT, 'test/kernel/kernel-conflicts.guest.sh');
const CONFLICT_VGS = ['csan', 'cthin'];
const JOURNAL_CONFLICTS = '/tmp/j-conflicts.jsonl';
const JOURNAL_CONFLICTS2 = '/tmp/j-conflicts2.jsonl';
/** The stale tables cleanup refreshes: dm name -> VG/LV and VMID (each guest stopped, not locked). */
const STALE = {
  'csan-vm--401--disk--0': { lv: 'csan/vm-401-disk-0', vmid: 401 }, // reduced; vm-402 on its last 2 MiB
  'csan-vm--403--disk--0': { lv: 'csan/vm-403-disk-0', vmid: 403 }, // extended, old table back
  'csan-vm--404--disk--0': { lv: 'csan/vm-404-disk-0', vmid: 404 }, // pvmoved, written, old table back
  'cthin-vm--405--disk--0': { lv: 'cthin/vm-405-disk-0', vmid: 405 }, // re-created: maps vm-406's thin id
};
/**
 * Stale too, but no command may touch them, and the cleanup says why: VM 409 runs (its QEMU holds the disk
 * open), VM 410 is locked (lock: migrate), VM 412 runs (the disk is its unused0: its QEMU does not hold it).
 */
const HELD_BACK = {
  'csan-vm--409--disk--0': { lv: 'csan/vm-409-disk-0', vmid: 409, why: /\brunning\b|\bkvm\b/ },
  'csan-vm--410--disk--0': { lv: 'csan/vm-410-disk-0', vmid: 410, why: /\block(ed)?\b|\bmigrate\b/ },
  'csan-vm--412--disk--0': { lv: 'csan/vm-412-disk-0', vmid: 412, why: /\brunning\b/ },
};
const RUNNING = [409, 412];
const GUEST_VG = 'vg-debian';
/** Maps stacked on a stopped guest's disk: kpartx's partitions of VM 407's, the LVs of VM 408's own VG. */
const STACKED = {
  'cthin-vm--407--disk--0p1': { on: 'cthin-vm--407--disk--0', vmid: 407 },
  'cthin-vm--407--disk--0p2': { on: 'cthin-vm--407--disk--0', vmid: 407 },
  'vg--debian-root': { on: 'cthin-vm--408--disk--0', vmid: 408, vg: GUEST_VG },
  'vg--debian-swap': { on: 'cthin-vm--408--disk--0', vmid: 408, vg: GUEST_VG },
};
const PARTITIONS = Object.keys(STACKED).filter((name) => STACKED[name].vg === undefined);
const GUEST_VG_LVS = Object.keys(STACKED).filter((name) => STACKED[name].vg === GUEST_VG);
/** Guest disks of these VGs that have no conflict: the neighbours that got the reused extents and thin id. */
const CONFLICT_VALID = [
  'csan-vm--402--disk--0',
  'cthin-vm--406--disk--0',
  'cthin-vm--407--disk--0',
  'cthin-vm--408--disk--0',
  'csan-vm--411--disk--0',
];
/** The remedies, as the trace writes a command (its words joined by spaces, no quoting). */
const REFRESH = (lv) => `lvchange --refresh ${lv}`;
const PART_REMOVE = (name) => `dmsetup --manglename none remove ${name}`;
const GUEST_VG_OFF = `vgchange --config devices { scan_lvs = 1 } -an ${GUEST_VG}`;
/** `csan/vm-401-disk-0` -> `csan-vm--401--disk--0` */
const dmNameOf = (vgLv) =>
  vgLv
    .split('/')
    .map((part) => part.replaceAll('-', '--'))
    .join('-');

/**
 * The table LVM's metadata implies for every guest disk of VGs csan and cthin (from lvs --segments and
 * pvs, as test/fixtures/real/conflicts/README.md derives it), by VG/LV, its lines sorted as state()'s.
 */
function metadataTables() {
  const columns = (fields) => ['--noheadings', '--separator', '|', '--units', 's', '--nosuffix', '-o', fields];
  const pvs = new Map();
  for (const line of lines(sh('pvs', columns('pv_name,pe_start,pv_major,pv_minor')).stdout)) {
    const [name, start, major, minor] = line.split('|');
    pvs.set(name, { start: Number(start), device: `${major}:${minor}` });
  }
  const fields = 'vg_name,lv_name,vg_extent_size,seg_start,seg_size,segtype,stripes,seg_pe_ranges,thin_id,pool_lv';
  const segments = sh('lvs', ['-a', '--segments', ...columns(fields), ...CONFLICT_VGS]);
  assert.equal(segments.code, 0, `lvs --segments: ${segments.stderr}`);
  const rows = lines(segments.stdout).map((line) => line.split('|'));
  // A thin volume maps its pool's -tpool layer, the dm entry `<vg>-<pool>-tpool` (lvs names that device as the
  // pool's lv_kernel_major:minor only when asked for lv_attr too, else the pool's top device `<vg>-<pool>`).
  const pools = new Map();
  for (const [vg, lv] of rows.filter((r) => r[5] === 'thin-pool')) {
    const tpool = sh('dmsetup', [
      'info',
      '-c',
      '--noheadings',
      '-o',
      'major,minor',
      `${dmNameOf(`${vg}/${lv}`)}-tpool`,
    ]);
    assert.equal(tpool.code, 0, `${vg}/${lv}: no -tpool device: ${tpool.stderr}`);
    pools.set(`${vg}/${lv}`, tpool.stdout.trim());
  }
  const tables = {};
  for (const [vg, lv, extent, start, size, type, stripes, ranges, thinId, pool] of rows) {
    if (!/^vm-\d+-disk-\d+$/.test(lv)) continue;
    let line;
    if (type === 'thin') line = `${start} ${size} thin ${pools.get(`${vg}/${pool}`)} ${thinId}`;
    else if (type === 'linear' || (type === 'striped' && stripes === '1')) {
      const [, pvName, first] = /^(.+):(\d+)-\d+$/.exec(ranges) ?? [];
      const pv = pvs.get(pvName);
      assert.ok(pv, `${vg}/${lv}: PV ${pvName} not in pvs`);
      line = `${start} ${size} linear ${pv.device} ${pv.start + Number(first) * Number(extent)}`;
    } else throw new Error(`${vg}/${lv}: a ${type} segment (${stripes} stripes), which this part does not build`);
    (tables[`${vg}/${lv}`] ??= []).push(line);
  }
  for (const table of Object.values(tables)) table.sort();
  return tables;
}

/** sha256 of a block device's whole contents, read with O_DIRECT (no page cache left from an older table). */
function sha256Of(device) {
  const r = sh('sh', ['-c', 'set -o pipefail; dd if="$1" bs=64k iflag=direct 2>/dev/null | sha256sum', 'sh', device]);
  const sum = /^[0-9a-f]{64}\b/.exec(r.stdout)?.[0];
  if (r.code !== 0 || sum === undefined) throw new Error(`sha256 of ${device}: exit ${r.code} ${r.stderr.trim()}`);
  return sum;
}
const CHECK_DEVICE = 'pvedm-check';
/** sha256 of what a table maps, read through a read-only device made from it and removed again. */
function sha256OfTable(table) {
  const env = { ...process.env, PATH: SYS_PATH, LC_ALL: 'C' };
  const made = spawnSync('dmsetup', ['create', CHECK_DEVICE, '--readonly'], {
    input: `${table.join('\n')}\n`,
    encoding: 'utf8',
    env,
  });
  if (made.status !== 0) throw new Error(`dmsetup create ${CHECK_DEVICE} (${table.join('; ')}): ${made.stderr.trim()}`);
  try {
    return sha256Of(`/dev/mapper/${CHECK_DEVICE}`);
  } finally {
    let removed = sh('dmsetup', ['remove', CHECK_DEVICE]);
    for (let i = 0; i < 10 && removed.code !== 0; i++)
      removed = sh('sh', ['-c', `sleep 0.5; dmsetup remove ${CHECK_DEVICE}`]);
    if (removed.code !== 0) throw new Error(`dmsetup remove ${CHECK_DEVICE}: ${removed.stderr.trim()}`);
  }
}
/** Every guest disk's data as its metadata places it: VG/LV -> sha256. */
const metadataSums = (tables) =>
  Object.fromEntries(Object.entries(tables).map(([lv, table]) => [lv, sha256OfTable(table)]));
/** What each named dm device reads: name -> sha256. */
const deviceSums = (names) => Object.fromEntries(names.map((name) => [name, sha256Of(`/dev/mapper/${name}`)]));

/** pve-dm --report-only --json: its run, and the report or null (and a failed test) when there is none. */
async function conflictReport(what) {
  const run = await pveDm(['--report-only', '--json']);
  let parsed = null;
  test(`${what}: pve-dm --report-only --json gives a report and changes nothing`, () => {
    usable(run);
    parsed = JSON.parse(run.stdout);
    noChanges(run);
  });
  return { report: parsed, run };
}
const conflictEntries = (rep) => (rep?.entries ?? []).filter((entry) => entry.status === 'conflict');
/** Every line of the journal, parsed; a line that is not JSON (half a line) fails the test that reads it. */
const journalLines = (file) =>
  (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '').split('\n').filter(Boolean).map((line, i) => {
    try {
      return JSON.parse(line);
    } catch {
      throw new Error(`${file}:${i + 1}: not a whole JSON line: ${line.slice(0, 80)}`);
    }
  });
/** The journal's action records (no outcome lines), and their outcome lines; a run's and a restore's own lines left out. */
function readJournalFile(file) {
  const all = journalLines(file).filter((r) => r.kind === undefined);
  return { records: all.filter((r) => !('outcome' in r)), outcomes: all.filter((r) => 'outcome' in r) };
}
const tableLines = (table) => lines(Array.isArray(table) ? table.join('\n') : String(table ?? ''));
/** The changing commands a run started, as text, sorted. */
const changes = (run) =>
  run.trace
    .filter(mutating)
    .map((c) => c.text)
    .sort();
/** The lines of a run's output that name a dm entry or VG/LV. */
const linesNaming = (run, ...words) =>
  run.output.split('\n').filter((l) => words.some((w) => l.split(/[\s'"():,]+/).includes(w)));

async function conflicts() {
  begin('conflicts');
  installTraceWrappers();
  const partTools = process.env.KERNEL_PART_TOOLS ?? '';
  say(`\n$ sh ${path.relative(ROOT, CONFLICT_SETUP)} (kpartx: ${partTools || 'none, dmsetup as kpartx names them'})`);
  const built = spawnSync('sh', [CONFLICT_SETUP, ROOT, partTools], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, PATH: SYS_PATH },
    timeout: 600_000,
  });
  test('kernel-conflicts.guest.sh built the conflicts (exit 0)', () =>
    assert.equal(built.status, 0, `exit ${built.signal ?? built.status}`));
  if (built.status !== 0) return end();
  const staleAll = { ...STALE, ...HELD_BACK };

  // ── what was built, read directly ──
  const meta0 = metadataTables();
  const s0 = state();
  const sums0 = metadataSums(meta0);
  const seen0 = deviceSums([...Object.keys(staleAll), ...GUEST_VG_LVS]);
  say(`\nguest disks of csan and cthin as their metadata maps them: ${Object.keys(meta0).join(', ')}`);
  test("built: each stale LV's kernel table is not the one lvs --segments and pvs imply, and reads other data", () => {
    for (const [name, { lv }] of Object.entries(staleAll)) {
      assert.ok(s0.tables[name] && meta0[lv], `${name}: no dm entry or no LV`);
      assert.notDeepEqual(s0.tables[name], meta0[lv], `${name}: the kernel maps what the metadata says`);
      assert.notEqual(seen0[name], sums0[lv], `${name}: reads the data its metadata places`);
    }
  });
  test('built: every other guest disk of csan and cthin maps what its metadata says (12 disks in all)', () => {
    assert.equal(Object.keys(meta0).length, 12, Object.keys(meta0).join(' '));
    for (const [lv, table] of Object.entries(meta0)) {
      if (Object.values(staleAll).some((s) => s.lv === lv)) continue;
      assert.deepEqual(s0.tables[dmNameOf(lv)], table, lv);
    }
  });
  test("built: vm-401's old table maps vm-402's extents, vm-405's vm-406's thin id, vm-404's the old PV", () => {
    const [, , , dev402, at402] = meta0['csan/vm-402-disk-0'][0].split(' ');
    const [, length401, , dev401, at401] = s0.tables['csan-vm--401--disk--0'][0].split(' ');
    assert.equal(dev401, dev402, 'same PV');
    assert.ok(
      Number(at402) >= Number(at401) && Number(at402) < Number(at401) + Number(length401),
      `${at402} in ${at401}+${length401}`,
    );
    assert.deepEqual(s0.tables['cthin-vm--405--disk--0'], meta0['cthin/vm-406-disk-0']);
    assert.notEqual(s0.tables['csan-vm--404--disk--0'][0].split(' ')[3], meta0['csan/vm-404-disk-0'][0].split(' ')[3]);
  });
  test("built: the partitions and vg-debian's LVs map the disks of VMs 407 and 408 (stopped); VMs 409, 412 run", () => {
    for (const [name, { on }] of Object.entries(STACKED)) {
      const under = s0.tables[on]?.length
        ? sh('dmsetup', ['info', '-c', '--noheadings', '-o', 'major,minor', on]).stdout.trim()
        : '?';
      assert.ok(
        s0.tables[name]?.every((l) => l.split(' ')[3] === under),
        `${name} (${s0.tables[name]}) not on ${on} (${under})`,
      );
    }
    for (const vmid of RUNNING) {
      const pid = fs.readFileSync(`/run/qemu-server/${vmid}.pid`, 'utf8').trim();
      assert.ok(
        fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`-pidfile\0/var/run/qemu-server/${vmid}.pid`),
        `VM ${vmid}`,
      );
    }
    assert.deepEqual(
      [s0.open['csan-vm--409--disk--0'], s0.open['csan-vm--412--disk--0']],
      [1, 0],
      'open: VM 409 holds its disk',
    );
  });

  // ── the classification ──
  const { report: report0, run: report0Run } = await conflictReport('before');
  const entries0 = new Map((report0?.entries ?? []).map((entry) => [entry.name, entry]));
  // A thin volume's table maps its pool's -tpool layer. lvs gives that device as the pool row's lv_kernel_major:minor
  // only when the same report asks for lv_attr (as pve-dm's does); without, it gives the pool's top device.
  const segmentsCall = report0Run.trace.find((c) => c.prog === 'lvs' && c.args.includes('--segments'));
  const poolLine = lines(sh('lvs', segmentsCall?.args ?? []).stdout).find((l) => l.startsWith('cthin|data|')) ?? '';
  const plain = sh('lvs', ['--noheadings', '--separator', '|', '-o', 'lv_kernel_major,lv_kernel_minor', 'cthin/data']);
  const tpool = sh('dmsetup', ['info', '-c', '--noheadings', '-o', 'major,minor', 'cthin-data-tpool']).stdout.trim();
  const device = (text) => text.trim().split('|').slice(-2).join(':');
  test("pve-dm's lvs --segments gives thin pool cthin/data's -tpool device, which the thin tables map", () => {
    const why = `${poolLine} (lvs -o lv_kernel_major,lv_kernel_minor alone: ${device(plain.stdout)})`;
    assert.equal(device(poolLine), tpool, why);
  });
  test('before: the eleven conflicts, each with its remedy (none for running or locked VMs); neighbours valid', () => {
    assert.ok(report0, 'no report');
    const got = conflictEntries(report0)
      .map((e) => `${e.name} ${e.reason}`)
      .sort();
    const want = [
      ...Object.keys(staleAll).map((n) => `${n} stale-table`),
      ...Object.keys(STACKED).map((n) => `${n} stacked-on-guest-volume`),
    ];
    assert.deepEqual(got, want.sort());
    assert.equal(report0.summary.conflict, 11, 'summary.conflict');
    for (const [name, { lv, vmid }] of Object.entries(STALE))
      assert.deepEqual([entries0.get(name).vmid, entries0.get(name).remedy], [vmid, REFRESH(lv)], name);
    for (const [name, { vmid }] of Object.entries(HELD_BACK))
      assert.deepEqual([entries0.get(name).vmid, entries0.get(name).remedy], [vmid, null], name);
    for (const [name, { on, vmid }] of Object.entries(STACKED)) {
      const entry = entries0.get(name);
      assert.deepEqual([entry.vmid, entry.relatedTo], [vmid, on], name);
      if (STACKED[name].vg)
        assert.equal(entry.remedy, `vgchange --config 'devices { scan_lvs = 1 }' -an ${GUEST_VG}`, name);
      else assert.match(entry.remedy ?? '', new RegExp(`^dmsetup (--manglename none )?remove ${name}$`), name);
    }
    for (const name of CONFLICT_VALID)
      assert.deepEqual([entries0.get(name)?.status, entries0.get(name)?.reason], ['valid', 'referenced'], name);
  });

  // ── a dry run ──
  const raw = () => sh('dmsetup', ['--manglename', 'none', 'table']).stdout;
  const rawBefore = raw();
  const dry = await pveDm(['--dry-run', '--html', HTML]);
  const rawAfterDry = raw();
  const sDry = state();
  test('--dry-run: changes nothing (no changing command; dmsetup table byte for byte as before, lvs as before)', () => {
    usable(dry);
    noChanges(dry);
    assert.equal(rawAfterDry, rawBefore, 'dmsetup table');
    sameState(s0, sDry);
  });
  test('--dry-run: names each conflict remedy it would run, all before any duplicate or tombstone', () => {
    const section = dry.output.slice(Math.max(0, dry.output.lastIndexOf('\nCleanup')));
    const out = section.split('\n');
    const at = (want) => out.findIndex(want);
    const wanted = [
      ...Object.values(STALE).map(({ lv }) => [REFRESH(lv), (l) => l.includes(REFRESH(lv))]),
      ...PARTITIONS.map((name) => [`remove ${name}`, (l) => l.split(/[\s()]+/).includes(name) && /remove/.test(l)]),
      [
        `vgchange ... -an ${GUEST_VG}`,
        (l) => /vgchange --config '?devices \{ scan_lvs = 1 \}'? -an vg-debian\b/.test(l),
      ],
    ];
    const found = wanted.map(([what, want]) => [what, at(want)]);
    assert.deepEqual(
      found.filter(([, i]) => i < 0).map(([what]) => what),
      [],
      `not in the dry run:\n${clip(section, 30)}`,
    );
    const others = Object.keys(REMOVED)
      .map((name) => at((l) => l.split(/[\s()]+/).includes(name)))
      .filter((i) => i >= 0);
    assert.ok(others.length > 0, 'no duplicate or tombstone of pve1 in the dry run');
    assert.ok(
      Math.max(...found.map(([, i]) => i)) < Math.min(...others),
      `conflicts are not planned first:\n${clip(section, 40)}`,
    );
  });

  // ── the cleanup ──
  fs.rmSync(JOURNAL_CONFLICTS, { force: true });
  const before = state();
  const yes = await pveDm(['--yes', '--only', 'conflicts', '--journal', JOURNAL_CONFLICTS, '--html', HTML]);
  const s1 = state();
  showOutput({ stdout: yes.stdout.slice(Math.max(0, yes.stdout.lastIndexOf('\nCleanup'))) }, 30);
  const meta1 = metadataTables();
  test('--yes --only conflicts: its changing commands are exactly the remedies (refresh, remove, one vgchange)', () => {
    usable(yes);
    const want = [...Object.values(STALE).map(({ lv }) => REFRESH(lv)), ...PARTITIONS.map(PART_REMOVE), GUEST_VG_OFF];
    assert.deepEqual(changes(yes), want.sort());
  });
  test("--yes: each remedy ran under its guest's Proxmox lock (flock on lock-<vmid>.conf)", () => {
    for (const vmid of [401, 403, 404, 405, 407, 408]) {
      assert.ok(
        yes.trace.some((c) => c.prog === 'flock' && c.args.some((a) => a.endsWith(`/lock-${vmid}.conf`))),
        `no flock on lock-${vmid}.conf`,
      );
    }
  });
  test('--yes: the stale LVs of running VMs 409, 412 and locked VM 410: no command names them, tables kept', () => {
    for (const [name, { lv }] of Object.entries(HELD_BACK)) {
      assert.deepEqual(
        yes.trace
          .filter(mutating)
          .filter((c) => c.args.includes(lv) || c.args.includes(name))
          .map((c) => c.text),
        [],
        name,
      );
      assert.deepEqual(s1.tables[name], before.tables[name], name);
    }
  });
  test('--yes: says it skipped each, and why: VM 409 runs (its kvm holds it), VM 410 is locked, VM 412 runs', () => {
    for (const [name, { lv, why }] of Object.entries(HELD_BACK)) {
      const said = linesNaming(yes, name, lv).filter((l) => /skip/i.test(l));
      assert.ok(
        said.some((l) => why.test(l)),
        `${name}: no line says it was skipped for ${why}:\n${said.join('\n')}`,
      );
    }
  });
  test("--yes: each refreshed LV's table is now the one lvs --segments and pvs imply; LVM's metadata unchanged", () => {
    assert.deepEqual(meta1, meta0, 'the tables the metadata implies');
    for (const [name, { lv }] of Object.entries(STALE)) assert.deepEqual(s1.tables[name], meta1[lv], name);
  });
  test("--yes: partitions and vg-debian's LVs gone; every other entry keeps its table; no LV removed or made", () => {
    assert.deepEqual(
      before.names.filter((n) => !s1.names.includes(n)),
      Object.keys(STACKED).sort(),
      'entries gone',
    );
    assert.deepEqual(
      s1.names.filter((n) => !before.names.includes(n)),
      [],
      'entries that appeared',
    );
    for (const name of s1.names.filter((n) => !(n in STALE)))
      assert.deepEqual(s1.tables[name], before.tables[name], name);
    assert.deepEqual(Object.keys(s1.lvs).sort(), Object.keys(before.lvs).sort(), 'lvs');
  });
  const sums1 = metadataSums(meta1);
  const seen1 = deviceSums(Object.keys(STALE));
  test('--yes: no data lost: each guest disk as its metadata places it reads as before (sha256)', () => {
    assert.deepEqual(sums1, sums0);
  });
  test('--yes: each refreshed guest now reads its own data through its own device', () => {
    for (const [name, { lv }] of Object.entries(STALE)) assert.equal(seen1[name], sums0[lv], name);
  });
  test("--yes: VM 407's and VM 408's disks (under the partitions and the guest VG) unchanged", () => {
    for (const lv of ['cthin/vm-407-disk-0', 'cthin/vm-408-disk-0']) assert.equal(sums1[lv], sums0[lv], lv);
    assert.equal(
      sha256Of('/dev/mapper/cthin-vm--408--disk--0'),
      sums0['cthin/vm-408-disk-0'],
      'through its own device',
    );
  });
  const { records, outcomes } = readJournalFile(JOURNAL_CONFLICTS);
  const journalText = fs.existsSync(JOURNAL_CONFLICTS) ? fs.readFileSync(JOURNAL_CONFLICTS, 'utf8').trimEnd() : '';
  if (journalText !== '') say(`\n${JOURNAL_CONFLICTS}:\n${clip(journalText, 16).replace(/^/gm, '  | ')}`);
  test('journal: a record per entry changed, with its uuid and old table; a refresh as "lvchange --refresh"', () => {
    assert.deepEqual(records.map((r) => r.name).sort(), [...Object.keys(STALE), ...Object.keys(STACKED)].sort());
    for (const r of records) {
      assert.equal(r.uuid, before.uuids[r.name], `${r.name}: uuid`);
      assert.deepEqual(tableLines(r.table), before.tables[r.name], `${r.name}: table`);
      if (r.name in STALE) assert.equal(r.action, 'lvchange --refresh', `${r.name}: action`);
      else assert.notEqual(r.action, 'lvchange --refresh', `${r.name}: action`);
    }
    assert.equal(new Set(records.map((r) => JSON.stringify(r.run))).size, 1, 'all records belong to one run');
    assert.deepEqual(
      outcomes.filter((o) => o.outcome === 'failed').map((o) => `${o.name}: ${o.detail}`),
      [],
      'failed outcomes',
    );
  });
  const { report: report1 } = await conflictReport('after --yes');
  test('after --yes: pve-dm counts three conflicts left, the stale tables of VMs 409, 410 and 412', () => {
    assert.deepEqual(
      conflictEntries(report1)
        .map((e) => `${e.name} ${e.reason}`)
        .sort(),
      Object.keys(HELD_BACK).map((n) => `${n} stale-table`),
    );
    assert.equal(report1?.summary.conflict, 3);
  });

  // ── restore ──
  const restore = await pveDm(['restore', '--last', '--yes', '--journal', JOURNAL_CONFLICTS]);
  const s2 = state();
  test('restore --last --yes brings every entry back: dmsetup table, names and uuids as before the cleanup', () => {
    assert.equal(restore.code, 0, `exit ${restore.signal ?? restore.code}: ${restore.stderr.trim()}`);
    assert.deepEqual(s2.table, before.table, 'dmsetup table');
    assert.deepEqual(s2.nameUuid, before.nameUuid, 'dmsetup info -c -o name,uuid');
  });
  test('restore: old tables loaded (dmsetup load, resume), maps re-created (dmsetup create --uuid), no more', () => {
    const dm = restore.trace.filter((c) => c.prog === 'dmsetup');
    for (const name of Object.keys(STALE)) {
      for (const verb of ['load', 'resume'])
        assert.ok(
          dm.some((c) => c.args.includes(verb) && c.args.includes(name)),
          `no dmsetup ${verb} ${name}`,
        );
    }
    for (const name of Object.keys(STACKED)) {
      assert.ok(
        dm.some((c) => c.args.includes('create') && c.args.includes(name) && c.args.includes(before.uuids[name])),
        `no dmsetup create ${name} --uuid`,
      );
    }
    const journaled = new Set([...Object.keys(STALE), ...Object.keys(STACKED)]);
    const other = restore.trace
      .filter(mutating)
      .filter((c) => c.prog !== 'dmsetup' || !c.args.some((a) => journaled.has(a)));
    assert.deepEqual(
      other.map((c) => c.text),
      [],
    );
  });
  const sums2 = metadataSums(metadataTables());
  test('restore: no data lost: each guest disk as its metadata places it, each restored device as before', () => {
    assert.deepEqual(sums2, sums0);
    assert.deepEqual(deviceSums([...Object.keys(staleAll), ...GUEST_VG_LVS]), seen0);
  });

  // ── once VMs 409 and 412 stopped and VM 410's migration over, a second cleanup fixes every conflict ──
  for (const vmid of RUNNING) {
    // (a stand-in's parent shell is gone: it stays a zombie, but its disks are closed)
    process.kill(Number(fs.readFileSync(`/run/qemu-server/${vmid}.pid`, 'utf8')), 'SIGTERM');
    fs.rmSync(`/run/qemu-server/${vmid}.pid`, { force: true });
  }
  for (let i = 0; i < 100 && state().open['csan-vm--409--disk--0'] !== 0; i++) await sleep(100);
  const conf410 = '/etc/pve/nodes/pve1/qemu-server/410.conf';
  fs.writeFileSync(conf410, fs.readFileSync(conf410, 'utf8').replace(/^lock: migrate\n/m, ''));
  say("\n(VMs 409 and 412 stopped, VM 410's lock: migrate removed)");
  fs.rmSync(JOURNAL_CONFLICTS2, { force: true });
  const yes2 = await pveDm(['--yes', '--only', 'conflicts', '--journal', JOURNAL_CONFLICTS2, '--html', HTML]);
  const s3 = state();
  const meta3 = metadataTables();
  test('then --yes --only conflicts runs exactly the remedies of all eleven, VMs 409, 410, 412 refreshed too', () => {
    usable(yes2);
    const want = [
      ...Object.values(staleAll).map(({ lv }) => REFRESH(lv)),
      ...PARTITIONS.map(PART_REMOVE),
      GUEST_VG_OFF,
    ];
    assert.deepEqual(changes(yes2), want.sort());
  });
  test('then every stale LV maps what lvs --segments and pvs imply, every other entry keeps its table', () => {
    assert.deepEqual(meta3, meta0, 'the tables the metadata implies');
    for (const [name, { lv }] of Object.entries(staleAll)) assert.deepEqual(s3.tables[name], meta3[lv], name);
    assert.deepEqual(
      s3.names,
      s2.names.filter((n) => !(n in STACKED)),
      "the partitions and vg-debian's LVs gone, nothing else",
    );
    for (const name of s3.names.filter((n) => !(n in staleAll)))
      assert.deepEqual(s3.tables[name], s2.tables[name], name);
  });
  test('then no data lost: each guest disk as its metadata places it unchanged, through its own device too', () => {
    assert.deepEqual(metadataSums(meta3), sums0);
    for (const [name, { lv }] of Object.entries(staleAll))
      assert.equal(sha256Of(`/dev/mapper/${name}`), sums0[lv], name);
  });
  const { report: report3 } = await conflictReport('at last');
  test('at last pve-dm --json counts no conflict (summary.conflict 0); the eleven entries gone or valid', () => {
    assert.deepEqual(
      conflictEntries(report3).map((e) => e.name),
      [],
    );
    assert.equal(report3?.summary.conflict, 0);
    const entries = new Map((report3?.entries ?? []).map((entry) => [entry.name, entry]));
    for (const name of Object.keys(staleAll)) assert.equal(entries.get(name)?.status, 'valid', name);
    for (const name of Object.keys(STACKED)) assert.equal(entries.get(name), undefined, name);
  });
  end();
}

// ══ part 5: faults (issue 20): killed at every step, journal unwritable, races, hangs ══════════════
// A five-entry plan (a stale table, a duplicate, a thick and a thin LV, a hand-made mapping) run with
// test/kernel/fault-hook.mjs loaded, which SIGKILLs pve-dm at one exact point (or runs a command
// there); after each fault the journal must account for every change, and restore must bring the
// node back byte for byte (dm tables, names, uuids, LVs' active state).
const FAULT_JOURNAL = '/tmp/j-faults.jsonl';
/** VM 500's disk, extended with its old table loaded back: a stale table of VG ssd-ha01. */
const STALE500 = 'ssd--ha01-vm--500--disk--0';
const FIVE = [STALE500, 'ssd--ha01-vm--119--disk--0-dup', 'ssd--ha01-vm--300--disk--0', 'pve-vm--888--disk--0', 'ssd--ha01-vm--889--disk--0'];
const FIVE_ARGS = FIVE.flatMap((name) => ['--name', name]);
const KILL_POINTS = ['before-journal', 'before-command', 'after-command', 'after-outcome'];
/** Where the next run, `journal` and a finishing cleanup look at the interrupted line (no restore in between). */
const FINISHED_BY_NEXT_RUN = ['before-command:2', 'after-command:3'];

/** The last cleanup run's id (its run line), its action lines and their outcome lines. */
function lastRun(file) {
  const all = journalLines(file);
  const run = all.filter((l) => l.kind === 'run').at(-1)?.run ?? null;
  const actions = all.filter((l) => l.run === run && l.kind === undefined && !('outcome' in l));
  const outcomes = new Map(all.filter((l) => l.kind === undefined && 'outcome' in l).map((l) => [l.id, l]));
  return { run, actions, outcomes, all };
}
/** The five entries' state: what differs from the node before the faults (gone, another table, another uuid). */
function changedOf(s, base, names = FIVE) {
  return names.filter((n) => s.uuids[n] !== base.uuids[n] || JSON.stringify(s.tables[n]) !== JSON.stringify(base.tables[n]));
}
/** The node as before: every dm entry (name, uuid, table) and LV (active or not). */
function sameAsBase(s, base, what) {
  assert.deepEqual(s.nameUuid, base.nameUuid, `dm names and uuids (${what})`);
  assert.deepEqual(s.table, base.table, `dm tables (${what})`);
  assert.deepEqual(s.lvs, base.lvs, `lvs (${what})`);
}
/** Console text as one line: the console wraps at 80 columns. */
const flat = (text) => text.replace(/\s+/g, ' ');
const faultLog = () => (fs.existsSync(FAULT_LOG) ? fs.readFileSync(FAULT_LOG, 'utf8').trim() : '');

function buildStale500() {
  const run = (...command) => {
    const r = sh(command[0], command.slice(1));
    if (r.code !== 0) throw new Error(`${command.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  };
  run('lvcreate', '-q', '-aly', '-Wy', '--yes', '--size', '8M', '--name', 'vm-500-disk-0', '--setautoactivation', 'n', '--addtag', 'pve-vm-500', 'ssd-ha01');
  const old = run('dmsetup', 'table', STALE500).trim();
  run('lvextend', '-q', '-L', '+4M', 'ssd-ha01/vm-500-disk-0');
  run('dmsetup', 'load', STALE500, '--table', old);
  run('dmsetup', 'suspend', STALE500);
  run('dmsetup', 'resume', STALE500);
  fs.writeFileSync('/etc/pve/nodes/pve1/qemu-server/500.conf', 'cores: 1\nmemory: 512\nname: f500\nscsi0: ssd-ha01:vm-500-disk-0,size=12M\n');
  // VM 100's unreferenced disk, for the guest that starts during the lock wait: the cleanup part's
  // lock test (mode all) deactivated it.
  if (sh('dmsetup', ['info', 'pve-vm--100--disk--7']).code !== 0) run('lvchange', '-q', '-ay', 'pve/vm-100-disk-7');
}

async function faults() {
  begin('faults');
  installTraceWrappers();
  fs.rmSync(FAULT_JOURNAL, { force: true });
  let built = null;
  try {
    buildStale500();
  } catch (error) {
    built = error.message;
  }
  test('built: VM 500\'s disk on a stale table (extended, its old table loaded back); VM 100\'s disk-7 active', () => assert.equal(built, null));
  if (built !== null) return end();
  const base = state();
  const dry = await pveDm(['--dry-run', '--yes', ...FIVE_ARGS, '--journal', FAULT_JOURNAL, '--html', HTML]);
  const planned = dry.output.split('\n').filter((l) => /^\s*would (remove|refresh)/.test(l));
  const order = planned.map((l) => FIVE.find((n) => l.includes(` ${n} `) || l.includes(` ${n}  `)) ?? '?');
  test('the five-entry plan: a refresh, then four removals (a dry run: nothing changed)', () => {
    usable(dry);
    assert.equal(planned.length, 5, planned.join('\n'));
    assert.equal(order[0], STALE500, `the stale table first: ${order.join(', ')}`);
    assert.deepEqual([...order].sort(), [...FIVE].sort());
    sameAsBase(state(), base, 'dry run');
  });
  if (planned.length !== 5) return end();

  const points = await killEveryStep(base, order);
  await killRestore(base, order);
  await journalUnwritable(base);
  await races(base);
  await hangs(base, order);
  say(`\nKERNEL-TEST faults: ${points} kill points tried in the cleanup`);
  test('in the end: the node exactly as before the faults, VM 500\'s stale table included', () => sameAsBase(state(), base, 'after every fault'));
  end();
}

/**
 * SIGKILL at each point of each of the five commands. After each: the journal accounts for every
 * change and knows the cut line for what it is; then restore --last (or, at two points, `journal`,
 * a new cleanup that finishes the job, and a restore of both runs) gives the node back as it was.
 */
async function killEveryStep(base, order) {
  let tried = 0;
  for (const point of KILL_POINTS) {
    for (let n = 1; n <= 5; n++) {
      const at = `${point}:${n}`;
      fs.rmSync(FAULT_LOG, { force: true });
      const run = await pveDm(['--yes', ...FIVE_ARGS, '--journal', FAULT_JOURNAL, '--html', HTML], { fault: at });
      const s = state();
      const { run: id, actions, outcomes } = lastRun(FAULT_JOURNAL);
      tried++;
      const cut = actions[n - 1];
      test(`killed ${at} (${order[n - 1]}): every change journalled, the cut line known for what it is`, () => {
        assert.equal(run.signal, 'SIGKILL', `not killed: exit ${run.code}; ${run.stderr.trim().split('\n')[0]}`);
        assert.ok(faultLog().startsWith(`${at}: `), `the hook says: "${faultLog()}"`);
        assert.equal(actions.length, point === 'before-journal' ? n - 1 : n, `action lines of run ${id}`);
        const changed = changedOf(s, base);
        const journalled = actions.map((a) => a.name);
        for (const name of changed) assert.ok(journalled.includes(name), `${name} changed without a journal line`);
        assert.deepEqual(changedOf(s, base, base.names.filter((n2) => !FIVE.includes(n2))), [], 'entries outside the plan changed');
        const open = actions.filter((a) => !outcomes.has(a.id)).map((a) => a.name);
        if (point === 'before-command' || point === 'after-command') {
          assert.deepEqual(open, [cut?.name], 'the cut line is the only one without an outcome');
          assert.equal(changed.includes(cut.name), point === 'after-command', `${cut.name}: its command ${point === 'after-command' ? 'ran' : 'never ran'}`);
        } else {
          assert.deepEqual(open, [], 'every line has its outcome');
        }
        assert.deepEqual([...changed].sort(), journalled.filter((name, i) => i < n - 1 || point === 'after-command' || point === 'after-outcome').sort(), 'done: exactly the journalled ones that ran');
      });
      if (FINISHED_BY_NEXT_RUN.includes(at)) await finishAfterKill(base, at, id, cut);
      else if (actions.length > 0) await restoreAfterKill(base, at, id, point === 'before-command' ? cut : null);
      else test(`killed ${at}: nothing was journalled and nothing changed`, () => sameAsBase(s, base, at));
    }
  }
  return tried;
}

/** restore --last after a kill; `neverRan`: the cut line whose command never ran (restore must see it so). */
async function restoreAfterKill(base, at, id, neverRan) {
  const restore = await pveDm(['restore', '--last', '--journal', FAULT_JOURNAL]);
  const s = state();
  const { actions, outcomes } = lastRun(FAULT_JOURNAL);
  test(`killed ${at}: restore --last brings back all of run ${id}, byte-identical; the cut line settled`, () => {
    assert.equal(restore.code, 0, `exit ${restore.signal ?? restore.code}: ${restore.output.trim().split('\n').slice(-6).join(' | ')}`);
    sameAsBase(s, base, `restore after ${at}`);
    for (const a of actions) assert.ok(outcomes.has(a.id), `${a.name}: still no outcome after restore`);
    if (neverRan === null) return;
    // Never "restored" over the live device: no command on it, and said why.
    assert.ok(!restore.trace.filter(mutating).some((c) => c.args.includes(neverRan.name) || c.args.includes(`${neverRan.vg}/${neverRan.lv}`)), `a command on ${neverRan.name}`);
    assert.match(flat(restore.output), new RegExp(`already ${neverRan.name}: there as journalled \\(same uuid and table\\): its run was interrupted before its command`));
    assert.equal(outcomes.get(neverRan.id)?.outcome, 'failed', 'settled as not done');
  });
}

/** `journal` shows the cut line interrupted; a new cleanup settles it and finishes; restore of both runs. */
async function finishAfterKill(base, at, killedRun, cut) {
  const listed = await pveDm(['journal', '--journal', FAULT_JOURNAL]);
  test(`killed ${at}: journal shows ${cut?.name} as interrupted`, () => {
    assert.equal(listed.code, 0);
    const row = listed.stdout.split('\n').find((l) => l.includes(cut.id)) ?? '';
    assert.match(row, /interrupted/, row);
  });
  const next = await pveDm(['--yes', ...FIVE_ARGS, '--journal', FAULT_JOURNAL, '--html', HTML]);
  const s = state();
  const after = lastRun(FAULT_JOURNAL);
  const settled = after.outcomes.get(cut.id);
  test(`killed ${at}: the next cleanup settles the cut line (${at.startsWith('after') ? 'removed: found done' : 'failed: found not done'}) and finishes the job`, () => {
    usable(next);
    assert.match(settled?.detail ?? '', new RegExp(`run ${killedRun} was interrupted; run ${after.run} found it ${at.startsWith('after') ? 'done' : 'not done'}`));
    assert.deepEqual(changedOf(s, base).sort(), [...FIVE].sort(), 'all five done');
    assert.match(next.output, /\b0 failed\b/);
  });
  const ids = journalLines(FAULT_JOURNAL)
    .filter((l) => l.kind === undefined && !('outcome' in l) && (l.run === killedRun || l.run === after.run))
    .map((l) => l.id);
  const restore = await pveDm(['restore', ...ids, '--journal', FAULT_JOURNAL]);
  test(`killed ${at}: restore of both runs' entries gives the node back byte-identical`, () => {
    assert.equal(restore.code, 0, restore.output.trim().split('\n').slice(-6).join(' | '));
    sameAsBase(state(), base, `restore after ${at}`);
  });
}

/**
 * A cleanup of the five, then restore killed step by step: before its first command, then after
 * each command, each new restore picking up where the last was cut (the refresh's load and resume
 * are two commands: killed between them, and after the resume). Then one to the end.
 */
async function killRestore(base, order) {
  const full = await pveDm(['--yes', ...FIVE_ARGS, '--journal', FAULT_JOURNAL, '--html', HTML]);
  const cleaned = state();
  test('restore faults: a cleanup of the five first (all done, 0 failed)', () => {
    usable(full);
    assert.deepEqual(changedOf(cleaned, base).sort(), [...FIVE].sort());
  });
  // Restored in the reverse order: the refresh (dmsetup load, then resume) comes last.
  const steps = ['before-command:1', 'after-command:1', 'after-command:1', 'after-command:1', 'after-command:1', 'after-command:1', 'after-command:2'];
  let shownInterrupted = false;
  for (const [index, at] of steps.entries()) {
    fs.rmSync(FAULT_LOG, { force: true });
    const run = await pveDm(['restore', '--last', '--journal', FAULT_JOURNAL], { fault: at });
    const s = state();
    const back = FIVE.filter((n) => !changedOf(s, base).includes(n));
    test(`restore killed ${at} (step ${index + 1}): each entry either back as it was or still as the cleanup left it`, () => {
      assert.equal(run.signal, 'SIGKILL', `not killed: exit ${run.code}`);
      assert.ok(faultLog().startsWith(`${at}: `), faultLog());
      for (const name of FIVE) {
        const asBase = !changedOf(s, base, [name]).length;
        const asCleaned = !changedOf(s, cleaned, [name]).length;
        assert.ok(asBase || asCleaned, `${name}: neither as before nor as the cleanup left it`);
      }
      assert.deepEqual(changedOf(s, base, base.names.filter((n) => !FIVE.includes(n))), [], 'entries outside the plan changed');
    });
    say(`  back after step ${index + 1}: ${back.join(', ') || 'none'}`);
    if (!shownInterrupted && at === 'after-command:1') {
      shownInterrupted = true;
      const listed = await pveDm(['journal', '--journal', FAULT_JOURNAL]);
      test('restore killed after its command: journal shows that entry as "removed, restore interrupted"', () => {
        assert.match(listed.stdout, /restore interrupted/, listed.stdout);
      });
    }
  }
  const last = await pveDm(['restore', '--last', '--journal', FAULT_JOURNAL]);
  const records = journalLines(FAULT_JOURNAL);
  const { actions } = lastRun(FAULT_JOURNAL);
  test('restore run again after seven cuts: exit 0, the node byte-identical, every entry journalled as restored', () => {
    assert.equal(last.code, 0, last.output.trim().split('\n').slice(-6).join(' | '));
    sameAsBase(state(), base, 'restore to the end');
    for (const a of actions) {
      const restoreLines = records.filter((l) => l.kind === 'restore' && l.id === a.id);
      assert.equal(restoreLines.at(-1)?.outcome, 'restored', `${a.name}: its last restore line`);
    }
  });
}

/** The journal on a full tmpfs, a read-only one, a link, a FIFO: refused before anything changes. */
async function journalUnwritable(base) {
  const mount = (dir, options) => {
    fs.mkdirSync(dir, { recursive: true });
    const r = sh('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]);
    if (r.code !== 0) throw new Error(`mount ${dir}: ${r.stderr}`);
  };
  mount('/tmp/jfull', 'size=4k');
  sh('dd', ['if=/dev/zero', 'of=/tmp/jfull/filler', 'bs=4096', 'count=2']);
  mount('/tmp/jro', 'ro,size=64k');
  fs.rmSync('/tmp/jlink.jsonl', { force: true });
  fs.symlinkSync('/tmp/elsewhere.jsonl', '/tmp/jlink.jsonl');
  fs.rmSync('/tmp/jfifo.jsonl', { force: true });
  sh('mkfifo', ['/tmp/jfifo.jsonl']);
  const cases = [
    ['on a full filesystem (a 4 KiB tmpfs)', '/tmp/jfull/j.jsonl', /its filesystem is full/],
    ['on a read-only filesystem', '/tmp/jro/j.jsonl', /its filesystem is read-only/],
    ['a symbolic link', '/tmp/jlink.jsonl', /it is a symbolic link/],
    ['a FIFO', '/tmp/jfifo.jsonl', /it is not a regular file/],
  ];
  for (const [what, file, why] of cases) {
    const run = await pveDm(['--yes', ...FIVE_ARGS, '--journal', file, '--html', HTML]);
    test(`the journal ${what}: refused in one line before any change, the report printed, exit >= 1`, () => {
      assert.ok(run.code !== null && run.code >= 1, `exit ${run.signal ?? run.code}`);
      // (the console wraps its lines at 80 columns)
      assert.match(flat(run.stdout), /REFUSED: cannot write the journal/);
      assert.match(flat(run.stdout), why);
      assert.match(run.stdout, /Grade [A-F]/, 'the report');
      assert.equal(run.stderr.split('\n').filter((l) => l.startsWith('pve-dm: cleanup refused')).length, 1, run.stderr);
      noChanges(run);
      sameAsBase(state(), base, what);
    });
  }
  test('the journal a symbolic link: nothing was written through it', () =>
    assert.ok(!fs.existsSync('/tmp/elsewhere.jsonl') || fs.readFileSync('/tmp/elsewhere.jsonl', 'utf8') === ''));
  sh('umount', ['/tmp/jro']);
  await journalFillsUp(base);
}

/**
 * A journal whose filesystem fills up in the middle of the run: the line that does not fit is cut
 * off again (never half a line), the cleanup stops there, what ran is journalled; once there is room,
 * restore brings it back.
 */
async function journalFillsUp(base) {
  sh('umount', ['/tmp/jfull']);
  sh('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', '/tmp/jfull']);
  // Earlier runs' lines, leaving room for this run's line, one action and its outcome, not two.
  const pad = JSON.stringify({ kind: 'run', run: 'earlier', at: '2026-12-01T00:00:00.000Z', node: 'pve1' });
  const room = 1150;
  fs.writeFileSync('/tmp/jfull/j.jsonl', `${pad}\n`.repeat(Math.floor((4096 - room) / (pad.length + 1))));
  const run = await pveDm(['--yes', ...FIVE_ARGS, '--journal', '/tmp/jfull/j.jsonl', '--html', HTML]);
  const s = state();
  let lines = [];
  let whole = null;
  try {
    lines = journalLines('/tmp/jfull/j.jsonl');
    whole = fs.readFileSync('/tmp/jfull/j.jsonl', 'utf8').endsWith('\n');
  } catch (error) {
    whole = error.message;
  }
  const actions = lines.filter((l) => l.kind === undefined && !('outcome' in l));
  test('the journal fills up mid-run: every line whole, the cleanup stopped there, each change journalled', () => {
    assert.equal(whole, true, 'the journal ends in a whole line');
    assert.ok(actions.length >= 1 && actions.length < 5, `${actions.length} action lines: the 4 KiB did not fill up mid-run`);
    assert.match(flat(run.stdout), /not done: cannot write the journal \/tmp\/jfull\/j\.jsonl: its filesystem is full/);
    const changed = changedOf(s, base);
    for (const name of changed) assert.ok(actions.some((a) => a.name === name), `${name} changed without a journal line`);
    assert.ok(run.code !== null && run.code >= 1, `exit ${run.signal ?? run.code}`);
  });
  sh('mount', ['-o', 'remount,size=1m', '/tmp/jfull']);
  const restore = await pveDm(['restore', '--last', '--journal', '/tmp/jfull/j.jsonl']);
  test('once the filesystem has room: restore --last gives the node back byte-identical', () => {
    assert.equal(restore.code, 0, restore.output.trim().split('\n').slice(-6).join(' | '));
    sameAsBase(state(), base, 'after the full journal');
  });
  sh('umount', ['/tmp/jfull']);
}

/** A shell line that opens /dev/mapper/NAME in a process of its own (pid in FILE) and returns once it is open. */
const openerOf = (name, pidFile) =>
  `(exec 3</dev/mapper/${name}; exec sleep 600) & echo $! > ${pidFile}; ` +
  `i=0; while [ $i -lt 100 ] && [ "$(dmsetup info -c --noheadings -o open ${name} | tr -d ' ')" != 1 ]; do sleep 0.1; i=$((i+1)); done`;
const killPidFile = (file) => {
  const pid = fs.existsSync(file) ? Number(fs.readFileSync(file, 'utf8').trim()) : 0;
  if (pid > 0) try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  fs.rmSync(file, { force: true });
};

/**
 * An entry opened between its re-check and its command (by the hook, at that moment); a guest that
 * starts while pve-dm waits for its lock; a second cleanup while the first runs, and after the
 * first was killed with its lock file left behind.
 */
async function races(base) {
  // ── opened at the last moment: LVM's and the kernel's own refusal, reported; nothing else changes ──
  for (const [name, how, said] of [
    ['ssd--ha01-vm--300--disk--0', 'lvchange -an', /Logical volume ssd-ha01\/vm-300-disk-0 in use/],
    ['ssd--ha01-vm--889--disk--0', 'dmsetup remove', /Device or resource busy/],
  ]) {
    const pidFile = `/tmp/opener-${name}.pid`;
    const run = await pveDm(['--yes', '--name', 'ssd--ha01-vm--119--disk--0-dup', '--name', name, '--journal', FAULT_JOURNAL, '--html', HTML],
      { fault: 'before-command:2', faultDo: openerOf(name, pidFile) });
    const s = state();
    const { actions, outcomes } = lastRun(FAULT_JOURNAL);
    killPidFile(pidFile);
    test(`race: ${name} opened after its re-check, before ${how}: FAILED with the system's own message, journalled failed, still there`, () => {
      usable(run);
      assert.ok(faultLog().includes('before-command:2'), faultLog());
      const line = run.output.split('\n').find((l) => l.includes(`FAILED   ${name}`)) ?? '';
      assert.match(line, said, run.output.split('\n').filter((l) => /FAILED|removed|skipped/.test(l)).join(' | '));
      assert.ok(s.names.includes(name), `${name} is gone`);
      assert.deepEqual(changedOf(s, base), ['ssd--ha01-vm--119--disk--0-dup'], 'only the other entry went');
      const record = actions.find((a) => a.name === name);
      assert.equal(outcomes.get(record?.id)?.outcome, 'failed');
    });
    const restore = await pveDm(['restore', '--last', '--journal', FAULT_JOURNAL]);
    test(`race on ${name}: restore --last brings the other back and keeps this one (never removed); node as before`, () => {
      assert.equal(restore.code, 0, restore.output);
      assert.match(restore.output, new RegExp(`kept +${name}`));
      sameAsBase(state(), base, `race on ${name}`);
    });
  }
  await guestStartsWhileWaiting(base);
  await twoCleanups(base);
}

/**
 * VM 100 starts while pve-dm waits for lock-100.conf (held as qm start holds it): its entry is left
 * alone. The stand-in QEMU is started beforehand with its pid file put aside; the start, for
 * qemu-server's check as for pve-dm's, is the pid file appearing, done under the lock.
 */
async function guestStartsWhileWaiting(base) {
  const name = 'pve-vm--100--disk--7';
  const pidFile = '/run/qemu-server/100.pid';
  const aside = '/run/qemu-server/100.pid.starting';
  const vm = spawn('/usr/bin/kvm', [`${ROOT}/test/kernel/fake-kvm.mjs`, '-id', '100', '-name', 'web01', '-pidfile', '/var/run/qemu-server/100.pid', '-daemonize'],
    { stdio: 'ignore', detached: true });
  for (let i = 0; i < 240 && !fs.existsSync(pidFile); i++) await sleep(250);
  fs.renameSync(pidFile, aside);
  const script = [
    `i=0; while [ $i -lt 240 ] && ! grep -q 'lock-100[.]conf' ${TRACE}; do sleep 0.5; i=$((i+1)); done`,
    `grep -q 'lock-100[.]conf' ${TRACE} && mv ${aside} ${pidFile}`,
  ].join('\n');
  fs.mkdirSync(path.dirname(LOCK100), { recursive: true });
  const holder = spawn('flock', [LOCK100, 'sh', '-c', script], { stdio: 'ignore', env: { ...process.env, PATH: SYS_PATH } });
  const holderDone = new Promise((resolve) => holder.on('close', resolve));
  await sleep(500);
  const run = await pveDm(['--yes', '--name', name, '--journal', FAULT_JOURNAL, '--html', HTML]);
  await holderDone;
  const s = state();
  test('race: VM 100 started while pve-dm waited for its lock: vm-100-disk-7 is untouched, skipped as running, not journalled', () => {
    assert.ok(fs.existsSync(pidFile), 'VM 100 was not started under the lock');
    usable(run);
    assert.ok(s.names.includes(name), `${name} was removed`);
    assert.ok(!run.trace.some((c) => c.prog === 'lvchange' && c.args.includes('pve/vm-100-disk-7')), 'lvchange on it');
    const line = run.output.split('\n').find((l) => l.includes(`skipped  ${name}`)) ?? '';
    assert.match(line, /VM 100 is running/, run.output.split('\n').filter((l) => l.includes(name)).join(' | '));
    const { run: id } = lastRun(FAULT_JOURNAL);
    assert.ok(!journalLines(FAULT_JOURNAL).some((l) => l.name === name && l.run === id), 'a journal line for it');
    sameAsBase(s, base, 'guest started');
  });
  try { process.kill(vm.pid, 'SIGKILL'); } catch { /* gone */ }
  fs.rmSync(pidFile, { force: true });
  fs.rmSync(aside, { force: true });
}

/** A second cleanup while the first holds the run lock; then the first killed, its lock file left. */
async function twoCleanups(base) {
  const lockFile = '/run/lock/pve-dm.lock';
  fs.rmSync(FAULT_LOG, { force: true });
  // The first stops at its first command (the hook sleeps there), holding the run lock.
  const first = pveDm(['--yes', ...FIVE_ARGS, '--journal', FAULT_JOURNAL, '--html', HTML], { fault: 'before-command:1', faultDo: 'sleep 300' });
  for (let i = 0; i < 600 && !faultLog().includes('before-command:1'); i++) await sleep(250);
  const second = await pveDm(['--yes', ...FIVE_ARGS, '--journal', FAULT_JOURNAL, '--html', HTML]);
  const whileFirst = first.child.exitCode === null && first.child.signalCode === null;
  test('two cleanups: the second refuses at once while the first holds the run lock, and changes nothing', () => {
    assert.ok(whileFirst, 'the first had ended before the second finished');
    assert.equal(second.code, 3, `exit ${second.signal ?? second.code}`);
    assert.match(second.stderr, /another pve-dm cleanup holds \/run\/lock\/pve-dm\.lock/);
    noChanges(second);
  });
  first.child.kill('SIGKILL');
  const killed = await first;
  const third = await pveDm(['--yes', ...FIVE_ARGS, '--journal', FAULT_JOURNAL, '--html', HTML]);
  const s = state();
  test('the first killed, its lock file left behind: the next cleanup is not blocked, settles the cut line and does the job', () => {
    assert.equal(killed.signal, 'SIGKILL');
    assert.ok(fs.existsSync(lockFile), 'the lock file was left');
    usable(third);
    assert.doesNotMatch(third.stderr, /another pve-dm cleanup holds/);
    assert.deepEqual(changedOf(s, base).sort(), [...FIVE].sort(), 'all five done');
  });
  const ids = journalLines(FAULT_JOURNAL).filter((l) => l.kind === undefined && !('outcome' in l)).slice(-6).map((l) => l.id);
  const restore = await pveDm(['restore', ...ids, '--journal', FAULT_JOURNAL]);
  test('two cleanups: restore gives the node back byte-identical', () => {
    assert.equal(restore.code, 0, restore.output.trim().split('\n').slice(-6).join(' | '));
    sameAsBase(state(), base, 'two cleanups');
  });
}

/** lvchange that hangs (a stand-in that sleeps): stopped at its time limit, reported, the rest not done. */
async function hangs(base, order) {
  const bin = '/tmp/hang-bin';
  fs.mkdirSync(bin, { recursive: true });
  fs.writeFileSync(path.join(bin, 'lvchange'),
    `#!/bin/sh\ncase "$*" in *pve/vm-888-disk-0*) exec sleep 600;; esac\nexec ${TRACE_BIN}/lvchange "$@"\n`, { mode: 0o755 });
  const run = await pveDm(['--yes', ...FIVE_ARGS, '--journal', FAULT_JOURNAL, '--html', HTML], { bin });
  const s = state();
  const { actions, outcomes } = lastRun(FAULT_JOURNAL);
  const at = order.indexOf('pve-vm--888--disk--0');
  test('a hanging lvchange: stopped at its time limit, FAILED as timed out; the rest of the plan not done; never half-recorded', () => {
    usable(run);
    assert.match(flat(run.output), /FAILED pve-vm--888--disk--0: timed out after 30000 ms/);
    for (const name of order.slice(at + 1)) {
      assert.match(flat(run.output), new RegExp(`skipped ${name}: not done: lvchange -an pve/vm-888-disk-0 did not finish in time`));
    }
    assert.deepEqual(actions.map((a) => a.name), order.slice(0, at + 1), 'journal lines: up to the one that hung');
    assert.ok(actions.every((a) => outcomes.has(a.id)), 'every line has its outcome');
    assert.equal(outcomes.get(actions.at(-1)?.id)?.outcome, 'failed');
    assert.deepEqual(changedOf(s, base).sort(), order.slice(0, at).sort(), 'changed: exactly those before it');
    assert.ok(!sh('pgrep', ['-f', 'sleep 600']).stdout.trim(), 'the stand-in was not stopped');
  });
  const restore = await pveDm(['restore', '--last', '--journal', FAULT_JOURNAL]);
  test('after the hang: restore --last gives the node back byte-identical', () => {
    assert.equal(restore.code, 0, restore.output.trim().split('\n').slice(-6).join(' | '));
    sameAsBase(state(), base, 'after the hang');
  });
}

// ══ main ═════════════════════════════════════════════════════════════════════════════════════
const t0 = Date.now();
if (MODE === 'all' || MODE === 'classify') await classification();
if (MODE === 'all' || MODE === 'cleanup') await cleanup();
if (MODE === 'all' || MODE === 'cleanup') await poolRemedies();
if (MODE === 'all' || MODE === 'conflicts') await conflicts();
if (MODE === 'all' || MODE === 'faults') await faults();
say(`\n(kernel tests: ${((Date.now() - t0) / 1000).toFixed(1)} s in the guest)`);
say(`${totals.passed} passed, ${totals.failed} failed`);
process.exitCode = totals.failed === 0 && totals.passed > 0 ? 0 : 1;
