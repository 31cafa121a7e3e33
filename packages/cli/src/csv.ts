const plainNumber = /^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;

/**
 * One CSV cell. Quoted when it holds a quote, a comma or a line break (a bare \r too, which
 * spreadsheets read as one). Text a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab or
 * \r first) gets a leading `'`: ids and labels come from producers, and an export is opened by
 * people. Numbers, negative ones included, stay numbers.
 */
export function csvCell(v: unknown): string {
  let s = v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
  if (/^[=+\-@\t\r]/.test(s) && !plainNumber.test(s)) s = `'${s}`;
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function csvLine(values: readonly unknown[]): string {
  return values.map(csvCell).join(',');
}
