//! Layer streams come plain, gzip or zstd; the kind is found from the magic bytes, as
//! containerd does, so a mislabelled media type still unpacks. Anything else is refused
//! before a byte is applied, with what it looks like (zip, xz, bzip2, an empty file, not
//! a tar at all), so that a user who hands over the wrong file learns which one it was.
//!
//! gzip is inflated by ISA-L (the `isal` feature, on by default), which takes about 0.7x
//! the CPU time of zlib-rs on the Debian fixture's layers (`benches/inflate.rs`; libdeflate
//! lies between the two and needs the whole layer in memory). Without the feature, flate2
//! with zlib-rs, pure Rust. Both stream, so memory stays bounded whatever the layer size,
//! and both check each member's CRC-32 and length; the digests are checked around this
//! reader, by its callers.

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
    #[cfg(feature = "isal")]
    Gzip(crate::igzip::GzDecoder<R>),
    #[cfg(not(feature = "isal"))]
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

/// What formats a layer may come in, for error messages.
const READABLE: &str = "strata reads layers as tar, tar+gzip or tar+zstd";

/// Names the formats that people hand over as layers by mistake, from their magic bytes.
fn foreign_format(head: &[u8]) -> Option<&'static str> {
    const KNOWN: &[(&[u8], &str)] = &[
        (b"PK\x03\x04", "a zip archive"),
        (b"PK\x05\x06", "an empty zip archive"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "an xz stream"),
        (b"BZh", "a bzip2 stream"),
        (&[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c], "a 7-zip archive"),
        (&[0x04, 0x22, 0x4d, 0x18], "an lz4 stream"),
        (&[0x5d, 0x00, 0x00], "an lzma stream"),
        (b"\x7fELF", "an ELF executable"),
        (b"{", "JSON (an image manifest or config, not a layer?)"),
    ];
    KNOWN.iter().find(|(magic, _)| head.starts_with(magic)).map(|(_, what)| *what)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The first bytes of `data` as hex, for saying what a stream holds without printing
/// binary bytes to a terminal.
fn hex_head(data: &[u8]) -> String {
    data.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Whether `block` is a tar header: its checksum (the unsigned sum of the header bytes
/// with the checksum field read as spaces) matches the octal number it stores, or the
/// block is all zeros (an empty archive's end marker).
fn is_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return true;
    }
    let field = &block[148..156];
    let digits: String =
        field.iter().map(|&b| b as char).skip_while(|c| *c == ' ').take_while(|c| c.is_digit(8)).collect();
    let Ok(stored) = u32::from_str_radix(&digits, 8) else { return false };
    let sum: u32 = block.iter().enumerate().map(|(i, &b)| if (148..156).contains(&i) { 32 } else { b as u32 }).sum();
    stored == sum
}

/// A layer's decompressed tar stream whose first block is checked to be a tar header
/// when it is first read; the block is then handed on unchanged.
pub struct LayerStream<R: BufRead> {
    decoder: Decoder<R>,
    kind: Compression,
    head: Option<(Box<[u8; 512]>, usize, usize)>,
    checked: bool,
}

impl<R: BufRead> LayerStream<R> {
    fn check_head(&mut self) -> io::Result<()> {
        let mut block = Box::new([0u8; 512]);
        let mut len = 0;
        while len < block.len() {
            match self.decoder.read(&mut block[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let inside = match self.kind {
            Compression::None => "",
            Compression::Gzip => " inside the gzip stream",
            Compression::Zstd => " inside the zstd stream",
        };
        if len == 0 {
            return Err(invalid(format!("the layer{inside} is empty (0 bytes), not a tar; {READABLE}")));
        }
        if len < block.len() || !is_tar_header(&block) {
            let what = match foreign_format(&block[..len]) {
                Some(what) => format!("it looks like {what}"),
                None => format!("it starts with bytes {}", hex_head(&block[..len])),
            };
            return Err(invalid(format!("not a tar{inside}: {what}; {READABLE}")));
        }
        self.head = Some((block, 0, len));
        Ok(())
    }
}

impl<R: BufRead> Read for LayerStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.checked {
            self.checked = true;
            self.check_head()?;
        }
        if let Some((block, pos, len)) = &mut self.head {
            let n = (*len - *pos).min(buf.len());
            buf[..n].copy_from_slice(&block[*pos..*pos + n]);
            *pos += n;
            if *pos == *len {
                self.head = None;
            }
            return Ok(n);
        }
        self.decoder.read(buf)
    }
}

/// A layer's input with its first bytes (read to find its kind) put back in front.
pub type Peeked<R> = BufReader<io::Chain<io::Take<io::Cursor<[u8; 8]>>, R>>;

/// Wraps `input` in the right decompressor, found by peeking at its first bytes. An
/// empty input, a format strata does not read (zip, xz, bzip2, ...), and a stream whose
/// first block is not a tar header are errors that say what the input looks like.
pub fn decompress<R: Read>(mut input: R) -> io::Result<(Compression, LayerStream<Peeked<R>>)> {
    // The magic bytes are read whole, however few bytes each read of `input` gives (a
    // slow network source may give one), then handed on in front of the rest.
    let mut magic = [0u8; 8];
    let len = crate::reading::read_full(&mut input, &mut magic)?;
    let head = &magic[..len];
    let buf = BufReader::with_capacity(256 * 1024, io::Cursor::new(magic).take(len as u64).chain(input));
    if head.is_empty() {
        return Err(invalid(format!("the layer is an empty file (0 bytes), not a tar; {READABLE}")));
    }
    let kind = Compression::detect(head);
    if kind == Compression::None {
        if let Some(what) = foreign_format(head) {
            return Err(invalid(format!("not a tar: it looks like {what}; {READABLE}")));
        }
    }
    let decoder = match kind {
        // Both read every member: pigz and some registries write several.
        #[cfg(feature = "isal")]
        Compression::Gzip => Decoder::Gzip(crate::igzip::GzDecoder::new(buf)),
        #[cfg(not(feature = "isal"))]
        Compression::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buf)?),
        Compression::None => Decoder::Plain(buf),
    };
    Ok((kind, LayerStream { decoder, kind, head: None, checked: false }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn detects_and_decodes_each_kind() {
        let data = tar_of(&b"hello layer".repeat(100));
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

    fn tar_of(data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "f", data).unwrap();
        b.into_inner().unwrap()
    }

    fn first_read_error(input: &[u8]) -> String {
        match decompress(input) {
            Err(e) => e.to_string(),
            Ok((_, mut r)) => r.read_to_end(&mut Vec::new()).expect_err("must not read as a layer").to_string(),
        }
    }

    #[test]
    fn wrong_files_say_what_they_look_like() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"plain text, gzipped").unwrap();
        let gz_text = gz.finish().unwrap();
        let mut noise = vec![0u8; 4096];
        let mut x: u32 = 0x9e3779b9;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        noise[0] = 0x9f; // no known magic
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04rest of a zip".to_vec(), "looks like a zip archive"),
            (vec![0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2], "looks like an xz stream"),
            (b"BZh91AY&SY".to_vec(), "looks like a bzip2 stream"),
            (Vec::new(), "empty file (0 bytes)"),
            (gz_text, "not a tar inside the gzip stream"),
            (zstd::encode_all(&[][..], 3).unwrap(), "inside the zstd stream is empty"),
            (noise, "starts with bytes 9f"),
        ];
        for (input, want) in cases {
            let err = first_read_error(&input);
            assert!(err.contains(want), "{want:?} not in {err:?}");
            assert!(err.contains("strata reads layers as tar, tar+gzip or tar+zstd"), "{err}");
            assert!(err.chars().all(|c| !c.is_control()), "control characters in {err:?}");
        }
    }

    #[test]
    fn a_real_tar_and_an_empty_archive_pass_the_check_unchanged() {
        for input in [tar_of(b"content"), vec![0u8; 1024], tar_of(&vec![7u8; 100_000])] {
            let (_, mut r) = decompress(&input[..]).unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, input);
        }
    }

    /// A reader that hands out its data a few bytes at a time, as a slow network does.
    struct Trickle<'a>(&'a [u8], u32);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let n = (1 + (self.1 >> 16) as usize % 7).min(self.0.len()).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    /// A tar of generated files (text-like and random, so both stored and Huffman-coded
    /// blocks occur), gzipped as `members` members at pseudo-random cut points.
    fn gzip_case(seed: u32, members: usize) -> (Vec<u8>, Vec<u8>) {
        let mut x = seed | 1;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..20 {
            let len = next() as usize % 200_000;
            let data: Vec<u8> = if i % 3 == 0 {
                (0..len).map(|_| next() as u8).collect()
            } else {
                (0..len).map(|j| b"strata layer "[j % 13] ^ (next() % 5 == 0) as u8).collect()
            };
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, format!("f{i}"), &data[..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let mut cuts: Vec<usize> = (1..members).map(|_| next() as usize % tar.len()).collect();
        cuts.push(0);
        cuts.push(tar.len());
        cuts.sort();
        let mut gz = Vec::new();
        for w in cuts.windows(2) {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(next() % 10));
            e.write_all(&tar[w[0]..w[1]]).unwrap();
            gz.extend(e.finish().unwrap());
        }
        (tar, gz)
    }

    #[test]
    fn gzip_members_decode_whole_from_any_reader() {
        for seed in 1..6 {
            let (tar, gz) = gzip_case(seed, seed as usize);
            let (kind, mut r) = decompress(&gz[..]).unwrap();
            assert_eq!(kind, Compression::Gzip);
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert!(out == tar, "seed {seed}: {} bytes decoded, {} expected", out.len(), tar.len());
            let (_, mut r) = decompress(Trickle(&gz, seed)).unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap_or_else(|e| panic!("seed {seed}, trickled: {e}"));
            assert!(out == tar, "seed {seed}, trickled: {} bytes decoded, {} expected", out.len(), tar.len());
        }
    }

    #[test]
    fn truncated_or_altered_gzip_is_an_error() {
        let (_, gz) = gzip_case(7, 2);
        let mut x = 99u32;
        for _ in 0..12 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let cut = 512 + x as usize % (gz.len() - 512);
            let Ok((_, mut r)) = decompress(&gz[..cut]) else { continue };
            assert!(r.read_to_end(&mut Vec::new()).is_err(), "cut at {cut} of {} read as whole", gz.len());
        }
        // The last 8 bytes are the CRC-32 and the length of the last member.
        for back in 1..=8 {
            let mut bad = gz.clone();
            let i = bad.len() - back;
            bad[i] ^= 0x40;
            let (_, mut r) = decompress(&bad[..]).unwrap();
            assert!(r.read_to_end(&mut Vec::new()).is_err(), "trailer byte -{back} altered, read as whole");
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
