//! Registry errors a user can act on, each one `error:` line with exit code 1 (4 for a
//! tag or repository the registry does not have): an
//! http registry asked in https, a host that does not resolve, a port nobody listens
//! on (these two at once, without retries), and the registry's error JSON as one line
//! (`manifest unknown: host/repo:tag`); a 5xx and a reset are still tried again;
//! `user:pw@host/repo` is refused pointing at --creds, the password not echoed.

use std::io::{Read, Write};
use std::process::Output;
use std::sync::Arc;

use strata_tests::registry::{Reply, Request, Server, TestImage};
use strata_tests::{privileged, Strata};

const REPO: &str = "strata/img";

fn one_error(o: &Output) -> String {
    one_error_exiting(o, 1)
}

fn one_error_exiting(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "exit code {code}: {}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    errors[0].to_string()
}

fn manifest_requests(server: &Server) -> usize {
    server.requests().iter().filter(|r| r.path.starts_with(&format!("/v2/{REPO}/manifests/"))).count()
}

/// A plain-http server that answers a TLS hello as Go's net/http (docker-registry)
/// does: with a 400 in plain text. Returns its port.
fn plain_http_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut hello = [0u8; 1024];
            let _ = conn.read(&mut hello);
            let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request");
        }
    });
    port
}

#[test]
fn an_http_registry_asked_in_https_says_use_insecure() {
    if !privileged("registry error tests") {
        return;
    }
    let port = plain_http_server();
    let s = Strata::new("vfs");
    let e = one_error(&s.run(&["image", "pull", &format!("127.0.0.1:{port}/{REPO}:v1")]));
    assert_eq!(
        e,
        format!(
            "error: 127.0.0.1:{}: the server gave an HTTP response to an HTTPS client; for a plain-http registry \
             use --insecure",
            port
        )
    );
}

#[test]
fn an_unresolvable_host_and_a_closed_port_fail_at_once() {
    if !privileged("registry error tests") {
        return;
    }
    let s = Strata::new("vfs");
    // `.invalid` never resolves (RFC 2606).
    let e = one_error(&s.run(&["image", "pull", "--insecure", "registry.invalid/x:1"]));
    assert!(e.starts_with("error: registry.invalid: the host name does not resolve"), "{e}");
    assert_eq!(e.matches("registry.invalid").count(), 1, "the host is named once: {e}");
    assert!(!e.contains("tries"), "not retried: {e}");
    // A port that was free a moment ago: nobody listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = one_error(&s.run(&["image", "pull", "--insecure", &format!("127.0.0.1:{port}/x:1")]));
    assert_eq!(e, format!("error: 127.0.0.1:{port}: connection refused (is a registry listening there?)"));
}

#[test]
fn the_registry_error_json_becomes_one_line() {
    if !privileged("registry error tests") {
        return;
    }
    let img = TestImage::generate(42, 1);
    let server = Server::start(Arc::new(move |r: &Request| {
        if r.path.ends_with("/manifests/2") {
            let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"2"}}]}"#;
            return Reply::new(404, body).header("Content-Type", "application/json");
        }
        if r.path.ends_with("/manifests/3") {
            return Reply::new(404, r#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#);
        }
        img.answer(REPO, r)
    }));
    let s = Strata::new("vfs");
    let before = s.state();
    // A tag or repository the registry does not have is not found (exit 4), as a tag
    // a local layout does not hold.
    let pull = |tag: &str| s.run(&["image", "pull", "--insecure", &format!("127.0.0.1:{}/{REPO}:{tag}", server.port)]);
    let e = one_error_exiting(&pull("2"), 4);
    assert_eq!(e, format!("error: manifest unknown: 127.0.0.1:{}/{REPO}:2", server.port));
    assert_eq!(manifest_requests(&server), 1, "a 404 is not asked again");
    let e = one_error_exiting(&pull("3"), 4);
    assert_eq!(e, format!("error: name unknown: 127.0.0.1:{}/{REPO}:3", server.port), "the code, when no message");
    assert_eq!(s.state(), before);
}

#[test]
fn a_5xx_and_a_reset_are_tried_again() {
    if !privileged("registry error tests") {
        return;
    }
    let img = TestImage::generate(43, 1);
    let server = Server::start(Arc::new(move |r: &Request| match (r.path.contains("/manifests/"), r.nth) {
        (true, 0) => Reply::new(503, "busy"),
        (true, 1) => Reply::reset(),
        _ => img.answer(REPO, r),
    }));
    let s = Strata::new("vfs");
    let o = s.run(&["image", "pull", "--insecure", &format!("127.0.0.1:{}/{REPO}:v1", server.port)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(manifest_requests(&server), 3, "asked again after the 503 and after the reset");
}

/// `user:pw@host/repo` (as some URLs carry credentials) is refused pointing at
/// --creds, for a pull, a push and an unpack of docker://, and the password never
/// reaches the terminal; nothing is stored.
#[test]
fn credentials_in_a_reference_are_refused_pointing_at_creds() {
    if !privileged("registry error tests") {
        return;
    }
    let s = Strata::new("vfs");
    let before = s.state();
    let reference = "alice:s3cret@127.0.0.1:5000/team/app:v1";
    for args in [
        vec!["image", "pull", "--insecure", reference],
        vec!["image", "unpack", "--insecure", "docker://alice:s3cret@127.0.0.1:5000/team/app:v1"],
        vec!["image", "push", "--insecure", "app", reference],
    ] {
        let o = s.run(&args);
        let e = one_error(&o);
        assert!(e.contains("--creds alice[:PASS]"), "{args:?}: {e}");
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!all.contains("s3cret"), "{args:?}: the password is echoed: {all}");
    }
    assert_eq!(s.state(), before, "nothing stored");
}

/// The same failures as the registry client returns them, typed: the status and the
/// registry's error code, the host that does not resolve or listens on nothing, the
/// http server asked in https, and credentials in a reference (the user kept, the
/// password not).
#[test]
fn registry_errors_are_typed() {
    use std::time::Duration;
    use strata_image::registry::{self as client, Error, InvalidReference, Limits, Status};

    let cache = tempfile::tempdir().unwrap();
    let limits =
        Limits { timeout: Duration::from_secs(60), low_speed_limit: 1024, low_speed_time: Duration::from_secs(3) };
    let pull = |reference: &str, insecure: bool| -> Error {
        let e = client::pull_all(reference, insecure, &client::AuthOptions::default(), limits, cache.path())
            .err()
            .unwrap_or_else(|| panic!("{reference}: pulled"));
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "{reference}: the cache holds nothing");
        e
    };

    let server = Server::start(Arc::new(move |r: &Request| {
        if r.path.ends_with("/manifests/2") {
            let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"2"}}]}"#;
            return Reply::new(404, body).header("Content-Type", "application/json");
        }
        Reply::new(404, r#"{"errors":[{"code":"NAME_UNKNOWN"}]}"#)
    }));
    let at = |tag: &str| format!("127.0.0.1:{}/{REPO}:{tag}", server.port);
    match pull(&at("2"), true) {
        Error::Status(Status { status: 404, code: Some(code), message, subject, .. }) => {
            assert_eq!((code.as_str(), message.as_str()), ("MANIFEST_UNKNOWN", "manifest unknown"));
            assert_eq!(subject, at("2"));
        }
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        pull(&at("3"), true),
        Error::Status(Status { status: 404, code: Some(c), .. }) if c == "NAME_UNKNOWN"
    ));
    assert_eq!(manifest_requests(&server), 2, "a 404 is not asked again");

    assert!(matches!(
        pull("registry.invalid/x:1", true),
        Error::Unresolvable { host, .. } if host == "registry.invalid"
    ));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(matches!(
        pull(&format!("127.0.0.1:{port}/x:1"), true),
        Error::ConnectionRefused { host } if host == format!("127.0.0.1:{port}")
    ));

    // A plain-http server asked in https.
    let port = plain_http_server();
    assert!(matches!(pull(&format!("127.0.0.1:{port}/x:1"), false), Error::NotHttps { .. }));

    match pull("alice:s3cret@127.0.0.1:5000/team/app:v1", true) {
        Error::Reference(InvalidReference::Credentials { user, rest }) => {
            assert_eq!((user.as_str(), rest.as_str()), ("alice", "127.0.0.1:5000/team/app:v1"))
        }
        e => panic!("{e:?}"),
    }
}
