//! Checking a stream against its descriptor: its sha256 and size, when it ends.

use std::io::{self, Read};

use driver_core::digest::Hashing;

use crate::digest::Digest;
use crate::error::Error;

/// Checks a stream against an expected sha256 (and size) when it ends.
pub struct VerifyingReader<R> {
    inner: Hashing<R>,
    expected: String,
    size: Option<u64>,
    what: String,
}

impl<R: Read> VerifyingReader<R> {
    /// `what` names the stream in the error, e.g. `blob sha256:…`.
    pub fn new(inner: R, expected: &str, size: Option<u64>, what: String) -> Self {
        VerifyingReader { inner: Hashing::new(inner), expected: expected.to_string(), size, what }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = self.inner.byte_count();
        check_not_over(&self.what, read, self.size)?;
        if n == 0 && !buf.is_empty() {
            check_whole(&self.what, read, self.size, &self.inner.digest(), &self.expected)?;
        }
        Ok(n)
    }
}

/// Refuses a stream longer than its descriptor's `size`, as soon as it is.
pub(crate) fn check_not_over(what: &str, read: u64, size: Option<u64>) -> io::Result<()> {
    match size {
        Some(size) if read > size => Err(Error::LongerThanSaid { what: what.to_string(), size }.into_io()),
        _ => Ok(()),
    }
}

/// Checks a stream that ended against its descriptor's size and digest.
pub(crate) fn check_whole(what: &str, read: u64, size: Option<u64>, got: &str, expected: &str) -> io::Result<()> {
    if let Some(want) = size.filter(|s| *s != read) {
        return Err(Error::SizeMismatch { what: what.to_string(), got: read, want }.into_io());
    }
    if got != expected {
        let mismatch = || -> Result<Error, Error> {
            Ok(Error::DigestMismatch {
                what: what.to_string(),
                got: Digest::parse(got)?,
                want: Digest::parse(expected)?,
            })
        };
        return Err(mismatch().unwrap_or_else(|e| e).into_io());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    #[test]
    fn verifying_reader_catches_tampering_and_truncation() {
        let data = b"layer bytes".to_vec();
        let good = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        let mut out = Vec::new();
        VerifyingReader::new(&data[..], &good, Some(data.len() as u64), "blob".into()).read_to_end(&mut out).unwrap();
        let mut tampered = data.clone();
        tampered[0] ^= 1;
        let e = VerifyingReader::new(&tampered[..], &good, None, "blob x".into()).read_to_end(&mut out).unwrap_err();
        let e = Error::read("blob x", e);
        assert!(matches!(&e, Error::DigestMismatch { what, want, .. } if what == "blob x" && *want == good), "{e}");
        let e = VerifyingReader::new(&data[..5], &good, Some(data.len() as u64), "blob".into())
            .read_to_end(&mut out)
            .unwrap_err();
        let e = Error::read("blob", e);
        assert!(matches!(e, Error::SizeMismatch { got: 5, want: 11, .. }), "{e}");
    }
}
