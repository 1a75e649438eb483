/** The console's logical lines: the lines pve-dm wrapped at 80 columns joined again. */
export function unwrapConsole(text: string): string;
