// Monitoring outputs (issue 6): --format nagios (a Nagios/Icinga plugin), --format checkmk (a
// Checkmk local check) and --prometheus FILE (node_exporter's textfile collector). Each output is
// read back by its consumer's rules — the perfdata and threshold grammar of the Monitoring Plugins
// development guidelines, Checkmk's local-check parser (cmk's local.py), a Prometheus text-format
// parser from npm — on every sample against its expected.json, at the grade boundaries, with
// hostile names, and through the command line (exit codes, UNKNOWN, the atomic write). The
// README's systemd units are checked with systemd-analyze and its examples are real output.
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import {
  CHECKMK_SERVICE, mangleDmName, createRunner, defaultStages, parseCli, prometheusLabel, renderCheckmk, renderConsole, renderNagios, renderPrometheus,
  runPipeline, unjudgedSummary, writeAtomically, type Result,
} from '../pve-dm.ts';
import { capture, config, describeRun, expectedOf, noStackTrace, PROJECT, refusedWith, resultOf, runMain, runNode, SAMPLE_NAMES, SAMPLES, tempDir, test } from './harness.ts';
import { expectedSeries, problemsOf, readPrometheus, seriesKey } from './support/prometheus.ts';
import { buildBundle } from './tools/build.ts';

const NOW = new Date('2026-11-25T10:00:00.000Z');
const SLOW = 60_000;
const ESC = '\u001b';
const STATES = ['OK', 'WARNING', 'CRITICAL', 'UNKNOWN'];


/** A sample through the real pipeline, rendering the three monitoring reports. */
async function sample(name: string) {
  return runPipeline(defaultStages, {
    root: path.join(SAMPLES, name), vmids: [], json: false, console: false, html: false, color: false, nagios: true, checkmk: true, prometheus: true,
    runner: createRunner({ allowChanges: false }), now: NOW,
  });
}


// ── Nagios: the Monitoring Plugins development guidelines ───────────────────────────────────

const NUMBER = '-?(?:[0-9]+(?:\\.[0-9]*)?|\\.[0-9]+)';
/** A threshold range: [@][start:][end], start a number or ~ (negative infinity). */
const RANGE = `@?(?:(?:~|${NUMBER})?:)?(?:${NUMBER})?`;
const UOM = '(?:s|ms|us|%|B|KB|MB|TB|c)?';
/** One perfdata item: 'label'=value[UOM];[warn];[crit];[min];[max] (quotes optional, '' a quote). */
const PERF_ITEM = new RegExp(`^('(?:[^']|'')+'|[^'= ][^= ]*)=(${NUMBER})(${UOM})(?:;(${RANGE})?(?:;(${RANGE})?(?:;(${NUMBER})?(?:;(${NUMBER})?)?)?)?)?$`);

interface Perf {
  value: number;
  warn: string;
  crit: string;
  min: string;
  max: string;
}

function readPerfdata(text: string): Map<string, Perf> {
  const items = new Map<string, Perf>();
  for (const item of text.split(' ')) {
    const match = PERF_ITEM.exec(item);
    assert.ok(match, `perfdata item ${JSON.stringify(item)} is 'label'=value[UOM];[warn];[crit];[min];[max]`);
    const [, label = '', value = '', , warn = '', crit = '', min = '', max = ''] = match;
    const name = label.startsWith("'") ? label.slice(1, -1).replaceAll("''", "'") : label;
    assert.not.ok(items.has(name), `label ${name} once`);
    items.set(name, { value: Number(value), warn, crit, min, max });
  }
  return items;
}

/** Whether a value raises a threshold's alert: outside start..end (endpoints in), or inside with `@`. */
function alerts(range: string, value: number): boolean {
  if (range === '') return false;
  const inside = range.startsWith('@');
  const body = inside ? range.slice(1) : range;
  const [start = '', end = ''] = body.includes(':') ? body.split(':') : ['0', body];
  const within = value >= (start === '~' ? -Infinity : Number(start || 0)) && value <= (end === '' ? Infinity : Number(end));
  return inside ? within : !within;
}

/** The state the perfdata's own thresholds give: what a monitoring system recomputing it would see. */
const perfdataState = (perfdata: Map<string, Perf>) =>
  Math.max(0, ...[...perfdata.values()].map(({ value, warn, crit }) => (alerts(crit, value) ? 2 : alerts(warn, value) ? 1 : 0)));

/** A plugin's output: the status line (text before the first `|`, perfdata after it), then long output. */
function readNagios(output: string) {
  assert.ok(output.endsWith('\n'), 'ends with a line feed');
  const [first = '', ...details] = output.slice(0, -1).split('\n');
  const match = /^(OK|WARNING|CRITICAL|UNKNOWN) - ([^|]*[^| ]) \| ([^|]+)$/.exec(first);
  assert.ok(match, `status line: ${JSON.stringify(first)}`);
  for (const line of details) assert.not.ok(line.includes('|'), `no | in the long output (it would start perfdata): ${JSON.stringify(line)}`);
  return { state: match[1] as string, summary: match[2] as string, perfdata: readPerfdata(match[3] as string), details };
}

// ── Checkmk: the local check's line, read as cmk's local.py reads it ────────────────────────

const CHECKMK_LINE = /^([0-3P]) (?:"([^"']+)"|'([^"']+)'|([^ "']+)) ([^ ]+)(?: +(.*))?$/;

interface CheckmkMetric {
  value: number;
  warn: string;
  crit: string;
  min: string;
  max: string;
}

function readCheckmk(output: string) {
  assert.ok(output.endsWith('\n') && !output.slice(0, -1).includes('\n'), `exactly one line: ${JSON.stringify(output)}`);
  const match = CHECKMK_LINE.exec(output.slice(0, -1));
  assert.ok(match, `state "service" metrics text: ${JSON.stringify(output)}`);
  const metrics = new Map<string, CheckmkMetric>();
  if (match[5] !== '-') {
    for (const entry of (match[5] as string).split('|')) {
      const metric = /^([A-Za-z_][A-Za-z0-9_]*)=(-?[0-9.]+)(?:;(-?[0-9.]*)(?:;(-?[0-9.]*)(?:;(-?[0-9.]*)(?:;(-?[0-9.]*))?)?)?)?$/.exec(entry);
      assert.ok(metric, `metric ${JSON.stringify(entry)} is name=value;warn;crit;min;max`);
      const [, name = '', value = '', warn = '', crit = '', min = '', max = ''] = metric;
      metrics.set(name, { value: Number(value), warn, crit, min, max });
    }
  }
  // Checkmk turns each literal \n of the text into a line break: summary first, then the details.
  return { state: Number(match[1]), service: match[2] ?? match[3] ?? match[4], metrics, lines: (match[6] ?? '').split('\\n') };
}

/** The state Checkmk computes from the levels (state P): WARN/CRIT at value >= level; a crit alone is also the warn. */
const checkmkLevelState = (metrics: Map<string, CheckmkMetric>) =>
  Math.max(0, ...[...metrics.values()].map(({ value, warn, crit }) => {
    const critAt = crit === '' ? Infinity : Number(crit);
    const warnAt = warn === '' ? critAt : Number(warn);
    return value >= critAt ? 2 : value >= warnAt ? 1 : 0;
  }));

// ── Prometheus: parse-prometheus-text-format, and the format's own rules ────────────────────

// ── Every sample against its expected.json ──────────────────────────────────────────────────

/** Thin pools and VGs of a severity in expected.json. */
const findingsOf = (expected: ReturnType<typeof expectedOf>, severity: string) =>
  [...Object.values(expected.pools), ...Object.values(expected.volumeGroups ?? {})].filter((f) => f.severity === severity).length;

for (const name of SAMPLE_NAMES) {
  test(`${name}: nagios state, summary, perfdata (values and thresholds), one detail line per problem and warning`, async () => {
    const expected = expectedOf(name);
    const { result, reports } = await sample(name);
    const nagios = readNagios(reports.nagios as string);
    assert.is(nagios.state, STATES[expected.exitCode]);
    const warnings = expected.warnings.length > 0 ? `, ${expected.warnings.length} warning(s)` : '';
    const unjudged = expected.summary.unjudged > 0 ? `; ${unjudgedSummary(result)}` : '';
    const orphans = expected.summary.orphanLvs > 0 ? `, ${expected.summary.orphanLvs} orphan LV(s)` : '';
    const bySeverity = (severity: string) => findingsOf(expected, severity);
    const poolCount = [['critical', bySeverity('critical')], ['warning', bySeverity('warning')]].filter(([, n]) => n !== 0).map(([s, n]) => `${n} ${s}`).join(', ');
    const pools = poolCount === '' ? '' : `, thin pools and VGs: ${poolCount}`;
    const conflicts = expected.summary.conflict > 0 ? `${expected.summary.conflict} conflict, ` : '';
    assert.is(nagios.summary, `${expected.node}: grade ${expected.grade}, ${conflicts}${expected.summary.duplicate} duplicate and ${expected.summary.tombstone} tombstoned of ${expected.summary.entries} dm entries${pools}${orphans}${unjudged}${warnings}`);
    const count = (value: number, warn = '', crit = '') => ({ value, warn, crit, min: '0', max: '' });
    assert.equal(Object.fromEntries(nagios.perfdata), {
      entries: count(expected.summary.entries), valid: count(expected.summary.valid), conflicts: count(expected.summary.conflict, '', '0'), duplicates: count(expected.summary.duplicate, '', '0'),
      tombstones: count(expected.summary.tombstone, '0', '50'), ignored: count(expected.summary.ignored), unjudged: count(expected.summary.unjudged, '0'),
      orphan_lvs: count(expected.summary.orphanLvs, '0'), pools_critical: count(bySeverity('critical'), '', '0'),
      pools_warning: count(bySeverity('warning'), '0'), warnings: count(expected.warnings.length, '0'),
    });
    assert.is(perfdataState(nagios.perfdata), expected.exitCode, 'the perfdata thresholds give the state printed');
    // First one line per pool problem and partial VG: what stops every guest on them at once.
    const poolProblems = [
      ...Object.keys(expected.volumeGroups ?? {}).map((vg) => `VG ${vg}`),
      ...Object.entries(expected.pools).flatMap(([pool, p]) => p.problems.map(() => `pool ${pool}`)),
    ];
    assert.equal(nagios.details.slice(0, poolProblems.length).map((line) => /^((?:VG|pool) \S+) (?:critical|warning): /.exec(line)?.[1]), poolProblems);
    nagios.details.splice(0, poolProblems.length);
    const problems = [...problemsOf(expected), ...Object.entries(expected.entries).filter(([, v]) => v.status === 'unjudged')];
    const orphanLvs = Object.keys(expected.orphanLvs ?? {});
    assert.is(nagios.details.length, problems.length + orphanLvs.length + expected.warnings.length);
    const orphanLines = nagios.details.slice(problems.length, problems.length + orphanLvs.length);
    assert.equal(orphanLines.map((line) => /^orphan LV (\S+): /.exec(line)?.[1]), orphanLvs, 'one line per orphan LV');
    const shown = nagios.details.slice(0, problems.length).map((line) => /^(conflict|duplicate|tombstone|unjudged) (\S+): ([a-z-]+), .+?; (?:remedy: (.+)|no command now: .+)$/.exec(line));
    assert.equal(shown.map((m) => m && `${m[2]} ${m[1]} ${m[3]}`).sort(), problems.map(([entry, v]) => `${entry} ${v.status} ${v.reason}`).sort());
    for (const m of shown) assert.is(m?.[4] ?? null, result.entries.find((entry) => entry.name === m?.[2])?.remedy, `remedy of ${m?.[2]}`);
    const warned = nagios.details.slice(problems.length + orphanLvs.length).map((line) => /^warning: ([^:]+)(?::(\d+))?: /.exec(line)?.slice(1).join(':'));
    assert.equal(warned.sort(), expected.warnings.map((w) => `${w.file}:${w.line ?? ''}`).sort());
  });

  test(`${name}: checkmk state, service, metrics with Checkmk levels, summary and details after literal \\n`, async () => {
    const expected = expectedOf(name);
    const { reports } = await sample(name);
    const checkmk = readCheckmk(reports.checkmk as string);
    assert.is(checkmk.state, expected.exitCode);
    assert.is(checkmk.service, 'PVE DM health');
    const metric = (value: number, warn = '', crit = '') => ({ value, warn, crit, min: '0', max: '' });
    assert.equal(Object.fromEntries(checkmk.metrics), {
      entries: metric(expected.summary.entries), valid: metric(expected.summary.valid), conflicts: metric(expected.summary.conflict, '', '1'), duplicates: metric(expected.summary.duplicate, '', '1'),
      tombstones: metric(expected.summary.tombstone, '1', '51'), ignored: metric(expected.summary.ignored), unjudged: metric(expected.summary.unjudged, '1'),
      orphan_lvs: metric(expected.summary.orphanLvs, '1'), pools_critical: metric(findingsOf(expected, 'critical'), '', '1'),
      pools_warning: metric(findingsOf(expected, 'warning'), '1'), warnings: metric(expected.warnings.length, '1'),
    });
    assert.is(checkmkLevelState(checkmk.metrics), expected.exitCode, 'the levels give the state printed');
    const nagios = readNagios(reports.nagios as string);
    assert.equal(checkmk.lines, [nagios.summary, ...nagios.details], 'the same summary and details as the Nagios output');
  });

  test(`${name}: the Prometheus file holds exactly the series of expected.json`, async () => {
    const { result, reports } = await sample(name);
    assert.equal(Object.fromEntries(readPrometheus(reports.prometheus as string)), Object.fromEntries(expectedSeries(name, result, NOW.getTime() / 1000)));
  });
}

test('multi-pool: the three outputs, exactly', async () => {
  const { reports } = await sample('multi-pool');
  const details = [
    'duplicate rescue171: duplicate-table, VM 171 app-legacy on pve-prd-03; remedy: dmsetup remove rescue171',
    'duplicate ssd--ha01-vm--169--disk--0-dup: duplicate-name, VM 169 db-pg02 on pve-prd-03; remedy: dmsetup remove ssd--ha01-vm--169--disk--0-dup',
    'tombstone ssd--ha01-vm--170--disk--2: volume-unreferenced, VM 170 mail01 on pve-prd-03; remedy: qm disk rescan --vmid 170',
    'tombstone ssd--ha01-vm--888--disk--0: guest-missing, VMID 888 (no config on any node); remedy: dmsetup remove ssd--ha01-vm--888--disk--0',
    'orphan LV ssd-ha01/vm-170-disk-2: volume-unreferenced, VM 170 cannot create vm-170-disk-2 on SSD-HA01; remedy: qm disk rescan --vmid 170',
  ];
  const summary = 'pve-prd-03: grade F, 2 duplicate and 2 tombstoned of 20 dm entries, 1 orphan LV(s)';
  assert.is(reports.nagios, `CRITICAL - ${summary} | entries=20;;;0 valid=8;;;0 conflicts=0;;0;0 duplicates=2;;0;0 tombstones=2;0;50;0 ignored=8;;;0 unjudged=0;0;;0 orphan_lvs=1;0;;0 pools_critical=0;;0;0 pools_warning=0;0;;0 warnings=0;0;;0\n${details.join('\n')}\n`);
  assert.is(reports.checkmk, `2 "PVE DM health" entries=20;;;0|valid=8;;;0|conflicts=0;;1;0|duplicates=2;;1;0|tombstones=2;1;51;0|ignored=8;;;0|unjudged=0;1;;0|orphan_lvs=1;1;;0|pools_critical=0;;1;0|pools_warning=0;1;;0|warnings=0;1;;0 ${[summary, ...details].join('\\n')}\n`);
  const node = 'node="pve-prd-03"';
  const help = (name: string, text: string) => [`# HELP ${name} ${text}`, `# TYPE ${name} gauge`];
  assert.is(reports.prometheus, `${[
    ...help('pve_dm_entries', 'Device-mapper entries on the node, by pve-dm status.'),
    `pve_dm_entries{${node},status="valid"} 8`, `pve_dm_entries{${node},status="conflict"} 0`, `pve_dm_entries{${node},status="duplicate"} 2`, `pve_dm_entries{${node},status="tombstone"} 2`, `pve_dm_entries{${node},status="ignored"} 8`, `pve_dm_entries{${node},status="unjudged"} 0`,
    ...help('pve_dm_grade_info', 'The grade of the node, A+ (healthy) to F; always 1.'),
    `pve_dm_grade_info{${node},grade="F"} 1`,
    ...help('pve_dm_problem_info', 'A duplicate or tombstoned dm entry: its name, VMID, status and reason; always 1.'),
    `pve_dm_problem_info{${node},name="rescue171",vmid="171",status="duplicate",reason="duplicate-table"} 1`,
    `pve_dm_problem_info{${node},name="ssd--ha01-vm--169--disk--0-dup",vmid="169",status="duplicate",reason="duplicate-name"} 1`,
    `pve_dm_problem_info{${node},name="ssd--ha01-vm--170--disk--2",vmid="170",status="tombstone",reason="volume-unreferenced"} 1`,
    `pve_dm_problem_info{${node},name="ssd--ha01-vm--888--disk--0",vmid="888",status="tombstone",reason="guest-missing"} 1`,
    ...help('pve_dm_orphan_lvs', 'Guest volumes LVM knows (active or not) that no config references: each blocks its name.'),
    `pve_dm_orphan_lvs{${node}} 1`,
    ...help('pve_dm_orphan_lv_info', 'A guest volume LVM knows that no config references: its VG, LV, VMID, reason and state; always 1.'),
    `pve_dm_orphan_lv_info{${node},vg="ssd-ha01",lv="vm-170-disk-2",vmid="170",reason="volume-unreferenced",active="true"} 1`,
    ...help('pve_dm_thin_pool_active', 'A thin pool LVM knows: 1 active, 0 not.'),
    `pve_dm_thin_pool_active{${node},vg="pve",pool="data"} 1`,
    // An lvs.txt of four columns: the pool's use is not known, so no sample.
    ...help('pve_dm_thin_pool_data_percent', "Percent of an active thin pool's data space in use."),
    ...help('pve_dm_thin_pool_metadata_percent', "Percent of an active thin pool's metadata space in use (full metadata damages the pool)."),
    ...help('pve_dm_thin_pool_problem_info', 'A problem of a thin pool: its kind and severity; always 1.'),
    ...help('pve_dm_volume_group_partial_info', 'A volume group with a physical volume missing, and the severity of that; always 1.'),
    ...help('pve_dm_warnings', 'Input lines or commands pve-dm could not read in the run.'),
    `pve_dm_warnings{${node}} 0`,
    ...help('pve_dm_last_run_timestamp_seconds', 'When pve-dm last analysed the node, in seconds since the epoch.'),
    `pve_dm_last_run_timestamp_seconds{${node}} 1795600800`,
  ].join('\n')}\n`);
});

// ── The grade boundary, and the long output's limit ─────────────────────────────────────────

/** A node with `count` tombstones (guest-missing LVs) and nothing else. */
function tombstones(count: number): Result {
  const info = Array.from({ length: count }, (_, i) => `pve-vm--${1000 + i}--disk--0|252|${i}|0|L--w|LVM-${'V'.repeat(32)}${String(i).padStart(32, 'x')}`).join('\n');
  return resultOf(capture({ dmsetupInfo: `${info}\n` }));
}

test('50 tombstones are WARNING (grade D), 51 CRITICAL (grade F): the state, the perfdata thresholds and the Checkmk levels agree', () => {
  for (const [count, state, letter] of [[1, 1, 'B'], [50, 1, 'D'], [51, 2, 'F']] as const) {
    const result = tombstones(count);
    assert.is(result.grade, letter);
    const nagios = readNagios(renderNagios(result));
    assert.is(nagios.state, STATES[state], `${count} tombstones`);
    assert.is(perfdataState(nagios.perfdata), state, `${count} tombstones: the thresholds`);
    const checkmk = readCheckmk(renderCheckmk(result));
    assert.is(checkmk.state, state);
    assert.is(checkmkLevelState(checkmk.metrics), state, `${count} tombstones: the Checkmk levels`);
  }
});

test('the long output stops at 20 problem entries (and 20 warnings), saying how many more', () => {
  const result = tombstones(51);
  result.warnings = Array.from({ length: 23 }, (_, i) => ({ source: 'lvs.txt', line: i + 1, message: 'unreadable' }));
  const nagios = readNagios(renderNagios(result));
  assert.is(nagios.details.length, 20 + 1 + 20 + 1);
  assert.is(nagios.details[20], '... and 31 more problem entries');
  assert.is(nagios.details[41], '... and 3 more warnings');
  assert.is(nagios.perfdata.get('tombstones')?.value, 51, 'the perfdata counts them all');
  assert.is(readCheckmk(renderCheckmk(result)).lines.length, 1 + 42);
  assert.is(readNagios(renderNagios(result, 5)).details.length, 5 + 1 + 5 + 1);
});

// ── Hostile names ───────────────────────────────────────────────────────────────────────────

const HOSTILE_NODE = 'pve"1\\x|y\u001b[2J\nz';
const HOSTILE_DM = 'pve-vm--100--disk--0"|\\n\u001b[2J';
/** How pve-dm shows that kernel name: a bash word dmsetup's default mode refuses, every odd byte as `\\xNN`. */
const HOSTILE_DM_SHOWN = "$'pve-vm--100--disk--0\\x22\\x7c\\x5cn\\x1b\\x5b2J'";
const HOSTILE_GUEST = 'evil"guest\\n|x';

/** Quotes, backslashes, a literal \n, `|`, ESC and a line feed in the node name, a hand-made entry's name and a guest name. */
function hostileResult(): Result {
  const uuid = (n: number) => `LVM-${'V'.repeat(32)}${String(n).padStart(32, 'x')}`;
  const info = [`pve-vm--100--disk--0|252|0|1|L--w|${uuid(0)}`, `${HOSTILE_DM}|252|1|0|L--w|`, `pve-vm--777--disk--0|252|2|0|L--w|${uuid(2)}`].join('\n');
  return resultOf(capture({ hostname: HOSTILE_NODE, dmsetupInfo: `${info}\n`, configs: [config(100, `name: ${HOSTILE_GUEST}\nscsi0: local-lvm:vm-100-disk-0,size=8G\n`, { node: HOSTILE_NODE })] }));
}

test('hostile names: nagios and checkmk show them as text, never as control characters, line breaks or perfdata', () => {
  const result = hostileResult();
  assert.is(result.node, HOSTILE_NODE);
  assert.equal(result.entries.map((e) => [e.name, e.status, e.reason]), [
    ['pve-vm--100--disk--0', 'valid', 'referenced'], [HOSTILE_DM, 'tombstone', 'volume-unreferenced'], ['pve-vm--777--disk--0', 'tombstone', 'guest-missing'],
  ]);
  const shownNode = 'pve"1\\x\\x7cy\\x1b[2J\\x0az';
  const detail = `tombstone ${HOSTILE_DM_SHOWN}: volume-unreferenced, VM 100 evil"guest\\x5cn\\x7cx on ${shownNode}; remedy: dmsetup --manglename none remove ${HOSTILE_DM_SHOWN}`;
  const nagiosText = renderNagios(result);
  for (const text of [nagiosText, renderCheckmk(result)]) {
    assert.not.ok(text.includes(ESC), 'no raw ESC');
    assert.not.ok(text.includes('\r'), 'no raw CR');
  }
  const nagios = readNagios(nagiosText);
  assert.is(nagios.state, 'WARNING');
  assert.is(nagios.summary, `${shownNode}: grade B, 0 duplicate and 2 tombstoned of 3 dm entries`);
  assert.is(nagios.perfdata.get('tombstones')?.value, 2);
  assert.equal(nagios.details, [detail, 'tombstone pve-vm--777--disk--0: guest-missing, VMID 777 (no config on any node); remedy: lvchange -an pve/vm-777-disk-0']);
  const checkmk = readCheckmk(renderCheckmk(result));
  assert.is(checkmk.state, 1);
  assert.is(checkmk.service, CHECKMK_SERVICE);
  assert.equal(checkmk.lines, [nagios.summary, ...nagios.details], 'a literal \\n in a guest name starts no line of its own');
});

test('hostile names: the Prometheus file escapes \\\\, " and line feeds, and the parser reads the names back exactly', () => {
  const result = hostileResult();
  const text = renderPrometheus(result);
  assert.ok(text.includes(`node="pve\\"1\\\\x|y${ESC}[2J\\nz"`), 'the node label escaped as the format requires');
  assert.ok(text.includes(`name="$'pve-vm--100--disk--0\\\\x22\\\\x7c\\\\x5cn\\\\x1b\\\\x5b2J'"`), 'the name label: the name as pve-dm shows it, escaped');
  const series = readPrometheus(text);
  assert.is(series.get(seriesKey('pve_dm_problem_info', { node: HOSTILE_NODE, name: HOSTILE_DM_SHOWN, vmid: '100', status: 'tombstone', reason: 'volume-unreferenced' })), 1);
  assert.is(series.get(seriesKey('pve_dm_problem_info', { node: HOSTILE_NODE, name: 'pve-vm--777--disk--0', vmid: '777', status: 'tombstone', reason: 'guest-missing' })), 1);
  assert.is(series.get(seriesKey('pve_dm_entries', { node: HOSTILE_NODE, status: 'tombstone' })), 2);
  assert.is(series.size, 6 + 1 + 2 + 1 + 1 + 1);
  // A name as a plugin's classify stage could hand over, raw: every character the format escapes.
  const raw = 'a\\b"c\nd';
  assert.is(prometheusLabel(raw), 'a\\\\b\\"c\\nd');
  const named = { ...result, entries: result.entries.map((entry) => (entry.name === HOSTILE_DM ? { ...entry, name: raw } : entry)) };
  assert.is(readPrometheus(renderPrometheus(named)).get(seriesKey('pve_dm_problem_info', { node: HOSTILE_NODE, name: mangleDmName(raw), vmid: '100', status: 'tombstone', reason: 'volume-unreferenced' })), 1);
});

// ── Through the command line ────────────────────────────────────────────────────────────────

for (const [name, state, code] of [['default-install', 'OK', 0], ['snapshots', 'WARNING', 1], ['multi-pool', 'CRITICAL', 2]] as const) {
  test(`${name}: --format nagios --prometheus prints ${state} and exits ${code}; --format checkmk state ${code}; the file is written whole`, async () => {
    const dir = tempDir();
    const file = path.join(dir, 'pve-dm.prom');
    const before = Date.now() / 1000;
    const run = await runMain(['--root', path.join(SAMPLES, name), '--report-only', '--format', 'nagios', '--prometheus', file]);
    const after = Date.now() / 1000;
    const { result, reports } = await sample(name);
    assert.is(run.code, code, describeRun(run));
    assert.is(run.stdout, reports.nagios, 'stdout is the Nagios output and nothing else');
    assert.ok(run.stdout.startsWith(`${state} - `));
    assert.is(run.stderr, '');
    assert.equal(readdirSync(dir), ['pve-dm.prom'], 'no temporary file left');
    assert.is(statSync(file).mode & 0o777, 0o644);
    const series = readPrometheus(readFileSync(file, 'utf8'));
    const lastRun = seriesKey('pve_dm_last_run_timestamp_seconds', { node: expectedOf(name).node });
    const at = series.get(lastRun) ?? NaN;
    assert.ok(at >= Math.floor(before) && at <= after, `the run's time: ${before} <= ${at} <= ${after}`);
    assert.equal(Object.fromEntries(series), Object.fromEntries(expectedSeries(name, result, at)));
    const checkmk = await runMain(['--root', path.join(SAMPLES, name), '--report-only', '--format', 'checkmk']);
    assert.is(checkmk.code, code, describeRun(checkmk));
    assert.is(checkmk.stdout, reports.checkmk);
    assert.is(readCheckmk(checkmk.stdout).state, code);
  }, SLOW);
}

test('could not analyse: UNKNOWN (nagios) or state 3 (checkmk) with the reason on stdout, one line on stderr, exit 3', async () => {
  const missing = path.join(tempDir(), 'no-such-capture');
  const nagios = await runMain(['--root', missing, '--report-only', '--format', 'nagios']);
  const message = refusedWith(nagios, `capture ${missing} does not exist`);
  assert.is(nagios.stdout, `UNKNOWN - ${message}\n`);
  const checkmk = await runMain(['--root', missing, '--report-only', '--format=checkmk']);
  refusedWith(checkmk, `capture ${missing} does not exist`);
  assert.is(checkmk.stdout, `3 "PVE DM health" - ${message}\n`);
  assert.is(readCheckmk(checkmk.stdout).state, 3);
  const usage = await runMain(['--root', path.join(SAMPLES, 'default-install'), '--format', 'nagios', '--vmid', 'abc']);
  refusedWith(usage, '--vmid abc: not a VMID (100 to 999999999)');
  assert.is(usage.stdout, 'UNKNOWN - --vmid abc: not a VMID (100 to 999999999)\n', 'a usage error is UNKNOWN too');
}, SLOW);

test('a broken capture with a hostile name in the error: UNKNOWN shows it as text, without |', async () => {
  const root = path.join(tempDir(), `cap|${ESC}[2J`);
  const run = await runMain(['--root', root, '--report-only', '--format', 'nagios']);
  assert.is(run.code, 3, describeRun(run));
  assert.is(run.stdout, `UNKNOWN - capture ${path.dirname(root)}/cap\\x7c\\x1b[2J does not exist\n`);
}, SLOW);

test('--format and --prometheus: refused with a clear message where they do not fit', async () => {
  refusedWith(await runMain(['--root', path.join(SAMPLES, 'default-install'), '--format', 'xml']), '--format xml: use console, json, nagios, checkmk');
  const refusals: [string[], string][] = [
    [['--json', '--format', 'nagios'], '--json is --format json: it does not go with --format nagios'],
    [['--format', 'nagios', '--yes'], '--format nagios is a monitoring check: it does not go with --yes or --dry-run'],
    [['--format', 'checkmk', '--dry-run'], '--format checkmk is a monitoring check: it does not go with --yes or --dry-run'],
    [['journal', '--format', 'nagios'], '--format nagios goes with an analysis, not with the journal command'],
    [['capture', '/tmp/x', '--prometheus', '/tmp/x.prom'], '--prometheus goes with an analysis, not with the capture command'],
  ];
  for (const [args, message] of refusals) assert.throws(() => parseCli(args), (error: Error) => error.message === message, args.join(' '));
  assert.is(parseCli(['--json']).format, 'json', '--json is --format json');
  assert.is(parseCli(['--json', '--format', 'json']).format, 'json');
  assert.is(parseCli([]).format, 'console');
  assert.is(parseCli(['--format', 'nagios']).notify, null, 'a monitoring check sends no notification unless asked');
  assert.is(parseCli(['--format', 'nagios', '--notify', 'change']).notify, 'change');
  assert.is(parseCli([]).notify, 'problems');
}, SLOW);

test('--prometheus goes with the console report and with --json: the report is printed and the file written', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'pve-dm.prom');
  const consoleRun = await runMain(['--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--prometheus', file, '--html', path.join(dir, 'r.html')]);
  assert.is(consoleRun.code, 2, describeRun(consoleRun));
  assert.ok(consoleRun.stdout.split('\n').includes('Summary'), 'the console report');
  assert.is(readPrometheus(readFileSync(file, 'utf8')).get(seriesKey('pve_dm_grade_info', { node: 'pve-prd-03', grade: 'F' })), 1);
  const jsonRun = await runMain(['--root', path.join(SAMPLES, 'cluster-migrated'), '--report-only', '--json', '--prometheus', file]);
  assert.is(jsonRun.code, 1, describeRun(jsonRun));
  assert.is(JSON.parse(jsonRun.stdout).grade, 'B');
  assert.is(readPrometheus(readFileSync(file, 'utf8')).get(seriesKey('pve_dm_grade_info', { node: 'pve1', grade: 'B' })), 1, 'the file replaced');
  assert.equal(readdirSync(dir).sort(), ['pve-dm.prom', 'r.html']);
}, SLOW);

test('a --prometheus file that cannot be written: exit 3, the reason, no report, no temporary file left', async () => {
  const dir = tempDir();
  writeFileSync(path.join(dir, 'a-file'), 'x');
  mkdirSync(path.join(dir, 'a-folder'));
  // A textfile folder that does not exist is a mistyped one: refused before the analysis, never created.
  const noFolder = (file: string) => `--prometheus ${file}: the folder ${path.dirname(file)} does not exist (pve-dm does not create it)`;
  const cases: [string, string][] = [
    [path.join(dir, 'missing', 'pve-dm.prom'), noFolder(path.join(dir, 'missing', 'pve-dm.prom'))],
    [path.join(dir, 'a-file', 'pve-dm.prom'), noFolder(path.join(dir, 'a-file', 'pve-dm.prom'))],
    // The temporary file is made, the rename over a folder fails: the temporary file must go.
    [path.join(dir, 'a-folder'), `cannot write the Prometheus file ${path.join(dir, 'a-folder')}: EISDIR`],
  ];
  for (const [file, expected] of cases) {
    for (const format of ['nagios', 'console']) {
      const run = await runMain(['--root', path.join(SAMPLES, 'multi-pool'), '--report-only', '--format', format, '--prometheus', file, '--html', path.join(dir, 'r.html')]);
      const message = refusedWith(run, expected);
      noStackTrace(run);
      assert.is(run.stdout, format === 'nagios' ? `UNKNOWN - ${message}\n` : '', `${format}: nothing but UNKNOWN on stdout`);
      assert.equal(readdirSync(dir).sort(), ['a-file', 'a-folder'], `${file}: nothing else written, no temporary file`);
      assert.equal(readdirSync(path.join(dir, 'a-folder')), []);
    }
  }
}, SLOW);

test('the state printed is the exit code, also when an HTML report that cannot be written raises it', async () => {
  const dir = tempDir();
  // A folder where the report should go: the rename over it fails after the analysis.
  mkdirSync(path.join(dir, 'a-folder'));
  const run = await runMain(['--root', path.join(SAMPLES, 'default-install'), '--report-only', '--format', 'nagios', '--html', path.join(dir, 'a-folder')]);
  assert.is(run.code, 1, describeRun(run));
  assert.is(readNagios(run.stdout).state, 'WARNING');
  assert.match(run.stderr, /^pve-dm: cannot write the HTML report to .*: EISDIR\n$/);
  const checkmk = await runMain(['--root', path.join(SAMPLES, 'default-install'), '--report-only', '--format', 'checkmk', '--html', path.join(dir, 'a-folder')]);
  assert.is(checkmk.code, 1, describeRun(checkmk));
  assert.is(readCheckmk(checkmk.stdout).state, 1);
}, SLOW);

// ── writeAtomically ─────────────────────────────────────────────────────────────────────────

test('writeAtomically: mode 0644 whatever the umask, the old file replaced whole, a link at the name replaced rather than followed', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'pve-dm.prom');
  const saved = process.umask(0o077);
  try {
    await writeAtomically(file, 'first\n', 0o644);
    assert.is(statSync(file).mode & 0o777, 0o644);
    await writeAtomically(file, 'second\n', 0o644);
    assert.is(readFileSync(file, 'utf8'), 'second\n');
    assert.is(statSync(file).mode & 0o777, 0o644);
    await writeAtomically(path.join(dir, 'private'), 'x');
    assert.is(statSync(path.join(dir, 'private')).mode & 0o777, 0o600, 'without a mode the umask applies, as before');
  } finally {
    process.umask(saved);
  }
  const target = path.join(dir, 'target');
  writeFileSync(target, 'untouched\n');
  const linked = path.join(dir, 'linked.prom');
  symlinkSync(target, linked);
  await writeAtomically(linked, 'metrics\n', 0o644);
  assert.is(readFileSync(target, 'utf8'), 'untouched\n', 'the link was not followed');
  assert.not.ok(lstatSync(linked).isSymbolicLink(), 'the link is replaced by the file');
  assert.equal(readdirSync(dir).sort(), ['linked.prom', 'private', 'pve-dm.prom', 'target']);
});

test('writeAtomically: a file planted at the temporary name is neither followed nor removed; the write fails', async () => {
  const dir = tempDir();
  const file = path.join(dir, 'pve-dm.prom');
  const target = path.join(dir, 'target');
  writeFileSync(target, 'untouched\n');
  symlinkSync(target, `${file}.${process.pid}.tmp`);
  let error: NodeJS.ErrnoException | null = null;
  await writeAtomically(file, 'metrics\n', 0o644).catch((e: NodeJS.ErrnoException) => (error = e));
  assert.is((error as NodeJS.ErrnoException | null)?.code, 'EEXIST');
  assert.is(readFileSync(target, 'utf8'), 'untouched\n');
  assert.is(readlinkSync(`${file}.${process.pid}.tmp`), target, 'not ours: left as it was');
  assert.not.ok(existsSync(file));
});

// ── README: the units, the cron line and the examples ───────────────────────────────────────

const README = readFileSync(path.join(PROJECT, 'README.md'), 'utf8');

/** A fenced block of the README by its first line (a `# /etc/...` comment naming the file). */
function readmeBlock(firstLine: string): string {
  const start = README.indexOf(`\n${firstLine}\n`);
  assert.ok(start >= 0, `README has a block starting ${firstLine}`);
  return README.slice(start + 1, README.indexOf('```', start));
}

const unitValue = (unit: string, key: string) => new RegExp(`^${key}=(.*)$`, 'm').exec(unit)?.[1];

const packaged = (name: string) => readFileSync(path.join(PROJECT, 'test/deb/package', name), 'utf8');

test('README: the service and timer it shows are the package\'s; systemd-analyze verify accepts them', () => {
  const service = readmeBlock('# /usr/lib/systemd/system/pve-dm.service');
  const timer = readmeBlock('# /usr/lib/systemd/system/pve-dm.timer');
  assert.is(service, `# /usr/lib/systemd/system/pve-dm.service\n${packaged('pve-dm.service')}`);
  assert.is(timer, `# /usr/lib/systemd/system/pve-dm.timer\n${packaged('pve-dm.timer')}`);
  assert.is(unitValue(service, 'Type'), 'oneshot');
  assert.is(unitValue(service, 'ExecStart'), '/usr/sbin/pve-dm --report-only --html /var/lib/pve-dm/report.html');
  assert.is(unitValue(timer, 'OnCalendar'), 'daily');
  assert.is(unitValue(timer, 'Persistent'), 'true');
  assert.ok(unitValue(timer, 'RandomizedDelaySec'));
  const dir = tempDir();
  // Not installed here: the command is this checkout's, run by this node.
  const here = (unit: string) => unit.replace('ExecStart=/usr/sbin/pve-dm ', `ExecStart=${process.execPath} ${PROJECT}/pve-dm.ts `);
  writeFileSync(path.join(dir, 'pve-dm.service'), here(service));
  writeFileSync(path.join(dir, 'pve-dm.timer'), timer);
  const verify = (...files: string[]) => spawnSync('systemd-analyze', ['verify', '--man=no', ...files], { encoding: 'utf8', timeout: 20_000 });
  const verified = verify(path.join(dir, 'pve-dm.service'), path.join(dir, 'pve-dm.timer'));
  assert.is(verified.error, undefined, 'systemd-analyze runs (package systemd)');
  assert.is(`${verified.stdout}${verified.stderr}`, '', 'no warning: every key known, every value valid');
  assert.is(verified.status, 0);
  // verify can fail: a misspelt key is reported.
  writeFileSync(path.join(dir, 'pve-dm.service'), here(service).replace('ProtectSystem=', 'ProtectSistem='));
  assert.match(verify(path.join(dir, 'pve-dm.service')).stderr, /Unknown key 'ProtectSistem'/);
});

test("README: the service's command runs (against a sample) and exits as the unit expects; the cron line runs the same", async () => {
  const service = readmeBlock('# /usr/lib/systemd/system/pve-dm.service');
  const cron = packaged('pve-dm.cron');
  assert.ok(README.includes(`\`\`\`\n${cron}\`\`\``), 'the README shows the package\'s cron example');
  const [program = '', ...args] = (unitValue(service, 'ExecStart') ?? '').split(' ');
  assert.is(program, '/usr/sbin/pve-dm');
  const cronCommand = /^\d+ \d+ \* \* \* root \/usr\/sbin\/pve-dm (.*?) >>/m.exec(cron)?.[1];
  assert.is(cronCommand, args.join(' '), 'cron runs pve-dm with the same arguments, daily, as root');
  const dir = tempDir();
  const { file: bundle } = await buildBundle(path.join(tempDir(), 'dist'));
  const moved = args.map((arg) => arg.replace('/var/lib/pve-dm', dir));
  const run = await runNode([bundle, ...moved, '--root', path.join(SAMPLES, 'snapshots')]);
  assert.ok((unitValue(service, 'SuccessExitStatus') ?? '').split(' ').includes(String(run.code)), `exit ${run.code} counts as success: ${describeRun(run)}`);
  assert.ok(run.stdout.split('\n').includes('Summary'), 'the console report, for the journal');
  assert.equal(readdirSync(dir).sort(), ['report.html']);
}, SLOW);

test("README: the first run it shows is multi-pool's real console report (up to the guests)", async () => {
  const { result } = await sample('multi-pool');
  const command = '$ npx tsx pve-dm.ts --root samples/multi-pool --report-only\n';
  const at = README.indexOf(command);
  assert.ok(at >= 0, 'README shows the first run');
  const shown = README.slice(at + command.length, README.indexOf('```', at));
  const real = renderConsole({ ...result, root: 'samples/multi-pool' }, false).replace(result.generatedAt, '2026-12-06T06:34:04.610Z');
  assert.ok(real.startsWith(shown), `the README's excerpt is the start of the real report:\n${real}`);
  assert.ok(shown.includes('Tombstones (warning): 2\n'), 'and it reaches the tombstones');
});

test("README: the examples of the three outputs are multi-pool's real output", async () => {
  const { reports } = await sample('multi-pool');
  assert.ok(README.includes(`--format nagios; echo "exit $?"\n${reports.nagios}exit 2\n`), 'the Nagios example');
  assert.ok(README.includes(`--format checkmk\n${reports.checkmk}\`\`\``), 'the Checkmk example');
  const shown = /\$ cat pve-dm\.prom\n([\s\S]*?)```/.exec(README)?.[1] ?? '';
  const stamp = (text: string) => text.replace(/^(pve_dm_last_run_timestamp_seconds\{[^}]*\}) .*$/m, '$1 TIME');
  assert.is(stamp(shown), stamp(reports.prometheus as string), 'the Prometheus example');
});

test.run();
