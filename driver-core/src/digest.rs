//! sha256 as OCI names content (`sha256:<hex>`): of bytes in memory, or of a stream
//! as it is read or written, so that data is hashed where it passes and never read
//! twice for its digest.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// The digest of `data`, as `sha256:<hex>`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Hashes and counts what passes through it, read or written.
///
/// ```
/// use std::io::Read;
/// let mut r = driver_core::digest::Hashing::new(&b"abc"[..]);
/// std::io::copy(&mut r, &mut std::io::sink()).unwrap();
/// assert_eq!(r.byte_count(), 3);
/// assert_eq!(r.digest(), driver_core::digest::sha256(b"abc"));
/// ```
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Hashing { inner, hasher: Sha256::new(), bytes: 0 }
    }

    /// Bytes passed so far.
    pub fn byte_count(&self) -> u64 {
        self.bytes
    }

    /// The digest of what passed so far, as `sha256:<hex>`.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The inner reader or writer, the digest and the byte count.
    pub fn finish(self) -> (T, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.bytes)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most 7 bytes a call, so short writes happen.
    struct Short(Vec<u8>);
    impl Write for Short {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stream_digest_is_the_digest_of_what_passed() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let want = sha256(&data);
        assert_eq!(want, format!("sha256:{}", hex::encode(Sha256::digest(&data))));
        let mut r = Hashing::new(&data[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!((r.digest(), r.byte_count()), (want.clone(), data.len() as u64));
        let mut w = Hashing::new(Short(Vec::new()));
        w.write_all(&data).unwrap();
        let (inner, digest, bytes) = w.finish();
        assert_eq!((digest, bytes, inner.0), (want, data.len() as u64, data));
    }
}
