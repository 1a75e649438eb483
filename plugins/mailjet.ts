// Mailjet (the old script's channel): the v3.1 send API, the HTML report as HTMLPart, the text
// summary as TextPart, the subject as the old script made it. Settings: PVE_DM_MAILJET_KEY,
// PVE_DM_MAILJET_SECRET, PVE_DM_MAILJET_FROM, PVE_DM_MAILJET_TO (comma-separated) and
// PVE_DM_MAILJET_URL (default the public API; set it for tests and proxies).
// The key and secret travel only in the Authorization header and never appear in a detail or error.
import type { Plugin } from '../pve-dm.ts';

const DEFAULT_URL = 'https://api.mailjet.com/v3.1/send';

type Setting = (key: string) => string | undefined;

const recipients = (setting: Setting) =>
  (setting('PVE_DM_MAILJET_TO') ?? '')
    .split(',')
    .map((address) => address.trim())
    .filter((address) => address !== '');

const present = (value: string | undefined) => value !== undefined && value.trim() !== '';

interface MailjetAnswer {
  Messages?: { Status?: string; Errors?: { ErrorMessage?: string }[] }[];
}

export default {
  name: 'mailjet',
  settings: [
    'PVE_DM_MAILJET_KEY',
    'PVE_DM_MAILJET_SECRET',
    'PVE_DM_MAILJET_FROM',
    'PVE_DM_MAILJET_TO',
    'PVE_DM_MAILJET_URL',
  ],
  configured: (setting) =>
    present(setting('PVE_DM_MAILJET_KEY')) &&
    present(setting('PVE_DM_MAILJET_SECRET')) &&
    present(setting('PVE_DM_MAILJET_FROM')) &&
    recipients(setting).length > 0,
  async notify(_result, reports, { setting, http, urlSetting, redact, serviceMessage }) {
    const key = (setting('PVE_DM_MAILJET_KEY') ?? '').trim();
    const secret = (setting('PVE_DM_MAILJET_SECRET') ?? '').trim();
    const from = (setting('PVE_DM_MAILJET_FROM') ?? '').trim();
    const to = recipients(setting);
    const url = urlSetting('PVE_DM_MAILJET_URL', DEFAULT_URL, DEFAULT_URL).href;
    const credentials = Buffer.from(`${key}:${secret}`).toString('base64');
    // pve-dm blots out the key and secret from every detail; the header made of them is this plugin's own.
    const secrets = [credentials, secret, key];
    const body = JSON.stringify({
      Messages: [
        {
          From: { Email: from, Name: 'pve-dm' },
          To: to.map((address) => ({ Email: address })),
          Subject: reports.subject,
          TextPart: reports.text,
          HTMLPart: reports.html,
        },
      ],
    });
    let response;
    try {
      response = await http({
        url,
        headers: { authorization: `Basic ${credentials}`, 'content-type': 'application/json', 'user-agent': 'pve-dm' },
        body,
      });
    } catch (error) {
      throw new Error(redact(error instanceof Error ? error.message : String(error), secrets));
    }
    let answer: MailjetAnswer;
    try {
      answer = JSON.parse(response.body) as MailjetAnswer;
    } catch {
      throw new Error(
        redact(`HTTP ${response.status} but not a Mailjet answer: ${serviceMessage(response.body)}`, secrets),
      );
    }
    const status = answer?.Messages?.[0]?.Status;
    if (status !== 'success') {
      throw new Error(
        redact(
          `HTTP ${response.status} but Mailjet did not send (status ${status ?? 'missing'}): ` +
            `${serviceMessage(response.body)}`,
          secrets,
        ),
      );
    }
    return `sent to ${to.length} recipient${to.length === 1 ? '' : 's'}`;
  },
} satisfies Plugin;
