import { isIP } from 'node:net';
import type { DetectorName } from './policy.js';

/** Replaces one match with a typed token (keyed, so equal values give equal tokens). */
export type Tokenize = (type: DetectorName, value: string) => string;

function luhn(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

/** The mod-97 check of an IBAN given without spaces, in capitals. */
function ibanValid(s: string): boolean {
  if (s.length < 15 || s.length > 34) return false;
  const rearranged = s.slice(4) + s.slice(0, 4);
  let rem = 0;
  for (const ch of rearranged) {
    const code = ch.charCodeAt(0);
    const v = code >= 65 ? String(code - 55) : ch;
    for (const c of v) rem = (rem * 10 + (c.charCodeAt(0) - 48)) % 97;
  }
  return rem === 1;
}

// Bounded repeats throughout: an unbounded local part made a long run of such characters before
// an `@` quadratic (64k characters took ~4 s), and a thread stuck on one string stalls its batch.
// Letters and digits of any script: `jané@exämple.com` is an address too.
// `&` and `'` too (o'brien@, jane&john@): left out, the part before them stayed in the text; and
// `! $ * ^ ~`, which RFC 5322 allows there too (`jane!doe@` left `jane!`). Not its `/ = ? #`,
// `{|}` or backtick: a URL's path or query, or a template, before an address would join it.
const emailRe = /[\p{L}\p{N}._%+'&!$*^~-]{1,64}@[\p{L}\p{N}-]{1,63}(?:\.[\p{L}\p{N}-]{1,63}){0,8}\.\p{L}{2,24}/gu;
// Separators: space, no-break space, dot, dash. Not begun or ended beside a digit, nor beside a
// separator and a digit; a dash beside a letter (`ref-4111…`, `…1111-exp`) no longer hides one.
// Or, in the groups cards are printed in (fours, the last perhaps shorter, and one more group for
// digits next to the card; Amex 4-6-5, Diners 4-6-4), a run of up to three separators, slashes
// too, between groups: `4111  1111 …`, `4111 - 1111 - …`, `4111/1111/…`. Only between such groups:
// between any digits, slashes and ` - ` joined dates into runs (`4/11/2026 - 4/12/2026` is 14
// digits from a Visa prefix that pass Luhn), and a date before a card (`25/11/2026 4111 1111 1111
// 1111`) made a run past 23 digits that cut the card off. No separator is a digit, so each repeat
// can end only one way and backtracking stays bounded per start: linear on any input.
const cardRe =
  /(?<!\d)(?<!\d[.-])(?:(?:\d[ \u00a0.-]?){12,22}\d|\d{4}[ \u00a0./-]{1,3}(?:\d{6}[ \u00a0./-]{1,3}\d{4,5}|\d{4}(?:[ \u00a0./-]{1,3}\d{4}){1,2}(?:[ \u00a0./-]{1,3}\d{1,4})?))(?!\d)(?![.-]\d)/g;
// Either case: `de89 3704 0044 0532 0130 00` typed in a chat is an IBAN too (see ibanIn).
const ibanRe = /\b[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}\b/g;

/**
 * IBAN lengths by country (the SWIFT IBAN registry). Used only for IBANs not written in capitals:
 * in lower case the IBAN shape takes in far more ordinary text, so such a candidate must also have
 * its country's exact length; one in capitals needs only the checksum, as before.
 */
const ibanLengths: Readonly<Record<string, number>> = {
  AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BI: 27, BR: 29, BY: 28,
  CH: 21, CR: 22, CY: 28, CZ: 24, DE: 22, DJ: 27, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18,
  FK: 18, FO: 18, FR: 27, GB: 22, GE: 22, GI: 23, GL: 18, GR: 27, GT: 28, HR: 21, HU: 28, IE: 22,
  IL: 23, IQ: 23, IS: 26, IT: 27, JO: 30, KW: 30, KZ: 20, LB: 28, LC: 32, LI: 21, LT: 20, LU: 20,
  LV: 21, LY: 25, MC: 27, MD: 24, ME: 22, MK: 19, MN: 20, MR: 27, MT: 31, MU: 30, NI: 28, NL: 18,
  NO: 15, OM: 23, PK: 24, PL: 28, PS: 29, PT: 25, QA: 29, RO: 24, RS: 22, RU: 33, SA: 24, SC: 31,
  SD: 18, SE: 24, SI: 19, SK: 24, SM: 27, SO: 23, ST: 25, SV: 28, TL: 23, TN: 24, TR: 26, UA: 29,
  VA: 22, VG: 24, XK: 20, YE: 30,
};
const ssnRe = /(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)/g;
// Either case (`ab123456c` typed in a chat); the token is made from capitals, so both give one.
const ninoRe = /\b[A-CEGHJ-PR-TW-Za-ceghj-pr-tw-z][A-CEGHJ-NPR-TW-Za-ceghj-npr-tw-z] ?\d{2} ?\d{2} ?\d{2} ?[A-Da-d]\b/g;
/**
 * After a country code the first group may be one digit (`+33 6 12 34 56 78`, `+61 4 1234 5678`),
 * with the trunk zero in brackets before it (`+33 (0)6 …`); without one, two to four. A slash may
 * follow the first group only, as an area code's (`089/12345678`), so dates (`28/11/2026`) and
 * paths are not read as numbers. Never begun or ended beside a digit and a separator, so a run of
 * numbers (`2026-11-28 2026-11-29`, a date and a time `2026-11-28 07:06`, a decimal
 * 3.14159265358979, a longer dotted number) gives no phone from its middle; nor begun after four
 * hex digits and a dash, a UUID's last group.
 */
const phoneRe =
  /(?<![\w+/])(?<!\d[-./:])(?<![0-9A-Fa-f]{4}-)(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}|(?:\(\d{1,4}\)[ .-]?)?\d{2,4})[ ./-]?\d{2,4}(?:[ .-]?\d{2,4}){1,3}(?!\w)(?![-./:]\d)/g;

const trunkZero = /^(\+\d{1,3}[ .-]?)\(0\)/;

const octet = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
/** IPv4, not part of a word nor of a longer dotted number (a version such as 1.2.3.4.5). */
const ipv4Re = new RegExp(`(?<!\\w)(?<!\\d\\.)${octet}(?:\\.${octet}){3}(?!\\w|\\.\\d)`, 'g');
const ipv4Shape = new RegExp(`^${octet}(?:\\.${octet}){3}$`);
/** IPv6 candidates (hex groups and colons, perhaps ending in IPv4); net.isIP decides. */
const ipv6Re = /(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?![\w:]|\.\d)/g;

function digitCount(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) n++;
  }
  return n;
}

/**
 * Whether a number begins as a payment card's does (its issuer's prefix): Visa, Mastercard,
 * Maestro, Discover, UnionPay, RuPay (4-6), national schemes (8, 9), Mir and Mastercard's 2-series,
 * Amex, Diners and JCB. A Luhn-valid run outside them (one in ten of any digits) is an epoch in
 * milliseconds, a snowflake id or a date, not a card.
 */
function cardIssuer(d: string): boolean {
  const first = d.charCodeAt(0) - 48;
  if ((first >= 4 && first <= 6) || first === 8 || first === 9) return true;
  const p2 = Number(d.slice(0, 2));
  const p4 = Number(d.slice(0, 4));
  if (first === 2) return (p4 >= 2200 && p4 <= 2204) || (p4 >= 2221 && p4 <= 2720);
  if (first === 3) return p2 === 34 || p2 === 37 || p2 === 36 || p2 === 38 || p2 === 39 || (p4 >= 3000 && p4 <= 3059) || p4 === 3095 || (p4 >= 3528 && p4 <= 3589);
  return false;
}

/**
 * A run of up to 23 digits may hold a card number next to other digits (an expiry date, a CVV, a
 * reference): the whole run is tried first, then shorter runs from either end that stop at a
 * separator, and the first that passes Luhn is replaced; the rest of the run stays as it was.
 * Only windows at separators are tried, so a long plain digit string (a decimal, an id) is
 * checked once, as before, not at every length.
 */
function cardIn(m: string, tokenize: Tokenize): string {
  // One dot is a decimal point (0.30000000000000004), not a card written with dots: no window may
  // hold it or begin or end at it. A card after a decimal (`paid 12.50 4111 1111 …`) is found.
  const first = m.indexOf('.');
  const point = first >= 0 && m.indexOf('.', first + 1) < 0 ? first : -1;
  const at: number[] = [];
  for (let i = 0; i < m.length; i++) {
    const c = m.charCodeAt(i);
    if (c >= 48 && c <= 57) at.push(i);
  }
  const n = at.length;
  const gapBefore = (k: number) => k === 0 || at[k]! - at[k - 1]! > 1;
  const gapAfter = (k: number) => k === n || at[k]! - at[k - 1]! > 1;
  for (let len = Math.min(19, n); len >= 13; len--) {
    for (const start of len === n ? [0] : [0, n - len]) {
      if (!gapBefore(start) || !gapAfter(start + len)) continue;
      if (point >= 0) {
        const a = at[start]!;
        const b = at[start + len - 1]!;
        if ((a < point && point < b) || m.charCodeAt(a - 1) === 46 || m.charCodeAt(b + 1) === 46) continue;
      }
      let d = '';
      for (let k = start; k < start + len; k++) d += m[at[k]!];
      if (cardIssuer(d) && luhn(d)) return m.slice(0, at[start]) + tokenize('card', d) + m.slice(at[start + len - 1]! + 1);
    }
  }
  return m;
}

/**
 * The IBAN pattern also takes words after the number (`GB82WEST12345698765432 EUR`): the whole
 * match is tried first, then the match cut at each space from the end. A candidate with a lower
 * case letter is read in capitals and must also have its country's length (see ibanLengths).
 */
function ibanIn(m: string, tokenize: Tokenize): string {
  for (let end = m.length; end >= 15; end = m.lastIndexOf(' ', end - 1)) {
    const candidate = m.slice(0, end);
    const iban = candidate.replace(/ /g, '').toUpperCase();
    const capitals = candidate === candidate.toUpperCase();
    if ((capitals || ibanLengths[iban.slice(0, 2)] === iban.length) && ibanValid(iban)) return tokenize('iban', iban) + m.slice(end);
    if (end === 0) break;
  }
  // None from its first word: the match may have begun with a word before the IBAN (`ref ab12
  // GB82 WEST …`), which the pattern took in; try again from the next word of that shape.
  const next = m.slice(1).search(/ [A-Za-z]{2}\d{2}/);
  if (next < 0) return m;
  const at = next + 2;
  return m.slice(0, at) + ibanIn(m.slice(at), tokenize);
}

/** A stretch [start, end) of a pass's input and what replaced it. */
type Edit = [start: number, end: number, replacement: string];

/**
 * For text read decoded (percent-encoding, HTML character references, see decodeEncoded): which
 * stretch of the decoded text each character of the text being scrubbed stands for, so the tokens
 * can be written into the text as the producer wrote it, each over the whole encoded stretch it
 * came from, while every other escape stays as it was (`%2F` in the rest of a URL is not turned
 * into `/`). Only text with such escapes pays for it.
 */
class Provenance {
  /** Per character: the first decoded character it stands for, and one past the last. */
  private from: number[] = [];
  private to: number[] = [];
  /** Per character: 0 when it is a decoded character as it was, else the id of its token. */
  private token: number[] = [];
  private tokens = 0;
  private lost = false;
  /** Filled at the first edit: most decoded text (a URL with nothing personal in it) has none. */
  private filled = false;

  /** A pass turned `before` into `after` by replacing the stretches in `edits`, in order, apart. */
  apply(before: string, edits: readonly Edit[], after: string): void {
    if (edits.length === 0 || this.lost) return;
    if (!this.filled) {
      // Until now every pass left the decoded text as it was, so `before` is that text.
      for (let i = 0; i < before.length; i++) {
        this.from.push(i);
        this.to.push(i + 1);
        this.token.push(0);
      }
      this.filled = true;
    }
    const from: number[] = [];
    const to: number[] = [];
    const token: number[] = [];
    let at = 0;
    const copy = (end: number) => {
      for (; at < end; at++) {
        from.push(this.from[at]!);
        to.push(this.to[at]!);
        token.push(this.token[at]!);
      }
    };
    for (const [start, end, text] of edits) {
      if (start < at) {
        this.lost = true;
        return;
      }
      // What a replacement keeps of its match (the words around a card number, a quote before an
      // address) is the text as it was, not part of the token.
      let head = 0;
      while (head < text.length && start + head < end && text.charCodeAt(head) === before.charCodeAt(start + head)) head++;
      let tail = 0;
      while (tail < text.length - head && end - tail > start + head && text.charCodeAt(text.length - 1 - tail) === before.charCodeAt(end - 1 - tail)) tail++;
      copy(start + head);
      const stop = end - tail;
      let lo: number;
      let hi: number;
      if (stop > start + head) {
        lo = this.from[start + head]!;
        hi = this.to[start + head]!;
        for (let k = start + head + 1; k < stop; k++) {
          lo = Math.min(lo, this.from[k]!);
          hi = Math.max(hi, this.to[k]!);
        }
      } else {
        // Inserted, replacing nothing (no detector does): it stands for no decoded character.
        lo = hi = stop < this.from.length ? this.from[stop]! : (this.to[stop - 1] ?? 0);
      }
      const id = ++this.tokens;
      for (let k = head; k < text.length - tail; k++) {
        from.push(lo);
        to.push(hi);
        token.push(id);
      }
      at = stop;
    }
    copy(before.length);
    // A pass whose output is not its input with these edits (never expected): the caller falls
    // back to the decoded text with its tokens, which holds nothing raw either.
    if (from.length !== after.length) {
      this.lost = true;
      return;
    }
    this.from = from;
    this.to = to;
    this.token = token;
  }

  /**
   * `out`, the decoded text with its tokens, written as `source` was: decoded character i began
   * at source[at[i]] (at[decoded length] is source's length). Undefined when it cannot be.
   */
  writeBack(out: string, source: string, at: readonly number[]): string | undefined {
    if (this.lost || this.token.length !== out.length) return undefined;
    let written = '';
    for (let i = 0; i < out.length; ) {
      const id = this.token[i]!;
      let j = i + 1;
      if (id === 0) {
        while (j < out.length && this.token[j] === 0 && this.from[j] === this.from[j - 1]! + 1) j++;
        written += source.slice(at[this.from[i]!], at[this.from[j - 1]! + 1]);
      } else {
        while (j < out.length && this.token[j] === id) j++;
        written += out.slice(i, j);
      }
      i = j;
    }
    return written;
  }
}

/** String.replace with a function, also telling `track` (when there is one) what it replaced. */
function sub(text: string, re: RegExp, replace: (match: string, offset: number) => string, track: Provenance | undefined): string {
  // Every pattern passed here has no capturing group, so the offset is the second argument.
  if (track === undefined) return text.replace(re, replace);
  const edits: Edit[] = [];
  const out = text.replace(re, (m: string, offset: number) => {
    const r = replace(m, offset);
    if (r !== m) edits.push([offset, offset + m.length, r]);
    return r;
  });
  track.apply(text, edits, out);
  return out;
}

const localChar = /^[\p{L}\p{N}._%+'&-]$/u;
/** `localChar` for ASCII: letters, digits and . _ % + - ' & */
function asciiLocal(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45 || c === 39 || c === 38;
}

/**
 * Email addresses replaced whole. The pattern's local part is bounded (see emailRe), so a longer
 * one matches only its last 64 characters; such a match is extended back over the rest of it,
 * which stays linear: each stretch scanned lies between the previous match and this one. The
 * common case keeps String.replace, which runs the pattern several times faster than exec().
 */
function emailsIn(text: string, tokenize: Tokenize, track: Provenance | undefined): string {
  let lastEnd = 0;
  const edits: Edit[] | undefined = track && [];
  // Stretches [from, to) of the output to drop: the front of a long local part, now in a token.
  let cuts: [number, number][] | undefined;
  let shift = 0; // output length minus input length so far
  const out = text.replace(emailRe, (m: string, offset: number) => {
    let start = offset;
    while (start > lastEnd) {
      const c = text.charCodeAt(start - 1);
      if (c < 0x80) {
        if (!asciiLocal(c)) break;
        start--;
        continue;
      }
      // By code point: a letter outside the BMP is two UTF-16 units.
      let prev = start - 1;
      if (c >= 0xdc00 && c <= 0xdfff && prev > lastEnd) {
        const high = text.charCodeAt(prev - 1);
        if (high >= 0xd800 && high <= 0xdbff) prev--;
      }
      if (!localChar.test(text.slice(prev, start))) break;
      start = prev;
    }
    // Quotes or ampersands in front (`'jane@…'`) are not part of the address, so the same address
    // quoted or not gives one token; they stay in the text.
    while (text.charCodeAt(start) === 39 || text.charCodeAt(start) === 38) start++;
    if (start < offset) (cuts ??= []).push([start + shift, offset + shift]);
    const kept = start > offset ? text.slice(offset, start) : '';
    const token = kept + tokenize('email', text.slice(start, offset + m.length).toLowerCase());
    edits?.push([Math.min(start, offset), offset + m.length, token]);
    shift += token.length - m.length;
    lastEnd = offset + m.length;
    return token;
  });
  let joined = out;
  if (cuts) {
    joined = '';
    let at = 0;
    for (const [from, to] of cuts) {
      joined += out.slice(at, from);
      at = to;
    }
    joined += out.slice(at);
  }
  if (edits) track!.apply(text, edits, joined);
  return joined;
}

/** IPv6 in one spelling (`2001:DB8:0::1` and `2001:db8::1` give one token), else in lower case. */
function canonicalIpv6(address: string): string {
  try {
    return new URL(`http://[${address}]/`).hostname.slice(1, -1);
  } catch {
    return address.toLowerCase();
  }
}

/**
 * An IPv6 address has `::` or seven colons; text with neither (a time, `key: value` prose) is not
 * scanned, which is most text with colons.
 */
function mayHoldIpv6(text: string): boolean {
  if (text.includes('::')) return true;
  let colons = 0;
  for (let at = text.indexOf(':'); at >= 0; at = text.indexOf(':', at + 1)) if (++colons === 7) return true;
  return false;
}

/**
 * IPv6 first, so an IPv4 inside one (`::ffff:203.0.113.45`) goes with it. An IPv6 needs three
 * groups that are not empty (an embedded IPv4 counts as two): `1::2` is a slice in code, `::1`
 * and `fe80::1` a machine's own, not a person's.
 */
function ipsIn(text: string, digits: number, tokenize: Tokenize, track: Provenance | undefined): string {
  let out = text;
  if (mayHoldIpv6(out)) {
    out = sub(
      out,
      ipv6Re,
      (m) => {
        if (isIP(m) !== 6) return m;
        let groups = 0;
        for (const g of m.split(':')) if (g !== '') groups += g.includes('.') ? 2 : 1;
        return groups >= 3 ? tokenize('ip', canonicalIpv6(m)) : m;
      },
      track,
    );
  }
  if (digits >= 4 && out.includes('.')) out = sub(out, ipv4Re, (m) => tokenize('ip', m), track);
  return out;
}

const bmpDigit = /^\p{Nd}$/u;
const space = /^\s$/u;
const jsonEscape = /\\u([0-9a-fA-F]{4})/g;

/** Characters that show nothing: zero-width spaces and joiners, direction marks, word joiners, the soft hyphen, BOM. */
function invisible(c: number): boolean {
  return c === 0xad || c === 0x180e || (c >= 0x200b && c <= 0x200f) || (c >= 0x2060 && c <= 0x2064) || c === 0xfeff;
}

/**
 * Dashes typed (or put in by a word processor) where a hyphen was meant: U+2010 to U+2015 (hyphen,
 * figure, en and em dash, horizontal bar; the non-breaking hyphen's NFKC is U+2010), U+2212 minus
 * (also the NFKC of super- and subscript minus), U+2043 hyphen bullet, the two- and three-em dashes
 * U+2E3A/B. Small and vertical forms (U+FE58, U+FE31/2) reach these through NFKC. Not the dashes
 * that are a script's own punctuation (Hebrew maqaf, Armenian hyphen) nor wave dashes (`10〜20`).
 */
function dash(c: number): boolean {
  return (c >= 0x2010 && c <= 0x2015) || c === 0x2212 || c === 0x2043 || c === 0x2e3a || c === 0x2e3b;
}

/** Folded characters, by character: the text's own mix of them repeats. */
const folds = new Map<string, string>();

/**
 * One character as the detectors read it: its compatibility form (NFKC: `０`→`0`, `﹫`→`@`, `𝟒`→`4`)
 * when that is no longer in UTF-8 (so folded text never outgrows the event: U+FDFA alone is 18
 * characters), any space as a space, a decimal digit of any script as 0-9 (its place in its
 * script's run of ten; every such run starts after a non-digit), a dash as `-` (the patterns
 * know only ASCII's, so `123–45–6789` hid an SSN). One character at a time, so a long run of
 * combining marks costs what its length does (NFKC over the whole text was quadratic).
 */
function foldChar(ch: string): string {
  let f = folds.get(ch);
  if (f !== undefined) return f;
  if (space.test(ch)) f = ' ';
  else if (ch.length === 1 && bmpDigit.test(ch)) {
    const c = ch.charCodeAt(0);
    let k = 0;
    while (k < 9 && bmpDigit.test(String.fromCharCode(c - k - 1))) k++;
    f = String.fromCharCode(48 + k);
  } else {
    const n = ch.normalize('NFKC');
    if (n.length === 1 && dash(n.charCodeAt(0))) f = '-';
    else f = Buffer.byteLength(n) <= Buffer.byteLength(ch) ? n : ch;
  }
  if (folds.size < 20_000) folds.set(ch, f);
  return f;
}

/**
 * The text as the detectors read it: JSON's `\uXXXX` escapes as the characters they stand for (so
 * `jane\u0040example.com` in text that is not JSON, cut off at max_tokens say, is an address),
 * each character folded (foldChar), and invisible characters dropped where they sit between ASCII
 * characters (inside an address or a number; a Persian zero-width non-joiner or an emoji's joiner
 * stays).
 */
function foldForDetection(text: string, escaped: boolean, wide: boolean): string {
  const t = escaped ? text.replace(jsonEscape, (_, hex: string) => String.fromCharCode(parseInt(hex, 16))) : text;
  if (!wide && (t === text || !/[^\x00-\x7f]/.test(t))) return t;
  let out = '';
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c < 0x80) {
      out += t[i];
      continue;
    }
    if (invisible(c)) {
      let j = i + 1;
      while (j < t.length && invisible(t.charCodeAt(j))) j++;
      const before = out.length > 0 ? out.charCodeAt(out.length - 1) : 0x80;
      const after = j < t.length ? t.charCodeAt(j) : 0x80;
      if (before < 0x80 && after < 0x80) {
        i = j - 1;
        continue;
      }
      out += t[i];
      continue;
    }
    const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < t.length;
    out += foldChar(pair ? t.slice(i, i + 2) : t[i]!);
    if (pair) i++;
  }
  return out;
}

/**
 * A key as field rules match it: each character folded as the detectors fold text (foldChar:
 * `ｎａｍｅ` is `name`), invisible characters dropped wherever they are (`na\u200bme`; in a key
 * they join nothing), spaces at either end trimmed, in lower case. Compared as written, such keys
 * missed `**.name` and `**.*phone*`, and their values were stored as they came.
 */
export function foldKey(key: string): string {
  let i = 0;
  while (i < key.length && key.charCodeAt(i) < 0x80) i++;
  if (i === key.length) return key.trim().toLowerCase();
  let out = key.slice(0, i);
  for (; i < key.length; i++) {
    const c = key.charCodeAt(i);
    if (c < 0x80) out += key[i];
    else if (!invisible(c)) {
      const pair = c >= 0xd800 && c <= 0xdbff && i + 1 < key.length;
      out += foldChar(pair ? key.slice(i, i + 2) : key[i]!);
      if (pair) i++;
    }
  }
  return out.trim().toLowerCase();
}

/**
 * `%XX` of an ASCII character (URLs, form bodies: `jane%40example.com`, `tel=%2B44…`), or an HTML
 * numeric character reference (`&#64;`, `&#x40;`; the `;` is optional, as browsers read them).
 * Percent-encoded UTF-8 beyond ASCII is left alone: it would take a decoder for a rare case.
 */
const encodedRe = /%[0-7][0-9A-Fa-f]|&#(?:\d{1,7}|[xX][0-9A-Fa-f]{1,6});?/g;

/**
 * The text with those escapes decoded (a character beyond ASCII folded as foldChar does, an
 * invisible one dropped), and where each decoded character began in it: `at[i]` for character i,
 * `at[length]` the text's own length. Undefined when there is no escape (`50% off`, `Q&A`).
 */
function decodeEncoded(text: string): { text: string; at: number[] } | undefined {
  encodedRe.lastIndex = 0;
  let m = encodedRe.exec(text);
  if (m === null) return undefined;
  let out = '';
  const at: number[] = [];
  let i = 0;
  for (; m !== null; m = encodedRe.exec(text)) {
    const e = m[0];
    const code = e.charCodeAt(0) === 37 ? parseInt(e.slice(1), 16) : e[2] === 'x' || e[2] === 'X' ? parseInt(e.slice(3), 16) : parseInt(e.slice(2), 10);
    // Not a character (past U+10FFFF, a lone surrogate, NUL): left as written.
    if (code === 0 || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) continue;
    const ch = code < 0x80 ? String.fromCharCode(code) : invisible(code) ? '' : foldChar(String.fromCodePoint(code));
    out += text.slice(i, m.index);
    for (; i < m.index; i++) at.push(i);
    out += ch;
    for (let k = 0; k < ch.length; k++) at.push(m.index);
    i = m.index + e.length;
  }
  if (i === 0) return undefined;
  out += text.slice(i);
  for (; i <= text.length; i++) at.push(i);
  return { text: out, at };
}

/**
 * Finds personal data in free text and replaces each match with a typed token. Text with anything
 * outside ASCII, or a backslash, is read folded (see foldForDetection); when something is found
 * there, the folded text (with its tokens) is what is kept, otherwise the text as written. Text
 * with `%XX` or `&#…;` is also read decoded (see decodeEncoded), and its tokens are written over
 * the encoded stretches they came from, the rest as it was.
 *
 * `id` is for ids and names a producer chose (request and trace ids, tenants, endpoints): there a
 * bare run of digits is an id's number, not a phone number; one written `+44 …` or `(030) …` is.
 */
export function scrubText(text: string, enabled: ReadonlySet<DetectorName>, tokenize: Tokenize, id = false): string {
  // One pass for all: ASCII digits (an upper bound on those left once emails are tokens), and
  // whether anything outside ASCII, an escape, or a `%` or `&` (perhaps encoding) is there at all.
  let digits = 0;
  let wide = false;
  let escaped = false;
  let encoded = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c <= 57) {
      if (c >= 48) digits++;
      else if (c === 37 || c === 38) encoded = true;
    } else if (c >= 0x80) wide = true;
    else if (c === 92) escaped = true;
  }
  if (!wide && !escaped && !encoded) return scrubAscii(text, digits, enabled, tokenize, id, undefined);
  const folded = wide || escaped ? foldForDetection(text, escaped, wide) : text;
  const decoded = encoded ? decodeEncoded(folded) : undefined;
  if (decoded !== undefined) {
    const track = new Provenance();
    const out = scrubAscii(decoded.text, digitCount(decoded.text), enabled, tokenize, id, track);
    if (out === decoded.text) return text;
    // Written back over the text as it came (folded, if it was): the token stands where the
    // whole encoded stretch did, and escapes elsewhere stay.
    return track.writeBack(out, folded, decoded.at) ?? out;
  }
  if (folded === text) return scrubAscii(text, digits, enabled, tokenize, id, undefined);
  const out = scrubAscii(folded, digitCount(folded), enabled, tokenize, id, undefined);
  return out === folded ? text : out;
}

/**
 * The detectors over ASCII forms. Order matters: IP addresses before phones, card numbers and
 * IBANs before phones, so a long digit run is named for what it is.
 */
function scrubAscii(text: string, digits: number, enabled: ReadonlySet<DetectorName>, tokenize: Tokenize, id: boolean, track: Provenance | undefined): string {
  let out = text;
  if (enabled.has('email') && out.includes('@')) out = emailsIn(out, tokenize, track);
  if (enabled.has('ip')) out = ipsIn(out, digits, tokenize, track);
  if (digits < 6) return out;
  // UK National Insurance numbers carry only six digits.
  if (enabled.has('national_id')) out = sub(out, ninoRe, (m) => tokenize('national_id', m.replace(/ /g, '').toUpperCase()), track);
  if (digits < 9) return out;
  if (enabled.has('card') && digits >= 13) {
    out = sub(out, cardRe, (m) => cardIn(m, tokenize), track);
  }
  if (enabled.has('iban')) {
    out = sub(out, ibanRe, (m) => ibanIn(m, tokenize), track);
  }
  if (enabled.has('national_id')) {
    out = sub(out, ssnRe, (m) => tokenize('national_id', m), track);
  }
  if (enabled.has('phone')) {
    out = sub(
      out,
      phoneRe,
      (m) => {
        if (id && m[0] !== '+' && m[0] !== '(') return m;
        // Four dotted numbers of at most 255 are an IPv4 address (the ip detector's, when on).
        if (ipv4Shape.test(m)) return m;
        const n = digitCount(m);
        // Without the trunk zero written in brackets: `+33 (0)6 …` is `+33 6 …`, one token for both.
        return n >= 9 && n <= 15 ? tokenize('phone', m.replace(trunkZero, '$1').replace(/[^\d+]/g, '')) : m;
      },
      track,
    );
  }
  return out;
}

/** A bare integer that is a valid card number is personal data too, negative or not. */
export function looksLikeCardNumber(n: number): boolean {
  const a = Math.abs(n);
  if (!Number.isSafeInteger(a) || a < 1e12) return false;
  const d = String(a);
  return d.length >= 13 && d.length <= 16 && cardIssuer(d) && luhn(d);
}
