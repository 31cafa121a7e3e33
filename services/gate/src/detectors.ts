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
const emailRe = /[\p{L}\p{N}._%+-]{1,64}@[\p{L}\p{N}-]{1,63}(?:\.[\p{L}\p{N}-]{1,63}){0,8}\.\p{L}{2,24}/gu;
// Separators: space, no-break space, dot, dash.
const cardRe = /(?<![\d-])(?:\d[ \u00a0.-]?){12,22}\d(?![\d-])/g;
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
const ninoRe = /\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b/g;
const phoneRe = /(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)/g;

function digitCount(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 48 && c <= 57) n++;
  }
  return n;
}

/**
 * A run of up to 23 digits may hold a card number next to other digits (an expiry date, a CVV, a
 * reference): the whole run is tried first, then shorter runs from either end that stop at a
 * separator, and the first that passes Luhn is replaced; the rest of the run stays as it was.
 * Only windows at separators are tried, so a long plain digit string (a decimal, an id) is
 * checked once, as before, not at every length.
 */
function cardIn(m: string, tokenize: Tokenize): string {
  // One dot is a decimal number (0.30000000000000004), not a card written with dots.
  const dot = m.indexOf('.');
  if (dot >= 0 && m.indexOf('.', dot + 1) < 0) return m;
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
      let d = '';
      for (let k = start; k < start + len; k++) d += m[at[k]!];
      if (luhn(d)) return m.slice(0, at[start]) + tokenize('card', d) + m.slice(at[start + len - 1]! + 1);
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

const localChar = /^[\p{L}\p{N}._%+-]$/u;
/** `localChar` for ASCII: letters, digits and . _ % + - */
function asciiLocal(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45;
}

/**
 * Email addresses replaced whole. The pattern's local part is bounded (see emailRe), so a longer
 * one matches only its last 64 characters; such a match is extended back over the rest of it,
 * which stays linear: each stretch scanned lies between the previous match and this one. The
 * common case keeps String.replace, which runs the pattern several times faster than exec().
 */
function emailsIn(text: string, tokenize: Tokenize): string {
  let lastEnd = 0;
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
    if (start < offset) (cuts ??= []).push([start + shift, offset + shift]);
    const token = tokenize('email', text.slice(start, offset + m.length).toLowerCase());
    shift += token.length - m.length;
    lastEnd = offset + m.length;
    return token;
  });
  if (!cuts) return out;
  let joined = '';
  let at = 0;
  for (const [from, to] of cuts) {
    joined += out.slice(at, from);
    at = to;
  }
  return joined + out.slice(at);
}

/** Full-width forms (ＡＢ１２, ＋, ＠, ideographic space) and decimal digits of other scripts. */
const foreignForms = /[\u3000\uff01-\uff5e]|(?![0-9])\p{Nd}/u;
const bmpDigit = /^\p{Nd}$/u;

/**
 * The text as the detectors read it: full-width ASCII forms as ASCII and BMP decimal digits of any
 * script as 0-9, one UTF-16 unit for one, so `０９０－１２３４－５６７８` is a phone number too.
 * A digit's value is its place in its script's run of ten (every such run starts after a non-digit).
 */
function foldForDetection(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) out += text[i];
    else if (c >= 0xff01 && c <= 0xff5e) out += String.fromCharCode(c - 0xfee0);
    else if (c === 0x3000) out += ' ';
    else if ((c < 0xd800 || c > 0xdfff) && bmpDigit.test(text[i]!)) {
      let k = 0;
      while (k < 9 && bmpDigit.test(String.fromCharCode(c - k - 1))) k++;
      out += String.fromCharCode(48 + k);
    } else out += text[i];
  }
  return out;
}

/**
 * Finds personal data in free text and replaces each match with a typed token. Text written with
 * full-width forms or another script's digits is read folded to ASCII; when something is found
 * there, the folded text (with its tokens) is what is kept, otherwise the text as written.
 */
export function scrubText(text: string, enabled: ReadonlySet<DetectorName>, tokenize: Tokenize): string {
  // One pass for both: ASCII digits (an upper bound on those left once emails are tokens) and
  // whether anything outside ASCII is there at all.
  let digits = 0;
  let wide = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) digits++;
    else if (c >= 0x80) wide = true;
  }
  if (!wide || !foreignForms.test(text)) return scrubAscii(text, digits, enabled, tokenize);
  const folded = foldForDetection(text);
  const out = scrubAscii(folded, digitCount(folded), enabled, tokenize);
  return out === folded ? text : out;
}

/** The detectors over ASCII forms. Order matters: card numbers and IBANs before phones, so a long digit run is named for what it is. */
function scrubAscii(text: string, digits: number, enabled: ReadonlySet<DetectorName>, tokenize: Tokenize): string {
  let out = text;
  if (enabled.has('email') && out.includes('@')) out = emailsIn(out, tokenize);
  if (digits < 6) return out;
  // UK National Insurance numbers carry only six digits.
  if (enabled.has('national_id')) out = out.replace(ninoRe, (m) => tokenize('national_id', m.replace(/ /g, '')));
  if (digits < 9) return out;
  if (enabled.has('card') && digits >= 13) {
    out = out.replace(cardRe, (m) => cardIn(m, tokenize));
  }
  if (enabled.has('iban')) {
    out = out.replace(ibanRe, (m) => ibanIn(m, tokenize));
  }
  if (enabled.has('national_id')) {
    out = out.replace(ssnRe, (m) => tokenize('national_id', m));
  }
  if (enabled.has('phone')) {
    out = out.replace(phoneRe, (m) => {
      const n = digitCount(m);
      return n >= 9 && n <= 15 ? tokenize('phone', m.replace(/[^\d+]/g, '')) : m;
    });
  }
  return out;
}

/** A bare integer that is a valid card number is personal data too. */
export function looksLikeCardNumber(n: number): boolean {
  if (!Number.isSafeInteger(n) || n < 1e12) return false;
  const d = String(n);
  return d.length >= 13 && d.length <= 16 && luhn(d);
}
