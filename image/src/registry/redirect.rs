//! Where a redirect (or a token realm, or an upload location) may lead, and where a
//! credential may go.

use url::Url;

use super::error::{one_line, Error};

/// Scheme, host and port: where a token may be sent.
pub(super) fn origin(u: &Url) -> (String, Option<String>, Option<u16>) {
    (u.scheme().to_string(), u.host_str().map(str::to_string), u.port_or_known_default())
}

/// An http(s) URL with a host, and not a downgrade to http unless `insecure`.
pub(super) fn check_target(u: &Url, insecure: bool, what: &str) -> Result<(), Error> {
    let shown = one_line(u.as_str(), 200);
    match u.scheme() {
        "https" => {}
        "http" if insecure => {}
        "http" => return Err(Error::PlainHttp { what: what.into(), url: shown }),
        other => return Err(Error::Scheme { what: what.into(), url: shown, scheme: other.into() }),
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(Error::NoHost { what: what.into(), url: shown });
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_need_http_and_a_host() {
        for (target, insecure, ok) in [
            ("https://cdn.example/blob", false, true),
            ("http://127.0.0.1:5001/blob", true, true),
            ("http://cdn.example/blob", false, false),
            ("file:///etc/passwd", true, false),
            ("data:,hello", true, false),
            ("unix:/run/docker.sock", true, false),
            ("ftp://example/x", true, false),
        ] {
            let u = Url::parse(target).unwrap();
            match check_target(&u, insecure, "redirect") {
                Ok(()) => assert!(ok, "{target} is refused"),
                Err(Error::PlainHttp { .. } | Error::Scheme { .. } | Error::NoHost { .. }) => assert!(!ok, "{target}"),
                Err(e) => panic!("{target}: {e:?}"),
            }
        }
        let a = Url::parse("http://127.0.0.1:5000/v2/").unwrap();
        assert_ne!(origin(&a), origin(&Url::parse("http://127.0.0.1:5001/v2/").unwrap()), "another port");
        assert_ne!(origin(&a), origin(&Url::parse("https://127.0.0.1:5000/v2/").unwrap()), "another scheme");
        assert_eq!(origin(&a), origin(&Url::parse("http://127.0.0.1:5000/other").unwrap()));
    }
}
