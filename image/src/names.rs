//! Image names: the reference grammar a stored image's name must follow.

use crate::error::{Error, Result};

/// Checks an image name against the reference grammar (`[host[:port]/]path[:tag][@digest]`,
/// lowercase path components, the grammar docker and containerd use), which also keeps
/// a name from being `.`, `..`, empty, or anything that reads as a path.
pub fn validate_name(name: &str) -> Result<()> {
    if plainly_valid(name) {
        return Ok(());
    }
    match name.parse::<oci_spec::distribution::Reference>() {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::InvalidReference { name: name.to_string(), reason: e.to_string() }),
    }
}

/// Whether `name` has the shape most image names have, which the reference grammar
/// takes: `path[:tag]`, the path of `/`-separated components of lowercase letters and
/// digits joined by single `.`, `_` or `-` (the first may then be read as a registry
/// host, which takes those too), the tag of up to 128 letters, digits, `_`, `.`, `-`
/// not starting with `.` or `-`. Checked by hand because oci-spec's parse compiles its
/// reference regex first (Unicode `\w`): about 50 ms of CPU, a twentieth of a whole
/// unpack of the python3 image. Anything else goes to the crate's parse; the test
/// `plainly_valid_names_are_valid_references` checks this takes nothing it refuses.
fn plainly_valid(name: &str) -> bool {
    let (path, tag) = match name.rsplit_once(':') {
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (name, None),
    };
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let tag_ok = tag.is_none_or(|t| {
        let t = t.as_bytes();
        (1..=128).contains(&t.len()) && word(t[0]) && t.iter().all(|&b| word(b) || b == b'.' || b == b'-')
    });
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let component_ok = |c: &str| {
        let c = c.as_bytes();
        !c.is_empty()
            && alnum(c[0])
            && alnum(c[c.len() - 1])
            && c.iter().all(|&b| alnum(b) || b"._-".contains(&b))
            && c.windows(2).all(|w| alnum(w[0]) || alnum(w[1]))
    };
    // "library/" may be put before a one-component name: the whole stays under 255.
    tag_ok && path.len() <= 200 && path.split('/').all(component_ok)
}

#[cfg(test)]
mod tests {
    #[test]
    fn plainly_valid_names_are_valid_references() {
        for name in ["bench", "debian", "repo/app:tag", "registry.local/a/b_c:1.0-rc", "a.b-c/d_e:Latest"] {
            assert!(super::plainly_valid(name), "{name} takes the fast path");
        }
        // Generated names (fixed seed) over the characters that matter to the grammar.
        let alphabet = b"ab0Z._-/:@";
        let mut x: u64 = 0x5eed_0123_4567;
        let mut fast = 0;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 12) as usize;
            let name: String = (0..len).map(|i| alphabet[((x >> (4 * i + 8)) % 10) as usize] as char).collect();
            if super::plainly_valid(&name) {
                fast += 1;
                assert!(name.parse::<oci_spec::distribution::Reference>().is_ok(), "{name:?} is no reference");
            }
        }
        assert!(fast > 1000, "the generator reaches the fast path ({fast})");
        let long = format!("{}:{}", "a".repeat(200), "t".repeat(128));
        assert!(super::plainly_valid(&long) && long.parse::<oci_spec::distribution::Reference>().is_ok());
        for refused in ["", "A", "a/", "/a", "a//b", "a..b", "a-", "a:", "a:.t", "a@sha256:00"] {
            assert!(!super::plainly_valid(refused), "{refused:?}");
        }
    }
}
