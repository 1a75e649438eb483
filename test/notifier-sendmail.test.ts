// The sendmail notifier against a stand-in sendmail (a shell script that keeps its arguments and
// standard input): the exact argv, the message parsed back (headers, the RFC 2047 subject, the
// MIME parts decoded and compared byte for byte), recipients, failures, and header injection.
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import * as assert from 'uvu/assert';
import { createRunner, notificationSubject, notificationText, notifyAll, type Notification, type NotifyReports } from '../pve-dm.ts';
import { decodeEncodedWords, loadNotifier, sampleResult } from './support/notify.ts';
import { tempDir, test } from './harness.ts';

const sendmail = await loadNotifier('sendmail');
const runner = createRunner({ allowChanges: false });

interface StandIn {
  program: string;
  /** The arguments it was run with, or null if it never ran. */
  argv(): string[] | null;
  /** What it read on standard input. */
  stdin(): string;
}

/** A stand-in sendmail in a fresh folder: keeps "$@" (NUL-separated) and stdin, then runs `tail`. */
function standIn(tail = 'exit 0'): StandIn {
  const dir = tempDir('pve-dm-sendmail-');
  const program = path.join(dir, 'sendmail');
  const q = (file: string) => `'${path.join(dir, file)}'`;
  writeFileSync(program, `#!/bin/sh\nprintf '%s\\0' "$@" > ${q('argv')}\necho "$#" > ${q('argc')}\ncat > ${q('stdin')}\n${tail}\n`);
  chmodSync(program, 0o755);
  return {
    program,
    argv() {
      if (!existsSync(path.join(dir, 'argc'))) return null;
      const count = Number(readFileSync(path.join(dir, 'argc'), 'utf8'));
      const args = readFileSync(path.join(dir, 'argv'), 'utf8').split('\0').slice(0, -1);
      return count === 0 ? [] : args;
    },
    stdin: () => readFileSync(path.join(dir, 'stdin'), 'utf8'),
  };
}

/** notifyAll on the sendmail plugin with these settings (no HTTP), and the reports it was given. */
async function deliver(settings: Record<string, string>, override: Partial<NotifyReports> = {}): Promise<{ outcome: Notification[]; reports: NotifyReports }> {
  const { result, json, html } = await sampleResult('multi-pool');
  const reports = { json, html, subject: notificationSubject(result), text: notificationText(result), ...override };
  const http = () => Promise.reject(new Error('sendmail must not use HTTP'));
  const outcome = await notifyAll([sendmail], result, reports, { setting: (key) => settings[key], http, runner });
  return { outcome, reports };
}

interface Parsed {
  headerLines: string[];
  headers: Map<string, string[]>;
  body: string;
}

/** Splits a message at the first empty line; headers unfolded, by lower-case name. */
function parseMessage(message: string): Parsed {
  const split = message.indexOf('\n\n');
  assert.ok(split > 0, 'a header block, an empty line, a body');
  const headerLines = message.slice(0, split).split('\n');
  const headers = new Map<string, string[]>();
  let last: string[] | null = null;
  for (const line of headerLines) {
    if (/^[ \t]/.test(line)) {
      assert.ok(last, 'a continuation line follows a header');
      last[last.length - 1] += line;
      continue;
    }
    const m = /^([!-9;-~]+):[ \t]*(.*)$/.exec(line);
    assert.ok(m, `not a header line: ${JSON.stringify(line)}`);
    const name = (m[1] ?? '').toLowerCase();
    last = headers.get(name) ?? [];
    last.push(m[2] ?? '');
    headers.set(name, last);
  }
  return { headerLines, headers, body: message.slice(split + 2) };
}

/** The one value of a header that must occur exactly once. */
function one(parsed: Parsed, name: string): string {
  const values = parsed.headers.get(name.toLowerCase()) ?? [];
  assert.is(values.length, 1, `exactly one ${name} header`);
  return values[0] ?? '';
}


/** The MIME parts of a multipart body, each with its headers and decoded (base64) content. */
function mimeParts(body: string, boundary: string): { headers: Map<string, string[]>; bytes: Buffer; lines: string[] }[] {
  const lines = body.split('\n');
  const delimiters = lines.flatMap((line, index) => (line === `--${boundary}` ? [index] : []));
  const closing = lines.indexOf(`--${boundary}--`);
  assert.ok(closing > 0, 'a closing delimiter');
  assert.is(lines.filter((line) => line.includes(boundary)).length, delimiters.length + 1, 'the boundary occurs nowhere but in delimiters');
  return delimiters.map((start, index) => {
    const end = delimiters[index + 1] ?? closing;
    assert.ok(end <= closing, 'every part before the closing delimiter');
    const part = parseMessage(`${lines.slice(start + 1, end).join('\n')}`);
    assert.is(one(part, 'Content-Transfer-Encoding'), 'base64');
    const content = part.body.split('\n').filter((line) => line !== '');
    for (const line of content) assert.match(line, /^[A-Za-z0-9+/]+={0,2}$/, 'base64 only');
    const bytes = Buffer.from(content.join(''), 'base64');
    assert.is(bytes.toString('base64'), content.join(''), 'canonical base64');
    return { headers: part.headers, bytes, lines: content };
  });
}

test('sendmail: not configured without PVE_DM_MAIL_TO or PVE_DM_MAIL=1/yes/true, so not run', async () => {
  const fake = standIn();
  const unconfigured: Record<string, string>[] = [{}, { PVE_DM_SENDMAIL: fake.program }, { PVE_DM_MAIL: '0', PVE_DM_SENDMAIL: fake.program }, { PVE_DM_MAIL: 'no', PVE_DM_SENDMAIL: fake.program }];
  for (const settings of unconfigured) {
    assert.equal((await deliver(settings)).outcome, [], JSON.stringify(settings));
  }
  assert.is(fake.argv(), null, 'never ran');
  for (const value of ['1', 'yes', 'TRUE']) assert.ok(sendmail.configured?.((key) => (key === 'PVE_DM_MAIL' ? value : undefined)), value);
  assert.ok(sendmail.configured?.((key) => (key === 'PVE_DM_MAIL_TO' ? 'root' : undefined)));
});

test('sendmail: runs `sendmail -t -oi` with the whole message on stdin: headers, subject, both parts byte for byte', async () => {
  const fake = standIn();
  const started = Date.now();
  const { outcome, reports } = await deliver({ PVE_DM_MAIL_TO: 'root', PVE_DM_SENDMAIL: fake.program });
  assert.equal(outcome, [{ plugin: 'sendmail', ok: true, detail: `handed to ${fake.program} for root` }]);
  assert.equal(fake.argv(), ['-t', '-oi'], 'exactly -t -oi: recipients come from To:, nothing from the report on the command line');

  const message = fake.stdin();
  assert.not.ok(message.includes('\r'), 'LF line endings for local submission');
  for (const line of message.split('\n')) assert.ok(line.length <= 998, `a line of ${line.length} characters`);
  const parsed = parseMessage(message);
  for (const line of parsed.headerLines) assert.ok(line.length <= 78, `a header line of ${line.length} characters: ${line}`);
  assert.is(one(parsed, 'To'), 'root');
  assert.is(decodeEncodedWords(one(parsed, 'Subject')), reports.subject);
  assert.match(reports.subject, /🚨/, 'the subject holds emoji (so the encoding matters)');
  const date = one(parsed, 'Date');
  assert.match(date, /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$/);
  assert.ok(Math.abs(Date.parse(date) - started) < 60_000, `the date is now: ${date}`);
  assert.match(one(parsed, 'Message-ID'), /^<[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+>$/);
  assert.is(one(parsed, 'MIME-Version'), '1.0');
  assert.is(one(parsed, 'Auto-Submitted'), 'auto-generated');
  assert.equal([...parsed.headers.keys()].sort(), ['auto-submitted', 'content-type', 'date', 'message-id', 'mime-version', 'subject', 'to']);
  const type = /^multipart\/alternative; boundary="([^"]+)"$/.exec(one(parsed, 'Content-Type'));
  assert.ok(type, `multipart/alternative with a boundary: ${one(parsed, 'Content-Type')}`);
  const boundary = type[1] ?? '';
  assert.ok(boundary.length >= 20 && boundary.length <= 70, 'a long random boundary within the 70-character limit');

  for (const line of parsed.body.split('\n').filter((line) => !line.startsWith('--'))) assert.ok(line.length <= 76, `a body line of ${line.length} characters`);
  const parts = mimeParts(parsed.body, boundary);
  assert.is(parts.length, 2);
  const [text, html] = parts;
  assert.equal(text?.headers.get('content-type'), ['text/plain; charset=utf-8']);
  assert.equal(html?.headers.get('content-type'), ['text/html; charset=utf-8'], 'HTML last: the preferred alternative');
  assert.is(text?.bytes.toString('utf8'), reports.text);
  assert.ok(Math.max(...reports.html.split('\n').map((line) => line.length)) > 998, 'the report has lines over SMTP\'s 998 limit (why base64)');
  assert.ok(html?.bytes.equals(Buffer.from(reports.html, 'utf8')), 'the HTML part is the rendered report, byte for byte');
  for (const part of parts) for (const line of part.lines.slice(0, -1)) assert.is(line.length, 76, 'full base64 lines are 76 characters');
});

test('sendmail: a recipient list goes in To: (folded), never on the command line', async () => {
  const fake = standIn();
  const many = Array.from({ length: 8 }, (_, i) => `ops-team-${i}@mail.example.org`);
  const { outcome } = await deliver({ PVE_DM_MAIL_TO: ` root, admin@example.org,,${many.join(',')} `, PVE_DM_SENDMAIL: fake.program });
  assert.is(outcome[0]?.ok, true, outcome[0]?.detail);
  assert.equal(fake.argv(), ['-t', '-oi']);
  const parsed = parseMessage(fake.stdin());
  assert.equal(one(parsed, 'To').split(/,\s*/), ['root', 'admin@example.org', ...many]);
  for (const line of parsed.headerLines) assert.ok(line.length <= 78, `a header line of ${line.length} characters: ${line}`);
  assert.ok(parsed.headerLines.filter((line) => line.startsWith(' ')).length >= 3, 'the long To: is folded');
});

test('sendmail: PVE_DM_MAIL=1 sends to root', async () => {
  const fake = standIn();
  const { outcome } = await deliver({ PVE_DM_MAIL: '1', PVE_DM_SENDMAIL: fake.program });
  assert.equal(outcome, [{ plugin: 'sendmail', ok: true, detail: `handed to ${fake.program} for root` }]);
  assert.is(one(parseMessage(fake.stdin()), 'To'), 'root');
  assert.equal(fake.argv(), ['-t', '-oi']);
});

test('sendmail: exit 75 with a message on stderr: a failure with the exit code and the first stderr line', async () => {
  const fake = standIn(`echo 'sendmail: fatal: queue file write error' >&2\necho 'second line' >&2\nexit 75`);
  const { outcome } = await deliver({ PVE_DM_MAIL_TO: 'root', PVE_DM_SENDMAIL: fake.program });
  assert.equal(outcome, [{ plugin: 'sendmail', ok: false, detail: `plugin sendmail, hook notify: ${fake.program} exited with code 75: sendmail: fatal: queue file write error` }]);
  assert.ok(fake.stdin().includes('Auto-Submitted: auto-generated'), 'it was given the message');
});

test('sendmail: a missing program: a clear failure naming it', async () => {
  const dir = tempDir('pve-dm-sendmail-');
  const missing = path.join(dir, 'no-such-sendmail');
  const { outcome } = await deliver({ PVE_DM_MAIL_TO: 'root', PVE_DM_SENDMAIL: missing });
  assert.equal(outcome, [{
    plugin: 'sendmail',
    ok: false,
    detail: `plugin sendmail, hook notify: cannot run ${missing}: no such program (install a mail transport such as postfix, or set PVE_DM_SENDMAIL)`,
  }]);
});

test('sendmail: a recipient holding a line break (or anything but a plain address) is refused, sendmail never runs', async () => {
  const fake = standIn();
  for (const hostile of ['root\nBcc: attacker@evil.example', 'root\r\nSubject: pwned', 'Admin <admin@example.org>', '-oQ/tmp/x', 'root admin', 'a@b@c']) {
    const { outcome } = await deliver({ PVE_DM_MAIL_TO: `ops@example.org,${hostile}`, PVE_DM_SENDMAIL: fake.program });
    assert.is(outcome[0]?.ok, false, hostile);
    assert.match(outcome[0]?.detail ?? '', /^plugin sendmail, hook notify: PVE_DM_MAIL_TO: ".*" is not a plain address \(e\.g\. root, or admin@example\.org\); nothing was sent$/);
    assert.not.match(outcome[0]?.detail ?? '', /[\r\n]/, 'the detail is one line');
  }
  assert.is(fake.argv(), null, 'never ran');
});

test('sendmail: a hostile subject cannot start a header or end the header block', async () => {
  const fake = standIn();
  const subject = '🚨 [pve1\r\nBcc: attacker@evil.example\n\nbody] CRITICAL =?UTF-8?B?SGk=?= Grüße';
  const { outcome } = await deliver({ PVE_DM_MAIL_TO: 'root', PVE_DM_SENDMAIL: fake.program }, { subject });
  assert.is(outcome[0]?.ok, true, outcome[0]?.detail);
  const parsed = parseMessage(fake.stdin());
  assert.equal([...parsed.headers.keys()].sort(), ['auto-submitted', 'content-type', 'date', 'message-id', 'mime-version', 'subject', 'to']);
  assert.is(decodeEncodedWords(one(parsed, 'Subject')), subject);
  assert.not.match(fake.stdin(), /^Bcc:/im);
});

test.run();
