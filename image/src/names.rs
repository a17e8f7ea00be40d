//! Image names: the reference grammar a stored image's name must follow.

use crate::error::{Error, Result};
use crate::reference::{InvalidReference, Reference};

/// Checks an image name against the reference grammar (`[host[:port]/]path[:tag][@digest]`,
/// lowercase path components, the grammar docker and containerd use), which also keeps
/// a name from being `.`, `..`, empty, or anything that reads as a path. The grammar is
/// [`Reference`]'s: a name is recorded only if it could be pulled or pushed as written.
pub fn validate_name(name: &str) -> Result<()> {
    match name.parse::<Reference>() {
        Ok(_) => Ok(()),
        Err(e) => {
            let reason = match e {
                InvalidReference::Grammar { reason, .. } => reason.to_string(),
                credentials => credentials.to_string(),
            };
            Err(Error::InvalidReference { name: name.to_string(), reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::reference::tests::generated_names;
    use crate::reference::Reference;

    /// Generated names (fixed seed): the name check takes exactly what the reference
    /// grammar parses, and refuses the rest with the grammar's reason.
    #[test]
    fn the_name_check_is_the_reference_grammar() {
        let (mut taken, mut refused) = (0, 0);
        for name in generated_names(0x5eed_0123_4567, 200_000) {
            match (super::validate_name(&name), name.parse::<Reference>()) {
                (Ok(()), Ok(_)) => taken += 1,
                (Err(crate::Error::InvalidReference { name: n, reason }), Err(e)) => {
                    refused += 1;
                    assert_eq!(n, name);
                    assert!(e.to_string().ends_with(&reason), "{name:?}: {reason} is not in {e}");
                }
                (mine, grammar) => panic!("{name:?}: the name check says {mine:?}, the grammar {grammar:?}"),
            }
        }
        assert!(taken > 1000 && refused > 1000, "both sides reached: {taken} taken, {refused} refused");
        for name in ["bench", "debian", "repo/app:tag", "registry.local/a/b_c:1.0-rc", "a.b-c/d_e:Latest"] {
            assert!(super::validate_name(name).is_ok(), "{name}");
        }
        for refused in ["", "A", "a/", "/a", "a//b", "a..b", "a-", "a:", "a:.t", "a@sha256:00", ".", ".."] {
            assert!(super::validate_name(refused).is_err(), "{refused:?}");
        }
    }
}
