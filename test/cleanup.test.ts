// Cleanup against a model node (test/support/fake-node.ts): the real runner, journal, locks
// (flock on files of a temporary tree) and re-checks.
import { appendFileSync, existsSync, mkdirSync, readFileSync, symlinkSync, utimesSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { createRunner, defaultStages, executeCleanup, flockLocker, guestLockFile, planCleanup, PVE_DM_LOCK, readJournal, rescanOffers, restoreEntries, runPipeline, runRescans, UserError } from '../pve-dm.ts';
import { changing, lvUuid, put, scenario, VG_PVE, VG_SSD } from './support/fake-node.ts';
import { test } from './harness.ts';

test('--yes removes exactly the stale entries that pass the checks, in order, journalling each first', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    const before = new Set(node.lvs);
    const run = await cli('--yes');
    assert.is(run.code, 2, run.stdout + run.stderr);
    assert.equal(changing(node.calls), [
      'dmsetup --manglename none remove ssd--ha01-vm--119--disk--0-dup',
      'dmsetup --manglename none remove pve-vm--150--disk--0p1',
      'lvchange -an pve/vm-100-disk-7',
      'lvchange -an pve/vm-888-disk-0',
      // Held open only by its partition, which went first.
      'lvchange -an pve/vm-150-disk-0',
      'dmsetup --manglename none remove ssd--ha01-vm--301--disk--0',
    ]);
    assert.equal([...node.dm.keys()].sort(), [
      'pve-root', 'pve-vm--100--disk--0', 'pve-vm--200--disk--0', 'pve-vm--200--disk--3', 'pve-vm--889--disk--0', 'ssd--ha01-vm--119--disk--0',
    ]);
    assert.equal(node.lvs, before, 'no LV is ever removed');
    const records = readJournal(journal);
    assert.equal(records.map((r) => [r.name, r.action, r.reason]), [
      ['ssd--ha01-vm--119--disk--0-dup', 'dmsetup remove', 'duplicate-name'],
      ['pve-vm--150--disk--0p1', 'dmsetup remove', 'partition-of-problem'],
      ['pve-vm--100--disk--7', 'lvchange -an', 'volume-unreferenced'],
      ['pve-vm--888--disk--0', 'lvchange -an', 'guest-missing'],
      ['pve-vm--150--disk--0', 'lvchange -an', 'guest-missing'],
      ['ssd--ha01-vm--301--disk--0', 'dmsetup remove', 'lv-missing'],
    ]);
    assert.ok(records.every((r) => r.outcome === 'removed'), 'each action\'s outcome line, after the entry was looked for again');
    assert.equal(node.journalAtChange, [1, 2, 3, 4, 5, 6], 'each line was on disk before its command ran');
    assert.is(records[0]?.table, '0 65536 linear 7:1 2048');
    assert.is(records[3]?.uuid, lvUuid(VG_PVE, 4));
    assert.ok(records.every((r) => r.run === records[0]?.run && r.open === 0 && r.node === 'pve1'));
    assert.match(run.stdout, /skipped  pve-vm--889--disk--0: open 1 time\(s\)/);
    assert.match(run.stdout, /skipped  pve-vm--200--disk--3: CT 200 is running/);
    assert.match(run.stdout, /6 removed, 2 skipped, 0 failed; undo with: npx tsx \S+ restore --last/);
  } finally {
    done();
  }
});

test('without --yes nothing changes and the plan is printed; --dry-run and --report-only change nothing either', async () => {
  const { node, cli, journal, done, root } = scenario();
  try {
    const plain = await cli();
    assert.match(plain.stdout, /would run: lvchange -an pve\/vm-888-disk-0/);
    const dry = await cli('--yes', '--dry-run');
    assert.match(dry.stdout, /Cleanup, dry run \(nothing was changed\):/);
    // A real dry run: each entry checked again as --yes would, its command named, not run, not refused.
    assert.match(dry.stdout, /would remove  pve-vm--888--disk--0  \(lvchange -an pve\/vm-888-disk-0\)/);
    assert.match(dry.stdout, /would remove  ssd--ha01-vm--119--disk--0-dup \(dmsetup --manglename none remove ssd--ha01-vm--119--disk--0-dup\)/);
    // Held open only by its partition, which it would remove first: as --yes, it would go too.
    assert.match(dry.stdout, /would remove  pve-vm--150--disk--0  \(lvchange -an pve\/vm-150-disk-0\)/);
    assert.match(dry.stdout, /skipped  pve-vm--889--disk--0: open 1 time\(s\)/);
    assert.match(dry.stdout, /6 would be removed, 2 skipped, 0 failed/);
    assert.not.match(dry.stdout + dry.stderr, /refused to run/);
    // ... and it takes no lock: neither pve-dm's own nor a guest's was created.
    assert.not.ok(existsSync(path.join(root, PVE_DM_LOCK)), 'no run lock file');
    assert.not.ok(existsSync(path.join(root, guestLockFile(100, 'qemu'))), 'no guest lock file');
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
    [['--only', 'duplicates'], ['dmsetup --manglename none remove ssd--ha01-vm--119--disk--0-dup']],
    [['--only', 'tombstones', '--vmid', '888'], ['lvchange -an pve/vm-888-disk-0']],
    [['--name', 'ssd--ha01-vm--301--disk--0', '--name', 'pve-vm--100--disk--7'], ['lvchange -an pve/vm-100-disk-7', 'dmsetup --manglename none remove ssd--ha01-vm--301--disk--0']],
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

// Right before acting, each entry is classified again: referenced now, open now, locked, running,
// replaced or gone, it is left alone. One test a case: each carries a whole cleanup out.
{
  const cases: [string, (s: ReturnType<typeof scenario>) => void, string, RegExp][] = [
    ['referenced', (s) => put(s.root, 'etc/pve/nodes/pve1/qemu-server/100.conf', 'name: web\nscsi0: local-lvm:vm-100-disk-0\nscsi1: local-lvm:vm-100-disk-7\n'), 'pve-vm--100--disk--7', /^now valid \(referenced\)$/],
    ['open', (s) => ((s.node.dm.get('pve-vm--888--disk--0') as { open: number }).open = 1), 'pve-vm--888--disk--0', /^open 1 time\(s\)$/],
    ['locked', (s) => put(s.root, 'etc/pve/nodes/pve1/qemu-server/100.conf', 'lock: backup\nname: web\nscsi0: local-lvm:vm-100-disk-0\n'), 'pve-vm--100--disk--7', /^now ignored \(in-flight\)$/],
    ['running', (s) => {
      put(s.root, 'run/qemu-server/100.pid', '4242\n');
      put(s.root, 'proc/4242/cmdline', '/usr/bin/kvm\0-pidfile\0/var/run/qemu-server/100.pid\0');
    }, 'pve-vm--100--disk--7', /^VM 100 is running$/],
    ['replaced', (s) => ((s.node.dm.get('pve-vm--888--disk--0') as { uuid: string }).uuid = lvUuid(VG_PVE, 77)), 'pve-vm--888--disk--0', /its uuid changed/],
    ['gone', (s) => s.node.dm.delete('pve-vm--888--disk--0'), 'pve-vm--888--disk--0', /^gone already$/],
    ['migrating in', (s) => put(s.root, 'etc/pve/nodes/pve2/qemu-server/888.conf', 'lock: migrate\nscsi0: local-lvm:vm-888-disk-0\n'), 'pve-vm--888--disk--0', /^now ignored \(in-flight\)$/],
  ];
  for (const [what, change, name, why] of cases) test(`right before acting, an entry ${what} now is left alone`, async () => {
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
  });
}

test('the re-check reads again what can have changed: the entry\'s guest\'s configs, and any config changed since the analysis began', async () => {
  const hourAgo = new Date(Date.now() - 3_600_000);
  const conf = (root: string, file: string) => path.join(root, 'etc/pve/nodes/pve1', file);
  // VM 119 takes VM 888's disk (a borrowed disk) after the analysis: its config's mtime decides whether it is read again.
  const borrow = 'name: app\nscsi0: ssd-ha01:vm-119-disk-0\nscsi1: local-lvm:vm-888-disk-0\n';
  for (const [what, mtime, removed] of [['changed since (a new mtime)', null, false], ['untouched since (its mtime from before)', hourAgo, true]] as const) {
    const s = scenario();
    try {
      for (const file of ['qemu-server/100.conf', 'qemu-server/119.conf', 'lxc/200.conf']) utimesSync(conf(s.root, file), hourAgo, hourAgo);
      const runner = createRunner({ allowChanges: true, exec: s.node.exec });
      const { capture, plan } = await runPipeline(defaultStages, { vmids: [], json: false, console: false, html: false, color: false, runner, liveRoot: s.root, hostname: 'pve1' });
      put(s.root, 'etc/pve/nodes/pve1/qemu-server/119.conf', borrow);
      if (mtime !== null) utimesSync(conf(s.root, 'qemu-server/119.conf'), mtime, mtime);
      // VM 100's own config is always read again, whatever its mtime: it now references its disk 7.
      put(s.root, 'etc/pve/nodes/pve1/qemu-server/100.conf', 'name: web\nscsi0: local-lvm:vm-100-disk-0\nscsi1: local-lvm:vm-100-disk-7\n');
      utimesSync(conf(s.root, 'qemu-server/100.conf'), hourAgo, hourAgo);
      const outcome = await executeCleanup(plan, { runner, capture, liveRoot: s.root, journal: s.journal, run: 'r1', lockWaitSeconds: 1 });
      assert.equal(outcome.skipped.find((x) => x.name === 'pve-vm--100--disk--7')?.why, 'now valid (referenced)', `${what}: the entry's own guest`);
      assert.is(outcome.removed.some((x) => x.name === 'pve-vm--888--disk--0'), removed, `${what}: ${JSON.stringify(outcome)}`);
      if (!removed) assert.equal(outcome.skipped.find((x) => x.name === 'pve-vm--888--disk--0')?.why, 'now valid (referenced)');
    } finally {
      s.done();
    }
  }
});

test('an open entry says who holds it: the devices stacked on it and the processes that have it open', async () => {
  const { root, node, cli, done } = scenario();
  try {
    const minorOf = (name: string) => node.dm.get(name)?.minor;
    put(root, `sys/block/dm-${minorOf('pve-vm--150--disk--0')}/holders/dm-${minorOf('pve-vm--150--disk--0p1')}`, '');
    put(root, `sys/block/dm-${minorOf('pve-vm--150--disk--0p1')}/dm/name`, 'pve-vm--150--disk--0p1\n');
    put(root, 'proc/777/comm', 'qemu-img\n');
    mkdirSync(path.join(root, 'proc/777/fd'), { recursive: true });
    symlinkSync(`/dev/dm-${minorOf('pve-vm--889--disk--0')}`, path.join(root, 'proc/777/fd/9'));
    symlinkSync('/dev/null', path.join(root, 'proc/777/fd/0'));
    const run = await cli();
    // Held only by its partition, a problem too: the remedy and the plan take the partition first.
    assert.ok(run.stdout.includes('    remedy: dmsetup remove pve-vm--150--disk--0p1 && lvchange -an pve/vm-150-disk-0\n'), run.stdout);
    const plan = run.stdout.split('\n').filter((line) => line.startsWith('  would '));
    assert.ok(plan.indexOf('  would run: dmsetup --manglename none remove pve-vm--150--disk--0p1') < plan.indexOf('  would run: lvchange -an pve/vm-150-disk-0'), plan.join('\n'));
    // Held by a process: no command works as printed; the advice says how to find it, the plan who it is.
    assert.match(run.stdout, /  pve-vm--889--disk--0  guest-missing: .*\n    no command now: open 1 time\(s\), held by 1 opener\(s\) that are no dm device \(a process or a running guest: fuser -vm \/dev\/dm-\d+ shows which\)/);
    assert.match(run.stdout, /would skip pve-vm--889--disk--0: open 1 time\(s\), held by process 777 \(qemu-img\)/);
  } finally {
    done();
  }
});

test('one failed removal (EBUSY) is reported with the kernel\'s message, and the rest go on', async () => {
  const { outcome, done } = await planThenChange((s) => s.node.busy.add('ssd--ha01-vm--119--disk--0-dup'));
  try {
    assert.equal(outcome.failed, [{ name: 'ssd--ha01-vm--119--disk--0-dup', error: 'device-mapper: remove ioctl on ssd--ha01-vm--119--disk--0-dup  failed: Device or resource busy' }]);
    assert.is(outcome.removed.length, 5);
  } finally {
    done();
  }
});

test('a command that succeeds and leaves the entry there is a failure, printed and journalled as one; restore leaves it alone', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    node.stubborn.add('pve-vm--888--disk--0');
    const run = await cli('--yes');
    assert.match(run.stdout, /FAILED   pve-vm--888--disk--0: lvchange -an pve\/vm-888-disk-0 succeeded, but the entry is still there/);
    assert.match(run.stdout, /5 removed, 2 skipped, 1 failed/);
    assert.is(run.code, 2);
    const record = readJournal(journal).find((r) => r.name === 'pve-vm--888--disk--0');
    assert.equal([record?.outcome, record?.detail], ['failed', 'lvchange -an pve/vm-888-disk-0 succeeded, but the entry is still there']);
    const listed = await cli('journal');
    assert.match(listed.stdout, /\n\S+-\d+ +failed +lvchange -an +guest-missing\n  pve-vm--888--disk--0\n/);
    node.calls = [];
    const restored = await cli('restore', '--last');
    assert.match(restored.stdout, /kept     pve-vm--888--disk--0: its removal failed, it was never removed/);
    assert.not.ok(node.calls.some((call) => call.includes('pve/vm-888-disk-0')), 'nothing restored over the live device');
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
    assert.equal(result.skipped.find((x) => x.name === 'pve-vm--888--disk--0')?.why, `VMID 888's lock is held by someone else (${path.join(s.root, '/var/lock/qemu-server/lock-888.conf')})`);
    assert.not.ok(changing(s.node.calls).includes('lvchange -an pve/vm-888-disk-0'));
    assert.is(result.removed.length, 5);
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

test('restore --last brings back what the last run removed (LVs activated, mappings re-created with uuid and table); again, it needs nothing', async () => {
  const { node, cli, journal, done } = scenario();
  try {
    const before = new Map([...node.dm].map(([name, d]) => [name, `${d.uuid} ${d.table}`]));
    await cli('--yes');
    const listed = await cli('journal');
    assert.is(listed.code, 0);
    assert.is(listed.stdout.trim().split('\n').length, 2 + 6 * 2, `a header, then each entry on two lines: ${listed.stdout}`);
    const restored = await cli('restore', '--last');
    assert.is(restored.code, 0, restored.stdout + restored.stderr);
    assert.equal(changing(node.calls).slice(-6), [
      `dmsetup --manglename none create ssd--ha01-vm--301--disk--0 --uuid ${lvUuid(VG_SSD, 2)}`,
      'lvchange -ay pve/vm-150-disk-0',
      'lvchange -ay pve/vm-888-disk-0',
      'lvchange -ay pve/vm-100-disk-7',
      `dmsetup --manglename none create pve-vm--150--disk--0p1 --uuid part1-${lvUuid(VG_PVE, 6)}`,
      'dmsetup --manglename none create ssd--ha01-vm--119--disk--0-dup',
    ]);
    const after = new Map([...node.dm].map(([name, d]) => [name, `${d.uuid} ${d.table}`]));
    assert.equal(after, before, 'every entry back, with its uuid and table');
    assert.is(readJournal(journal).length, 6, 'restoring adds no journal line');
    // A restore cut short and run again: what is back is left as it is, and that is no failure.
    node.calls = [];
    const again = await cli('restore', '--last');
    assert.is(again.code, 0, again.stdout);
    assert.is((again.stdout.match(/^already  .*: back already as journalled \(same uuid and table\)$/gm) ?? []).length, 6, again.stdout);
    assert.equal(changing(node.calls), []);
    // Another device under one of those names: refused, never created over.
    const dup = node.dm.get('ssd--ha01-vm--119--disk--0-dup');
    if (dup === undefined) throw new Error('the duplicate is not back');
    dup.uuid = 'CRYPT-another';
    const other = await cli('restore', '--last');
    assert.is(other.code, 1);
    assert.match(other.stdout, /refused  ssd--ha01-vm--119--disk--0-dup: a device of that name exists/);
    assert.equal(changing(node.calls), []);
  } finally {
    done();
  }
});

test('restore waits for the guest\'s Proxmox lock, and leaves the entry alone while someone holds it', async () => {
  const { root, node, cli, journal, done } = scenario();
  try {
    await cli('--yes');
    const records = readJournal(journal);
    assert.is(records.find((r) => r.name === 'pve-vm--888--disk--0')?.vmid, 888);
    const held = await flockLocker(path.join(root, guestLockFile(888, 'qemu')), 0);
    const outcome = await restoreEntries(records, { runner: createRunner({ allowChanges: true, exec: node.exec }), liveRoot: root, lockWaitSeconds: 1, journal, run: 'R2' });
    await held?.();
    assert.equal(outcome.refused, [{ name: 'pve-vm--888--disk--0', why: `VMID 888's lock is held by someone else (${path.join(root, '/var/lock/qemu-server/lock-888.conf')})` }]);
    assert.is(outcome.restored.length, 5);
    assert.not.ok(node.dm.has('pve-vm--888--disk--0'));
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
    assert.match(unknown.stderr, /^pve-dm: no journal entry nope-1 in .*journal\.jsonl \(see npx tsx \S+ journal\)\n$/);
  } finally {
    done();
  }
});

test('rescans: offered for orphan LVs a guest here would list; re-checked right before (a lock, a config that took the volume); journalled, never restored', async () => {
  const s = scenario({ thin: true });
  try {
    const runner = createRunner({ allowChanges: true, exec: s.node.exec });
    const { capture, result } = await runPipeline(defaultStages, { vmids: [], json: false, console: false, html: false, color: false, runner, liveRoot: s.root, hostname: 'pve1' });
    const offers = rescanOffers(result);
    assert.equal(offers.map((o) => [o.vmid, o.command.join(' '), o.volumes]), [[100, 'qm disk rescan --vmid 100', ['pve/vm-100-disk-7']], [200, 'pct rescan --vmid 200', ['pve/vm-200-disk-3']]]);
    // CT 200 took a lock since the report; VM 100 is as it was.
    appendFileSync(path.join(s.root, 'etc/pve/nodes/pve1/lxc/200.conf'), 'lock: backup\n');
    const context = { runner, capture, liveRoot: s.root, journal: s.journal, run: 'r9' };
    const outcome = await runRescans(offers, context);
    assert.equal(outcome, { rescanned: [{ vmid: 100, command: ['qm', 'disk', 'rescan', '--vmid', '100'] }], skipped: [{ vmid: 200, why: 'CT 200 is locked (backup)' }], failed: [] });
    assert.equal(changing(s.node.calls), ['qm disk rescan --vmid 100']);
    const lines = readFileSync(s.journal, 'utf8').trim().split('\n').map((line) => JSON.parse(line));
    assert.equal(lines.map((l) => [l.kind, l.vmid, l.outcome ?? null]), [['rescan', 100, null], ['rescan', 100, 'rescanned']]);
    assert.equal(readJournal(s.journal), [], 'nothing to list or restore');
    // Run again: VM 100's config now references the volume (unused0): not rescanned twice.
    const again = await runRescans(offers.slice(0, 1), context);
    assert.equal(again.skipped, [{ vmid: 100, why: 'pve/vm-100-disk-7 is referenced by its config now' }]);
    // A dry run names it and runs nothing, journals nothing.
    const before = readFileSync(s.journal, 'utf8');
    const dryRunner = createRunner({ allowChanges: false, dryRun: true, exec: s.node.exec });
    const dry = await runRescans([{ vmid: 100, command: ['qm', 'disk', 'rescan', '--vmid', '100'], volumes: ['pve/vm-100-disk-9'] }], { ...context, runner: dryRunner });
    assert.equal(dry, { rescanned: [], skipped: [{ vmid: 100, why: 'a dry run: qm disk rescan --vmid 100 not run' }], failed: [] });
    assert.is(readFileSync(s.journal, 'utf8'), before, 'nothing journalled');
    assert.equal(changing(s.node.calls), ['qm disk rescan --vmid 100'], 'only the one real rescan ran');
    // Under --report-only the runner refuses it.
    const refusing = createRunner({ allowChanges: false, exec: s.node.exec });
    await runRescans([{ vmid: 100, command: ['qm', 'disk', 'rescan', '--vmid', '100'], volumes: ['pve/vm-100-disk-9'] }], { ...context, runner: refusing }).then(
      () => assert.unreachable('a report-only runner ran a rescan'),
      (error) => assert.instance(error, UserError),
    );
  } finally {
    s.done();
  }
});

test.run();
