//! Credentials for a registry, found where skopeo, podman and docker keep them.
//!
//! In order: `--creds USER[:PASS]`; the containers auth file (`--authfile`, else
//! `REGISTRY_AUTH_FILE`, else `${XDG_RUNTIME_DIR}/containers/auth.json` or, with no
//! `XDG_RUNTIME_DIR` (root in a shell without a login session), `/run/containers/UID/auth.json`
//! where skopeo and podman then write it, else `${XDG_CONFIG_HOME:-~/.config}/containers/auth.json`);
//! then Docker's `config.json` (`$DOCKER_CONFIG` or `~/.docker`). Both files are read with the `docker_credential` crate, which also
//! runs the `docker-credential-*` helper a file names (`credHelpers`, `credsStore`).
//! A credential is only ever sent to the registry it was found for (see `Client`).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};

use super::error::{one_line, Error};

/// What strata presents to one registry.
#[derive(Clone)]
pub enum Credential {
    /// Basic auth, or exchanged for a bearer token at the registry's token service.
    Password { user: String, password: String },
    /// An OAuth2 refresh token (`identitytoken` in the files, `<token>` from a helper).
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a secret in a log or a panic message.
        match self {
            Credential::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(..)"),
        }
    }
}

/// Where the user asked credentials to come from (`image pull`/`image push` flags).
#[derive(Clone, Debug, Default)]
pub struct AuthOptions {
    /// `--creds USER[:PASS]`.
    pub creds: Option<String>,
    /// `--authfile FILE`.
    pub authfile: Option<PathBuf>,
}

impl AuthOptions {
    /// The credential for `registry` (host[:port] as in the reference), if any.
    pub fn credential_for(&self, registry: &str) -> Result<Option<Credential>, Error> {
        if let Some(c) = &self.creds {
            return parse_creds(c).map(Some);
        }
        let key = if registry == "registry-1.docker.io" { "docker.io" } else { registry };
        if let Some(file) = &self.authfile {
            // Named on the command line: it must be there.
            return lookup(file, key, true);
        }
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        for f in auth_files(env, nix::unistd::geteuid().as_raw()) {
            if let Some(c) = lookup(&f, key, false)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }
}

/// The files searched for a credential, in order, as containers/image (skopeo, podman)
/// and Docker look for them; `env` reads a non-empty environment variable.
fn auth_files(env: impl Fn(&str) -> Option<PathBuf>, uid: u32) -> Vec<PathBuf> {
    let home = env("HOME");
    let mut files = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        files.push(f);
    } else {
        // Without XDG_RUNTIME_DIR `skopeo login` writes /run/containers/UID/auth.json
        // (containers/image, pkg/docker/config); missing it made a root login unseen.
        files.push(match env("XDG_RUNTIME_DIR") {
            Some(d) => d.join("containers/auth.json"),
            None => PathBuf::from(format!("/run/containers/{uid}/auth.json")),
        });
        if let Some(c) = env("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config"))) {
            files.push(c.join("containers/auth.json"));
        }
    }
    if let Some(d) = env("DOCKER_CONFIG").or_else(|| home.map(|h| h.join(".docker"))) {
        files.push(d.join("config.json"));
    }
    files
}

/// `USER:PASS`, or `USER` alone: the password is then asked for on the terminal, as
/// skopeo and podman do.
fn parse_creds(c: &str) -> Result<Credential, Error> {
    let (user, password) = match c.split_once(':') {
        Some((u, p)) => (u.to_string(), p.to_string()),
        None => {
            let p = rpassword::prompt_password(format!("Password for {c}: "))
                .map_err(|source| Error::Read { what: format!("--creds {c}: reading the password"), source })?;
            (c.to_string(), p)
        }
    };
    if user.is_empty() {
        return Err(Error::EmptyUser);
    }
    Ok(Credential::Password { user, password })
}

/// The credential `file` (an auth.json or config.json) holds for `registry`.
fn lookup(file: &Path, registry: &str, required: bool) -> Result<Option<Credential>, Error> {
    let f = match File::open(file) {
        Ok(f) => f,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::file(file)(e)),
    };
    // Keys are `host[:port]`, `host/repo` or docker's `https://host/v1/`; the crate
    // matches them to the registry.
    match docker_credential::get_credential_from_reader(BufReader::new(f), registry) {
        Ok(DockerCredential::UsernamePassword(user, password)) => Ok(Some(Credential::Password { user, password })),
        Ok(DockerCredential::IdentityToken(t)) => Ok(Some(Credential::IdentityToken(t))),
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(None),
        Err(e) => Err(Error::CredentialFile {
            path: file.to_path_buf(),
            registry: registry.to_string(),
            detail: one_line(&e.to_string(), 300),
        }),
    }
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"` into the
/// scheme (lowercase) and its parameters.
pub(super) fn parse_challenge(h: &str) -> Option<(String, HashMap<String, String>)> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "bearer" && scheme != "basic" {
        return None;
    }
    let mut out = HashMap::new();
    let mut s = rest;
    while !s.is_empty() {
        let (k, v) = s.split_once('=')?;
        let v = v.trim_start();
        let (val, next) = if let Some(q) = v.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], q[end + 1..].trim_start_matches(',').trim_start())
        } else {
            match v.split_once(',') {
                Some((a, b)) => (a, b.trim_start()),
                None => (v, ""),
            }
        };
        out.insert(k.trim().to_ascii_lowercase(), val.to_string());
        s = next;
    }
    Some((scheme, out))
}

/// The `Authorization` value of Basic auth.
pub(super) fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(c: Option<Credential>) -> Option<(String, String)> {
        match c {
            Some(Credential::Password { user, password }) => Some((user, password)),
            _ => None,
        }
    }

    #[test]
    fn files_are_read_as_skopeo_and_docker_write_them() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("auth.json");
        // `skopeo login` writes `auth` (base64 of user:pass); docker may key by URL.
        std::fs::write(
            &f,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"YWxpY2U6czNjcmV0"},
                "https://index.docker.io/v1/":{"auth":"Ym9iOmh1Yg=="},
                "other.example":{"identitytoken":"refresh"}}}"#,
        )
        .unwrap();
        assert_eq!(pw(lookup(&f, "127.0.0.1:5000", true).unwrap()), Some(("alice".into(), "s3cret".into())));
        assert_eq!(pw(lookup(&f, "docker.io", true).unwrap()), Some(("bob".into(), "hub".into())));
        assert!(
            matches!(lookup(&f, "other.example", true).unwrap(), Some(Credential::IdentityToken(t)) if t == "refresh")
        );
        assert!(lookup(&f, "127.0.0.1:5001", true).unwrap().is_none(), "another port is another registry");
        assert!(lookup(&dir.path().join("none.json"), "x", false).unwrap().is_none());
        assert!(
            matches!(lookup(&dir.path().join("none.json"), "x", true), Err(Error::File { source, .. }) if source.raw_os_error() == Some(libc::ENOENT)),
            "an --authfile that is not there"
        );
        std::fs::write(&f, "{not json").unwrap();
        assert!(matches!(lookup(&f, "x", true), Err(Error::CredentialFile { registry, .. }) if registry == "x"));
        let opts = AuthOptions { creds: Some("u:p:q".into()), authfile: Some(f) };
        assert_eq!(pw(opts.credential_for("127.0.0.1:5000").unwrap()), Some(("u".into(), "p:q".into())));
        assert!(format!("{:?}", opts.credential_for("x").unwrap()).contains(".."));
    }

    /// Where skopeo and podman write a login is where it is read: with no
    /// XDG_RUNTIME_DIR (root without a login session), /run/containers/UID/auth.json.
    #[test]
    fn auth_files_are_where_skopeo_login_writes_them() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| PathBuf::from(v))
        };
        let p = |s: &[&str]| s.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            auth_files(vars(&[("HOME", "/root")]), 0),
            p(&["/run/containers/0/auth.json", "/root/.config/containers/auth.json", "/root/.docker/config.json"])
        );
        assert_eq!(
            auth_files(vars(&[("HOME", "/h"), ("XDG_RUNTIME_DIR", "/run/user/7"), ("XDG_CONFIG_HOME", "/c")]), 7),
            p(&["/run/user/7/containers/auth.json", "/c/containers/auth.json", "/h/.docker/config.json"])
        );
        assert_eq!(
            auth_files(vars(&[("REGISTRY_AUTH_FILE", "/a.json"), ("DOCKER_CONFIG", "/d")]), 0),
            p(&["/a.json", "/d/config.json"])
        );
    }

    #[test]
    fn parses_bearer_challenges() {
        let (scheme, c) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .unwrap();
        assert_eq!(scheme, "bearer");
        assert_eq!(c["realm"], "https://auth.example/token");
        assert_eq!(c["service"], "registry.example");
        assert_eq!(c["scope"], "repository:a/b:pull");
        let (scheme, c) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!((scheme.as_str(), c["realm"].as_str()), ("basic", "Registry Realm"));
        assert!(parse_challenge("Negotiate abc").is_none());
    }
}
