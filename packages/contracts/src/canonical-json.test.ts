import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { canonicalJson, CanonicalJsonError, inputHash, inputHashOfText } from './canonical-json.js';

interface Vectors {
  vectors: { name: string; json: string; canonical: string; hash: string }[];
  invalid: { name: string; json: string }[];
}

const vectors = JSON.parse(
  readFileSync(new URL('../vectors/input-hash.json', import.meta.url), 'utf8'),
) as Vectors;

describe('input-hash vectors file (for producers in other languages)', () => {
  it('has vectors for unicode, number forms, key order and nesting', () => {
    assert.ok(vectors.vectors.length >= 10);
    const names = vectors.vectors.map((v) => v.name).join(' ');
    for (const topic of ['unicode', 'numbers', 'key-order', 'nested']) assert.match(names, new RegExp(topic));
  });

  for (const v of vectors.vectors) {
    it(`vector ${v.name}: canonical text and hash`, () => {
      const canonical = canonicalJson(JSON.parse(v.json));
      assert.equal(canonical, v.canonical);
      // The hash is over the UTF-8 bytes of the canonical text; check both our helper and a direct hash.
      assert.equal(inputHash(JSON.parse(v.json)), v.hash);
      assert.equal(`sha256-${createHash('sha256').update(Buffer.from(v.canonical, 'utf8')).digest('hex')}`, v.hash);
      // Canonical text is a fixed point.
      assert.equal(canonicalJson(JSON.parse(canonical)), canonical);
    });
  }

  for (const v of vectors.invalid) {
    it(`invalid vector ${v.name} is refused`, () => {
      assert.throws(() => canonicalJson(JSON.parse(v.json)), CanonicalJsonError);
    });
  }
});

describe('canonicalJson', () => {
  it('hashes the same input identically across key order and number formatting', () => {
    const a = { income: 52000, rate: 0.5, applicant: { age: 41, tags: ['x', 'y'] }, ok: true };
    const b = JSON.parse('{"ok":true,"applicant":{"tags":["x","y"],"age":4.1e1},"rate":5E-1,"income":5.2e+4}') as unknown;
    assert.equal(inputHash(a), inputHash(b));
    assert.notEqual(inputHash(a), inputHash({ ...a, applicant: { age: 41, tags: ['y', 'x'] } }), 'array order is significant');
  });

  it('reads values the way JSON.stringify does', () => {
    const when = new Date('2026-11-27T10:00:00Z');
    const value = { when, skip: undefined, fn: () => 1, sym: Symbol('s'), arr: [undefined, () => 1, 1], boxed: new Number(2) };
    assert.equal(canonicalJson(value), '{"arr":[null,null,1],"boxed":2,"when":"2026-11-27T10:00:00.000Z"}');
    assert.equal(canonicalJson(value), canonicalJson(JSON.parse(JSON.stringify(value))));
  });

  it('matches JSON.stringify for numbers, -0 included', () => {
    for (const n of [0, -0, 1e21, 1e-7, 0.1 + 0.2, 5e-324, Number.MAX_VALUE, -123.456, 2 ** 53]) {
      assert.equal(canonicalJson(n), JSON.stringify(n));
    }
    assert.equal(canonicalJson(-0), '0');
  });

  it('refuses what JSON cannot carry, with the path to it', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = { inner: [cyclic] };
    const cases: [unknown, RegExp, string][] = [
      [{ big: 10n }, /BigInt/, '/big'],
      [{ a: [1, NaN] }, /NaN/, '/a/1'],
      [{ 'x/y': Infinity }, /Infinity/, '/x~1y'],
      [cyclic, /Cyclic/, '/self/inner/0'],
      [{ s: 'ok \ud800' }, /surrogate/, '/s'],
      [undefined, /undefined/, ''],
    ];
    for (const [value, message, path] of cases) {
      assert.throws(
        () => canonicalJson(value),
        (err: unknown) => err instanceof CanonicalJsonError && message.test(err.message) && err.path === path,
      );
    }
  });

  it('allows shared (non-cyclic) references', () => {
    const shared = { k: 1 };
    assert.equal(canonicalJson({ a: shared, b: [shared, shared] }), '{"a":{"k":1},"b":[{"k":1},{"k":1}]}');
  });
});

describe('canonicalJson limits', () => {
  it('refuses very deep values instead of overflowing the stack', () => {
    let deep: unknown = 1;
    for (let i = 0; i < 10_000; i++) deep = [deep];
    assert.throws(() => canonicalJson(deep), (err: unknown) => err instanceof CanonicalJsonError && /Deeper/.test(err.message));
  });
});

describe('inputHashOfText', () => {
  /** Texts that are canonical, and texts that parse to the same data but are not. */
  const texts = [
    '{"a":1,"b":[true,null,"x"],"c":{"d":-0.5,"e":1e+21}}',
    '{"b":1,"a":2}', // keys out of order
    '{"a": 1}', // whitespace
    '{"a":1.0}', // number written differently from JavaScript
    '{"a":-0}', // -0 prints as 0
    '{"2":"x","10":"y"}', // JavaScript lists integer keys first: 2 before 10, but "10" < "2"
    '{"10":"y","2":"x"}',
    '{"a":"\\u00e9"}', // an escape JSON.stringify does not write
    '{"a":"é","b":"\\n","c":"\\u001f","d":"\\\\ud800"}', // literal backslash before ud800
    '{"a":1,"a":2}', // duplicate key
    '"just a string"',
    '[]',
    '{}',
    '{"emoji":"😀"}',
  ];

  it('gives inputHash of the parsed value for every text, canonical or not', () => {
    for (const text of texts) {
      const parsed = JSON.parse(text) as unknown;
      assert.equal(inputHashOfText(text, parsed), inputHash(parsed), text);
    }
  });

  it('hashes a canonical text as it is', () => {
    const text = texts[0]!;
    assert.equal(canonicalJson(JSON.parse(text)), text);
    assert.equal(inputHashOfText(text, JSON.parse(text)), `sha256-${createHash('sha256').update(text).digest('hex')}`);
  });

  it('agrees with inputHash on random values, written canonically or in insertion order', () => {
    let seed = 42; // mulberry32: the same values on every run
    const rnd = (n: number) => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 2 ** 32) * n);
    };
    const pieces = ['a', 'B', '10', '2', 'é', '😀', '"', '\\', '\n', '\u0001', '\u2028', ' ', 'ud800', '\\ud800'];
    const str = () => Array.from({ length: rnd(4) }, () => pieces[rnd(pieces.length)]).join('');
    const value = (depth: number): unknown => {
      switch (rnd(depth > 3 ? 4 : 6)) {
        case 0: return str();
        case 1: return [0, -0, 1.5, 1e21, 1e-7, -42, 2 ** 53][rnd(7)];
        case 2: return [true, false, null][rnd(3)];
        case 3: return rnd(1000) / 7;
        case 4: return Array.from({ length: rnd(4) }, () => value(depth + 1));
        default: return Object.fromEntries(Array.from({ length: rnd(5) }, () => [str(), value(depth + 1)]));
      }
    };
    for (let i = 0; i < 2000; i++) {
      const v = value(0);
      for (const text of [canonicalJson(v), JSON.stringify(v)]) {
        const parsed = JSON.parse(text) as unknown;
        assert.equal(inputHashOfText(text, parsed), inputHash(parsed), text);
      }
    }
  });

  it('reads values JSON.parse does not make (toJSON, other prototypes) the long way', () => {
    class Point {
      constructor(readonly y: number, readonly x: number) {}
    }
    // Each value's JSON.stringify text, which differs from its canonical form.
    for (const value of [{ a: { toJSON: () => ({ z: 1, y: 2 }) } }, { p: new Point(2, 1) }, { a: Buffer.from([1]) }]) {
      const text = JSON.stringify(value);
      assert.notEqual(text, canonicalJson(value));
      assert.equal(inputHashOfText(text, value), inputHash(value), text);
    }
  });

  it('keeps long keys out of the quoted-key cache and stays correct when it starts over', () => {
    const long = 'k'.repeat(100_000);
    assert.equal(canonicalJson({ [long]: 1 }), `{"${long}":1}`);
    for (let i = 0; i < 25_000; i++) assert.equal(canonicalJson({ [`key${i}`]: i, a: 0 }), `{"a":0,"key${i}":${i}}`);
  });

  it('refuses what inputHash refuses: lone surrogates, values too deep', () => {
    for (const text of ['{"a":"\\ud800"}', '{"\\udfff":1}']) {
      assert.throws(() => inputHashOfText(text, JSON.parse(text)), (err: unknown) => err instanceof CanonicalJsonError && /surrogate/.test(err.message), text);
    }
    const deep = `${'['.repeat(600)}1${']'.repeat(600)}`;
    assert.throws(() => inputHashOfText(deep, JSON.parse(deep)), (err: unknown) => err instanceof CanonicalJsonError && /Deeper/.test(err.message));
  });
});

describe('canonicalJson: what JSON.stringify would write as {} silently', () => {
  it('refuses Map, Set, WeakMap and WeakSet, naming the path and what to do', () => {
    const cases: [unknown, RegExp][] = [
      [{ features: new Map([['income', 52000]]) }, /^Map is not representable in JSON .*Object\.fromEntries\(map\) at \/features$/],
      [{ tags: [new Set(['vip'])] }, /^Set is not representable in JSON .*Array\.from\(set\) at \/tags\/0$/],
      [{ w: new WeakMap() }, /^WeakMap is not representable in JSON/],
      [new WeakSet(), /^WeakSet is not representable in JSON/],
      [{ empty: new Map() }, /^Map /],
    ];
    for (const [value, message] of cases) {
      assert.throws(() => canonicalJson(value), (err: unknown) => err instanceof CanonicalJsonError && message.test(err.message), String(message));
    }
    // A collection that says how it is written is taken at its word, as JSON.stringify does.
    const withToJSON = Object.assign(new Map([['a', 1]]), { toJSON(this: Map<string, number>) { return Object.fromEntries(this); } });
    assert.equal(canonicalJson({ m: withToJSON }), '{"m":{"a":1}}');
  });
});

describe('canonicalJson options', () => {
  it('maxLength: refuses text over it (tooLong), exactly at the boundary, before building all of it', () => {
    const value = { a: 'xyz', b: [1, 2, { c: true }] };
    const text = canonicalJson(value);
    assert.equal(canonicalJson(value, { maxLength: text.length }), text);
    for (const maxLength of [text.length - 1, 10, 1]) {
      assert.throws(() => canonicalJson(value, { maxLength }), (err: unknown) => err instanceof CanonicalJsonError && err.tooLong && new RegExp(`longer than ${maxLength} characters`).test(err.message));
    }
    // A string is measured before its escape check; a table is refused as the text grows.
    const t = performance.now();
    assert.throws(() => canonicalJson({ blob: 'x'.repeat(16 << 20) }, { maxLength: 262_144 }), (err: unknown) => err instanceof CanonicalJsonError && err.tooLong && err.path === '/blob');
    const rows = Array.from({ length: 200_000 }, (_, i) => ({ id: i, name: `customer ${i}` }));
    assert.throws(() => canonicalJson({ rows }, { maxLength: 262_144 }), (err: unknown) => err instanceof CanonicalJsonError && err.tooLong && /^\/rows\/\d+$/.test(err.path));
    assert.ok(performance.now() - t < 150, `refused in ${(performance.now() - t).toFixed(0)} ms (whole, the table takes ~400)`);
    // Other problems are not "too long".
    assert.throws(() => canonicalJson({ n: 1n }, { maxLength: 100 }), (err: unknown) => err instanceof CanonicalJsonError && !err.tooLong);
  });

  it('refuseKeys: refuses those keys at any depth, naming the key and path; keys of values left out do not count', () => {
    const refuseKeys = new Set(['constructor']);
    const value = JSON.parse('{"a":[{"constructor":1}]}') as unknown;
    assert.equal(canonicalJson(value), '{"a":[{"constructor":1}]}', 'without the option, as before');
    assert.throws(() => canonicalJson(value, { refuseKeys }), (err: unknown) => err instanceof CanonicalJsonError && err.refusedKey === 'constructor' && err.path === '/a/0/constructor');
    assert.equal(canonicalJson({ constructor: undefined, b: 1 }, { refuseKeys }), '{"b":1}');
    // The quoted-key cache does not let a refused key through once another call has cached it.
    canonicalJson({ constructor: 1 });
    assert.throws(() => canonicalJson({ constructor: 1 }, { refuseKeys }), CanonicalJsonError);
  });

  it('a toJSON that calls canonicalJson neither sees nor clobbers the outer call\'s options', () => {
    const inner = { toJSON: () => canonicalJson({ constructor: 'x'.repeat(50) }) };
    // The inner text holds the key the outer call refuses; the outer budget holds after it returns.
    assert.equal(canonicalJson({ i: inner }, { maxLength: 80, refuseKeys: new Set(['constructor']) }).length, 80);
    assert.throws(() => canonicalJson({ i: inner }, { maxLength: 79 }), (err: unknown) => err instanceof CanonicalJsonError && err.tooLong);
    assert.throws(() => canonicalJson({ i: inner, constructor: 1 }, { refuseKeys: new Set(['constructor']) }), (err: unknown) => err instanceof CanonicalJsonError && err.refusedKey === 'constructor');
    assert.equal(canonicalJson({ blob: 'x'.repeat(100) }), `{"blob":"${'x'.repeat(100)}"}`, 'no budget left behind');
  });
});
