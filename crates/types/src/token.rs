//! Shared sealing machinery for opaque, authenticated tokens (shard iterators, NextTokens).
//!
//! Wire form: URL-safe base64 without padding of `version(1) | kind(1) | body | HMAC-SHA256(32)`,
//! the tag covering every byte before it. Invariants: [`open`] returns the body only if the tag
//! verifies (constant-time compare) under the same key and the version and kind match, so a token
//! of one kind can never be opened as another; nothing here panics on any input.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::digest::Key;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const TAG_LEN: usize = 32;
const HEADER_LEN: usize = 2;
/// Upper bound on accepted token length, checked before decoding.
const MAX_TOKEN_CHARS: usize = 16 * 1024;

/// What a sealed token carries; part of the authenticated header (domain separation).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    ShardIterator = 1,
    Page = 2,
}

fn mac(key: &[u8; 32]) -> HmacSha256 {
    // HMAC zero-pads keys shorter than the block size, so padding here keeps the standard
    // HMAC-SHA256 of the 32-byte key while using the infallible fixed-size constructor.
    let mut block_key = Key::<HmacSha256>::default();
    for (dst, src) in block_key.iter_mut().zip(key.iter()) {
        *dst = *src;
    }
    <HmacSha256 as KeyInit>::new(&block_key)
}

/// Builds a token body field by field (big-endian integers, length-prefixed byte strings).
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(kind: Kind) -> Writer {
        let mut buf = Vec::with_capacity(192);
        buf.push(VERSION);
        buf.push(kind as u8);
        Writer { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A byte string prefixed by its length as an LEB128 varint.
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let mut n = v.len() as u64;
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.buf.push(low);
                break;
            }
            self.buf.push(low | 0x80);
        }
        self.buf.extend_from_slice(v);
        self
    }

    /// Appends the tag and encodes.
    pub(crate) fn seal(&self, key: &[u8; 32]) -> String {
        let mut m = mac(key);
        m.update(&self.buf);
        let tag = m.finalize().into_bytes();
        let mut out = Vec::with_capacity(self.buf.len() + TAG_LEN);
        out.extend_from_slice(&self.buf);
        out.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(out)
    }
}

/// Decodes and authenticates `token`, returning its body. `None` for anything malformed or forged.
pub(crate) fn open(token: &str, key: &[u8; 32], kind: Kind) -> Option<Vec<u8>> {
    if token.len() > MAX_TOKEN_CHARS {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(token).ok()?;
    if raw.len() < HEADER_LEN + TAG_LEN {
        return None;
    }
    let (signed, tag) = raw.split_at(raw.len() - TAG_LEN);
    let mut m = mac(key);
    m.update(signed);
    m.verify_slice(tag).ok()?;
    match signed {
        [VERSION, k, body @ ..] if *k == kind as u8 => Some(body.to_vec()),
        _ => None,
    }
}

/// Reads a body written by [`Writer`]; every accessor returns `None` past the end.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_be_bytes)
    }

    pub(crate) fn bytes(&mut self) -> Option<&'a [u8]> {
        let mut len: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            len |= u64::from(b & 0x7f).checked_shl(shift)?;
            if b & 0x80 == 0 {
                return self.take(usize::try_from(len).ok()?);
            }
        }
        None
    }

    pub(crate) fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// Succeeds only if the whole body was consumed.
    pub(crate) fn finish(self) -> Option<()> {
        self.buf.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn hmac_is_standard_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe". HMAC zero-pads short keys, so "Jefe" followed by zeros
        // up to 32 bytes must give the published tag.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mut m = mac(&key);
        m.update(b"what do ya want for nothing?");
        let hex: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn kinds_are_separated() {
        let t = Writer::new(Kind::Page).u64(1).seal(&KEY);
        assert!(open(&t, &KEY, Kind::Page).is_some());
        assert!(open(&t, &KEY, Kind::ShardIterator).is_none());
    }

    #[test]
    fn oversized_and_short_tokens_rejected() {
        assert!(open("", &KEY, Kind::Page).is_none());
        assert!(open(&"A".repeat(MAX_TOKEN_CHARS + 4), &KEY, Kind::Page).is_none());
        assert!(open(&URL_SAFE_NO_PAD.encode([1u8; 33]), &KEY, Kind::Page).is_none());
    }

    proptest! {
        #[test]
        fn fields_round_trip(a: u8, b: u32, c: u64, s in "\\PC{0,300}", raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let t = Writer::new(Kind::Page).u8(a).u32(b).u64(c).bytes(s.as_bytes()).bytes(&raw).seal(&KEY);
            let body = open(&t, &KEY, Kind::Page).unwrap();
            let mut r = Reader::new(&body);
            prop_assert_eq!(r.u8(), Some(a));
            prop_assert_eq!(r.u32(), Some(b));
            prop_assert_eq!(r.u64(), Some(c));
            prop_assert_eq!(r.str(), Some(s.as_str()));
            prop_assert_eq!(r.bytes(), Some(raw.as_slice()));
            prop_assert_eq!(r.finish(), Some(()));
        }

        #[test]
        fn reader_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&raw);
            let _ = (r.str(), r.u64(), r.bytes(), r.u32(), r.u8());
            let _ = r.finish();
        }
    }
}
