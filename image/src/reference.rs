//! Image references, `[host[:port]/]path[:tag][@digest]`, in the distribution
//! reference grammar (docker's and containerd's), parsed once into a [`Reference`].
//! Its digest is a [`Digest`], in the one grammar [`Digest::parse`] has.
//!
//! One grammar for every name: a reference to pull or push, and the name an image is
//! recorded under ([`crate::names::validate_name`] parses it here). It is checked by
//! hand, not by a regex: references are parsed on every unpack, and compiling the
//! grammar's regex costs about 50 ms of CPU.
//!
//! ```
//! use strata_image::reference::Reference;
//! let r: Reference = "debian:12".parse().unwrap();
//! assert_eq!((r.registry(), r.repository(), r.reference()), ("registry-1.docker.io", "library/debian", "12"));
//! assert_eq!(r.name(), "docker.io/library/debian:12");
//! assert_eq!(r.to_string(), "debian:12");
//! assert!("Debian:12".parse::<Reference>().is_err());
//! ```

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Where a reference without a registry (or with `docker.io`) is pulled from.
const DOCKER_HUB: &str = "registry-1.docker.io";

/// A parsed image reference: the parts as written, and the registry and repository
/// they name (Docker Hub's short names resolved as docker resolves them).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `host[:port]` as written, if the reference names one.
    domain: Option<String>,
    /// The repository as written (`debian` for Docker Hub's `library/debian`).
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
    /// Host (and port) to talk to.
    registry: String,
    /// The repository on that registry.
    repository: String,
}

/// Why a string is not a [`Reference`]. What the user typed is shown on one line and
/// cut short; a password in it never is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReference {
    /// `user:pw@host/repo`, as a URL would carry credentials.
    #[error(
        "invalid image reference \"{user}:…@{rest}\": credentials do not go in a reference; use --creds \
         {user}[:PASS] (or --authfile) with the reference {rest}"
    )]
    Credentials { user: String, rest: String },
    #[error("invalid image reference {input:?}: {reason}")]
    Grammar { input: String, reason: Reason },
}

/// Which part of a reference breaks the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("the digest must be sha256: and 64 lowercase hex digits")]
    Digest,
    #[error("a tag is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'")]
    Tag,
    #[error("the registry must be a host name or address, with an optional port")]
    Domain,
    #[error(
        "a repository is lowercase letters and digits, separated by '.', '_', '__', '-' or '/' (no '..', '%', \
         empty or uppercase parts)"
    )]
    Repository,
    #[error("the name is longer than 255 characters")]
    TooLong,
}

/// A digest outside what strata accepts: [`Digest::parse`]'s error, under the name the
/// registry client's errors use.
pub type InvalidDigest = crate::digest::DigestError;

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-`: one path component of a
/// repository name in the distribution reference grammar.
pub(crate) fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: &u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(&b[0]) || !alnum(&b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(&b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(&b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

/// `host[:port]`: domain components (alphanumerics and inner `-`) joined by `.`, an
/// IPv4 address, or `[IPv6]`; an optional numeric port.
fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, tail)) => {
                if v6.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                match tail {
                    "" => return true,
                    t => (None, t.strip_prefix(':')),
                }
            }
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    let Some(host) = host else { return port.is_some() };
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub(crate) fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// Text from outside (a server's answer, a user's reference) fit for one error line:
/// control characters (newlines that would forge a second `error:` line, escapes)
/// become spaces, and it is cut at `max` characters.
pub(crate) fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

impl FromStr for Reference {
    type Err = InvalidReference;

    /// `[domain/]path[:tag][@digest]`, as the distribution reference grammar (docker's
    /// "invalid reference format") has it.
    fn from_str(s: &str) -> Result<Reference, InvalidReference> {
        // `user:pw@host/repo`, as a URL would carry them: refused, and the secret is
        // not echoed.
        if let Some((userinfo, rest)) = s.split_once('@') {
            if rest.contains('/') && !userinfo.contains('/') {
                let user = userinfo.split(':').next().unwrap_or_default();
                return Err(InvalidReference::Credentials { user: one_line(user, 100), rest: one_line(rest, 300) });
            }
        }
        let bad = |reason| InvalidReference::Grammar { input: one_line(s, 300), reason };
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|_| bad(Reason::Digest))?)),
            None => (s, None),
        };
        let (domain, remainder) = match rest.split_once('/') {
            Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" || f.starts_with('[') => {
                (Some(f), r)
            }
            _ => (None, rest),
        };
        // A tag is after the last ':' that follows the last '/'.
        let (path, tag) = match remainder.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => {
                if !is_tag(t) {
                    return Err(bad(Reason::Tag));
                }
                (r, Some(t.to_string()))
            }
            _ => (remainder, None),
        };
        if let Some(host) = domain {
            if !is_domain(host) {
                return Err(bad(Reason::Domain));
            }
        }
        if path.is_empty() || !path.split('/').all(is_path_component) {
            return Err(bad(Reason::Repository));
        }
        let (registry, repository) = match domain {
            Some(host) if host != "docker.io" && host != "index.docker.io" => (host.to_string(), path.to_string()),
            _ => {
                let repo = if path.contains('/') { path.to_string() } else { format!("library/{path}") };
                (DOCKER_HUB.to_string(), repo)
            }
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(bad(Reason::TooLong));
        }
        Ok(Reference { domain: domain.map(str::to_string), path: path.to_string(), tag, digest, registry, repository })
    }
}

/// The reference as it was written.
impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.domain {
            write!(f, "{d}/")?;
        }
        f.write_str(&self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl Reference {
    /// A reference to pull or push: [`FromStr`]'s grammar, after skopeo's and podman's
    /// `docker://` prefix.
    pub fn parse_docker(s: &str) -> Result<Reference, InvalidReference> {
        s.strip_prefix("docker://").unwrap_or(s).parse()
    }

    /// Host (and port) to talk to: Docker Hub's for a reference that names none.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository on [`Reference::registry`] (`library/debian` for `debian`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What is asked of the registry: the digest, else the tag, else `latest`.
    pub fn reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    pub fn by_digest(&self) -> bool {
        self.digest.is_some()
    }

    /// The name an image pulled by this reference is recorded under: the registry
    /// (`docker.io` for Docker Hub), the repository, and what was asked.
    pub fn name(&self) -> String {
        let host = if self.registry == DOCKER_HUB { "docker.io" } else { &self.registry };
        let sep = if self.by_digest() { '@' } else { ':' };
        format!("{host}/{}{sep}{}", self.repository, self.reference())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn docker_hub_short_names_resolve_as_docker_does() {
        let r = Reference::parse_docker("debian:12").unwrap();
        assert_eq!((r.registry(), r.repository(), r.reference()), ("registry-1.docker.io", "library/debian", "12"));
        assert_eq!(r.name(), "docker.io/library/debian:12");
        let r = Reference::parse_docker("user/app").unwrap();
        assert_eq!((r.repository(), r.reference()), ("user/app", "latest"));
        let r = Reference::parse_docker("127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!((r.registry(), r.repository(), r.reference()), ("127.0.0.1:5000", "team/app", "v1"));
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse_docker(&format!("localhost/app@{d}")).unwrap();
        assert_eq!((r.registry(), r.reference()), ("localhost", d.as_str()));
        assert_eq!(r.name(), format!("localhost/app@{d}"));
        assert!(Reference::parse_docker("Upper/Case").is_err());
        let r = Reference::parse_docker("docker://127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!((r.registry(), r.repository()), ("127.0.0.1:5000", "team/app"));
    }

    #[test]
    fn credentials_in_a_reference_are_refused_without_echoing_them() {
        let e = Reference::parse_docker("alice:s3cret@127.0.0.1:5000/team/app:v1").unwrap_err();
        assert_eq!(
            e,
            InvalidReference::Credentials { user: "alice".into(), rest: "127.0.0.1:5000/team/app:v1".into() }
        );
        let e = e.to_string();
        assert!(e.contains("--creds alice[:PASS]") && e.contains("127.0.0.1:5000/team/app:v1"), "{e}");
        assert!(!e.contains("s3cret"), "the password is not echoed: {e}");
        assert!(matches!(
            Reference::parse_docker("127.0.0.1:5000/Team/App:v1"),
            Err(InvalidReference::Grammar { reason: Reason::Repository, .. })
        ));
    }

    /// The distribution reference grammar, and what used to reach URLs (`..`, `%2e`,
    /// empty components, short or uppercase digests).
    #[test]
    fn references_outside_the_grammar_are_refused() {
        let hex = "0123456789abcdef".repeat(4);
        for good in [
            "a",
            "a/b/c",
            "a__b/c-d/e.f",
            "a---b",
            "registry.example:5000/x/y:v1.2-rc_3",
            "[::1]:5000/x",
            "localhost:5000/x",
            &format!("x/y@sha256:{hex}"),
            &format!("x/y:tag@sha256:{hex}"),
        ] {
            assert!(Reference::parse_docker(good).is_ok(), "{good} is a valid reference");
        }
        use Reason::*;
        for (bad, why) in [
            ("", Repository),
            ("127.0.0.1:5000/repo/../../x", Repository),
            ("127.0.0.1:5000/repo/../x:v1", Repository),
            ("127.0.0.1:5000/%2e%2e/x", Repository),
            ("127.0.0.1:5000/repo/%2e%2e/x", Repository),
            ("127.0.0.1:5000/.hidden", Repository),
            ("127.0.0.1:5000/a//b", Repository),
            ("127.0.0.1:5000/a/", Repository),
            ("127.0.0.1:5000/a_-b", Repository),
            ("127.0.0.1:5000/a?x=1", Repository),
            ("127.0.0.1:5000/a#b", Repository),
            ("127.0.0.1:5000/a b", Repository),
            ("Upper/case", Repository),
            ("127.0.0.1:5000/x:..", Tag),
            ("127.0.0.1:5000/x:.tag", Tag),
            (&format!("127.0.0.1:5000/x:{}", "t".repeat(129)), Tag),
            ("127.0.0.1:5000/x@sha256:../../etc/passwd", Digest),
            (&format!("127.0.0.1:5000/x@sha256:{}", hex.to_uppercase()), Digest),
            (&format!("127.0.0.1:5000/x@sha256:{hex}/../../y"), Digest),
            ("127.0.0.1:5000/x@md5:d41d8cd98f00b204e9800998ecf8427e", Digest),
            ("host_name.example/x", Domain),
            ("-host.example/x", Domain),
            ("host.example:port/x", Domain),
            (&format!("{}/x", "a.".repeat(130)), Domain),
            (&format!("127.0.0.1:5000/{}x", "a/".repeat(130)), TooLong),
            // Docker Hub's `library/` counts.
            (&format!("{}:v1", "a".repeat(227)), TooLong),
        ] {
            match Reference::parse_docker(bad) {
                Err(InvalidReference::Grammar { input, reason }) => {
                    assert_eq!((input.as_str(), reason), (bad, why), "{bad}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
        // The printed line, end to end.
        assert_eq!(
            "a//b".parse::<Reference>().unwrap_err().to_string(),
            "invalid image reference \"a//b\": a repository is lowercase letters and digits, separated by '.', '_', \
             '__', '-' or '/' (no '..', '%', empty or uppercase parts)"
        );
    }

    /// Names over the characters that matter to the grammar (`ab0Z._-/:@`), 1 to 12
    /// long, from a fixed seed: the generator of every test of the name grammar.
    pub(crate) fn generated_names(seed: u64, count: usize) -> impl Iterator<Item = String> {
        let alphabet = b"ab0Z._-/:@";
        let mut x = seed;
        (0..count).map(move |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 12) as usize;
            (0..len).map(|i| alphabet[((x >> (4 * i + 8)) % 10) as usize] as char).collect()
        })
    }

    /// Generated references (fixed seed): what parses prints back as written and parses
    /// again to the same, and docker's grammar (oci-spec's port of it) takes it too, so
    /// that no name strata records is one other tools refuse.
    #[test]
    fn parsed_references_print_back_and_docker_takes_them() {
        let mut parsed = 0;
        for name in generated_names(0x5eed_0123_4567, 200_000) {
            if let Ok(r) = name.parse::<Reference>() {
                parsed += 1;
                assert_eq!(r.to_string(), name);
                assert_eq!(r.to_string().parse::<Reference>().as_ref(), Ok(&r));
                assert!(name.parse::<oci_spec::distribution::Reference>().is_ok(), "{name:?}: docker refuses it");
            }
        }
        assert!(parsed > 1000, "the generator reaches valid references ({parsed})");
        let hex = "0123456789abcdef".repeat(4);
        for name in ["registry.local:5000/a/b_c:1.0-rc", "docker.io/library/debian:12", &format!("a/b:t@sha256:{hex}")]
        {
            let r: Reference = name.parse().unwrap();
            assert_eq!(r.to_string(), name);
            assert!(name.parse::<oci_spec::distribution::Reference>().is_ok(), "{name}");
        }
    }

    #[test]
    fn the_parts_are_kept_apart() {
        let hex = "0123456789abcdef".repeat(4);
        let r: Reference = format!("docker.io/app:v2@sha256:{hex}").parse().unwrap();
        assert_eq!((r.tag(), r.digest().map(|d| d.as_str())), (Some("v2"), Some(format!("sha256:{hex}").as_str())));
        assert_eq!(
            (r.registry(), r.repository(), r.reference()),
            ("registry-1.docker.io", "library/app", r.digest().unwrap().as_str())
        );
        assert_eq!(r.name(), format!("docker.io/library/app@sha256:{hex}"));
        assert!("docker://debian".parse::<Reference>().is_err(), "a transport is no part of a name");
    }
}
