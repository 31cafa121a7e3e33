const plainNumber = /^[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;

/**
 * One CSV cell. Quoted when it holds a quote, a comma or a line break (a bare \r too, which
 * spreadsheets read as one). Text a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab or
 * \r first) gets a leading `'`: ids and labels come from producers, and an export is opened by
 * people. Numbers, negative ones included, stay numbers.
 */
export function csvCell(v: unknown): string {
  let s = v === null || v === undefined ? '' : typeof v === 'object' ? jsonText(v) : String(v);
  if (/^[=+\-@\t\r]/.test(s) && !plainNumber.test(s)) s = `'${s}`;
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function csvLine(values: readonly unknown[]): string {
  return values.map(csvCell).join(',');
}

/**
 * JSON text of a value from the store, where an exact 64-bit integer is a bigint: written as its
 * digits, which JSON.stringify refuses to do (it throws). Everything else as JSON.stringify.
 */
export function jsonText(v: unknown): string {
  if (typeof v === 'bigint') return v.toString();
  if (Array.isArray(v)) return `[${v.map((x: unknown) => jsonText(x === undefined ? null : x)).join(',')}]`;
  if (typeof v === 'object' && v !== null && Object.getPrototypeOf(v) === Object.prototype) {
    const members = Object.entries(v).filter(([, x]) => x !== undefined);
    return `{${members.map(([k, x]) => `${JSON.stringify(k)}:${jsonText(x)}`).join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

const lineBreaking = /[\u0000-\u001f\u007f\u2028\u2029]/g;

/**
 * Text for one cell of a table printed to a terminal: control characters and line separators as
 * their JSON escapes (`\n`, `\u0007`). A decision holding a newline (free text, an agent's answer)
 * broke the table's lines, and an escape sequence in one could restyle the terminal.
 */
export function oneLine(text: string): string {
  return text.replace(lineBreaking, (c) => JSON.stringify(c).slice(1, -1));
}
