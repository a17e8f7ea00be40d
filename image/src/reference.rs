//! Image references (`[host[:port]/]path[:tag][@digest]`) and digests, in the
//! distribution reference grammar.

use driver_core::Error;

use crate::registry::error::{err, one_line};

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// Host (and port) to talk to.
    pub registry: String,
    pub repository: String,
    /// A tag or a digest (validated).
    pub reference: String,
}

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

/// A digest as strata accepts it anywhere near a URL or a path: `sha256:` and 64
/// lowercase hex digits, or `sha512:` and 128. Anything else (`..`, `/`, `%2e`,
/// uppercase, other algorithms) is refused here, before it is used.
pub fn validate_digest(d: &str) -> Result<(), Error> {
    let ok = match d.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64,
        Some(("sha512", hex)) => hex.len() == 128,
        _ => false,
    } && d
        .split_once(':')
        .is_some_and(|(_, h)| h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if ok {
        Ok(())
    } else {
        Err(err(format!("invalid digest {:?}: expected sha256: and 64 lowercase hex digits", one_line(d, 100))))
    }
}

impl Reference {
    /// Parses `[domain/]path[:tag][@digest]` as the distribution reference grammar
    /// (docker's "invalid reference format") does.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        // skopeo's and podman's spelling of a registry image.
        let s = s.strip_prefix("docker://").unwrap_or(s);
        // `user:pw@host/repo`, as a URL would carry them: refused, and the secret is
        // not echoed.
        if let Some((userinfo, rest)) = s.split_once('@') {
            if rest.contains('/') && !userinfo.contains('/') {
                let user = userinfo.split(':').next().unwrap_or_default();
                return Err(err(format!(
                    "invalid image reference \"{}:…@{}\": credentials do not go in a reference; \
                     use --creds {}[:PASS] (or --authfile) with the reference {}",
                    one_line(user, 100),
                    one_line(rest, 300),
                    one_line(user, 100),
                    one_line(rest, 300)
                )));
            }
        }
        let bad = |why: &str| err(format!("invalid image reference {:?}: {why}", one_line(s, 300)));
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                validate_digest(d).map_err(|_| bad("the digest must be sha256: and 64 lowercase hex digits"))?;
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        let (first, remainder) = match rest.split_once('/') {
            Some((f, r)) if f.contains('.') || f.contains(':') || f == "localhost" || f.starts_with('[') => {
                (Some(f), r)
            }
            _ => (None, rest),
        };
        // A tag is after the last ':' that follows the last '/'.
        let (repo, tag) = match remainder.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => {
                if !is_tag(t) {
                    return Err(bad("a tag is 1-128 of [A-Za-z0-9_.-], not starting with '.' or '-'"));
                }
                (r, t.to_string())
            }
            _ => (remainder, "latest".to_string()),
        };
        if let Some(host) = first {
            if !is_domain(host) {
                return Err(bad("the registry must be a host name or address, with an optional port"));
            }
        }
        if repo.is_empty() || !repo.split('/').all(is_path_component) {
            return Err(bad("a repository is lowercase letters and digits, separated by '.', '_', '__', '-' or '/' \
                 (no '..', '%', empty or uppercase parts)"));
        }
        let (registry, repository) = match first {
            Some(host) if host != "docker.io" && host != "index.docker.io" => (host.to_string(), repo.to_string()),
            _ => {
                let repo = if repo.contains('/') { repo.to_string() } else { format!("library/{repo}") };
                ("registry-1.docker.io".to_string(), repo)
            }
        };
        if registry.len() + 1 + repository.len() > 255 {
            return Err(bad("the name is longer than 255 characters"));
        }
        Ok(Reference { registry, repository, reference: digest.unwrap_or(tag) })
    }

    pub(crate) fn by_digest(&self) -> bool {
        self.reference.contains(':')
    }

    /// The name an image pulled by this reference is recorded under.
    pub fn name(&self) -> String {
        let host = if self.registry == "registry-1.docker.io" { "docker.io" } else { &self.registry };
        let sep = if self.by_digest() { '@' } else { ':' };
        format!("{host}/{}{sep}{}", self.repository, self.reference)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_short_names_resolve_as_docker_does() {
        let r = Reference::parse("debian:12").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference.as_str()),
            ("registry-1.docker.io", "library/debian", "12")
        );
        assert_eq!(r.name(), "docker.io/library/debian:12");
        let r = Reference::parse("user/app").unwrap();
        assert_eq!((r.repository.as_str(), r.reference.as_str()), ("user/app", "latest"));
        let r = Reference::parse("127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "team/app", "v1")
        );
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = Reference::parse(&format!("localhost/app@{d}")).unwrap();
        assert_eq!((r.registry.as_str(), r.reference.as_str()), ("localhost", d.as_str()));
        assert_eq!(r.name(), format!("localhost/app@{d}"));
        assert!(Reference::parse("Upper/Case").is_err());
        let r = Reference::parse("docker://127.0.0.1:5000/team/app:v1").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("127.0.0.1:5000", "team/app"));
    }

    #[test]
    fn credentials_in_a_reference_are_refused_without_echoing_them() {
        let e = Reference::parse("alice:s3cret@127.0.0.1:5000/team/app:v1").unwrap_err().to_string();
        assert!(e.contains("--creds alice[:PASS]") && e.contains("127.0.0.1:5000/team/app:v1"), "{e}");
        assert!(!e.contains("s3cret"), "the password is not echoed: {e}");
        let e = Reference::parse("127.0.0.1:5000/Team/App:v1").unwrap_err().to_string();
        assert!(e.contains("uppercase"), "{e}");
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
            assert!(Reference::parse(good).is_ok(), "{good} is a valid reference");
        }
        for bad in [
            "",
            "127.0.0.1:5000/repo/../../x",
            "127.0.0.1:5000/repo/../x:v1",
            "127.0.0.1:5000/%2e%2e/x",
            "127.0.0.1:5000/repo/%2e%2e/x",
            "127.0.0.1:5000/.hidden",
            "127.0.0.1:5000/a//b",
            "127.0.0.1:5000/a/",
            "127.0.0.1:5000/a_-b",
            "127.0.0.1:5000/a?x=1",
            "127.0.0.1:5000/a#b",
            "127.0.0.1:5000/a b",
            "127.0.0.1:5000/x:..",
            "127.0.0.1:5000/x:.tag",
            &format!("127.0.0.1:5000/x:{}", "t".repeat(129)),
            "127.0.0.1:5000/x@sha256:../../etc/passwd",
            &format!("127.0.0.1:5000/x@sha256:{}", hex.to_uppercase()),
            &format!("127.0.0.1:5000/x@sha256:{hex}/../../y"),
            "127.0.0.1:5000/x@md5:d41d8cd98f00b204e9800998ecf8427e",
            "host_name.example/x",
            "-host.example/x",
            "host.example:port/x",
            &format!("{}/x", "a.".repeat(130)),
        ] {
            let e = Reference::parse(bad).expect_err(bad).to_string();
            assert!(e.starts_with("invalid image reference"), "{bad}: {e}");
        }
    }

    #[test]
    fn digests_are_sha256_or_sha512_in_lowercase_hex() {
        assert!(validate_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(validate_digest(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            "sha256:",
            "sha256:../../../../etc/passwd",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
            &format!("sha256:{}/..", "a".repeat(64)),
            &format!("sha512:{}", "a".repeat(64)),
            &format!("SHA256:{}", "a".repeat(64)),
            &format!("sha256:{}%2e", "a".repeat(62)),
        ] {
            assert!(validate_digest(bad).is_err(), "{bad}");
        }
    }
}
