// Settings and notifying, end to end through the command line (issue 3, "Notifiers"): the settings
// file (--config, pve-dm.conf), its mode when it holds a secret, --notify always|problems|change
// with its state file, the JSON report's `notifications`, and secrets kept out of every output and
// off every command line. The notifier is the project's own webhook, copied into a test folder so
// that no other notifier of plugins/ takes part, against a real HTTP server on 127.0.0.1.
import { spawn } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import * as assert from 'uvu/assert';
import { describeRun, isolatedEnv, noStackTrace, PROJECT, refusedWith, runCli, runMain, SAMPLES, tempDir, test, withTimeout, type CliRun } from './harness.ts';
import { refusedUrl, withServer, type TestServer } from './support/http-server.ts';

const PVE_DM = path.join(PROJECT, 'pve-dm.ts');
const DEFAULT_INSTALL = path.join(SAMPLES, 'default-install');
const MULTI_POOL = path.join(SAMPLES, 'multi-pool');

const tmp = () => tempDir('pve-dm-notify-');

/** A plugin folder (root's, 0755) with a copy of plugins/webhook.ts (0644), its import made absolute. */
function webhookFolder(): string {
  const parent = tmp();
  writeFileSync(path.join(parent, 'package.json'), '{"type":"module"}\n');
  const dir = path.join(parent, 'plugins');
  mkdirSync(dir);
  chmodSync(dir, 0o755);
  const text = readFileSync(path.join(PROJECT, 'plugins', 'webhook.ts'), 'utf8');
  const copy = text.replace(/(['"])(?:\.\.\/)+pve-dm\.ts\1/g, JSON.stringify(pathToFileURL(PVE_DM).href));
  assert.is.not(copy, text, 'the webhook plugin imports pve-dm.ts');
  writeFileSync(path.join(dir, 'webhook.ts'), copy);
  chmodSync(path.join(dir, 'webhook.ts'), 0o644);
  return dir;
}

/** A settings file with this text and mode. */
function settingsFile(text: string, mode: number): string {
  const file = path.join(tmp(), 'pve-dm.conf');
  writeFileSync(file, text);
  chmodSync(file, mode);
  return file;
}


const run = (args: string[], env: Record<string, string> = {}) => runMain(args, env);
const describe = describeRun;
const refused = (r: CliRun) => refusedWith(r);




function report(r: CliRun): Record<string, any> {
  try {
    return JSON.parse(r.stdout);
  } catch {
    throw new assert.Assertion({ message: `stdout is not one JSON report: ${describe(r)}`, generated: false, operator: 'json', expects: 'JSON', actual: r.stdout.slice(0, 500) });
  }
}

const stderrLines = (r: CliRun) => r.stderr.split('\n').filter(Boolean);

/** A run of a sample with the webhook folder, JSON out, and a state file of the test's. */
const analyse = (sample: string, folder: string, state: string, extra: string[] = [], env: Record<string, string> = {}) =>
  run(['--root', sample, '--json', '--plugins', folder, '--state', state, ...extra], env);

/** A webhook server answering `ok` (or the script given), for the length of `body`. */
const withWebhook = (body: (server: TestServer) => Promise<void>, script?: Parameters<typeof withServer>[0]) =>
  withServer(script ?? [{ status: 200, body: 'ok' }], body);

const SENT = { plugin: 'webhook', ok: true, detail: 'HTTP 200' };

// ─── Settings ────────────────────────────────────────────────────────────────────────────────

test('--config FILE with PVE_DM_WEBHOOK_URL activates the webhook: it delivers to a local server', async () => {
  const folder = webhookFolder();
  await withWebhook(async (server) => {
    const config = settingsFile(`# pve-dm settings\n\nPVE_DM_HTTP_TIMEOUT_MS=5000\nPVE_DM_WEBHOOK_URL="${server.url}/hooks/pve-dm"\n`, 0o600);
    const state = path.join(tmp(), 'state.json');
    const without = await analyse(MULTI_POOL, folder, state);
    assert.is(without.code, 2, describe(without));
    assert.equal(report(without).notifications, [], 'not configured without the file');
    assert.is(server.received.length, 0);

    const r = await analyse(MULTI_POOL, folder, state, ['--config', config]);
    assert.is(r.code, 2, describe(r));
    assert.equal(report(r).notifications, [SENT]);
    assert.is(server.received.length, 1);
    const [request] = server.received;
    assert.is(request?.method, 'POST');
    assert.is(request?.path, '/hooks/pve-dm', 'the quotes around the value are not part of it');
    assert.is(JSON.parse(request?.body ?? '').node, 'pve-prd-03');
    assert.is(r.stderr, '', describe(r));
  });
});

test('the environment overrides the settings file', async () => {
  const folder = webhookFolder();
  await withWebhook(async (fromFile) => {
    await withWebhook(async (fromEnv) => {
      const config = settingsFile(`PVE_DM_WEBHOOK_URL=${fromFile.url}/file\n`, 0o600);
      const r = await analyse(MULTI_POOL, folder, path.join(tmp(), 'state.json'), ['--config', config], { PVE_DM_WEBHOOK_URL: `${fromEnv.url}/env` });
      assert.is(r.code, 2, describe(r));
      assert.equal(report(r).notifications, [SENT]);
      assert.equal(fromEnv.received.map((request) => request.path), ['/env']);
      assert.is(fromFile.received.length, 0);
    });
  });
});

test('a settings file holding a secret must be 0600 (or stricter): 0644, 0640 and 0604 are refused with "chmod 600"', async () => {
  const folder = webhookFolder();
  const secret = 'mj-secret-5e8f21c7d0';
  await withWebhook(async (server) => {
    for (const key of ['PVE_DM_MAILJET_SECRET', 'PVE_DM_SLACK_WEBHOOK', 'PVE_DM_WEBHOOK_URL']) {
      const value = key === 'PVE_DM_WEBHOOK_URL' ? `${server.url}/${secret}` : secret;
      for (const mode of [0o644, 0o640, 0o604, 0o660]) {
        const config = settingsFile(`PVE_DM_WEBHOOK_URL=${server.url}/hook\n${key}=${value}\n`, mode);
        const r = await analyse(MULTI_POOL, folder, path.join(tmp(), 'state.json'), ['--config', config]);
        const message = refused(r);
        assert.ok(message.includes(config), `names the file: ${message}`);
        assert.ok(message.includes('chmod 600'), `says what to do: ${message}`);
        assert.ok(message.includes(key), `names the secret's key: ${message}`);
        assert.not.ok(r.stdout.includes(secret) || r.stderr.includes(secret), 'the secret is not printed');
        assert.equal(report(r), { version: 1, error: message });
      }
      for (const mode of [0o600, 0o400]) {
        const config = settingsFile(`PVE_DM_WEBHOOK_URL=${server.url}/hook\n${key}=${value}\n`, mode);
        const r = await analyse(MULTI_POOL, folder, path.join(tmp(), 'state.json'), ['--config', config]);
        assert.is(r.code, 2, `mode ${mode.toString(8)} is accepted: ${describe(r)}`);
        assert.equal(report(r).notifications, [SENT]);
      }
    }
    // 2 modes × 3 keys delivered; the refused files sent nothing.
    assert.is(server.received.length, 6);
  });
}, 60_000);

test('a settings file without a secret may be 0644', async () => {
  const config = settingsFile('PVE_DM_HTTP_TIMEOUT_MS=5000\nPVE_DM_MAIL_TO=root\n', 0o644);
  const r = await analyse(MULTI_POOL, webhookFolder(), path.join(tmp(), 'state.json'), ['--config', config]);
  assert.is(r.code, 2, describe(r));
  assert.equal(report(r).notifications, []);
});

test('a missing --config FILE is an error; a missing default pve-dm.conf is not', async () => {
  const missing = path.join(tmp(), 'nowhere', 'pve-dm.conf');
  const r = await run(['--root', MULTI_POOL, '--json', '--no-plugins', '--config', missing]);
  const message = refused(r);
  assert.ok(message.includes(missing), message);
  assert.equal(report(r), { version: 1, error: message });

  assert.not.ok(existsSync(path.join(PROJECT, 'pve-dm.conf')), 'precondition: no pve-dm.conf beside pve-dm.ts');
  const plain = await run(['--root', MULTI_POOL, '--json', '--no-plugins']);
  assert.is(plain.code, 2, describe(plain));
  assert.is(plain.stderr, '');
});

test('a malformed settings line is refused naming FILE:LINE, without echoing the line (it may hold a secret)', async () => {
  const secret = 'xoxb-leaky-7731';
  const config = settingsFile(`# settings\nPVE_DM_HTTP_TIMEOUT_MS=5000\nPVE_DM_SLACK_WEBHOOK https://hooks.example/${secret}\n`, 0o600);
  const r = await run(['--root', MULTI_POOL, '--json', '--no-plugins', '--config', config]);
  const message = refused(r);
  assert.ok(message.startsWith(`${config}:3:`), message);
  assert.not.ok(r.stdout.includes(secret) || r.stderr.includes(secret), 'the line is not echoed');
  // The same line number with CRLF line ends.
  const crlf = settingsFile('# settings\r\nPVE_DM_HTTP_TIMEOUT_MS=5000\r\nnot a setting\r\n', 0o600);
  assert.ok(refused(await run(['--root', MULTI_POOL, '--no-plugins', '--config', crlf])).startsWith(`${crlf}:3:`));
});

// ─── --notify always | problems | change ─────────────────────────────────────────────────────

test('--notify problems (the default) sends for a sample with problems, not for a healthy one (grade A+)', async () => {
  const folder = webhookFolder();
  await withWebhook(async (server) => {
    const env = { PVE_DM_WEBHOOK_URL: server.url };
    for (const mode of [[], ['--notify', 'problems']]) {
      const state = path.join(tmp(), 'state.json');
      const healthy = await analyse(DEFAULT_INSTALL, folder, state, mode, env);
      assert.is(healthy.code, 0, describe(healthy));
      assert.equal(report(healthy).notifications, []);
      assert.is(server.received.length, 0, 'nothing sent for A+');
      const problems = await analyse(MULTI_POOL, folder, state, mode, env);
      assert.is(problems.code, 2, describe(problems));
      assert.equal(report(problems).notifications, [SENT]);
      assert.is(server.received.length, 1);
      assert.is(JSON.parse(server.received[0]?.body ?? '').grade, 'F');
      server.received.length = 0;
      assert.not.ok(existsSync(state), 'problems keeps no state');
    }
  });
}, 60_000);

test('--notify always sends for both', async () => {
  const folder = webhookFolder();
  await withWebhook(async (server) => {
    const env = { PVE_DM_WEBHOOK_URL: server.url };
    const state = path.join(tmp(), 'state.json');
    const healthy = await analyse(DEFAULT_INSTALL, folder, state, ['--notify', 'always'], env);
    assert.is(healthy.code, 0, describe(healthy));
    assert.equal(report(healthy).notifications, [SENT]);
    const problems = await analyse(MULTI_POOL, folder, state, ['--notify', 'always'], env);
    assert.is(problems.code, 2, describe(problems));
    assert.equal(report(problems).notifications, [SENT]);
    assert.equal(server.received.map((request) => JSON.parse(request.body).grade), ['A+', 'F']);
  });
});

test('--notify change: sends first, not again for the same result, again when it changes; keeps the old state when every notifier failed', async () => {
  const folder = webhookFolder();
  const sample = path.join(tmp(), 'multi-pool');
  cpSync(MULTI_POOL, sample, { recursive: true });
  const state = path.join(tmp(), 'not-yet', 'notify-state.json');
  const refusedAt = await refusedUrl();
  await withWebhook(async (server) => {
    const up = { PVE_DM_WEBHOOK_URL: server.url };
    const change = (env: Record<string, string>, root = sample) => analyse(root, folder, state, ['--notify', 'change'], env);

    const first = await change(up);
    assert.is(first.code, 2, describe(first));
    assert.equal(report(first).notifications, [SENT]);
    assert.is(server.received.length, 1);
    assert.ok(existsSync(state), 'the state is kept');
    const kept = readFileSync(state, 'utf8');
    assert.type(JSON.parse(kept).fingerprint, 'string');

    const same = await change(up);
    assert.is(same.code, 2, describe(same));
    assert.equal(report(same).notifications, [], 'the same result is not sent twice');
    assert.is(server.received.length, 1);
    assert.is(readFileSync(state, 'utf8'), kept);

    // The node changes: VM 888's stale zero mapping is gone.
    const dmsetup = path.join(sample, 'dmsetup.txt');
    writeFileSync(dmsetup, readFileSync(dmsetup, 'utf8').split('\n').filter((line) => !line.startsWith('ssd--ha01-vm--888--disk--0|')).join('\n'));

    const failed = await change({ PVE_DM_WEBHOOK_URL: refusedAt });
    assert.is(failed.code, 2, describe(failed));
    const [outcome] = report(failed).notifications;
    assert.is(outcome?.ok, false, describe(failed));
    assert.is(readFileSync(state, 'utf8'), kept, 'nobody was told: the old state stays');

    const retried = await change(up);
    assert.is(retried.code, 2, describe(retried));
    assert.equal(report(retried).notifications, [SENT], 'the change is sent on the next run');
    assert.is(server.received.length, 2);
    assert.is(JSON.parse(server.received[1]?.body ?? '').summary.tombstone, 1, 'the changed result');
    assert.is.not(readFileSync(state, 'utf8'), kept);

    const again = await change(up);
    assert.equal(report(again).notifications, []);
    assert.is(server.received.length, 2);

    // Another result altogether (a healthy node): change sends it, healthy or not.
    const other = await change(up, DEFAULT_INSTALL);
    assert.is(other.code, 0, describe(other));
    assert.equal(report(other).notifications, [SENT]);
    assert.is(server.received.length, 3);
  });
}, 90_000);

test('--notify with an unknown mode: exit 3, one line', async () => {
  const r = await run(['--root', MULTI_POOL, '--json', '--no-plugins', '--notify', 'sometimes']);
  const message = refused(r);
  assert.match(message, /^--notify sometimes: .*always.*problems.*change/);
  assert.equal(report(r), { version: 1, error: message });
  const empty = await run(['--root', MULTI_POOL, '--no-plugins', '--notify', '']);
  refused(empty);
});

// ─── The report of what was sent ─────────────────────────────────────────────────────────────

test('the JSON report carries notifications [{plugin, ok, detail}]; a failed one is on stderr and leaves the exit code alone', async () => {
  const folder = webhookFolder();
  const down = { PVE_DM_WEBHOOK_URL: await refusedUrl() };
  const state = path.join(tmp(), 'state.json');
  for (const [sample, code] of [[DEFAULT_INSTALL, 0], [MULTI_POOL, 2]] as const) {
    const r = await analyse(sample, folder, state, ['--notify', 'always'], down);
    assert.is(r.code, code, `the exit code of the health check: ${describe(r)}`);
    noStackTrace(r);
    const notifications = report(r).notifications as { plugin: string; ok: boolean; detail: string }[];
    assert.is(notifications.length, 1);
    assert.equal(Object.keys(notifications[0] ?? {}).sort(), ['detail', 'ok', 'plugin']);
    assert.is(notifications[0]?.plugin, 'webhook');
    assert.is(notifications[0]?.ok, false);
    assert.match(notifications[0]?.detail ?? '', /^plugin webhook, hook notify: 127\.0\.0\.1:\d+: ECONNREFUSED/);
    assert.equal(stderrLines(r), [`pve-dm: notification failed: ${notifications[0]?.detail}`]);
  }
  // The console report says so too, and the run still writes its HTML report.
  const html = path.join(tmp(), 'report.html');
  const console = await run(['--root', MULTI_POOL, '--report-only', '--html', html, '--plugins', folder, '--state', state], down);
  assert.is(console.code, 2, describe(console));
  assert.match(console.stdout, /^Notifications: webhook FAILED$/m);
  assert.is(stderrLines(console).length, 1);
  assert.match(stderrLines(console)[0] ?? '', /^pve-dm: notification failed: plugin webhook, hook notify: /);
  assert.ok(existsSync(html));
}, 60_000);

test('a state file that cannot be written does not lose the report (nor turn it into exit 3)', async () => {
  const folder = webhookFolder();
  const notADir = path.join(tmp(), 'a-file');
  writeFileSync(notADir, 'x');
  await withWebhook(async (server) => {
    const r = await analyse(MULTI_POOL, folder, path.join(notADir, 'sub', 'state.json'), ['--notify', 'change'], { PVE_DM_WEBHOOK_URL: server.url });
    assert.is(server.received.length, 1, 'the notification went out');
    assert.is(r.code, 2, describe(r));
    assert.equal(report(r).notifications, [SENT]);
    assert.is(stderrLines(r).length, 1, describe(r));
    assert.ok(r.stderr.includes(path.join(notADir, 'sub', 'state.json')), `names the state file: ${describe(r)}`);
  });
});

// ─── Secrets ─────────────────────────────────────────────────────────────────────────────────

/** The command lines of a process and all its descendants, from /proc. */
function commandLines(root: number): string[][] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // gone meanwhile
    }
  }
  const out: string[][] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    try {
      out.push(readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean));
    } catch {
      // gone meanwhile
    }
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** A server that holds the first request until released (and answers the others at once), so a test can look at the running pve-dm. */
async function holdingServer() {
  let arrived!: () => void;
  const arrival = new Promise<void>((resolve) => (arrived = resolve));
  const bodies: string[] = [];
  const waiting: ServerResponse[] = [];
  const server = createServer((request, response) => {
    let body = '';
    request.setEncoding('utf8');
    request.on('data', (chunk) => (body += chunk));
    request.on('end', () => {
      bodies.push(body);
      if (bodies.length > 1) return void response.writeHead(200).end('ok');
      waiting.push(response);
      arrived();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    bodies,
    arrival,
    release: () => waiting.splice(0).forEach((response) => response.writeHead(200).end('ok')),
    close: () => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))),
  };
}

test('no secret on stdout, stderr, in the JSON or HTML report, in what is sent, or on any command line of the run', async () => {
  const folder = webhookFolder();
  const token = 'whk-tok-93b1f0e4aa';
  const mailjet = 'mj-secret-27c4d9';
  const slack = 'T000/B000/slack-9f8e7d';
  const gotify = 'gotify-tok-51a2';
  const secrets = [token, mailjet, slack, gotify];
  const leaks = (text: string) => secrets.filter((secret) => text.includes(secret));
  const server = await holdingServer();
  let child: ReturnType<typeof spawn> | undefined;
  try {
    // The webhook's URL (with its token) from a 0600 settings file, other secrets in the environment.
    const config = settingsFile(`PVE_DM_WEBHOOK_URL=${server.url}/hooks/${token}\nPVE_DM_MAILJET_SECRET=${mailjet}\n`, 0o600);
    const env = ({ ...isolatedEnv(), PVE_DM_SLACK_WEBHOOK: `https://hooks.slack.invalid/services/${slack}`, PVE_DM_GOTIFY_TOKEN: gotify, NO_COLOR: '1' });
    const args = ['--root', MULTI_POOL, '--json', '--plugins', folder, '--state', path.join(tmp(), 'state.json'), '--config', config];
    child = spawn(process.execPath, ['--import', 'tsx', PVE_DM, ...args], { cwd: PROJECT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk) => (stdout += chunk));
    child.stderr?.on('data', (chunk) => (stderr += chunk));
    const running = child;
    const exited = new Promise<number | null>((resolve) => running.on('close', resolve));

    // While the notification is in flight, every process of the run, and their arguments.
    // Its own limit, so that a run that never gets here fails the test (and is killed below).
    await withTimeout('the notification to arrive', 30_000, () => server.arrival);
    const lines = commandLines(running.pid as number);
    assert.ok(lines.some((argv) => argv.includes(PVE_DM)), `found the run itself: ${JSON.stringify(lines)}`);
    for (const argv of lines) assert.equal(leaks(argv.join(' ')), [], `a command line holds a secret: ${argv.join(' ')}`);
    server.release();

    const code = await withTimeout('the run to end', 30_000, () => exited);
    assert.is(code, 2, `exit ${code}\n${stdout.slice(0, 500)}\n${stderr}`);
    assert.equal(JSON.parse(stdout).notifications, [SENT]);
    assert.equal(leaks(stdout), [], 'stdout (the JSON report)');
    assert.equal(leaks(stderr), [], 'stderr');
    assert.is(server.bodies.length, 1);
    assert.equal(leaks(server.bodies[0] ?? ''), [], 'the report sent');

    // The console and HTML reports.
    const html = path.join(tmp(), 'report.html');
    const consoleRun = await runCli(['--root', MULTI_POOL, '--report-only', '--html', html, '--plugins', folder, '--state', path.join(tmp(), 'state.json'), '--config', config], env);
    assert.is(consoleRun.code, 2, describe(consoleRun));
    assert.equal(leaks(consoleRun.stdout + consoleRun.stderr), []);
    assert.equal(leaks(readFileSync(html, 'utf8')), [], 'the HTML report');

    // A failed delivery, to a URL with the token in it.
    const down = settingsFile(`PVE_DM_WEBHOOK_URL=${await refusedUrl()}/hooks/${token}?key=${token}\n`, 0o600);
    const failed = await runCli([...args.slice(0, -1), down], env);
    assert.is(failed.code, 2, describe(failed));
    assert.is(report(failed).notifications[0]?.ok, false);
    assert.equal(leaks(failed.stdout + failed.stderr), [], describe(failed));

    // The list of plugins.
    const list = await runCli(['plugins', '--plugins', folder, '--config', config], env);
    assert.match(list.stdout, /webhook\s+webhook\.ts\s+notify \(configured\)/);
    assert.equal(leaks(list.stdout + list.stderr), []);
  } finally {
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    server.release();
    await server.close();
  }
}, 60_000);

test.run();
