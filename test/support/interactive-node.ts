// Runs pve-dm's interactive cleanup on a model node, on this process's terminal, for a test that
// types at it through a pseudo-terminal. At the end it writes what the node's state became.
import { writeFileSync } from 'node:fs';
import type * as PveDm from '../../pve-dm.ts';
import { changing, scenario } from './fake-node.ts';

// pve-dm.ts, or the module given (the bundle, with @clack/prompts inside it).
const [out, module = '../../pve-dm.ts'] = process.argv.slice(2);
const { main } = (await import(module)) as typeof PveDm;
const s = scenario();
const io = { stdout: process.stdout, stderr: process.stderr, isTty: Boolean(process.stdout.isTTY) };
const code = await main(['--journal', s.journal, '--no-plugins', '--html', `${s.root}/report.html`], io, { exec: s.node.exec, liveRoot: s.root, hostname: 'pve1' });
writeFileSync(out as string, JSON.stringify({ code, changes: changing(s.node.calls), devices: [...s.node.dm.keys()].sort() }));
s.done();
