//! A corpus of hostile and tricky layer tars. Each is applied (over a base layer) by
//! the conformance suite on every driver: nothing may land outside the layer root,
//! refused tars leave no layer, and the drivers that accept one must agree on the
//! result (the cross-driver tests compare their merged views).
//!
//! Lessons behind them: path traversal through `..` and absolute names, symlink and
//! hardlink escapes in layer extraction (moby and containerd CVEs around `docker cp`
//! and `archive.Untar`), overlay xattrs smuggled in a layer, a 0/0 device that overlay
//! would read as a whiteout, and the sparse `/var/log/lastlog` that filled disks.

use std::path::Path;

use driver_core::ReservedXattrs;
use strata_archive::tarbuild::{EntryMeta, TarBuilder};

/// The xattr namespaces the corpus expects every driver to refuse: overlayfs's, the
/// only driver of strata's set that reserves any. A driver crate's conformance test
/// opens its driver with these (`Layered::reserving`), as the `strata` binary does
/// with its driver set's (`strata_cli::drivers::reserved_xattrs`; the two are
/// checked equal by strata-tests' `cross_driver` test).
pub fn reserved_xattrs() -> ReservedXattrs {
    ReservedXattrs::new(["trusted.overlay.", "user.overlay."])
}

/// What a driver must do with a hostile tar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Refuse it: an error naming the layer, and no layer left.
    Refused,
    /// Apply it, inside the root.
    Applied,
}

pub struct HostileTar {
    pub name: &'static str,
    pub tar: Vec<u8>,
    pub expect: Expect,
}

/// A 10 GiB sparse file: must apply without taking 10 GiB of disk.
pub const SPARSE_SIZE: u64 = 10 << 30;

/// The corpus. `outside` is a directory beside the driver root holding `secret`.
pub fn corpus(outside: &Path) -> Vec<HostileTar> {
    use Expect::*;
    let out = outside.to_string_lossy().into_owned();
    let out_rel = out.trim_start_matches('/').to_string();
    let up = "../".repeat(16);
    let m = EntryMeta::default;
    let t = TarBuilder::new;
    let mut head = b"sparse head".to_vec();
    head.resize(4096, 0);
    let mut pax_path = t();
    pax_path.file_with("ok", b"x", EntryMeta { ..m() });
    let v: Vec<(&'static str, Vec<u8>, Expect)> = vec![
        ("dotdot", t().raw_file(format!("{up}{out_rel}/pwned").as_bytes(), b"x", m()).build(), Refused),
        ("dotdot-inner", t().raw_file(b"a/../../outside/pwned", b"x", m()).build(), Refused),
        ("dotdot-dir", t().dir("..").build(), Refused),
        ("absolute-dotdot", t().raw_file(format!("/../../{out_rel}/pwned").as_bytes(), b"x", m()).build(), Refused),
        (
            "long-name-dotdot",
            t().raw_file(format!("{}/{up}{out_rel}/pwned", "d".repeat(150)).as_bytes(), b"x", m()).build(),
            Refused,
        ),
        ("symlink-then-write", t().symlink("esc", &out).file("esc/pwned", b"x").build(), Refused),
        (
            "relative-symlink-then-write",
            t().symlink("esc", &format!("{up}{out_rel}")).file("esc/pwned", b"x").build(),
            Refused,
        ),
        ("chained-symlinks", t().symlink("s1", "s2").symlink("s2", &out).file("s1/pwned", b"x").build(), Refused),
        ("symlink-to-root", t().symlink("r", "/").file(&format!("r/{out_rel}/pwned"), b"x").build(), Refused),
        ("symlink-loop", t().symlink("a", "b").symlink("b", "a").file("a/x", b"x").build(), Refused),
        (
            "proc-magic-link",
            t().symlink("p", "/proc/self/root").file(&format!("p/{out_rel}/pwned"), b"x").build(),
            Refused,
        ),
        (
            "dir-replaced-by-symlink",
            t().dir("d").file("d/ok", b"ok").symlink("d", &out).file("d/pwned", b"x").build(),
            Refused,
        ),
        ("hardlink-outside", t().hardlink("h", &format!("{out}/secret")).build(), Refused),
        ("hardlink-dotdot", t().hardlink("h", &format!("{up}{out_rel}/secret")).build(), Refused),
        ("hardlink-to-lower", t().hardlink("h", "etc/hostname").build(), Refused),
        ("hardlink-through-symlink", t().symlink("esc", &out).hardlink("h", "esc/secret").build(), Refused),
        ("hardlink-to-missing", t().hardlink("h", "nothing").build(), Refused),
        ("whiteout-dotdot", t().raw_file(format!("{up}{out_rel}/.wh.secret").as_bytes(), b"", m()).build(), Refused),
        ("whiteout-through-symlink", t().symlink("esc", &out).whiteout("esc/secret").build(), Refused),
        ("opaque-through-symlink", t().symlink("esc", &out).opaque("esc").build(), Refused),
        ("whiteout-of-dotdot", t().raw_file(b"a/.wh..", b"", m()).build(), Refused),
        (
            "overlay-opaque-xattr",
            t().dir_with(
                "d",
                EntryMeta { xattrs: vec![("trusted.overlay.opaque".into(), b"y".to_vec())], ..EntryMeta::mode(0o755) },
            )
            .build(),
            Refused,
        ),
        (
            "overlay-redirect-xattr",
            t().dir_with(
                "d",
                EntryMeta {
                    xattrs: vec![("trusted.overlay.redirect".into(), b"/etc".to_vec())],
                    ..EntryMeta::mode(0o755)
                },
            )
            .build(),
            Refused,
        ),
        (
            "overlay-metacopy-xattr",
            t().file_with("f", b"", EntryMeta { xattrs: vec![("trusted.overlay.metacopy".into(), Vec::new())], ..m() })
                .build(),
            Refused,
        ),
        (
            "overlay-user-xattr",
            t().dir_with(
                "d",
                EntryMeta { xattrs: vec![("user.overlay.opaque".into(), b"y".to_vec())], ..EntryMeta::mode(0o755) },
            )
            .build(),
            Refused,
        ),
        ("zero-zero-char-device", t().device("a/x", tar::EntryType::Char, 0, 0, m()).build(), Refused),
        ("name-over-255-bytes", t().raw_file(&vec![b'n'; 300], b"x", m()).build(), Refused),
        (
            "path-over-4096-bytes",
            t().raw_file(format!("{}f", "d/".repeat(2100)).as_bytes(), b"x", m()).build(),
            Refused,
        ),
        ("root-entry-not-a-dir", t().raw_file(b"./", b"x", m()).build(), Refused),
        ("absurd-size-no-data", absurd_size(), Refused),
        // Accepted, and the same on every driver.
        ("absolute-name", t().raw_file(format!("{out}/pwned").as_bytes(), b"x", m()).build(), Applied),
        ("hardlink-to-symlink", t().symlink("s", &format!("{out}/secret")).hardlink("h", "s").build(), Applied),
        ("write-over-hardlink", t().file("f", b"original").hardlink("h", "f").file("h", b"replaced").build(), Applied),
        (
            "dir-mode-0000-with-children",
            t().dir_with("locked", EntryMeta::mode(0))
                .file("locked/child", b"c")
                .dir("locked/sub")
                .file("locked/sub/f", b"f")
                .build(),
            Applied,
        ),
        ("setuid-root-file", t().file_with("usr/bin/su", b"#!", EntryMeta::mode(0o4755)).build(), Applied),
        (
            "sparse-10-gib",
            t().sparse("var/log/lastlog", SPARSE_SIZE, &[(0, &head), (SPARSE_SIZE, &[])]).build(),
            Applied,
        ),
        // A header claiming an exabyte of holes: refused at once, not read as zeros.
        ("sparse-exabyte", t().sparse("var/log/faillog", 1 << 60, &[(0, &head), (1 << 60, &[])]).build(), Refused),
        ("duplicate-file", t().file("dup", b"first").file("dup", b"second").build(), Applied),
        ("duplicate-dir-file-dir", t().dir("x").file("x/a", b"a").file("x", b"f").dir("x").build(), Applied),
        (
            "fifo-replaced-by-file",
            t().device("p", tar::EntryType::Fifo, 0, 0, m()).file("p", b"not blocked").build(),
            Applied,
        ),
        ("whiteout-then-recreate", t().whiteout("a").dir("a").file("a/new", b"n").build(), Applied),
        ("aufs-metadata-skipped", t().file(".wh..wh.plnk/123.456", b"").file(".wh..wh.aufs", b"").build(), Applied),
    ];
    let _ = pax_path;
    v.into_iter().map(|(name, tar, expect)| HostileTar { name, tar, expect }).collect()
}

/// A regular file whose header claims 1 TiB and whose data is absent.
fn absurd_size() -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("huge").expect("path");
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(1 << 40);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&[0u8; 1024]);
    out
}
