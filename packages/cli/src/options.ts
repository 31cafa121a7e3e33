/**
 * A numeric option's value, or an error that says what to type: `--bad-share 5` or `-n 1.5` were
 * taken as given, and `--status-every abc` quietly turned the status line off.
 */
export function numberOption(name: string, value: string, o: { min: number; max?: number; integer?: boolean; example: string }): number {
  const n = Number(value);
  const range = o.max === undefined ? `>= ${o.min}` : `from ${o.min} to ${o.max}`;
  if (value.trim() === '' || !Number.isFinite(n) || n < o.min || (o.max !== undefined && n > o.max) || (o.integer && !Number.isInteger(n))) {
    throw new Error(`${name} takes ${o.integer ? 'a whole number' : 'a number'} ${range} (got ${JSON.stringify(value)}); for example ${name} ${o.example}`);
  }
  return n;
}
