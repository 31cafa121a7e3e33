/**
 * A field rule's path, compiled once when the policy loads: dot-separated keys, where `*` alone is
 * one key, `**` any number of keys (none included), and `*` inside a key any run of characters
 * within that key (`*_name`, `*birth*`). Keys are compared lower-cased.
 */
export type PathSegment =
  | { kind: 'key'; key: string }
  | { kind: 'any' }
  | { kind: 'deep' }
  /** The literal stretches between the stars: `*birth*` is ['', 'birth', '']. */
  | { kind: 'glob'; parts: readonly string[] };

export type FieldPath = readonly PathSegment[];

const keyChars = /^[A-Za-z0-9_$*-]+$/;

/** Why a path cannot be a field rule's, naming the part that is wrong; undefined when it can. */
export function fieldPathProblem(path: string): string | undefined {
  if (path === '') return 'the path is empty: write dot-separated keys, * or ** (e.g. **.first_name)';
  for (const seg of path.split('.')) {
    if (seg === '') return `"${path}" has an empty key (two dots in a row, or a dot at an end)`;
    if (seg === '*' || seg === '**') continue;
    if (!keyChars.test(seg)) {
      const bad = [...seg].find((c) => !keyChars.test(c));
      return `"${path}": key "${seg}" holds ${JSON.stringify(bad)}; keys in paths are letters, digits, _ $ - and *`;
    }
    if (seg.includes('**')) {
      return `"${path}": "${seg}" holds **, which only stands alone (any number of keys); inside a key write a single * (e.g. *_name)`;
    }
  }
  return undefined;
}

/** The compiled form of a path fieldPathProblem accepted. */
export function compileFieldPath(path: string): FieldPath {
  return path
    .toLowerCase()
    .split('.')
    .map((seg): PathSegment => {
      if (seg === '**') return { kind: 'deep' };
      if (seg === '*') return { kind: 'any' };
      if (seg.includes('*')) return { kind: 'glob', parts: seg.split('*') };
      return { kind: 'key', key: seg };
    });
}

/**
 * A key against `*` globs: the first and last stretches at the ends, the others leftmost in
 * order, which is exact for globs with no other wildcard. Linear in the key, whatever the
 * pattern: a key is producer input and may be long, where a regex with several `.*` backtracks.
 */
function globMatches(parts: readonly string[], key: string): boolean {
  const head = parts[0]!;
  const tail = parts[parts.length - 1]!;
  if (key.length < head.length + tail.length || !key.startsWith(head) || !key.endsWith(tail)) return false;
  const end = key.length - tail.length;
  let at = head.length;
  for (let i = 1; i < parts.length - 1; i++) {
    const part = parts[i]!;
    const found = key.indexOf(part, at);
    if (found < 0 || found + part.length > end) return false;
    at = found + part.length;
  }
  return true;
}

/** Whether `path` (lower-cased keys) matches `pattern` from pattern[pi] and path[ki] on. */
export function fieldPathMatches(pattern: FieldPath, path: readonly string[], pi = 0, ki = 0): boolean {
  if (pi === pattern.length) return ki === path.length;
  const seg = pattern[pi]!;
  if (seg.kind === 'deep') {
    for (let k = ki; k <= path.length; k++) if (fieldPathMatches(pattern, path, pi + 1, k)) return true;
    return false;
  }
  if (ki === path.length) return false;
  const key = path[ki]!;
  const here = seg.kind === 'any' || (seg.kind === 'key' ? seg.key === key : globMatches(seg.parts, key));
  return here && fieldPathMatches(pattern, path, pi + 1, ki + 1);
}
