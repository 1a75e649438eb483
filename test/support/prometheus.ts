// Reading a Prometheus textfile as node_exporter would (parse-prometheus-text-format, plus the
// format's own rules), and the series a sample's expected.json calls for.
import parsePrometheus from 'parse-prometheus-text-format';
import * as assert from 'uvu/assert';
import type { Result } from '../../pve-dm.ts';
import { type Expected, expectedOf } from '../harness.ts';

export const problemsOf = (expected: Expected) => Object.entries(expected.entries).filter(([, verdict]) => verdict.status === 'conflict' || verdict.status === 'duplicate' || verdict.status === 'tombstone');

export const seriesKey = (name: string, labels: Record<string, string>) =>
  `${name}{${Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)).map(([key, value]) => `${key}=${JSON.stringify(value)}`).join(',')}}`;

/** The file as `name{label="value",...}` → value, read by the npm parser and checked against the format. */
export function readPrometheus(text: string): Map<string, number> {
  const families = parsePrometheus(text);
  const sampleLines = text.split('\n').filter((line) => line !== '' && !line.startsWith('#'));
  assert.is(families.reduce((count, family) => count + family.metrics.length, 0), sampleLines.length, 'one sample per sample line: none split by a raw line feed, none merged');
  assert.is(new Set(families.map((family) => family.name)).size, families.length, 'each family in one block');
  const series = new Map<string, number>();
  for (const family of families) {
    assert.match(family.name, /^[a-zA-Z_:][a-zA-Z0-9_:]*$/);
    assert.is(family.type, 'GAUGE', `${family.name} is a gauge`);
    assert.ok(family.help.length > 0, `${family.name} has HELP`);
    for (const sample of family.metrics) {
      assert.is(sample.timestamp_ms, undefined, 'no timestamp: the textfile collector refuses them');
      for (const label of Object.keys(sample.labels ?? {})) assert.match(label, /^[a-zA-Z_][a-zA-Z0-9_]*$/);
      assert.match(sample.value, /^-?[0-9]+(?:\.[0-9]+)?$/, `${family.name}: a number`);
      const key = seriesKey(family.name, sample.labels ?? {});
      assert.not.ok(series.has(key), `${key} once`);
      series.set(key, Number(sample.value));
    }
  }
  return series;
}

/** Every series a sample's file must hold, and no other: from expected.json (VMIDs from the classification). */
export function expectedSeries(name: string, result: Result, lastRun: number): Map<string, number> {
  const expected = expectedOf(name);
  const node = expected.node;
  const series = new Map<string, number>();
  for (const status of ['valid', 'conflict', 'duplicate', 'tombstone', 'ignored', 'unjudged'] as const) series.set(seriesKey('pve_dm_entries', { node, status }), expected.summary[status]);
  series.set(seriesKey('pve_dm_grade_info', { node, grade: expected.grade }), 1);
  for (const [entry, { status, reason }] of problemsOf(expected)) {
    const vmid = result.entries.find((candidate) => candidate.name === entry)?.vmid;
    series.set(seriesKey('pve_dm_problem_info', { node, name: entry, vmid: vmid === null || vmid === undefined ? '' : String(vmid), status, reason }), 1);
  }
  series.set(seriesKey('pve_dm_orphan_lvs', { node }), expected.summary.orphanLvs);
  for (const [volume, { reason, active }] of Object.entries(expected.orphanLvs ?? {})) {
    const [vg = '', lv = ''] = volume.split('/');
    const vmid = String(result.orphanLvs.find((o) => o.vg === vg && o.lv === lv)?.vmid);
    series.set(seriesKey('pve_dm_orphan_lv_info', { node, vg, lv, vmid, reason, active: String(active) }), 1);
  }
  for (const [name, pool] of Object.entries(expected.pools)) {
    const [vg = '', lv = ''] = name.split('/');
    const labels = { node, vg, pool: lv };
    series.set(seriesKey('pve_dm_thin_pool_active', labels), pool.active ? 1 : 0);
    if (pool.dataPercent !== null) series.set(seriesKey('pve_dm_thin_pool_data_percent', labels), pool.dataPercent);
    if (pool.metadataPercent !== null) series.set(seriesKey('pve_dm_thin_pool_metadata_percent', labels), pool.metadataPercent);
    for (const kind of pool.problems) {
      const severity = result.pools.find((p) => p.vg === vg && p.lv === lv)?.problems.find((p) => p.kind === kind)?.severity ?? '';
      series.set(seriesKey('pve_dm_thin_pool_problem_info', { ...labels, kind, severity }), 1);
    }
  }
  for (const [vg, { severity }] of Object.entries(expected.volumeGroups ?? {})) series.set(seriesKey('pve_dm_volume_group_partial_info', { node, vg, severity }), 1);
  series.set(seriesKey('pve_dm_warnings', { node }), expected.warnings.length);
  series.set(seriesKey('pve_dm_last_run_timestamp_seconds', { node }), lastRun);
  return series;
}
