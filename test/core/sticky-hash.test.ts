/**
 * The sticky hash is a contract: changing it reassigns every user of every split and experiment.
 * These values pin it (and check it against a byte-level reference implementation).
 */
import t from 'tap';
import { compileWeightedPicker, fnv1a32, murmur3Int, seedState, stickyUnit } from '../../core/sticky-hash.ts';
import { compileFactPath, factKey } from '../../core/fact-path.ts';
import { makeExchange } from '../helpers/exchange.ts';

// Recorded once from this implementation; they must never change.
const PINNED = 'bcabaabb';
const PINNED_UNIT = '0.191533042';

function fnvReference(s: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(s)) h = Math.imul(h ^ b, 0x01000193);
  return h >>> 0;
}

t.test('FNV-1a 32 over UTF-8 matches the published vectors and a byte-level reference', async (t) => {
  t.equal(fnv1a32(''), 0x811c9dc5);
  t.equal(fnv1a32('a'), 0xe40c292c);
  t.equal(fnv1a32('foobar'), 0xbf9cf968);
  for (const s of ['héllo', '日本語のテキスト', 'emoji 😀 pair', 'lone \ud800 surrogate', '\udc00', 'user-1234567']) {
    t.equal(fnv1a32(s), fnvReference(s), JSON.stringify(s));
  }
  t.equal(fnv1a32('bar', fnv1a32('foo')), fnv1a32('foobar'), 'continuing from a state = hashing the concatenation');
});

t.test('murmur3_32 of one 4-byte block matches the published vectors', async (t) => {
  // bytes 21 43 65 87 (little-endian 0x87654321)
  t.equal(murmur3Int(0x87654321, 0), 0xf55b516b);
  t.equal(murmur3Int(0x87654321, 0x5082edee), 0x2362f9de);
});

t.test('assignments are pinned', async (t) => {
  const pick = compileWeightedPicker('exp', [
    { id: 'a', weight: 50, value: 'a' }, { id: 'b', weight: 30, value: 'b' }, { id: 'c', weight: 20, value: 'c' },
  ]);
  const got = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi'].map((k) => pick(k)).join('');
  t.equal(got, PINNED, 'if this fails, the hash changed: every sticky user would move');
  t.equal(stickyUnit(seedState('mirror'), 'req-1').toFixed(9), PINNED_UNIT);
});

t.test('weighted picker: order of items does not matter; zero weights are never picked', async (t) => {
  const items = [{ id: 'x', weight: 3, value: 'x' }, { id: 'y', weight: 0, value: 'y' }, { id: 'z', weight: 1, value: 'z' }];
  const p1 = compileWeightedPicker('s', items);
  const p2 = compileWeightedPicker('s', [...items].reverse());
  for (let i = 0; i < 5000; i++) {
    const k = `u${i}`;
    if (p1(k) !== p2(k)) { t.fail(`key ${k} moved when items were reordered`); break; }
    if (p1(k) === 'y') { t.fail('a zero-weight item was picked'); break; }
  }
  t.throws(() => compileWeightedPicker('s', [{ id: 'a', weight: 0, value: 1 }]), /positive weight/);
});

t.test('fact paths', async (t) => {
  const ex = makeExchange({ claims: { sub: 'u1', n: 7, nested: { org: 'acme' } }, headers: { 'x-doc': 'd' } });
  t.equal(compileFactPath('claims.sub')(ex.facts), 'u1');
  t.equal(compileFactPath('claims.nested.org')(ex.facts), 'acme');
  t.equal(compileFactPath('request.headers.x-doc')(ex.facts), 'd');
  t.equal(compileFactPath('claims.missing.deeper')(ex.facts), undefined);
  t.equal(compileFactPath('claims.toString')(ex.facts), undefined, 'own properties only');
  t.equal(factKey(compileFactPath('claims.n')(ex.facts)), '7');
  t.equal(factKey(''), undefined);
  t.equal(factKey({}), undefined);
  t.throws(() => compileFactPath('secrets.key'), /must start with/);
  t.throws(() => compileFactPath('claims.__proto__'), /forbidden/);
  t.throws(() => compileFactPath('claims..sub'), /forbidden or empty/);
});
