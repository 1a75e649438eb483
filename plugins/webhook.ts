// Generic webhook: POSTs the JSON report to PVE_DM_WEBHOOK_URL.
import { definePlugin, severityOf } from '../pve-dm.ts';

export default definePlugin({
  name: 'webhook',
  settings: ['PVE_DM_WEBHOOK_URL'],
  configured: (setting) => Boolean(setting('PVE_DM_WEBHOOK_URL')),
  async notify(result, reports, { setting, http }) {
    const url = setting('PVE_DM_WEBHOOK_URL') as string;
    const response = await http({
      url,
      headers: { 'content-type': 'application/json', 'user-agent': 'pve-dm', 'x-pve-dm-severity': severityOf(result) },
      body: reports.json,
    });
    return `HTTP ${response.status}`;
  },
});
