// Gotify (https://gotify.net): POSTs the subject and text summary to <server>/message.
//
// Settings:
//   PVE_DM_GOTIFY_URL    the server's base URL, e.g. https://gotify.example or https://example/gotify/
//   PVE_DM_GOTIFY_TOKEN  an application token; sent in the X-Gotify-Key header, never in the URL
//
// Priority follows the severity (critical 8, warning 5, ok 2); the message is shown as plain text.
import type { NotifyContext, Plugin, Severity } from '../pve-dm.ts';

const PRIORITY: Record<Severity, number> = { critical: 8, warning: 5, ok: 2 };

/** <base>/message, with or without a trailing slash (and any path prefix) on the base. */
function messageUrl({ urlSetting }: NotifyContext): string {
  const url = urlSetting('PVE_DM_GOTIFY_URL', 'https://gotify.example');
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/message`;
  return url.href;
}

export default {
  name: 'gotify',
  settings: ['PVE_DM_GOTIFY_URL', 'PVE_DM_GOTIFY_TOKEN'],
  configured: (setting) => Boolean(setting('PVE_DM_GOTIFY_URL')),
  async notify(_result, reports, context) {
    const url = messageUrl(context);
    const token = context.headerSetting('PVE_DM_GOTIFY_TOKEN');
    if (!token) throw new Error('PVE_DM_GOTIFY_TOKEN is not set (an application token from the Gotify server)');
    const body = JSON.stringify({
      title: reports.subject,
      message: reports.text,
      priority: PRIORITY[context.severity],
      extras: { 'client::display': { contentType: 'text/plain' } },
    });
    const response = await context.http({
      url,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': 'pve-dm', 'x-gotify-key': token },
      body,
    });
    return `HTTP ${response.status}`;
  },
} satisfies Plugin;
