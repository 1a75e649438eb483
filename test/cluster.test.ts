// Several nodes analysed as one cluster (issue 6): samples/cluster-migrated (pve1) with its
// neighbours pve2 and pve3, whose findings were worked out by hand from the captures.
import path from 'node:path';
import * as assert from 'uvu/assert';
import { analyseCluster, createRunner, defaultStages, runPipeline, type ClusterResult } from '../pve-dm.ts';
import { SAMPLES, test } from './harness.ts';

const NODES = ['cluster-migrated', 'cluster-migrated-pve2', 'cluster-migrated-pve3'].map((name) => path.join(SAMPLES, name));

async function cluster(roots = NODES, unreachable: ClusterResult['unreachable'] = []): Promise<ClusterResult> {
  const runs = await Promise.all(
    roots.map((root) => runPipeline(defaultStages, { root, vmids: [], json: false, console: false, html: false, color: false, runner: createRunner({ allowChanges: false }) })),
  );
  return analyseCluster(runs, unreachable, '2026-11-25T12:00:00.000Z');
}

test('three nodes: each a section of its own, the sums and the worst grade, F for a critical finding', async () => {
  const result = await cluster();
  assert.equal(result.nodes.map((node) => [node.node, node.grade, node.exitCode]), [['pve1', 'B', 1], ['pve2', 'B', 1], ['pve3', 'B', 1]]);
  assert.equal(result.summary, { entries: 36, valid: 11, duplicate: 0, tombstone: 7, ignored: 18 });
  assert.is(result.grade, 'F');
  assert.is(result.exitCode, 2);
});

test('what only the cluster shows: shared LVs active on two nodes, and a disk active off its guest\'s node', async () => {
  const { findings } = await cluster();
  const shown = findings.map((f) => [f.severity, f.kind, `${f.vg}/${f.lv}`, f.vmid, f.home, f.running, f.activeOn.map((a) => a.node).join(',')]);
  assert.equal(shown, [
    ['critical', 'active-on-several-nodes', 'san01/vm-300-disk-0', 300, 'pve2', true, 'pve1,pve2'],
    ['critical', 'active-on-several-nodes', 'san02/vm-320-disk-0', 320, 'pve2', true, 'pve1,pve2'],
    ['warning', 'active-on-several-nodes', 'san01/vm-117-disk-0', 117, 'pve1', true, 'pve1,pve2'],
    ['warning', 'active-off-home-node', 'san01/vm-118-disk-0', 118, 'pve1', false, 'pve3'],
    ['warning', 'active-on-several-nodes', 'san01/vm-310-disk-0', 310, 'pve3', false, 'pve1,pve3'],
  ]);
  assert.is(findings[0]?.message, 'san01/vm-300-disk-0 is active on pve1 and pve2 while guest 300 runs on pve2: two nodes writing one LV corrupt it (Proxmox bug 4997); deactivate it where the guest does not run');
  assert.is(findings[2]?.message, 'san01/vm-117-disk-0 is active on pve1 and pve2 while guest 117 migrates (lock: migrate): expected during a migration; look again once it has ended');
  assert.is(findings[3]?.message, 'san01/vm-118-disk-0 of guest 118 (it lives on pve1) is active on pve3, where the guest does not live');
  assert.is(findings[4]?.message, 'san01/vm-310-disk-0 is active on pve1 and pve3; guest 310 lives on pve3 and is not running: deactivate it where the guest does not live');
  // The remedy for each stale activation is the node's own: where the guest runs there is none.
  assert.equal(findings[0]?.activeOn, [
    { node: 'pve1', name: 'san01-vm--300--disk--0', remedy: 'lvchange -an san01/vm-300-disk-0' },
    { node: 'pve2', name: 'san01-vm--300--disk--0', remedy: null },
  ]);
});

test('the local VG of each node is its own: pve/vm-302-disk-0 on pve2 is not "active on several nodes"', async () => {
  const { findings } = await cluster();
  assert.not.ok(findings.some((f) => f.vg === 'pve'));
});

test('one node alone shows no cluster finding a missing neighbour would explain; an unreachable node is a warning', async () => {
  const alone = await cluster([NODES[1] as string]);
  assert.equal(alone.findings.map((f) => `${f.kind} ${f.vg}/${f.lv}`), ['active-off-home-node san01/vm-117-disk-0']);
  const partial = await cluster([NODES[2] as string], [{ node: 'pve2', error: 'ssh: connect to host pve2 port 22: Connection timed out' }]);
  assert.is(partial.exitCode, 1);
  assert.equal(partial.unreachable, [{ node: 'pve2', error: 'ssh: connect to host pve2 port 22: Connection timed out' }]);
});

test.run();
