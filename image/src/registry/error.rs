//! How a registry's failures are told: one line, the registry's own words kept.

use driver_core::{Cause, Error};
use url::Url;

pub(crate) use crate::reference::one_line;

pub(crate) fn err(msg: impl Into<String>) -> Error {
    Error::new(Cause::Other(msg.into()))
}

/// Why one request did not give an answer.
pub(super) enum Failure {
    /// 401 from the registry, with its challenge.
    Unauthorized(String),
    /// Worth another try: 5xx, 429, a broken connection.
    Transient(String),
    /// Any other 4xx: the status and what the registry says about it, in one line.
    Status(String),
    Fatal(Error),
}

/// The registry's error answer in one line: the `message`s (else the `code`s) of a
/// distribution-spec `{"errors": [...]}` body, else the start of the body, else the
/// status code.
pub(super) fn error_text(code: u16, body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let from_json: Vec<String> = json
        .as_ref()
        .and_then(|j| j["errors"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e["message"]
                .as_str()
                .filter(|m| !m.trim().is_empty())
                .map(str::to_string)
                .or_else(|| e["code"].as_str().map(|c| c.to_ascii_lowercase().replace('_', " ")))
        })
        .collect();
    let text = if from_json.is_empty() {
        let body = String::from_utf8_lossy(body);
        match body.trim() {
            "" => format!("{code}"),
            t => format!("{code}: {t}"),
        }
    } else {
        from_json.join("; ")
    };
    one_line(&text, 300)
}

/// The one line for a request that got no answer: a name that does not resolve or a
/// port nobody listens on is said plainly (and not tried again); an https request
/// answered in plain http says so and what to do.
pub(super) fn transport_failure(url: &Url, t: &ureq::Transport) -> Failure {
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        _ => String::new(),
    };
    let detail = t.message().map(|m| one_line(m, 200));
    let source = std::error::Error::source(t).map(|e| one_line(&e.to_string(), 200));
    let all = format!("{} {}", detail.as_deref().unwrap_or(""), source.as_deref().unwrap_or(""));
    match t.kind() {
        ureq::ErrorKind::Dns => Failure::Fatal(err(format!(
            "{host}: the host name does not resolve ({})",
            source.or(detail).unwrap_or_else(|| "DNS lookup failed".into())
        ))),
        _ if all.contains("InvalidContentType") || all.contains("corrupt message") => Failure::Fatal(err(format!(
            "{host}: the server gave an HTTP response to an HTTPS client; for a plain-http registry use --insecure"
        ))),
        ureq::ErrorKind::ConnectionFailed if all.contains("refused") => {
            Failure::Fatal(err(format!("{host}: connection refused (is a registry listening there?)")))
        }
        _ => Failure::Transient(format!("{host}: {}", one_line(&t.to_string(), 400))),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_in_errors_stays_on_one_line() {
        assert_eq!(one_line("a\nerror: forged\r\x1b[2J", 100), "a error: forged  [2J");
        assert_eq!(one_line(&"x".repeat(10), 4), "xxxx…");
    }
}
