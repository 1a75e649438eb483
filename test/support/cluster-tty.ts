// Runs `pve-dm --cluster` on a model node pve1, on this process's terminal, for a test that reads
// what a terminal shows. Its members pve2 and pve3 answer through the `ssh` first on PATH (the
// test's stand-in); the arguments after the first are pve-dm's own (--json, --format ...).
import { writeFileSync } from 'node:fs';
import { execProcess, main, type Exec } from '../../pve-dm.ts';
import { put, scenario } from './fake-node.ts';

const [out, ...argv] = process.argv.slice(2);
const s = scenario();
const nodelist = { pve1: { id: 1, online: 1, ip: '192.0.2.1' }, pve2: { id: 2, online: 1, ip: '192.0.2.2' }, pve3: { id: 3, online: 1, ip: '192.0.2.3' } };
put(s.root, 'etc/pve/.members', `${JSON.stringify({ nodename: 'pve1', version: 3, nodelist })}\n`);
const exec: Exec = (command, args, options) => (command === 'ssh' ? execProcess(command, args, options) : s.node.exec(command, args, options));
const io = { stdout: process.stdout, stderr: process.stderr, isTty: Boolean(process.stdout.isTTY) };
const code = await main(['--cluster', '--report-only', '--no-plugins', '--journal', s.journal, ...argv], io, { exec, liveRoot: s.root, hostname: 'pve1' });
writeFileSync(out as string, JSON.stringify({ code }));
s.done();
