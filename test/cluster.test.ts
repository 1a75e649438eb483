// Several nodes analysed as one cluster (issue 6): samples/cluster-migrated (pve1) with its
// neighbours pve2 and pve3, whose findings were worked out by hand from the captures.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import path from 'node:path';
import * as assert from 'uvu/assert';
import {
  analyseCluster, captureFromJson, captureToJson, clusterMembers, clusterToJson, createRunner, notificationSubject, notificationText, defaultStages, execProcess, main, readCapture, remoteCaptureCommand, renderClusterPrometheus, renderPrometheus, runPipeline, showsClusterProgress, type ClusterResult, type Exec,
} from '../pve-dm.ts';
import { describeRun, overlongLines, PROJECT, refusedWith, runMain, SAMPLES, tempDir, test, unwrapConsole } from './harness.ts';
import { changing, put, scenario } from './support/fake-node.ts';
import { withServer } from './support/http-server.ts';
import { expectedSeries, readPrometheus, seriesKey } from './support/prometheus.ts';

const HEADLINE = 'CRITICAL: san01/vm-300-disk-0 is active on pve1 and pve2 while VM 300 runs on pve2 (and 1 more)';
const NODES = ['cluster-migrated', 'cluster-migrated-pve2', 'cluster-migrated-pve3'].map((name) => path.join(SAMPLES, name));

async function cluster(roots = NODES, unreachable: ClusterResult['cluster']['unreachable'] = []): Promise<ClusterResult> {
  const runs = await Promise.all(
    roots.map((root) => runPipeline(defaultStages, { root, vmids: [], json: false, console: false, html: false, color: false, runner: createRunner({ allowChanges: false }) })),
  );
  return analyseCluster(runs, unreachable, '2026-11-25T12:00:00.000Z');
}

test('three nodes: each a section of its own, the sums and the worst grade, F for a critical finding', async () => {
  const result = await cluster();
  // On pve2, VM 117's disk is the target of its migration (lock: migrate): in flight, not a tombstone.
  assert.equal(result.cluster.nodes.map((node) => [node.node, node.grade, node.exitCode]), [['pve1', 'B', 1], ['pve2', 'B', 1], ['pve3', 'B', 1]]);
  assert.equal(result.summary, { entries: 36, valid: 11, conflict: 0, duplicate: 0, tombstone: 6, ignored: 19, unjudged: 0, orphanLvs: 1, poolProblems: 0 });
  assert.is(result.grade, 'F');
  assert.is(result.exitCode, 2);
});

test('what only the cluster shows: shared LVs active on two nodes, and a disk active off its guest\'s node', async () => {
  const { findings } = (await cluster()).cluster;
  const shown = findings.map((f) => [f.severity, f.kind, `${f.vg}/${f.lv}`, f.vmid, f.home, f.running, f.activeOn.map((a) => a.node).join(',')]);
  assert.equal(shown, [
    ['critical', 'active-on-several-nodes', 'san01/vm-300-disk-0', 300, 'pve2', true, 'pve1,pve2'],
    ['critical', 'active-on-several-nodes', 'san02/vm-320-disk-0', 320, 'pve2', true, 'pve1,pve2'],
    ['warning', 'active-on-several-nodes', 'san01/vm-117-disk-0', 117, 'pve1', true, 'pve1,pve2'],
    ['warning', 'active-off-home-node', 'san01/vm-118-disk-0', 118, 'pve1', false, 'pve3'],
    ['warning', 'active-on-several-nodes', 'san01/vm-310-disk-0', 310, 'pve3', false, 'pve1,pve3'],
  ]);
  assert.is(findings[0]?.message, 'san01/vm-300-disk-0 is active on pve1 and pve2 while VM 300 runs on pve2: two nodes writing one LV corrupt it (Proxmox bug 4997); deactivate it where the guest does not run');
  assert.is(findings[2]?.message, 'san01/vm-117-disk-0 is active on pve1 and pve2 while VM 117 migrates (lock: migrate): expected during a migration; look again once it has ended');
  assert.is(findings[3]?.message, 'san01/vm-118-disk-0 of VM 118 (it lives on pve1) is active on pve3, where the guest does not live');
  assert.is(findings[4]?.message, 'san01/vm-310-disk-0 is active on pve1 and pve3; CT 310 lives on pve3 and is not running: deactivate it where the guest does not live');
  // The remedy for each stale activation is the node's own: where the guest runs there is none.
  assert.equal(findings[0]?.activeOn, [
    // These captures have no lvs --segments: whether the tables are LVM's is not known (null), never "current".
    { node: 'pve1', name: 'san01-vm--300--disk--0', remedy: 'lvchange -an san01/vm-300-disk-0', staleTable: null },
    { node: 'pve2', name: 'san01-vm--300--disk--0', remedy: null, staleTable: null },
  ]);
  // Nothing touches a guest that migrates; the node where a guest runs is never told to deactivate.
  assert.equal(findings[2]?.activeOn.map((a) => a.remedy), [null, null], 'VM 117 migrates');
  for (const finding of findings.filter((f) => f.running === true))
    assert.is(finding.activeOn.find((a) => a.node === finding.home)?.remedy ?? null, null, `${finding.vg}/${finding.lv} on ${finding.home}`);
});

test('a shared LV active on two nodes while its running guest holds a lock: critical, and no command before the lock ends', async () => {
  const dir = tempDir();
  const runs = [];
  for (const name of NODES) {
    const copy = path.join(dir, path.basename(name));
    execFileSync('cp', ['-a', name, copy]);
    // VM 300 lives on pve2; its backup is running (lock: backup) while pve1 still has its disk active.
    const conf = path.join(copy, 'etc/pve/nodes/pve2/qemu-server/300.conf');
    writeFileSync(conf, `lock: backup\n${readFileSync(conf, 'utf8')}`);
    runs.push(await runPipeline(defaultStages, { root: copy, vmids: [], json: false, console: false, html: false, color: false, runner: createRunner({ allowChanges: false }) }));
  }
  const finding = analyseCluster(runs, [], '2026-11-25T12:00:00.000Z').cluster.findings.find((f) => f.vmid === 300);
  assert.is(finding?.severity, 'critical');
  assert.is(finding?.message, 'san01/vm-300-disk-0 is active on pve1 and pve2 while VM 300 runs on pve2: two nodes writing one LV corrupt it (Proxmox bug 4997); once VM 300\'s operation has ended (lock: backup), deactivate it where the guest does not run');
  assert.equal(finding?.activeOn.map((a) => a.remedy), [null, null], 'no command for a locked guest\'s volume, on any node');
});

test('the local VG of each node is its own: pve/vm-302-disk-0 on pve2 is not "active on several nodes"', async () => {
  const { findings } = (await cluster()).cluster;
  assert.not.ok(findings.some((f) => f.vg === 'pve'));
});

test('one node alone shows no cluster finding a missing neighbour would explain; an unreachable node is a warning', async () => {
  const alone = await cluster([NODES[1] as string]);
  assert.equal(alone.cluster.findings.map((f) => `${f.kind} ${f.vg}/${f.lv}`), ['active-off-home-node san01/vm-117-disk-0']);
  const partial = await cluster([NODES[2] as string], [{ node: 'pve2', error: 'ssh: connect to host pve2 port 22: Connection timed out' }]);
  assert.is(partial.exitCode, 1);
  assert.equal(partial.cluster.unreachable, [{ node: 'pve2', error: 'ssh: connect to host pve2 port 22: Connection timed out' }]);
});


// ── From the command line ──────────────────────────────────────────────────────────────────
const ROOTS = NODES.flatMap((root) => ['--root', root]);

test('--root three times: one JSON for the cluster, each node\'s own JSON inside it, exit 2', async () => {
  const run = await runMain([...ROOTS, '--report-only', '--json']);
  assert.is(run.code, 2, describeRun(run));
  const report = JSON.parse(run.stdout);
  const expected = await cluster();
  assert.equal(report.notifications, []);
  assert.equal(report.cluster, JSON.parse(JSON.stringify({ headline: HEADLINE, nodes: ['pve1', 'pve2', 'pve3'], grade: 'F', exitCode: 2, summary: expected.summary, findings: expected.cluster.findings, unreachable: [] })));
  for (const [index, root] of NODES.entries()) {
    const alone = JSON.parse((await runMain(['--root', root, '--report-only', '--json'])).stdout);
    // A node's section is its own JSON, each entry, duplicate set and warning with its node.
    const node = alone.node as string;
    const withNode = (item: object) => ({ ...item, node });
    const expectedNode = {
      ...alone,
      entries: alone.entries.map(({ name, ...rest }: { name: string }) => ({ name, node, ...rest })),
      duplicates: alone.duplicates.map(withNode),
      missingGuests: alone.missingGuests.map(withNode),
      warnings: alone.warnings.map((w: { text: string }) => ({ node, ...w, text: `${node}:${w.text}` })),
    };
    assert.equal({ ...report.nodes[index], generatedAt: null }, { ...expectedNode, generatedAt: null });
    assert.ok(report.nodes[index].entries.every((entry: { node: string }) => entry.node === node));
  }
});

test('--root three times: the console leads with what corrupts data, then a line per node, the findings, each node; the HTML too', async () => {
  const html = path.join(tempDir(), 'cluster.html');
  const run = await runMain([...ROOTS, '--report-only', '--no-color', '--html', html]);
  assert.is(run.code, 2, describeRun(run));
  assert.equal(overlongLines(run.stdout), [], 'every line in 80 columns');
  run.stdout = unwrapConsole(run.stdout);
  assert.ok(run.stdout.startsWith(`${HEADLINE}\n\nCluster of 3 nodes: grade F\n  36 dm entries on pve1, pve2, pve3: 11 valid, 0 duplicate, 6 tombstone, 19 ignored\n\n`), run.stdout.slice(0, 400));
  assert.match(run.stdout, '  NODE  GRADE  ENTRIES  DUPLICATES  TOMBSTONES  STATE\n  pve1  B      16       0           5           warning\n');
  assert.match(run.stdout, 'Cluster findings: 5\n  CRITICAL  san01/vm-300-disk-0 is active on pve1 and pve2');
  assert.match(run.stdout, '           on pve1: lvchange -an san01/vm-300-disk-0\n');
  // Each node's own report comes after what only the cluster shows.
  const findingsAt = run.stdout.indexOf('Cluster findings');
  for (const node of ['pve1', 'pve2', 'pve3']) assert.ok(run.stdout.indexOf(`· node ${node} ·`) > findingsAt, `${node} after the findings`);
  const { load } = await import('cheerio/slim');
  const $ = load(readFileSync(html, 'utf8'));
  assert.is($('[data-field="node"]').text(), 'pve1, pve2, pve3');
  assert.is($('[data-field="grade"]').text(), 'F');
  assert.is($('[data-header] strong').text(), HEADLINE);
  // The nodes, then the findings, come before every other section; entries keep their dm names beside their node.
  assert.equal($('[data-section]').map((_, el) => $(el).attr('data-section')).get().slice(0, 3), ['nodes', 'cluster', 'summary']);
  assert.equal($('tr[data-node]').map((_, row) => $(row).find('td').first().text()).get(), ['pve1', 'pve2', 'pve3']);
  const first = $('tr[data-entry]').first().find('td');
  assert.equal([first.eq(0).text(), first.eq(1).text()], ['pve1', 'san01-vm--300--disk--0']);
  assert.is($('tr[data-guest]').first().find('td').first().text(), 'pve1', 'the guests table has a node column');
  assert.ok($('tr[data-system]').length >= 3, 'host facts of each node');
  assert.ok($('tr[data-finding]').first().text().startsWith('CRITICALactive-on-several-nodessan01/vm-300-disk-0VM 300 of pve2, running'));
  assert.ok($('tr[data-finding]').first().text().includes('on pve1: lvchange -an san01/vm-300-disk-0'));
  assert.is($('tr[data-finding]').length, 5);
});

test('--root twice, one node with a guest config it cannot read: the cluster\'s line counts the entries not judged', async () => {
  const run = await runMain(['--root', NODES[0] as string, '--root', path.join(SAMPLES, 'broken-input'), '--report-only', '--no-color']);
  assert.is(run.code, 1, describeRun(run));
  run.stdout = unwrapConsole(run.stdout);
  assert.match(run.stdout, 'Cluster of 2 nodes: grade B\n  27 dm entries on pve1, pve-edge: 9 valid, 0 duplicate, 5 tombstone, 12 ignored, 1 not judged\n');
});

test('a cluster run notifies once, for the cluster: its JSON, its grade, a subject naming the critical finding', async () => {
  await withServer([{ status: 200, body: '{}' }], async (server) => {
    const run = await runMain([...ROOTS, '--report-only', '--json', '--notify', 'always'], { PVE_DM_WEBHOOK_URL: `${server.url}/hook` });
    const report = JSON.parse(run.stdout);
    assert.equal(report.notifications, [{ plugin: 'webhook', ok: true, detail: 'HTTP 200' }]);
    assert.is(report.cluster.grade, 'F', 'still the cluster\'s JSON once the notifications are in');
    assert.is(server.received.length, 1);
    assert.is(server.received[0]?.headers['x-pve-dm-severity'], 'critical');
    assert.is(JSON.parse(server.received[0]?.body ?? '').cluster.grade, 'F');
  });
  assert.is(notificationSubject(await cluster()), `🚨 [pve1, pve2, pve3] ${HEADLINE}! Grade: F`);
  assert.is(notificationText(await cluster()).split('\n')[0], HEADLINE, 'and the text\'s first line');
});

test('Nagios for a cluster run: CRITICAL for a shared LV active on two nodes, each guest on its own node', async () => {
  const nagios = await runMain([...ROOTS, '--report-only', '--format', 'nagios']);
  assert.is(nagios.code, 2, describeRun(nagios));
  assert.ok(nagios.stdout.startsWith(`CRITICAL - ${HEADLINE.replace('CRITICAL: ', '')}; pve1, pve2, pve3: grade F, 0 duplicate and 6 tombstoned of 36 dm entries, 2 shared LV(s) active on several nodes while their guest runs, 1 orphan LV(s) | entries=36;;;0 `), nagios.stdout);
  // Perfdata for the cluster, then per node.
  assert.match(nagios.stdout, ' cluster_critical=2;;0;0 cluster_warning=3;0;;0 nodes_unreachable=0;0;;0 pve1_entries=16;;;0 pve1_conflicts=0;;0;0 pve1_duplicates=0;;0;0 pve1_tombstones=5;0;50;0 ');
  const checkmk = await runMain([...ROOTS, '--report-only', '--format', 'checkmk']);
  assert.ok(checkmk.stdout.startsWith('2 "PVE DM health" entries=36;;;0|'), checkmk.stdout);
  assert.match(checkmk.stdout, `|pve2_tombstones=0;1;51;0|`);
  assert.match(checkmk.stdout, ` ${HEADLINE.replace('CRITICAL: ', '')}; pve1, pve2, pve3: grade F`);
  // The cluster's findings are the first detail lines, each with the remedy on each node.
  assert.equal(nagios.stdout.split('\n')[1], 'critical: san01/vm-300-disk-0 is active on pve1 and pve2 while VM 300 runs on pve2: two nodes writing one LV corrupt it (Proxmox bug 4997); deactivate it where the guest does not run; on pve1: lvchange -an san01/vm-300-disk-0');
  assert.match(nagios.stdout, '\ntombstone pve1:san01-vm--300--disk--0: guest-on-other-node, VM 300 gitlab on pve2; remedy: lvchange -an san01/vm-300-disk-0\n', 'each guest on its own node');
});

test('Prometheus for a cluster run: each node\'s series under its own name, as its own timer writes them, then the cluster\'s grade, findings and missing nodes', async () => {
  const result = await cluster(NODES, [{ node: 'pve4', error: 'ssh root@192.0.2.4 failed (exit 255): Connection refused' }]);
  const series = readPrometheus(renderClusterPrometheus(result));
  const expected = new Map<string, number>();
  for (const [index, node] of result.cluster.nodes.entries()) {
    const own = expectedSeries(path.basename(NODES[index] as string), node, Date.parse(node.generatedAt) / 1000);
    assert.equal(Object.fromEntries(readPrometheus(renderPrometheus(node))), Object.fromEntries(own), `${node.node} alone`);
    for (const [key, value] of own) expected.set(key, value);
  }
  expected.set(seriesKey('pve_dm_cluster_grade_info', { grade: 'F' }), 1);
  for (const [kind, severity, vg, lv, vmid, activeOn] of [
    ['active-on-several-nodes', 'critical', 'san01', 'vm-300-disk-0', '300', 'pve1,pve2'],
    ['active-on-several-nodes', 'critical', 'san02', 'vm-320-disk-0', '320', 'pve1,pve2'],
    ['active-on-several-nodes', 'warning', 'san01', 'vm-117-disk-0', '117', 'pve1,pve2'],
    ['active-off-home-node', 'warning', 'san01', 'vm-118-disk-0', '118', 'pve3'],
    ['active-on-several-nodes', 'warning', 'san01', 'vm-310-disk-0', '310', 'pve1,pve3'],
  ] as const) {
    expected.set(seriesKey('pve_dm_cluster_finding_info', { kind, severity, vg, lv, vmid, active_on: activeOn }), 1);
  }
  expected.set(seriesKey('pve_dm_cluster_node_unreachable', { node: 'pve4' }), 1);
  assert.equal(Object.fromEntries(series), Object.fromEntries(expected));
  const prom = path.join(tempDir(), 'pve-dm.prom');
  const run = await runMain([...ROOTS, '--report-only', '--json', '--prometheus', prom]);
  assert.is(run.code, 2, describeRun(run));
  assert.match(readFileSync(prom, 'utf8'), '\npve_dm_grade_info{node="pve2",grade="B"} 1\n');
  assert.match(readFileSync(prom, 'utf8'), '\npve_dm_cluster_grade_info{grade="F"} 1\n');
});

test('a cluster run refuses cleanup, the same node twice, and --cluster with --root', async () => {
  refusedWith(await runMain([NODES[0] as string, NODES[0] as string].flatMap((root) => ['--root', root]).concat('--report-only')), 'node pve1 is there twice: give each node\'s capture once');
  refusedWith(await runMain(['--cluster', '--yes']), 'cleanup acts on one node: run it there (leave out --yes and --dry-run with --cluster)');
  refusedWith(await runMain(['--cluster', ...ROOTS]), '--cluster analyses the live cluster, --root captures: give one or the other');
  refusedWith(await runMain(['--cluster', '--node-timeout', '0']), '--node-timeout 0: seconds, 1 to 3600');
});

test('the command another node runs: this pve-dm, as it was started, every word quoted', () => {
  assert.is(remoteCaptureCommand('/root/pve-dm/pve-dm.ts', ['--import', 'tsx'], '/usr/bin/node'), 'cd /root/pve-dm && exec /usr/bin/node --import tsx /root/pve-dm/pve-dm.ts capture -');
  assert.is(remoteCaptureCommand("/opt/it's here/dist/pve-dm.mjs", [], '/usr/bin/node'), "cd '/opt/it'\\''s here/dist' && exec /usr/bin/node '/opt/it'\\''s here/dist/pve-dm.mjs' capture -");
});

test('the members: /etc/pve/.members as pmxcfs writes it, else the folders of /etc/pve/nodes', async () => {
  const root = tempDir();
  for (const node of ['pve1', 'pve2', 'pve3']) mkdirSync(path.join(root, 'etc/pve/nodes', node), { recursive: true });
  assert.equal((await clusterMembers(root)).map((m) => [m.name, m.ip, m.online]), [['pve1', null, null], ['pve2', null, null], ['pve3', null, null]]);
  put(root, 'etc/pve/.members', '{"nodename": "pve1", "version": 9, "cluster": {"name": "lab", "version": 3, "nodes": 2, "quorate": 1},\n"nodelist": {\n  "pve2": {"id": 2, "online": 0, "ip": "10.0.0.2"},\n  "pve1": {"id": 1, "online": 1, "ip": "10.0.0.1"}\n  }\n}\n');
  assert.equal(await clusterMembers(root), [{ name: 'pve1', ip: '10.0.0.1', online: true }, { name: 'pve2', ip: '10.0.0.2', online: false }]);
  put(root, 'etc/pve/.members', '{"nodelist": {"pve1": {"ip": "10.0.0.1; reboot"}, "-oProxyCommand=x": {}}}\n');
  assert.equal(await clusterMembers(root), [{ name: 'pve1', ip: null, online: null }], 'what is not a node name or an address is left out');
  put(root, 'etc/pve/.members', 'not json');
  assert.is((await clusterMembers(root)).length, 3);
});

test('a capture travels as JSON and comes back the same; garbage and impostors are refused by name', async () => {
  const original = await readCapture(NODES[1] as string);
  assert.equal(captureFromJson(captureToJson(original), 'node pve2'), { ...original, root: null });
  assert.throws(() => captureFromJson('Welcome to pve4!\n', 'node pve4'), /^node pve4: not a pve-dm capture \(not JSON; it began "Welcome to pve4!\\n"\)$/);
  assert.throws(() => captureFromJson('{"pveDmCapture": 2}', 'node pve4'), /^node pve4: not a pve-dm capture of format 1/);
  const forged = JSON.parse(captureToJson(original));
  forged.configs[0].path = '../../etc/shadow';
  assert.throws(() => captureFromJson(JSON.stringify(forged), 'node pve2'), /^node pve2: not a usable pve-dm capture \(wrong or missing: configs\[0\]\)/);
});

type ClusterJson = ReturnType<typeof clusterToJson>;

/** The members as /etc/pve/.members lists them: name → address, online unless the address is null. */
type Members = Record<string, string | null>;

/** The captures of pve2 and pve3 as `capture -` prints them, in files named after their node. */
async function answers(): Promise<string> {
  const dir = tempDir();
  for (const [index, name] of ['pve2', 'pve3'].entries()) writeFileSync(path.join(dir, `${name}.json`), captureToJson(await readCapture(NODES[index + 1] as string)));
  return dir;
}

/**
 * `pve-dm --cluster --report-only --json` on a model node pve1 with these members, the folder
 * `bin` first on PATH (where an `ssh` waits), its other nodes asked over that ssh.
 */
async function clusterRun(members: Members, bin: string): Promise<{ code: number; report: ClusterJson; ms: number; changes: string[] }> {
  const { root, node, journal } = scenario();
  const nodelist = Object.fromEntries(Object.entries(members).map(([name, ip], index) => [name, { id: index + 1, online: ip === null ? 0 : 1, ip: ip ?? '192.0.2.99' }]));
  put(root, 'etc/pve/.members', `${JSON.stringify({ nodename: 'pve1', version: 7, cluster: { name: 'lab', version: 4, nodes: Object.keys(members).length, quorate: 1 }, nodelist })}\n`);
  const path0 = process.env.PATH;
  process.env.PATH = `${bin}:${path0}`;
  try {
    let stdout = '';
    const io = { stdout: { write: (t: string) => ((stdout += t), true) }, stderr: { write: () => true }, isTty: false };
    const exec: Exec = (command, args, options) => (command === 'ssh' ? execProcess(command, args, options) : node.exec(command, args, options));
    const started = Date.now();
    const code = await main(['--cluster', '--report-only', '--json', '--node-timeout', '2', '--no-plugins', '--journal', journal], io as never, { exec, liveRoot: root, hostname: 'pve1' });
    return { code, report: JSON.parse(stdout), ms: Date.now() - started, changes: changing(node.calls) };
  } finally {
    process.env.PATH = path0;
  }
}

/** [node, entries] of each node section after the live one. */
const remoteSections = (report: ClusterJson) => report.nodes.slice(1).map((n) => [n.node, n.summary.entries]);

test('--cluster: this node live, two others over ssh in parallel; one that times out, one that answers garbage, one offline', async () => {
  const served = await answers();
  const bin = tempDir();
  const log = path.join(served, 'ssh.log');
  writeFileSync(path.join(bin, 'ssh'), `#!/bin/sh
# A stand-in for ssh: logs its arguments (one a line, then a blank line) and answers as the node of HostKeyAlias.
for arg in "$@"; do printf '%s\\n' "$arg"; done >> '${log}'; echo >> '${log}'
for arg in "$@"; do case "$arg" in HostKeyAlias=*) alias="\${arg#HostKeyAlias=}";; esac; done
case "$alias" in
  pve2|pve3) exec cat "${served}/$alias.json" ;;
  pve4) exec sleep 30 ;;
  pve5) echo 'Welcome to pve5! Last login: yesterday' ;;
  *) echo "ssh: connect to host $alias port 22: Connection refused" >&2; exit 255 ;;
esac
`, { mode: 0o755 });
  const members = { pve1: '192.0.2.1', pve2: '192.0.2.2', pve3: '192.0.2.3', pve4: '192.0.2.4', pve5: '192.0.2.5', pve6: null };
  const { code, report, ms, changes } = await clusterRun(members, bin);
  assert.ok(ms < 10_000, 'the nodes were asked in parallel, each within its time limit');
  assert.equal(report.cluster.nodes, ['pve1', 'pve2', 'pve3']);
  assert.equal(remoteSections(report), [['pve2', 11], ['pve3', 9]], 'each node that answered is analysed whole, as its capture holds');
  assert.equal(report.cluster.unreachable, [
    { node: 'pve4', error: 'ssh root@192.0.2.4 failed (exit 143): timed out after 2000 ms' },
    { node: 'pve5', error: 'node pve5: not a pve-dm capture (not JSON; it began "Welcome to pve5! Last login: yesterday\\n")' },
    { node: 'pve6', error: 'offline as pmxcfs sees it (/etc/pve/.members): not queried' },
  ]);
  assert.is(code, 2);
  const calls = readFileSync(log, 'utf8').split('\n\n').filter(Boolean).map((call) => call.split('\n'));
  assert.equal(calls.find((call) => call.includes('HostKeyAlias=pve2')), ['-e', 'none', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', 'HostKeyAlias=pve2', 'root@192.0.2.2', remoteCaptureCommand()]);
  assert.is(calls.length, 4, 'pve6, offline, is not asked; pve1 is this node');
  assert.equal(changes, [], 'a cluster run changes nothing');
}, 30_000);

test('--cluster over a real sshd on 127.0.0.x: host keys checked by alias, the command arrives as pve-dm wrote it', async () => {
  const sshd = ['/usr/sbin/sshd', '/usr/bin/ssh', '/usr/bin/ssh-keygen'].find((file) => !existsSync(file));
  assert.is(sshd, undefined, `${sshd} is missing: npm test installs openssh-server and openssh-client (test/support/prerequisites.sh)`);
  const served = await answers();
  const dir = tempDir('pve-dm-sshd-');
  const keygen = (file: string) => execFileSync('/usr/bin/ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', path.join(dir, file)]);
  for (const key of ['host', 'client', 'impostor']) keygen(key);
  const publicKey = (name: string) => readFileSync(path.join(dir, `${name}.pub`), 'utf8').trim();
  // Each node's sshd answers with that node's capture: the address the client reached says which.
  // The command pve-dm sent is logged, not run: run, it would read this machine's devices.
  const log = path.join(dir, 'commands.log');
  writeFileSync(path.join(dir, 'serve'), `#!/bin/sh
printf '%s\\n' "$SSH_ORIGINAL_COMMAND" >> '${log}'
set -- $SSH_CONNECTION
case "$3" in 127.0.0.2) exec cat '${served}/pve2.json' ;; 127.0.0.3) exec cat '${served}/pve3.json' ;; 127.0.0.5) exec cat '${served}/pve2.json' ;; esac
exit 1
`, { mode: 0o755 });
  writeFileSync(path.join(dir, 'authorized_keys'), `command="${dir}/serve",restrict ${publicKey('client')}\n`);
  writeFileSync(path.join(dir, 'sshd_config'), [
    ...['127.0.0.2', '127.0.0.3', '127.0.0.5'].map((address) => `ListenAddress ${address}:22`),
    `HostKey ${dir}/host`, `AuthorizedKeysFile ${dir}/authorized_keys`, 'PermitRootLogin prohibit-password', 'PasswordAuthentication no',
    'KbdInteractiveAuthentication no', 'UsePAM no', 'StrictModes no', 'PidFile none', 'LogLevel ERROR', '',
  ].join('\n'));
  // pve5 answers with a host key that is not the one known for pve5: ssh must refuse it.
  writeFileSync(path.join(dir, 'known_hosts'), ['pve2', 'pve3', 'pve4'].map((alias) => `${alias} ${publicKey('host')}`).concat(`pve5 ${publicKey('impostor')}`).join('\n'));
  // A node's ssh reads root's ~/.ssh; this one reads the test's keys, and is otherwise the real ssh.
  writeFileSync(path.join(dir, 'ssh_config'), `IdentityFile ${dir}/client\nUserKnownHostsFile ${dir}/known_hosts\nGlobalKnownHostsFile /dev/null\n`);
  const bin = tempDir();
  writeFileSync(path.join(bin, 'ssh'), `#!/bin/sh\nexec /usr/bin/ssh -F '${dir}/ssh_config' "$@"\n`, { mode: 0o755 });
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const server = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', path.join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let serverLog = '';
  server.stderr.on('data', (chunk) => (serverLog += chunk));
  try {
    await waitForPort('127.0.0.2', 22, () => serverLog);
    const members = { pve1: '127.0.0.1', pve2: '127.0.0.2', pve3: '127.0.0.3', pve4: '127.0.0.4', pve5: '127.0.0.5' };
    const { code, report, changes } = await clusterRun(members, bin);
    assert.equal(report.cluster.nodes, ['pve1', 'pve2', 'pve3'], JSON.stringify(report.cluster.unreachable));
    assert.equal(remoteSections(report), [['pve2', 11], ['pve3', 9]]);
    assert.equal(report.cluster.unreachable.map((u: { node: string }) => u.node), ['pve4', 'pve5']);
    assert.match(report.cluster.unreachable[0].error, /^ssh root@127\.0\.0\.4 failed \(exit 255\): ssh: connect to host 127\.0\.0\.4 port 22: Connection refused$/);
    assert.match(report.cluster.unreachable[1].error, /^ssh root@127\.0\.0\.5 failed \(exit 255\): Host key verification failed\.$/);
    assert.equal(readFileSync(log, 'utf8').trim().split('\n'), [remoteCaptureCommand(), remoteCaptureCommand()], 'what sshd handed the remote shell, twice: exactly the command pve-dm built');
    assert.is(code, 2);
    assert.equal(changes, []);
  } finally {
    server.kill();
  }
}, 60_000);

/** Resolves once something listens on host:port (sshd has started), or fails with its log. */
async function waitForPort(host: string, port: number, log: () => string): Promise<void> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect({ host, port }, () => (socket.destroy(), resolve(true)));
      socket.on('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`sshd did not start: ${log()}`);
}


/** `pve-dm --cluster ARGS` on a real pseudo-terminal (util-linux `script`); pve2 answers after a few seconds. */
async function onTerminal(args: string[]): Promise<{ screen: string; code: number }> {
  const served = await answers();
  const bin = tempDir();
  writeFileSync(path.join(bin, 'ssh'), `#!/bin/sh
for arg in "$@"; do case "$arg" in HostKeyAlias=*) alias="\${arg#HostKeyAlias=}";; esac; done
[ "$alias" = pve2 ] && sleep 7
exec cat "${served}/$alias.json"
`, { mode: 0o755 });
  const out = path.join(tempDir(), 'state.json');
  const command = `stty cols 120 rows 40; exec ${process.execPath} --import tsx test/support/cluster-tty.ts ${out} ${args.join(' ')}`;
  const child = spawn('script', ['-q', '-e', '-c', command, '/dev/null'], { cwd: PROJECT, env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, NO_COLOR: '1' }, stdio: ['pipe', 'pipe', 'pipe'] });
  let screen = '';
  child.stdout.on('data', (chunk) => (screen += chunk.toString()));
  await new Promise((resolve) => child.on('close', resolve));
  child.stdin.end();
  return { screen: screen.replace(/\u001b\[[0-9;?]*[A-Za-z]/g, ''), code: (JSON.parse(readFileSync(out, 'utf8')) as { code: number }).code };
}

test('--cluster on a terminal: progress on stderr while the nodes answer, naming the slow one; never under --json', async () => {
  const tty = await onTerminal([]);
  assert.match(tty.screen, 'Asking the other nodes of the cluster');
  assert.match(tty.screen, /1 of 2 nodes answered; waiting for pve2 \(\d s\)/);
  assert.match(tty.screen, '2 of 2 nodes answered');
  assert.match(tty.screen, 'Cluster of 3 nodes', 'then the report');
  const json = await onTerminal(['--json']);
  assert.not.match(json.screen, /nodes answered|Asking the other nodes/);
  assert.is(JSON.parse(json.screen.slice(json.screen.indexOf('{'))).cluster.nodes.length, 3);
});

test('progress is shown only for a live --cluster run with console output on a terminal', () => {
  assert.ok(showsClusterProgress({ cluster: true, format: 'console' }, true));
  assert.not.ok(showsClusterProgress({ cluster: true, format: 'console' }, false), 'no terminal');
  for (const format of ['json', 'nagios', 'checkmk'] as const) assert.not.ok(showsClusterProgress({ cluster: true, format }, true), format);
  assert.not.ok(showsClusterProgress({ cluster: false, format: 'console' }, true), '--root captures: nothing to wait for');
});

test.run();
