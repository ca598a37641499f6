/* flowtracker report: a synchronous gunzip for the blobs flowtracker/viz/_report.py embeds.
 *
 * Why not the browser's DecompressionStream: it is asynchronous only, so a page that waits for it
 * paints nothing but its empty shell first, and that shell is all a headless screenshot, a link
 * preview or a CI artefact ever sees. Inflating here, while the page's script runs, lets the first
 * paint show the traces. It also works in browsers without DecompressionStream.
 *
 * gunzip(bytes) reads one gzip member (RFC 1952) holding DEFLATE data (RFC 1951: stored, fixed and
 * dynamic Huffman blocks) and checks its length and CRC-32, so a damaged report fails loudly
 * instead of showing wrong numbers. Huffman codes are decoded a bit at a time with canonical code
 * counts (as zlib's puff.c does): short, and fast enough for the few MB a report holds.
 *
 *   const text = new TextDecoder().decode(flowtrackerGunzip(bytes));
 */
const flowtrackerGunzip = (function () {
  'use strict';
  // RFC 1951 3.2.5: base value and extra bits of each length and distance symbol
  const LENGTH_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
                       115, 131, 163, 195, 227, 258];
  const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
  const DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
                     2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577];
  const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
                      13, 13];
  // RFC 1951 3.2.7: the order in which code-length code lengths are stored
  const CLEN_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

  let input = null;   // the compressed bytes
  let pos = 0;        // next unread byte
  let end = 0;        // where the DEFLATE data stops (the gzip trailer follows)
  let bitBuf = 0;     // bits read but not used yet, lowest first
  let bitCount = 0;   // how many; always below 8 between calls, so a byte boundary is easy to find

  function fail(message) { throw new Error('The report data is damaged (' + message + ').'); }

  function bits(n) {
    while (bitCount < n) {
      if (pos >= end) fail('it ends early');
      bitBuf |= input[pos++] << bitCount;
      bitCount += 8;
    }
    const value = bitBuf & ((1 << n) - 1);
    bitBuf >>>= n;
    bitCount -= n;
    return value;
  }

  // A canonical Huffman code: how many codes of each length, and the symbols in code order.
  function huffman(lengths) {
    const counts = new Uint16Array(16);
    for (let s = 0; s < lengths.length; s++) counts[lengths[s]]++;
    counts[0] = 0;
    const next = new Uint16Array(16);
    for (let len = 1; len < 16; len++) next[len] = next[len - 1] + counts[len - 1];
    const symbols = new Uint16Array(lengths.length);
    for (let s = 0; s < lengths.length; s++) if (lengths[s]) symbols[next[lengths[s]]++] = s;
    return {counts: counts, symbols: symbols};
  }

  function decode(code) {
    // Codes are stored first bit first; the codes of one length are consecutive numbers
    // starting at `first`, so each step checks whether the bits read so far are one of them.
    let value = 0;
    let first = 0;
    let index = 0;
    for (let len = 1; len < 16; len++) {
      if (bitCount === 0) {
        if (pos >= end) fail('it ends early');
        bitBuf = input[pos++];
        bitCount = 8;
      }
      value |= bitBuf & 1;
      bitBuf >>>= 1;
      bitCount--;
      const count = code.counts[len];
      if (value - first < count) return code.symbols[index + value - first];
      index += count;
      first = (first + count) << 1;
      value <<= 1;
    }
    return fail('an invalid Huffman code');
  }

  let fixedCodes = null;

  function fixed() {
    if (!fixedCodes) {
      const lengths = new Uint8Array(288);
      lengths.fill(8, 0, 144);
      lengths.fill(9, 144, 256);
      lengths.fill(7, 256, 280);
      lengths.fill(8, 280, 288);
      fixedCodes = [huffman(lengths), huffman(new Uint8Array(30).fill(5))];
    }
    return fixedCodes;
  }

  function dynamic() {
    const literals = bits(5) + 257;
    const distances = bits(5) + 1;
    const codeLengths = bits(4) + 4;
    if (literals > 286 || distances > 30) fail('too many codes');
    const clen = new Uint8Array(19);
    for (let k = 0; k < codeLengths; k++) clen[CLEN_ORDER[k]] = bits(3);
    const clenCode = huffman(clen);
    const lengths = new Uint8Array(literals + distances);
    for (let k = 0; k < lengths.length;) {
      const symbol = decode(clenCode);
      if (symbol < 16) {
        lengths[k++] = symbol;
        continue;
      }
      let repeat = 0;
      let length = 0;
      if (symbol === 16) {
        if (k === 0) fail('a repeat with nothing before it');
        length = lengths[k - 1];
        repeat = 3 + bits(2);
      } else {
        repeat = symbol === 17 ? 3 + bits(3) : 11 + bits(7);
      }
      if (k + repeat > lengths.length) fail('too many code lengths');
      lengths.fill(length, k, k + repeat);
      k += repeat;
    }
    if (lengths[256] === 0) fail('no end-of-block code');
    return [huffman(lengths.subarray(0, literals)), huffman(lengths.subarray(literals))];
  }

  function codes(out, o, literal, distance) {
    for (;;) {
      let symbol = decode(literal);
      if (symbol < 256) {
        if (o >= out.length) fail('more data than announced');
        out[o++] = symbol;
      } else if (symbol === 256) {
        return o;
      } else {
        symbol -= 257;
        if (symbol >= 29) fail('an invalid length');
        const length = LENGTH_BASE[symbol] + bits(LENGTH_EXTRA[symbol]);
        const dsym = decode(distance);
        if (dsym >= 30) fail('an invalid distance');
        const back = DIST_BASE[dsym] + bits(DIST_EXTRA[dsym]);
        if (back > o) fail('a distance too far back');
        if (o + length > out.length) fail('more data than announced');
        for (let k = 0; k < length; k++, o++) out[o] = out[o - back];  // overlapping copies repeat
      }
    }
  }

  function inflate(out) {
    let o = 0;
    let last = 0;
    do {
      last = bits(1);
      const type = bits(2);
      if (type === 0) {
        bitBuf = 0;  // a stored block starts at the next byte
        bitCount = 0;
        if (pos + 4 > end) fail('it ends early');
        const length = input[pos] | (input[pos + 1] << 8);
        if ((length ^ 0xffff) !== (input[pos + 2] | (input[pos + 3] << 8))) fail('a bad stored block');
        pos += 4;
        if (pos + length > end || o + length > out.length) fail('a stored block too long');
        out.set(input.subarray(pos, pos + length), o);
        pos += length;
        o += length;
      } else if (type === 1 || type === 2) {
        const [literal, distance] = type === 1 ? fixed() : dynamic();
        o = codes(out, o, literal, distance);
      } else {
        fail('an invalid block type');
      }
    } while (!last);
    return o;
  }

  let crcTable = null;

  function crc32(bytes) {
    if (!crcTable) {
      crcTable = new Int32Array(256);
      for (let n = 0; n < 256; n++) {
        let c = n;
        for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
        crcTable[n] = c;
      }
    }
    let crc = -1;
    for (let k = 0; k < bytes.length; k++) crc = crcTable[(crc ^ bytes[k]) & 0xff] ^ (crc >>> 8);
    return (crc ^ -1) >>> 0;
  }

  function word(bytes, at) {
    return (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16) | (bytes[at + 3] << 24)) >>> 0;
  }

  return function gunzip(bytes) {
    if (bytes.length < 18 || bytes[0] !== 0x1f || bytes[1] !== 0x8b || bytes[2] !== 8) fail('not gzip');
    const flags = bytes[3];
    let at = 10;
    if (flags & 4) at += 2 + (bytes[at] | (bytes[at + 1] << 8));  // FEXTRA
    for (const flag of [8, 16]) {                                  // FNAME, FCOMMENT: zero-terminated
      if (flags & flag) { while (at < bytes.length && bytes[at] !== 0) at++; at++; }
    }
    if (flags & 2) at += 2;                                        // FHCRC
    const trailer = bytes.length - 8;
    if (at > trailer) fail('a bad gzip header');
    const out = new Uint8Array(word(bytes, trailer + 4));          // ISIZE: the size, known up front
    input = bytes;
    pos = at;
    end = trailer;
    bitBuf = 0;
    bitCount = 0;
    try {
      if (inflate(out) !== out.length) fail('less data than announced');
    } finally {
      input = null;
    }
    if (crc32(out) !== word(bytes, trailer)) fail('a CRC mismatch');
    return out;
  };
})();
