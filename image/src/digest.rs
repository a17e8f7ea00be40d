//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`), parsed once with one
//! grammar wherever a digest comes in: a descriptor, a config's diff_ids, a file name in
//! a layout, a registry's answer. A [`Digest`] is then safe to put in a path or a URL:
//! the grammar admits no `/`, `.`, `%` or uppercase letter.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The hash functions the OCI image spec registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// How many hex digits a digest of this algorithm has.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A digest: an algorithm and its lowercase hex, as `sha256:…`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    /// The whole `algorithm:hex`, kept so that [`Digest::as_str`] costs nothing.
    full: String,
}

/// A string that is not a digest strata accepts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid digest {shown:?}: expected sha256: and 64 lowercase hex digits (or sha512: and 128)")]
pub struct DigestError {
    /// The input, cut to 100 characters so a hostile one cannot flood the error line.
    shown: String,
}

impl Digest {
    /// Parses `algorithm:hex`; refuses anything else (other algorithms, uppercase,
    /// the wrong length, `..` or `/`).
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let refuse = || DigestError { shown: s.chars().take(100).collect() };
        let (alg, hex) = s.split_once(':').ok_or_else(refuse)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(refuse()),
        };
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(lower_hex) {
            return Err(refuse());
        }
        Ok(Digest { algorithm, full: s.to_string() })
    }

    /// The sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest { algorithm: Algorithm::Sha256, full: driver_core::digest::sha256(data) }
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex digits, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.full[self.algorithm.name().len() + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Where an OCI image layout keeps this blob: `blobs/<algorithm>/<hex>`.
    pub fn blob_path(&self) -> PathBuf {
        PathBuf::from(format!("blobs/{}/{}", self.algorithm.name(), self.hex()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.full)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        Digest::parse(s)
    }
}

/// A digest reads as its string wherever a `&str` is taken (paths, URLs, records).
impl std::ops::Deref for Digest {
    type Target = str;
    fn deref(&self) -> &str {
        &self.full
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.full == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.full == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        self.full == *other
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.full
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Digest, DigestError> {
        Digest::parse(&s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An oci-spec descriptor's digest (oci-spec checks only its shape, and takes other
/// algorithms and uppercase hex) as one strata accepts.
impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Digest, DigestError> {
        Digest::parse(d.as_ref())
    }
}

/// A digest strata accepts is one oci-spec accepts (its grammar is the narrower), for
/// the descriptors of the documents strata writes.
impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> oci_spec::image::Digest {
        d.as_str().parse().expect("sha256 or sha512 and lowercase hex is an OCI digest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_grammar_for_every_digest() {
        let a = format!("sha256:{}", "a".repeat(64));
        let d = Digest::parse(&a).unwrap();
        assert_eq!((d.algorithm(), d.hex(), d.as_str()), (Algorithm::Sha256, &"a".repeat(64)[..], &a[..]));
        assert_eq!(d.blob_path(), PathBuf::from(format!("blobs/sha256/{}", "a".repeat(64))));
        assert_eq!(a.parse::<Digest>().unwrap().to_string(), a);
        let long = format!("sha512:{}", "0".repeat(128));
        assert_eq!(
            Digest::parse(&long).unwrap().blob_path(),
            PathBuf::from(format!("blobs/sha512/{}", "0".repeat(128)))
        );
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:abc",
            "sha256:../../etc/passwd",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha256:{}", "a".repeat(65)),
            &format!("sha512:{}", "a".repeat(64)),
            &format!("sha256:{}/", "a".repeat(63)),
            &format!("SHA256:{}", "a".repeat(64)),
            &format!("sha256:{}%2e", "a".repeat(61)),
        ] {
            let e = Digest::parse(bad).unwrap_err();
            assert!(e.to_string().starts_with("invalid digest"), "{bad:?}: {e}");
        }
    }

    /// Valid digests with one byte replaced (fixed seed): the result parses exactly when
    /// the byte is in the hex part and is a lowercase hex digit, and whatever parses
    /// prints back as given and makes a path of plain components under `blobs/`.
    #[test]
    fn one_changed_byte_parses_only_when_it_is_lowercase_hex() {
        let alphabet = b"0123456789abcdefABCDEFgz:/.%-_ ";
        let mut x: u64 = 0x00d1_6e57;
        let (mut kept, mut refused) = (0, 0);
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let (alg, n) = if x & 1 == 0 { ("sha256", 64) } else { ("sha512", 128) };
            let hex: String =
                (0..n).map(|i| b"0123456789abcdef"[((x >> (i % 60)) as usize + i) % 16] as char).collect();
            let mut bytes = format!("{alg}:{hex}").into_bytes();
            let at = (x >> 8) as usize % bytes.len();
            let with = alphabet[(x >> 24) as usize % alphabet.len()];
            let same = bytes[at] == with;
            bytes[at] = with;
            let s = String::from_utf8(bytes).unwrap();
            let want = same || (at > alg.len() && (with.is_ascii_digit() || (b'a'..=b'f').contains(&with)));
            match Digest::parse(&s) {
                Ok(d) => {
                    assert!(want, "{s:?} parsed");
                    kept += 1;
                    assert_eq!(d.to_string(), s);
                    let p = d.blob_path();
                    assert_eq!(p.components().count(), 3, "{s}");
                    assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))), "{s}");
                }
                Err(_) => {
                    assert!(!want, "{s:?} refused");
                    refused += 1;
                }
            }
        }
        assert!(kept > 1000 && refused > 1000, "both sides reached: {kept} kept, {refused} refused");
    }

    #[test]
    fn serde_is_the_string() {
        let a = format!("sha256:{}", "b".repeat(64));
        let d: Digest = serde_json::from_str(&format!("\"{a}\"")).unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{a}\""));
        assert!(serde_json::from_str::<Digest>("\"sha256:../x\"").is_err());
    }
}
