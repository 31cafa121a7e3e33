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

function ibanValid(iban: string): boolean {
  const s = iban.replace(/ /g, '');
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

const emailRe = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/g;
const cardRe = /(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])/g;
const ibanRe = /\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b/g;
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
 * Finds personal data in free text and replaces each match with a typed token. Order matters:
 * card numbers and IBANs before phones, so a long digit run is named for what it is.
 */
export function scrubText(text: string, enabled: ReadonlySet<DetectorName>, tokenize: Tokenize): string {
  let out = text;
  if (enabled.has('email') && out.includes('@')) {
    out = out.replace(emailRe, (m) => tokenize('email', m.toLowerCase()));
  }
  const digits = digitCount(out);
  if (digits < 6) return out;
  // UK National Insurance numbers carry only six digits.
  if (enabled.has('national_id')) out = out.replace(ninoRe, (m) => tokenize('national_id', m.replace(/ /g, '')));
  if (digits < 9) return out;
  if (enabled.has('card') && digits >= 13) {
    out = out.replace(cardRe, (m) => {
      const d = m.replace(/[ -]/g, '');
      return d.length >= 13 && d.length <= 19 && luhn(d) ? tokenize('card', d) : m;
    });
  }
  if (enabled.has('iban')) {
    out = out.replace(ibanRe, (m) => (ibanValid(m) ? tokenize('iban', m.replace(/ /g, '')) : m));
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
