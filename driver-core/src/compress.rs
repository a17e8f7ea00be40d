//! Layer streams come plain, gzip or zstd; the kind is found from the magic bytes, as
//! containerd does, so a mislabelled media type still unpacks.

use std::io::{self, BufRead, BufReader, Read};

/// The compression of a layer stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// Recognises gzip (`1f 8b`) and zstd (`28 b5 2f fd`) by their first bytes.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// A decompressing reader of any of the three kinds (`Send` when its input is).
/// One per layer stream, so the size of the gzip state does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Decoder<R: BufRead> {
    Plain(R),
    Gzip(flate2::bufread::MultiGzDecoder<R>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

/// Wraps `input` in the right decompressor, found by peeking at its first bytes.
pub fn decompress<R: Read>(input: R) -> io::Result<(Compression, Decoder<BufReader<R>>)> {
    let mut buf = BufReader::with_capacity(256 * 1024, input);
    let kind = Compression::detect(buf.fill_buf()?);
    let reader = match kind {
        // MultiGzDecoder: pigz and some registries write several gzip members.
        Compression::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buf)?),
        Compression::None => Decoder::Plain(buf),
    };
    Ok((kind, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_and_decodes_each_kind() {
        let data = b"hello layer".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for (input, want) in [(gz, Compression::Gzip), (zst, Compression::Zstd), (data.clone(), Compression::None)] {
            let (kind, mut r) = decompress(&input[..]).unwrap();
            assert_eq!(kind, want);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn corrupt_gzip_is_an_error() {
        let mut bad = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
        bad.extend_from_slice(b"not deflate data at all");
        let (_, mut r) = decompress(&bad[..]).unwrap();
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
    }
}
