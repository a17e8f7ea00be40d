//! `strata image pull`: the OCI distribution protocol, enough of it to pull, written
//! for a registry that may be hostile.
//!
//! Manifest (or index / manifest list, resolved to this host's platform), config,
//! then the layer blobs that no local layer already holds, a few at a time, each
//! checked against its digest as it streams. Auth follows the registry's 401: a
//! `Bearer` challenge names a token service, whose token is sent on the retry (asked
//! with the user's credentials when the service is on the registry's own origin); a
//! `Basic` challenge gets the credentials themselves. Credentials come from `--creds`
//! or the files skopeo, podman and docker keep ([`auth`]). `--insecure` talks plain
//! http (a local registry).
//! Docker Hub short names resolve as docker does: `debian:12` is
//! `docker.io/library/debian:12`.
//!
//! What a registry can say is bounded before it is used:
//! - references follow the distribution reference grammar and digests are
//!   `sha256:` + 64 lowercase hex, checked before any URL is built, so no `..` or `%2e`
//!   reaches a request path;
//! - redirects are followed here, not in the HTTP client: only to http(s) URLs with a
//!   host (never https → http unless `--insecure`), at most [`MAX_REDIRECTS`], and
//!   credentials and tokens go only to the registry's own scheme, host and port (a
//!   token service or blob store elsewhere gets none);
//! - manifests are at most 4 MiB (containerd's bound), token answers 1 MiB, error
//!   bodies 64 KiB; a `Docker-Content-Digest` header must match the manifest;
//! - the download runs under a watchdog: it fails when fewer than `low_speed_limit`
//!   bytes/s arrive over `low_speed_time` (as curl's `--speed-limit`/`--speed-time`),
//!   or when it takes longer than `timeout` in all;
//! - a panic in a download thread is one error, not a crash.
//!
//! Blobs are downloaded into a staging folder of this pull (`<cache>/.pull-<pid>/`)
//! and move into the blob cache only once the image is unpacked and recorded, so a
//! pull that fails, times out or is interrupted leaves the cache as it was; the
//! staging folder of a pull that was killed is removed by the next pull.
//!
//! Failures are an [`Error`]: the HTTP status and the registry's error code of an
//! error answer ([`Status`]), io errors with their errno, digests got and wanted.

mod auth;
mod bounds;
mod client;
mod error;
mod progress;
mod pull;
mod push;
mod redirect;
mod staging;

pub use crate::reference::{InvalidDigest, InvalidReference, Reference};
pub use auth::{AuthOptions, Credential};
pub use bounds::{Limits, MAX_MANIFEST, MAX_REDIRECTS};
pub use error::{Error, Status};
pub use pull::{pull, pull_all};
pub use push::{push, BlobPush, PushOptions, Pushed};
pub use staging::{PullSource, Pulled};
