//! The plaintext inside sealed cookies: a compact binary layout, smaller than JSON and with
//! nothing to configure.
//!
//! Integers are unsigned LEB128 varints (a timestamp takes 5 bytes); strings are a varint byte
//! length then UTF-8; an optional string is a `0`/`1` byte then the string. Readers refuse
//! trailing bytes, lengths past the end, over-long varints and invalid UTF-8, although
//! authenticated decryption already guarantees the bytes are ones we wrote.

/// Builds a plaintext.
#[derive(Default)]
pub(super) struct Writer(Vec<u8>);

impl Writer {
    pub(super) fn uint(&mut self, mut n: u64) -> &mut Self {
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.0.push(low);
                return self;
            }
            self.0.push(low | 0x80);
        }
    }

    pub(super) fn str(&mut self, s: &str) -> &mut Self {
        self.uint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    pub(super) fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => {
                self.0.push(1);
                self.str(s)
            }
            None => {
                self.0.push(0);
                self
            }
        }
    }

    pub(super) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// Reads a plaintext; every method is `None` on malformed input.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    pub(super) fn uint(&mut self) -> Option<u64> {
        let mut n: u64 = 0;
        // 10 groups of 7 bits hold any u64; the 10th may only carry the top bit.
        for i in 0..10 {
            let (&byte, rest) = self.0.split_first()?;
            self.0 = rest;
            let bits = u64::from(byte & 0x7f);
            if i == 9 && bits > 1 {
                return None;
            }
            n |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    pub(super) fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.uint()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(text).ok()
    }

    pub(super) fn opt_str(&mut self) -> Option<Option<&'a str>> {
        let (&tag, rest) = self.0.split_first()?;
        self.0 = rest;
        match tag {
            0 => Some(None),
            1 => self.str().map(Some),
            _ => None,
        }
    }

    /// `Some(())` when everything was read.
    pub(super) fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}
