//! OCI platforms (`os/architecture[/variant]`) and picking an index's manifest by one.

use crate::error::{Error, Result};

/// The architecture name OCI uses for this host.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An OCI platform, `os/architecture[/variant]` as `--platform`, docker and podman
/// spell it. Image layouts, archives and registries pick their manifest with
/// [`pick_platform`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// This host's: linux and the OCI name of its architecture.
    pub fn host() -> Platform {
        Platform { os: "linux".into(), architecture: host_arch().into(), variant: None }
    }

    /// `os/arch[/variant]`, or `arch` alone (linux), in any case: as containerd's
    /// `platforms.Parse`, `Linux/AMD64` is `linux/amd64` (OCI's names are lowercase).
    pub fn parse(s: &str) -> Result<Platform> {
        let word = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let parts: Vec<&str> = s.split('/').collect();
        let (os, architecture, variant) = match parts.as_slice() {
            [a] => ("linux", *a, None),
            [o, a] => (*o, *a, None),
            [o, a, v] => (*o, *a, Some(v.to_string())),
            _ => ("", "", None),
        };
        if !word(os) || !word(architecture) || variant.as_deref().is_some_and(|v| !word(v)) {
            return Err(Error::InvalidPlatform(s.escape_debug().to_string()));
        }
        Ok(Platform {
            os: os.to_ascii_lowercase(),
            architecture: architecture.to_ascii_lowercase(),
            variant: variant.map(|v| v.to_ascii_lowercase()),
        })
    }

    /// The platform an image config is for.
    pub fn of_config(config: &oci_spec::image::ImageConfiguration) -> Platform {
        Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone(),
        }
    }

    /// Whether an image for `other` is what this platform asks for: os and
    /// architecture equal, and the variant too when this one names one.
    pub fn accepts(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

/// An index entry's `platform`.
impl From<&oci_spec::image::Platform> for Platform {
    fn from(p: &oci_spec::image::Platform) -> Platform {
        Platform { os: p.os().to_string(), architecture: p.architecture().to_string(), variant: p.variant().clone() }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// Which of an index's entries (their platforms; `None` for an entry that names none,
/// taken as matching: its config decides) is for `want`: the first that is; when none
/// is, an error naming the platforms present.
pub fn pick_platform(entries: &[Option<Platform>], want: &Platform) -> Result<usize> {
    if let Some(i) = entries.iter().position(|p| p.as_ref().is_none_or(|p| want.accepts(p))) {
        return Ok(i);
    }
    let present: Vec<String> = entries.iter().flatten().map(Platform::to_string).collect();
    Err(Error::NoPlatform { want: want.to_string(), present })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_in_any_case_as_containerd_does() {
        let p = |os: &str, arch: &str, variant: Option<&str>| Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: variant.map(str::to_string),
        };
        let cases = [
            ("linux/amd64", p("linux", "amd64", None)),
            ("Linux/AMD64", p("linux", "amd64", None)),
            ("LINUX/arm64/V8", p("linux", "arm64", Some("v8"))),
            ("ARM64", p("linux", "arm64", None)),
            ("Windows/Amd64", p("windows", "amd64", None)),
        ];
        for (s, want) in cases {
            assert_eq!(Platform::parse(s).unwrap(), want, "{s}");
        }
        // What an index says (lowercase) is accepted for any spelling of it.
        assert!(Platform::parse("Linux/AMD64").unwrap().accepts(&p("linux", "amd64", None)));
        for bad in ["", "linux/", "/amd64", "linux/amd64/v8/x", "linux/am d64", "Linux/AMD64\n"] {
            assert!(matches!(Platform::parse(bad), Err(Error::InvalidPlatform(_))), "{bad:?}");
        }
    }
}
