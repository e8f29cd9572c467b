/**
 * The per-run dedupe set (version hash → lastUpdateTime in epoch seconds) in typed arrays instead
 * of a Map of strings: a Map entry with a 16-character string key costs about 120 bytes of heap, so
 * a 1,000,000-alert run held over 100 MB in it. Here a version hash (versionHash: 16 base64url
 * characters, 96 bits) is stored as three 32-bit words in an open-addressing table with linear
 * probing, its time as a float64 beside it, and a state byte: 21 bytes a slot. The table grows by
 * half when 3/4 of its slots are used, so it holds between 28 and 42 bytes per entry as it fills.
 * Deleted slots count as used until a rebuild sweeps them: at the same size while at most half the
 * slots are live, else one growth, after which pruning as many as are added costs nothing more.
 *
 * It is a Map<string, number> to every reader (`DeliveredVersions`): get, set, has, delete,
 * clear, size and iteration behave as a Map's, so the pull-state codec and the pull need no
 * change. Keys are decoded losslessly, so iteration gives back exactly the strings that went in
 * (in slot order, not insertion order: nothing depends on the order). Any key that is not 16
 * base64url characters goes to an ordinary Map beside the table, so every string still works.
 * Deleting while iterating is safe (the table never moves on a delete), as with a Map (the pull
 * prunes that way). Unlike a Map, adding during an iteration may end it early (when the table
 * grows); nothing does that.
 */

const EMPTY = 0;
const FULL = 1;
const DELETED = 2;
const MIN_CAPACITY = 16;
/** The table grows by GROWTH (or is rebuilt without its tombstones) when used slots would pass 3/4 of it. */
const MAX_LOAD = 0.75;
const GROWTH = 1.5;
const TWO_TO_32 = 2 ** 32;

/** Where the probe for a key starts: the words are SHA-256 bits, so any of them spreads evenly. */
function home(w0: number, capacity: number): number {
  return Math.floor((w0 * capacity) / TWO_TO_32);
}

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** base64url character code → its 6-bit value, or -1. */
const SEXTET = new Int8Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) SEXTET[ALPHABET.charCodeAt(i)] = i;

/** The 24 bits of the four base64url characters at `at`, or -1 when one is not base64url. */
function quad(key: string, at: number): number {
  const a = SEXTET[key.charCodeAt(at)] ?? -1;
  const b = SEXTET[key.charCodeAt(at + 1)] ?? -1;
  const c = SEXTET[key.charCodeAt(at + 2)] ?? -1;
  const d = SEXTET[key.charCodeAt(at + 3)] ?? -1;
  // A -1 among them has every bit set, so the whole is -1 too: no separate check.
  return (a << 18) | (b << 12) | (c << 6) | d;
}

function quadText(bits: number): string {
  return ALPHABET.charAt(bits >>> 18) + ALPHABET.charAt((bits >>> 12) & 63) + ALPHABET.charAt((bits >>> 6) & 63) + ALPHABET.charAt(bits & 63);
}

// Words of the key last decoded by `decode` (module state: no allocation per lookup).
let word0 = 0;
let word1 = 0;
let word2 = 0;

/** Decodes a 16-character base64url key into word0..word2; false for any other key. */
function decode(key: string): boolean {
  if (key.length !== 16) return false;
  const q0 = quad(key, 0);
  const q1 = quad(key, 4);
  const q2 = quad(key, 8);
  const q3 = quad(key, 12);
  if ((q0 | q1 | q2 | q3) < 0) return false;
  word0 = ((q0 << 8) | (q1 >>> 16)) >>> 0;
  word1 = (((q1 & 0xffff) << 16) | (q2 >>> 8)) >>> 0;
  word2 = (((q2 & 0xff) << 24) | q3) >>> 0;
  return true;
}

function encode(w0: number, w1: number, w2: number): string {
  return quadText(w0 >>> 8) + quadText(((w0 & 0xff) << 16) | (w1 >>> 16)) + quadText(((w1 & 0xffff) << 8) | (w2 >>> 24)) + quadText(w2 & 0xffffff);
}

export class CompactVersionSet extends Map<string, number> {
  private capacity = MIN_CAPACITY;
  private words = new Uint32Array(MIN_CAPACITY * 3);
  private times = new Float64Array(MIN_CAPACITY);
  private states = new Uint8Array(MIN_CAPACITY);
  /** FULL slots. */
  private live = 0;
  /** FULL and DELETED slots: what probing has to step over. */
  private used = 0;
  /** Keys that are not version hashes. */
  private readonly others = new Map<string, number>();

  constructor(entries?: Iterable<readonly [string, number]>) {
    super();
    if (entries) for (const [key, at] of entries) this.set(key, at);
  }

  /** Bytes held by the table's arrays (the Map beside it not counted). */
  get tableBytes(): number {
    return this.words.byteLength + this.times.byteLength + this.states.byteLength;
  }

  override get size(): number {
    return this.live + this.others.size;
  }

  /** The slot holding word0..word2, or -1. */
  private find(): number {
    const capacity = this.capacity;
    for (let slot = home(word0, capacity); ; slot = slot + 1 === capacity ? 0 : slot + 1) {
      const state = this.states[slot];
      if (state === EMPTY) return -1;
      if (state === FULL && this.words[slot * 3] === word0 && this.words[slot * 3 + 1] === word1 && this.words[slot * 3 + 2] === word2) return slot;
    }
  }

  override has(key: string): boolean {
    return decode(key) ? this.find() >= 0 : this.others.has(key);
  }

  override get(key: string): number | undefined {
    if (!decode(key)) return this.others.get(key);
    const slot = this.find();
    return slot < 0 ? undefined : this.times[slot];
  }

  override set(key: string, at: number): this {
    if (!decode(key)) {
      this.others.set(key, at);
      return this;
    }
    const existing = this.find();
    if (existing >= 0) {
      this.times[existing] = at;
      return this;
    }
    if (this.used + 1 > this.capacity * MAX_LOAD) this.rebuild(this.live + 1 > (this.capacity * MAX_LOAD) / GROWTH ? Math.ceil(this.capacity * GROWTH) : this.capacity);
    this.place(word0, word1, word2, at);
    return this;
  }

  /** Puts a key known to be absent into the first free slot of its probe sequence (a tombstone is reused). */
  private place(w0: number, w1: number, w2: number, at: number): void {
    const capacity = this.capacity;
    let slot = home(w0, capacity);
    while (this.states[slot] === FULL) slot = slot + 1 === capacity ? 0 : slot + 1;
    if (this.states[slot] === EMPTY) this.used++;
    this.states[slot] = FULL;
    this.words[slot * 3] = w0;
    this.words[slot * 3 + 1] = w1;
    this.words[slot * 3 + 2] = w2;
    this.times[slot] = at;
    this.live++;
  }

  private rebuild(capacity: number): void {
    const { words, times, states } = this;
    this.capacity = capacity;
    this.words = new Uint32Array(capacity * 3);
    this.times = new Float64Array(capacity);
    this.states = new Uint8Array(capacity);
    this.live = 0;
    this.used = 0;
    for (let slot = 0; slot < states.length; slot++) {
      if (states[slot] === FULL) this.place(words[slot * 3] ?? 0, words[slot * 3 + 1] ?? 0, words[slot * 3 + 2] ?? 0, times[slot] ?? 0);
    }
  }

  override delete(key: string): boolean {
    if (!decode(key)) return this.others.delete(key);
    const slot = this.find();
    if (slot < 0) return false;
    this.states[slot] = DELETED;
    this.live--;
    return true;
  }

  override clear(): void {
    this.others.clear();
    this.capacity = MIN_CAPACITY;
    this.words = new Uint32Array(MIN_CAPACITY * 3);
    this.times = new Float64Array(MIN_CAPACITY);
    this.states = new Uint8Array(MIN_CAPACITY);
    this.live = 0;
    this.used = 0;
  }

  override *entries(): MapIterator<[string, number]> {
    yield* this.others.entries();
    const { words, times, states } = this;
    for (let slot = 0; slot < states.length; slot++) {
      // The state is read as each slot is reached: an entry deleted during the iteration is not visited.
      if (states[slot] === FULL && this.states === states) yield [encode(words[slot * 3] ?? 0, words[slot * 3 + 1] ?? 0, words[slot * 3 + 2] ?? 0), times[slot] ?? 0];
    }
  }

  override [Symbol.iterator](): MapIterator<[string, number]> {
    return this.entries();
  }

  override *keys(): MapIterator<string> {
    for (const [key] of this.entries()) yield key;
  }

  override *values(): MapIterator<number> {
    for (const [, at] of this.entries()) yield at;
  }

  override forEach(callback: (value: number, key: string, map: Map<string, number>) => void, thisArg?: unknown): void {
    for (const [key, at] of this.entries()) callback.call(thisArg, at, key, this);
  }
}
