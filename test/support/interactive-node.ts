// Runs pve-dm's interactive cleanup on a model node, on this process's terminal, for a test that
// types at it through a pseudo-terminal. At the end it writes what the node's state became.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type * as PveDm from '../../pve-dm.ts';
import { conflicts } from './conflict-node.ts';
import { changing, scenario } from './fake-node.ts';

// pve-dm.ts, or the module given (the bundle, with @clack/prompts inside it).
const [out, module = '../../pve-dm.ts'] = process.argv.slice(2);
const { main } = (await import(module)) as typeof PveDm;
// FAKE_NODE_THIN=1: VG pve's LVs are thin, so VM 100's unreferenced disk is one its rescan lists.
// FAKE_NODE=conflicts: the node of test/support/conflict-node.ts.
const s = process.env.FAKE_NODE === 'conflicts' ? conflicts() : scenario({ thin: process.env.FAKE_NODE_THIN === '1' });
const io = { stdout: process.stdout, stderr: process.stderr, isTty: Boolean(process.stdout.isTTY) };
const code = await main(['--journal', s.journal, '--no-plugins', '--html', `${s.root}/report.html`], io, { exec: s.node.exec, liveRoot: s.root, hostname: 'pve1' });
const journal = existsSync(s.journal) ? readFileSync(s.journal, 'utf8').trim().split('\n').filter(Boolean).map((line) => JSON.parse(line)) : [];
const config100 = existsSync(`${s.root}/etc/pve/nodes/pve1/qemu-server/100.conf`)
  ? readFileSync(`${s.root}/etc/pve/nodes/pve1/qemu-server/100.conf`, 'utf8')
  : '';
writeFileSync(out as string, JSON.stringify({ code, changes: changing(s.node.calls), devices: [...s.node.dm.keys()].sort(), journal, config100 }));
s.done();
