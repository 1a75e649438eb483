// Thin pools and volume groups, read from what a real kernel and LVM printed (test/fixtures/real/pools,
// made by test/kernel/make-fixtures.sh pools): every pool state LVM and dm-thin have, judged as the
// README's table says, with remedies sized from the real numbers.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { load } from 'cheerio/slim';
import {
  classify, createRunner, DEFAULT_POOL_THRESHOLDS, defaultStages, grade, lvActive, notificationSubject, notificationText, parse, parseLvs,
  parsePoolStatus, poolThresholdsFrom, renderConsole, renderHtml, runPipeline, settingsFrom, validateHtml, type ThinPool,
} from '../pve-dm.ts';
import { lvsLine } from './support/lvm.ts';
import { capture, config, overlongLines, REAL, SAMPLES, test, unwrapConsole } from './harness.ts';

const POOLS = path.join(REAL, 'pools');
const real = (file: string) => readFileSync(path.join(POOLS, file), 'utf8');

// One lvmthin storage per pool (as Proxmox names them), VG ssd as thick LVM.
const STORAGE_CFG = [
  ...['pve/data', 'pve/data2', 'pve/data3', 'nvme/data', 'nvme/data2', 'hdd/data', 'hdd/data2', 'sata/data', 'sata/data2'].map((name) => {
    const [vg, pool] = name.split('/');
    return `lvmthin: ${vg}-${pool}\n\tthinpool ${pool}\n\tvgname ${vg}\n\tcontent rootdir,images\n`;
  }),
  'lvm: ssd\n\tvgname ssd\n\tcontent images,rootdir\n',
].join('\n');

/** A guest config on pve1 for each guest volume of the fixture. */
function guestConfigs() {
  const volumes = new Map<number, string[]>();
  for (const line of real('lvs.txt').split('\n')) {
    const [vg = '', lv = '', attr = '', , , , pool = ''] = line.trim().split('|');
    const vmid = /^(?:vm|base)-(\d+)-disk-\d+$/.exec(lv)?.[1];
    if (vmid === undefined) continue;
    const storage = attr[0] === 'V' ? `${vg}-${pool}` : vg;
    volumes.set(Number(vmid), [...(volumes.get(Number(vmid)) ?? []), `${storage}:${lv}`]);
  }
  return [...volumes].map(([vmid, refs]) => config(vmid, `name: g${vmid}\n${refs.map((ref, i) => `scsi${i}: ${ref},size=1G\n`).join('')}`));
}

function analyse(changes: { lvs?: string; poolStatus?: string | null; thresholds?: typeof DEFAULT_POOL_THRESHOLDS } = {}) {
  const state = parse(capture({
    dmsetupInfo: real('dmsetup.txt'), dmsetupTable: real('dmsetup-table.txt'), lvs: changes.lvs ?? real('lvs.txt'),
    poolStatus: changes.poolStatus === undefined ? real('dmsetup-status-thin-pool.txt') : changes.poolStatus,
    storageCfg: STORAGE_CFG, configs: guestConfigs(),
  }));
  const classification = classify(changes.thresholds ? { ...state, poolThresholds: changes.thresholds } : state);
  return { state, classification, pool: (name: string) => classification.pools.find((p) => `${p.vg}/${p.lv}` === name) as ThinPool };
}
const kinds = (pool: ThinPool) => pool.problems.map((p) => `${p.kind}:${p.severity}`);

test('real lvs.txt with the 13 columns: every line an LV, no warning; pool use, metadata size and VG state read', () => {
  const { lvs, warnings } = parseLvs(real('lvs.txt'));
  assert.equal(warnings, []);
  assert.is(lvs.size, real('lvs.txt').trim().split('\n').length);
  assert.equal(
    (({ dataPercent, metadataPercent, metadataBytes, vgAttr, vgFreeBytes }) => ({ dataPercent, metadataPercent, metadataBytes, vgAttr, vgFreeBytes }))(lvs.get('nvme', 'data')!),
    { dataPercent: 33.78, metadataPercent: 93.36, metadataBytes: 2097152, vgAttr: 'wz--n-', vgFreeBytes: 1066401792 },
  );
  // An inactive pool: no use; a thin LV: its own use, no metadata; the partial VG's `p`.
  assert.equal([lvs.get('pve', 'data3')?.dataPercent, lvs.get('pve', 'data3')?.metadataBytes], [null, 4194304]);
  assert.equal([lvs.get('pve', 'vm-100-disk-0')?.dataPercent, lvs.get('pve', 'vm-100-disk-0')?.metadataPercent], [0.49, null]);
  assert.is(lvs.get('ssd', 'vm-400-disk-0')?.vgAttr, 'wz-pn-');
  // State `c` (a pool whose check is needed) is active; `-` is not.
  assert.equal([lvActive(lvs.get('hdd', 'data')!), lvActive(lvs.get('pve', 'data3')!), lvActive(lvs.get('sata', 'data2')!)], [true, false, false]);
});

test('real `dmsetup status --target thin-pool`: each pool by VG and name, the kernel\'s mode, needs_check, Fail', () => {
  const { pools, warnings } = parsePoolStatus(real('dmsetup-status-thin-pool.txt'));
  assert.equal(warnings, []);
  const seen = Object.fromEntries(['hdd/data', 'hdd/data2', 'nvme/data', 'nvme/data2', 'pve/data', 'pve/data2', 'sata/data'].map((name) => {
    const [vg = '', lv = ''] = name.split('/');
    return [name, pools.get(vg, lv)];
  }));
  assert.equal(seen, {
    'hdd/data': { mode: 'ro', needsCheck: true, dataPercent: 12.5, metadataPercent: 12.5 },
    'hdd/data2': { mode: 'fail', needsCheck: false, dataPercent: null, metadataPercent: null },
    'nvme/data': { mode: 'rw', needsCheck: false, dataPercent: 33.78, metadataPercent: 93.36 },
    'nvme/data2': { mode: 'ro', needsCheck: false, dataPercent: 34.01, metadataPercent: 100 },
    'pve/data': { mode: 'rw', needsCheck: false, dataPercent: 85.94, metadataPercent: 12.5 },
    'pve/data2': { mode: 'out_of_data_space', needsCheck: false, dataPercent: 100, metadataPercent: 11.43 },
    'sata/data': { mode: 'rw', needsCheck: false, dataPercent: 12.5, metadataPercent: 11.23 },
  });
  // The kernel's numbers are lvs's: the same two decimals for every active pool.
  const { lvs } = parseLvs(real('lvs.txt'));
  for (const [name, status] of Object.entries(seen)) {
    const [vg = '', lv = ''] = name.split('/');
    if (status?.dataPercent != null) assert.equal([lvs.get(vg, lv)?.dataPercent, lvs.get(vg, lv)?.metadataPercent], [status.dataPercent, status.metadataPercent], name);
  }
});

test('every pool of the real node judged: inactive with guests, failed, needs_check, read-only, out of data, data and metadata use; a repaired pool\'s leftover', () => {
  const { pool } = analyse();
  assert.equal(kinds(pool('pve/data')), ['data-use:warning']);
  assert.equal(kinds(pool('pve/data2')), ['out-of-data-space:critical']);
  assert.equal(kinds(pool('pve/data3')), ['inactive:critical']);
  assert.equal(pool('pve/data3').guests, [103]);
  assert.equal(kinds(pool('nvme/data')), ['metadata-use:critical']);
  assert.equal(kinds(pool('nvme/data2')), ['read-only:critical', 'metadata-use:critical']);
  assert.equal(kinds(pool('hdd/data')), ['needs-check:critical']);
  assert.equal(kinds(pool('hdd/data2')), ['failed:critical']);
  assert.equal(kinds(pool('sata/data')), []);
  assert.equal(pool('sata/data').leftovers.map((l) => [l.lv, l.sizeBytes]), [['data_meta0', 4194304]]);
  assert.match(pool('sata/data').leftovers[0]?.advice ?? '', /lvremove sata\/data_meta0 frees 4\.0 MiB/);
  assert.equal(kinds(pool('sata/data2')), ['inactive:critical']);
  assert.equal([pool('hdd/data').state, pool('hdd/data2').state, pool('nvme/data2').state, pool('pve/data2').state], ['needs_check', 'fail', 'read_only', 'out_of_data_space']);
  assert.equal(pool('nvme/data').guests, [...Array(20).keys()].map((i) => 201 + i).concat([9000]).sort((a, b) => a - b));
});

test('metadata: the message says it corrupts, and that LVM already refuses new volumes past its own limit (2 MiB of metadata: 75%)', () => {
  const { pool } = analyse();
  const metadata = pool('nvme/data').problems[0];
  assert.match(metadata?.message ?? '', /metadata 93\.4% used; LVM already refuses new disks, snapshots and clones on it; when it runs out, the pool fails and its metadata can be damaged/);
  // What LVM printed for that pool (lvcreate-clone-metadata-full.stderr): refused at 93.36% >= 75.00%.
  assert.match(real('lvcreate-clone-metadata-full.stderr'), /too low \(93\.36% >= 75\.00%\)[\s\S]*Cannot create new thin volume/);
  // Under the warning level but past LVM's limit: still a warning.
  const { pool: at76 } = analyse({ lvs: real('lvs.txt').replace('|33.78|93.36|', '|33.78|76.00|'), poolStatus: null });
  assert.equal(kinds(at76('nvme/data')), ['metadata-use:warning']);
});

test('remedies sized from the real numbers, printed only where the VG has the space', () => {
  const { pool } = analyse();
  // 256 MiB at 85.94%: +60 MiB brings it under 70%; the VG has 1.5 GiB free.
  assert.is(pool('pve/data').problems[0]?.remedy, 'lvextend -L +60M pve/data');
  // Out of data space: 64 MiB full, +28 MiB.
  assert.is(pool('pve/data2').problems[0]?.remedy, 'lvextend -L +28M pve/data2');
  // 2 MiB of metadata at 93.36%: +4 MiB (one extent), twice that free for the spare.
  assert.is(pool('nvme/data').problems[0]?.remedy, 'lvextend --poolmetadatasize +4M nvme/data');
  assert.is(pool('pve/data3').problems[0]?.remedy, 'lvchange -ay pve/data3');
  assert.match(pool('pve/data3').problems[0]?.advice ?? '', /Manual repair required![\s\S]*lvconvert --repair pve\/data3/);
  // Repairs are steps by hand, never one command.
  for (const name of ['hdd/data', 'hdd/data2', 'nvme/data2']) {
    assert.is(pool(name).problems[0]?.remedy, null, name);
    assert.match(pool(name).problems[0]?.advice ?? '', /lvconvert --repair/, name);
  }
  // Metadata already at the kernel's largest (255 x 16 Ki x 4 KiB): no growth to offer.
  const { pool: largest } = analyse({ lvs: real('lvs.txt').replace('|33.78|93.36|2097152|', `|33.78|93.36|${255 * 16384 * 4096}|`) });
  assert.is(largest('nvme/data').problems[0]?.remedy, null);
  assert.match(largest('nvme/data').problems[0]?.advice ?? '', /largest size the kernel allows/);
  // No free space in the VG: no command, the advice says how much is needed.
  const { pool: full } = analyse({ lvs: real('lvs.txt').replaceAll('|wz--n-|1656750080', '|wz--n-|0') });
  assert.is(full('pve/data').problems[0]?.remedy, null);
  assert.match(full('pve/data').problems[0]?.advice ?? '', /VG pve has 0 B free, 60\.0 MiB are needed: add a disk/);
});

test('a VG with a PV missing: critical with the guests on it, whatever LV is still active', () => {
  const { classification } = analyse();
  assert.equal(classification.volumeGroups.map(({ vg, severity, guests }) => ({ vg, severity, guests })), [{ vg: 'ssd', severity: 'critical', guests: [400, 401] }]);
  assert.match(classification.volumeGroups[0]?.advice ?? '', /vgreduce --removemissing ssd drops every LV/);
});

test('grade: any critical pool or VG is an F (exit 2); a pool only filling up is a B (exit 1)', () => {
  const { classification } = analyse();
  assert.equal([grade(classification).grade, grade(classification).exitCode], ['F', 2]);
  const warned = { ...classification, volumeGroups: [], pools: classification.pools.filter((p) => p.lv === 'data' && p.vg === 'pve') };
  assert.equal([grade(warned).grade, grade(warned).exitCode, grade(warned).summary.poolProblems], ['B', 1, 1]);
});

test('a capture of an earlier pve-dm (8 lvs columns, no dmsetup-status.txt): an inactive pool judged, use not known, never zero', () => {
  const eight = real('lvs.txt').split('\n').map((line) => line.split('|').slice(0, 8).join('|')).join('\n');
  const { pool } = analyse({ lvs: eight, poolStatus: null });
  assert.equal(kinds(pool('pve/data3')), ['inactive:critical']);
  assert.equal([pool('pve/data').dataPercent, pool('pve/data').state, kinds(pool('pve/data'))], [null, null, []]);
  // lv_attr still tells a failed pool and one that is out of data space.
  assert.equal([pool('hdd/data2').state, pool('pve/data2').state, pool('hdd/data').state], ['fail', 'out_of_data_space', 'needs_check']);
});

test('thresholds from the settings: PVE_DM_POOL_WARNING / PVE_DM_POOL_CRITICAL; a bad value is one warning naming where, the defaults stand', () => {
  const { pool } = analyse({ thresholds: { warning: 75, critical: 85 } });
  assert.equal(kinds(pool('pve/data')), ['data-use:critical']);
  const file = (text: Record<string, string>) => Object.assign(settingsFrom(new Map(Object.entries(text))), {
    origins: new Map(Object.keys(text).map((key, i) => [key, { source: '/etc/pve-dm/pve-dm.conf', line: i + 1 }])),
  });
  assert.equal(poolThresholdsFrom(file({ PVE_DM_POOL_WARNING: '70', PVE_DM_POOL_CRITICAL: '85' })), { thresholds: { warning: 70, critical: 85 }, warnings: [] });
  const bad = poolThresholdsFrom(file({ PVE_DM_POOL_WARNING: '95%', PVE_DM_POOL_CRITICAL: '85' }));
  assert.equal(bad.thresholds, { warning: 80, critical: 85 });
  assert.equal(bad.warnings.map((w) => [w.source, w.line]), [['/etc/pve-dm/pve-dm.conf', 1]]);
  const crossed = poolThresholdsFrom(file({ PVE_DM_POOL_WARNING: '95', PVE_DM_POOL_CRITICAL: '85' }));
  assert.equal([crossed.thresholds, crossed.warnings.length], [DEFAULT_POOL_THRESHOLDS, 1]);
});

test('names from lvs.txt are not trusted: the commands inside a pool\'s advice quote them as a shell would read them', () => {
  const lvs = [
    lvsLine('pve', 'da;ta x', 'twi---tz--', '', '', 4294967296, { metadataSize: '4194304' }),
    lvsLine('pve', 'da;ta x_meta0', '-wi-------', '', '', 4194304),
  ].join('\n');
  const classification = classify(parse(capture({ lvs: `${lvs}\n`, poolStatus: '' })));
  const pool = classification.pools.find((p) => p.lv === 'da;ta x') as ThinPool;
  assert.match(pool.leftovers[0]?.advice ?? '', /lvremove 'pve\/da;ta x_meta0'/);
});

/** The thin-pools sample through the real pipeline. */
const thinPools = (vmids: number[] = []) =>
  runPipeline(defaultStages, {
    root: path.join(SAMPLES, 'thin-pools'), vmids, json: false, console: false, html: false, color: false, runner: createRunner({ allowChanges: false }),
  });

test('thin-pools sample: the console names each pool\'s problem and its remedy before the entries, within 80 columns', async () => {
  const { result } = await thinPools();
  const text = renderConsole(result, false);
  assert.equal(overlongLines(text), []);
  const plain = unwrapConsole(text);
  assert.match(plain, /Thin pools and VGs: 2 critical \(below\)/);
  assert.ok(plain.indexOf('Thin pools and volume groups: 2 with problems') < plain.indexOf('Duplicates (critical)'), 'pools before entries');
  assert.match(plain, /nvme\/fast  not active, VMIDs 110, 111\n    critical: thin pool nvme\/fast is not active: the disks of VM 110, VM 111 on it cannot be used\n      remedy: lvchange -ay nvme\/fast: /);
  assert.match(plain, /remedy: lvextend --poolmetadatasize \+344M pve\/data: grows its metadata by 344\.0 MiB to bring its use under 70% \(VG pve has 8\.0 GiB free\)/);
  assert.match(plain, /note: the metadata of pve\/data before a repair: once the pool and its guests are checked, lvremove pve\/data_meta0 frees 1\.0 GiB/);
});

test('thin-pools sample: the HTML page leads with the critical pool, a row per pool, valid as cheerio checks it', async () => {
  const { result } = await thinPools();
  const html = renderHtml(result);
  assert.equal(await validateHtml(html, result), []);
  const $ = load(html);
  assert.is($('[data-header] strong').text(), 'thin pool nvme/fast is not active: the disks of VM 110, VM 111 on it cannot be used');
  assert.equal($('[data-pool] code').map((_, el) => $(el).text()).get().filter((t) => !t.startsWith('lv')), ['nvme/fast', 'pve/data']);
  assert.match($('[data-pool]').last().text(), /lvextend --poolmetadatasize \+344M pve\/data/);
});

test('thin-pools sample: notifiers say it in the subject and list each problem; --vmid keeps the pools of those guests', async () => {
  const { result } = await thinPools();
  assert.is(notificationSubject(result), '🚨 [pve-thin] CRITICAL: thin pools and VGs: 2 critical; their guests are down or about to fail! Grade: F');
  assert.match(notificationText(result), /- pool nvme\/fast: critical: thin pool nvme\/fast is not active[^\n]*; lvchange -ay nvme\/fast/);
  const narrowed = (await thinPools([111])).result;
  assert.equal(narrowed.pools.map((p) => `${p.vg}/${p.lv}`), ['nvme/fast']);
  assert.equal([narrowed.grade, narrowed.summary.poolProblems], ['F', 1]);
});

test.run();
