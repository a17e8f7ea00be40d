//! Reading helpers shared by the decompressor's sniffing of magic bytes and the diff's
//! comparison of file contents (kept apart from both, so neither imports the other).

use std::io::{self, Read};

/// Reads until `buf` is full or the input ends, however little each read gives;
/// the bytes read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
