const escape = '\u001b';

/**
 * One string key for a list of parts that no other list can share. A part holding the separator
 * or the escape character has both escaped; any other part is joined as it is, so keys of
 * ordinary parts read exactly as a plain join (and keys stored that way before stay the same).
 * Plain joins let a model named `m\0x` with endpoint `e` collide with model `m` on endpoint `x\0e`.
 */
export function joinKey(parts: readonly (string | number)[], sep = '\u001f'): string {
  let out = '';
  for (let i = 0; i < parts.length; i++) {
    let p = String(parts[i]);
    if (p.includes(sep) || p.includes(escape)) p = p.replaceAll(escape, escape + escape).replaceAll(sep, `${escape}s`);
    out += i === 0 ? p : sep + p;
  }
  return out;
}
