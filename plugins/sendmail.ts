// Local mail through sendmail. On Proxmox VE, mail to root is handed to the node's own
// notification system (proxmox-mail-forward), so this is how a report reaches the targets an
// admin has set up there (Datacenter → Notifications).
//
// Settings:
//   PVE_DM_MAIL_TO    comma-separated recipients; `root` is the usual value on a Proxmox VE node
//   PVE_DM_MAIL       1, yes or true: send to root (when PVE_DM_MAIL_TO is not set)
//   PVE_DM_SENDMAIL   the program (default /usr/sbin/sendmail)
//
// sendmail runs as `sendmail -t -oi` with the whole message on its standard input: the
// recipients come from the To: header, and nothing from the report reaches the command line.
// The message is multipart/alternative (the text summary, then the HTML report), each part in
// base64 with lines of 76 characters, so no line comes near SMTP's limit of 998.
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import type { NotifyContext, Plugin } from '../pve-dm.ts';

type Helpers = Pick<NotifyContext, 'encodedWords' | 'terminalSafe'>;

const DEFAULT_SENDMAIL = '/usr/sbin/sendmail';
const SENDMAIL_TIMEOUT_MS = 60_000;

const LOCAL_PART = '[A-Za-z0-9_%+=][A-Za-z0-9._%+=-]*';
/** A DNS label: letters, digits and inner hyphens. */
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?';
/** A plain address: `root`, `admin`, `admin@example.org` (no display names, quotes or spaces). */
const ADDRESS_RE = new RegExp(`^${LOCAL_PART}(?:@${LABEL}(?:\\.${LABEL})*)?$`);

const enabled = (value: string | undefined) => /^(?:1|yes|true)$/i.test(value?.trim() ?? '');

/** The recipients, each checked: a value that is not a plain address (a line break...) is refused. */
function recipients({ setting, terminalSafe }: Pick<NotifyContext, 'setting' | 'terminalSafe'>): string[] {
  const raw = setting('PVE_DM_MAIL_TO');
  if (!raw) return ['root'];
  const list = raw
    .split(',')
    .map((address) => address.trim())
    .filter((address) => address !== '');
  if (list.length === 0) throw new Error('PVE_DM_MAIL_TO names no recipient (e.g. root, or admin@example.org)');
  for (const address of list) {
    if (!ADDRESS_RE.test(address) || address.length > 254) {
      throw new Error(
        `PVE_DM_MAIL_TO: "${terminalSafe(address)}" is not a plain address (e.g. root, or admin@example.org); ` +
          `nothing was sent`,
      );
    }
  }
  return list;
}

/** A header of addresses, folded after a comma so that no line passes 78 characters. */
function addressHeader(name: string, addresses: string[]): string {
  const lines: string[] = [];
  let line = `${name}:`;
  for (let index = 0; index < addresses.length; index++) {
    const word = ` ${addresses[index]}${index < addresses.length - 1 ? ',' : ''}`;
    if (line.length + word.length > 78 && line !== `${name}:`) {
      lines.push(line);
      line = '';
    }
    line += word;
  }
  lines.push(line);
  return lines.join('\n');
}

const base64Lines = (text: string) =>
  (
    Buffer.from(text, 'utf8')
      .toString('base64')
      .match(/.{1,76}/g) ?? []
  ).join('\n');

/** RFC 5322 date, in UTC: `Tue, 02 Jan 2024 15:04:05 +0000`. */
const mailDate = (date: Date) => date.toUTCString().replace(/GMT$/, '+0000');

/** The whole message, with LF line endings (sendmail's local input; it makes them CRLF for SMTP). */
function composeMessage(
  {
    to,
    subject,
    text,
    html,
    date = new Date(),
  }: { to: string[]; subject: string; text: string; html: string; date?: Date },
  { encodedWords }: Pick<Helpers, 'encodedWords'>,
): string {
  // "=_" never occurs in base64, the only thing inside the parts: the boundary cannot occur in the content.
  const boundary = `=_pve-dm_${randomBytes(12).toString('hex')}`;
  const host = os.hostname().replace(/[^A-Za-z0-9.-]/g, '') || 'localhost';
  const part = (type: string, content: string) =>
    [
      `--${boundary}`,
      `Content-Type: ${type}; charset=utf-8`,
      'Content-Transfer-Encoding: base64',
      '',
      base64Lines(content),
    ].join('\n');
  return [
    addressHeader('To', to),
    `Subject: ${encodedWords(subject).join('\n ')}`,
    `Date: ${mailDate(date)}`,
    `Message-ID: <pve-dm.${date.getTime()}.${randomBytes(6).toString('hex')}@${host}>`,
    'MIME-Version: 1.0',
    'Auto-Submitted: auto-generated',
    `Content-Type: multipart/alternative;\n boundary="${boundary}"`,
    '',
    'This is a MIME message: the pve-dm report as text and as HTML.',
    '',
    part('text/plain', text),
    part('text/html', html),
    `--${boundary}--`,
    '',
  ].join('\n');
}

const firstLine = (text: string, { terminalSafe }: Pick<Helpers, 'terminalSafe'>) =>
  terminalSafe((text.split('\n').find((line) => line.trim() !== '') ?? '').trim().slice(0, 200));

export default {
  name: 'sendmail',
  settings: ['PVE_DM_MAIL_TO', 'PVE_DM_MAIL', 'PVE_DM_SENDMAIL'],
  configured: (setting) => Boolean(setting('PVE_DM_MAIL_TO')) || enabled(setting('PVE_DM_MAIL')),
  async notify(_result, reports, context) {
    const { setting, runner, terminalSafe } = context;
    const to = recipients(context);
    const program = setting('PVE_DM_SENDMAIL') || DEFAULT_SENDMAIL;
    const message = composeMessage({ to, subject: reports.subject, text: reports.text, html: reports.html }, context);
    const { exitCode, stderr } = await runner(program, ['-t', '-oi'], {
      input: message,
      timeoutMs: SENDMAIL_TIMEOUT_MS,
    });
    if (exitCode === 0) return `handed to ${terminalSafe(program)} for ${to.join(', ')}`;
    const timedOut = /timed out after \d+ ms$/.exec(stderr);
    if (timedOut) throw new Error(`${terminalSafe(program)}: no result within ${SENDMAIL_TIMEOUT_MS / 1000} s`);
    const spawnFailure = exitCode === 127 ? /(?:^|\n)spawn \S.* (E[A-Z]+)$/.exec(stderr) : null;
    if (spawnFailure) {
      const why =
        spawnFailure[1] === 'ENOENT'
          ? 'no such program (install a mail transport such as postfix, or set PVE_DM_SENDMAIL)'
          : spawnFailure[1];
      throw new Error(`cannot run ${terminalSafe(program)}: ${why}`);
    }
    const said = firstLine(stderr, context);
    throw new Error(`${terminalSafe(program)} exited with code ${exitCode}${said ? `: ${said}` : ''}`);
  },
} satisfies Plugin;
