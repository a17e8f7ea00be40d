//! Cases on layers made from tars: apply and read back, whiteouts and opaque
//! directories, special files and metadata, removal and mount counting, refused and
//! hostile input.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{
    apply, assert_no_leftovers, base_tar, ids, must_apply, names, read, set, with_view, Ctx, EntryMeta, TarBuilder,
};
use driver_core::error::Cause;
use driver_core::sys::mounts_under;
use driver_core::ReservedXattrs;

pub fn apply_and_read_back(ctx: &Ctx) {
    let size = apply(ctx, "base", None, &base_tar()).unwrap();
    assert_eq!(size, 7 + 8 + 20 + 3, "applied size is the content bytes");
    let child = TarBuilder::new().dir("etc").file("etc/hostname", b"child\n").file("etc/new", b"new").build();
    must_apply(ctx, "child", Some("base"), &child);
    let info = ctx.driver.get("child").unwrap();
    assert_eq!(info.parent.as_deref(), Some("base"));
    assert!(info.diff_id.as_deref().unwrap().starts_with("sha256:"));
    assert_eq!(info.diff_id.as_deref().unwrap(), driver_core::digest::sha256(&child));
    with_view(ctx, "child", |v| {
        assert_eq!(read(&v.join("etc/hostname")), b"child\n");
        assert_eq!(read(&v.join("etc/new")), b"new");
        assert_eq!(read(&v.join("usr/bin/tool")), b"#!/bin/sh\necho tool\n");
        assert_eq!(fs::read_link(v.join("bin")).unwrap(), Path::new("usr/bin"));
        assert_eq!(fs::metadata(v.join("etc/shadow")).unwrap().mode() & 0o7777, 0o640);
    });
    with_view(ctx, "base", |v| assert_eq!(read(&v.join("etc/hostname")), b"strata\n"));
    assert_eq!(ids(ctx), vec!["base", "child"]);
    assert!(matches!(apply(ctx, "child", Some("base"), &child).unwrap_err().cause, Cause::Exists));
    assert!(matches!(apply(ctx, "x", Some("nope"), &child).unwrap_err().cause, Cause::ParentNotFound(_)));
    assert_no_leftovers(ctx);
}

pub fn whiteouts_hide_lower_entries(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    must_apply(
        ctx,
        "top",
        Some("base"),
        &TarBuilder::new().whiteout("a/x").whiteout("b").whiteout("nothing-here").build(),
    );
    with_view(ctx, "top", |v| {
        assert_eq!(names(&v.join("a")), set(&["y"]));
        assert!(!v.join("b").exists());
        assert!(!v.join("nothing-here").exists());
    });
    with_view(ctx, "base", |v| assert!(v.join("b/z").exists(), "a whiteout must not touch the parent layer"));
}

pub fn opaque_directories_hide_lower_content(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    // The marker before and after the directory's new entries.
    must_apply(ctx, "before", Some("base"), &TarBuilder::new().dir("a").opaque("a").file("a/new", b"n").build());
    must_apply(ctx, "after", Some("base"), &TarBuilder::new().dir("a").file("a/new", b"n").opaque("a").build());
    // No directory entry at all: the marker alone makes the directory opaque.
    must_apply(ctx, "bare", Some("base"), &TarBuilder::new().opaque("b").build());
    for id in ["before", "after"] {
        with_view(ctx, id, |v| assert_eq!(names(&v.join("a")), set(&["new"]), "layer {id}"));
    }
    with_view(ctx, "bare", |v| {
        assert!(v.join("b").is_dir());
        assert_eq!(names(&v.join("b")), set(&[]));
        assert_eq!(names(&v.join("a")), set(&["x", "y"]));
    });
}

pub fn whiteout_keeps_what_the_same_tar_made(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    let t = TarBuilder::new()
        .file("a/x", b"mine")
        .whiteout("a/x")
        .whiteout("b")
        .dir("b")
        .file("b/n", b"n")
        .file("etc/keep", b"k")
        .whiteout("etc")
        .build();
    must_apply(ctx, "top", Some("base"), &t);
    with_view(ctx, "top", |v| {
        assert_eq!(read(&v.join("a/x")), b"mine");
        assert_eq!(names(&v.join("b")), set(&["n"]), "b was whited out, then made again by the same tar");
        assert_eq!(names(&v.join("etc")), set(&["keep"]), "etc: only what this tar put there");
    });
}

pub fn file_and_directory_replace_each_other(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    // a (directory) becomes a file, etc/hostname (file) a directory.
    let t = TarBuilder::new().file("a", b"now a file").dir("etc/hostname").file("etc/hostname/inner", b"i").build();
    must_apply(ctx, "l2", Some("base"), &t);
    // And back: a directory again, which must not show the old a/x and a/y.
    must_apply(ctx, "l3", Some("l2"), &TarBuilder::new().dir("a").file("a/fresh", b"f").build());
    // Within one tar: a later entry for the same path replaces the earlier one.
    let same = TarBuilder::new().dir("q").file("q/x", b"x").file("q", b"file wins").file("r", b"r").dir("r").build();
    must_apply(ctx, "l4", Some("base"), &same);
    with_view(ctx, "l2", |v| {
        assert_eq!(read(&v.join("a")), b"now a file");
        assert_eq!(names(&v.join("etc/hostname")), set(&["inner"]));
    });
    with_view(ctx, "l3", |v| assert_eq!(names(&v.join("a")), set(&["fresh"])));
    with_view(ctx, "l4", |v| {
        assert_eq!(read(&v.join("q")), b"file wins");
        assert!(v.join("r").is_dir());
        assert_eq!(names(&v.join("r")), set(&[]));
    });
}

pub fn directory_deleted_then_recreated_in_a_later_layer(ctx: &Ctx) {
    // BuildKit #2614: L1 has d/a, L2 deletes d, L3 makes d again with d/x.
    must_apply(
        ctx,
        "l1",
        None,
        &TarBuilder::new().dir("d").file("d/a", b"a").dir("d/sub").file("d/sub/s", b"s").build(),
    );
    must_apply(ctx, "l2", Some("l1"), &TarBuilder::new().whiteout("d").build());
    must_apply(ctx, "l3", Some("l2"), &TarBuilder::new().dir("d").file("d/x", b"x").dir("d/sub").build());
    with_view(ctx, "l3", |v| {
        assert_eq!(names(&v.join("d")), set(&["sub", "x"]));
        assert_eq!(names(&v.join("d/sub")), set(&[]));
    });
    // Same with a file in between (BuildKit #2710).
    must_apply(ctx, "m2", Some("l1"), &TarBuilder::new().file("d", b"file").build());
    must_apply(ctx, "m3", Some("m2"), &TarBuilder::new().dir("d").build());
    with_view(ctx, "m3", |v| assert_eq!(names(&v.join("d")), set(&[])));
}

pub fn special_files_and_metadata(ctx: &Ctx) {
    let caps = vec![1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]; // cap_net_bind_service, v2
    let t = TarBuilder::new()
        .dir("d")
        .file_with("d/suid", b"s", EntryMeta::mode(0o4755))
        .dir_with("d/sticky", EntryMeta::mode(0o1777))
        .file_with("d/sgid", b"g", EntryMeta::mode(0o2755))
        .file_with("d/bigids", b"u", EntryMeta { uid: 70000, gid: 4_000_000_000, ..Default::default() })
        .file_with(
            "d/xattrs",
            b"x",
            EntryMeta {
                xattrs: vec![("user.strata".into(), b"yes".to_vec()), ("security.capability".into(), caps.clone())],
                ..Default::default()
            },
        )
        .file("d/target", b"linked")
        .hardlink("d/hard", "d/target")
        .symlink("d/sym", "../d/target")
        .device("d/null", tar::EntryType::Char, 1, 3, EntryMeta::mode(0o666))
        .device("d/loop", tar::EntryType::Block, 7, 200, EntryMeta::mode(0o660))
        .device("d/fifo", tar::EntryType::Fifo, 0, 0, EntryMeta::mode(0o600))
        .file(&format!("d/{}", "n".repeat(200)), b"long name")
        .build();
    must_apply(ctx, "l", None, &t);
    with_view(ctx, "l", |v| {
        let md = |p: &str| fs::symlink_metadata(v.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert_eq!(md("d/suid").mode() & 0o7777, 0o4755);
        assert_eq!(md("d/sgid").mode() & 0o7777, 0o2755);
        assert_eq!(md("d/sticky").mode() & 0o7777, 0o1777);
        assert_eq!((md("d/bigids").uid(), md("d/bigids").gid()), (70000, 4_000_000_000));
        let x = strata_archive::diff::xattrs_of(&v.join("d/xattrs"), &ReservedXattrs::none()).unwrap();
        assert!(x.contains(&("user.strata".to_string(), b"yes".to_vec())), "{x:?}");
        assert!(x.iter().any(|(n, val)| n == "security.capability" && *val == caps), "{x:?}");
        assert_eq!(md("d/hard").ino(), md("d/target").ino());
        assert_eq!(md("d/hard").nlink(), 2);
        assert_eq!(fs::read_link(v.join("d/sym")).unwrap(), Path::new("../d/target"));
        use std::os::unix::fs::FileTypeExt;
        assert!(md("d/null").file_type().is_char_device());
        assert_eq!(md("d/null").rdev(), nix::sys::stat::makedev(1, 3));
        assert!(md("d/loop").file_type().is_block_device());
        assert_eq!(md("d/loop").rdev(), nix::sys::stat::makedev(7, 200));
        assert!(md("d/fifo").file_type().is_fifo());
        assert_eq!(read(&v.join(format!("d/{}", "n".repeat(200)))), b"long name");
    });
}

pub fn sparse_files_keep_their_holes(ctx: &Ctx) {
    let size = 256 << 20;
    let mut head = b"head".to_vec();
    head.resize(4096, b'.');
    // GNU sparse maps end with an empty chunk at the real size when the file ends in a hole.
    let t = TarBuilder::new().sparse("sparse", size, &[(0, &head), (128 << 20, &[7u8; 8192]), (size, &[])]).build();
    must_apply(ctx, "l", None, &t);
    with_view(ctx, "l", |v| {
        let md = fs::metadata(v.join("sparse")).unwrap();
        assert_eq!(md.len(), size);
        assert!(md.blocks() * 512 < 4 << 20, "a 256 MiB sparse file took {} bytes on disk", md.blocks() * 512);
        let mut f = fs::File::open(v.join("sparse")).unwrap();
        let mut head = [0u8; 4];
        f.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"head");
        use std::os::unix::fs::FileExt;
        let mut mid = [0u8; 4];
        f.read_exact_at(&mut mid, 128 << 20).unwrap();
        assert_eq!(mid, [7; 4]);
        f.read_exact_at(&mut mid, 64 << 20).unwrap();
        assert_eq!(mid, [0; 4]);
    });
}

pub fn directory_mtimes_are_the_tars(ctx: &Ctx) {
    let t = TarBuilder::new()
        .dir_with("d", EntryMeta { mode: 0o755, mtime: 1_000_000_000, ..Default::default() })
        .dir_with("locked", EntryMeta { mode: 0o000, mtime: 1_100_000_000, ..Default::default() })
        .file("locked/child", b"c")
        .file_with("d/f", b"f", EntryMeta { mtime: 1_200_000_000, ..Default::default() })
        .build();
    must_apply(ctx, "l", None, &t);
    // A whiteout in a lower directory the tar does not describe leaves its times alone.
    must_apply(ctx, "l2", Some("l"), &TarBuilder::new().whiteout("d/f").build());
    for id in ["l", "l2"] {
        with_view(ctx, id, |v| {
            let d = fs::symlink_metadata(v.join("d")).unwrap();
            assert_eq!((d.mtime(), d.mtime_nsec()), (1_000_000_000, 0), "layer {id}: d");
            let l = fs::symlink_metadata(v.join("locked")).unwrap();
            assert_eq!(l.mode() & 0o7777, 0);
            assert_eq!(l.mtime(), 1_100_000_000);
            assert!(v.join("locked/child").exists());
        });
    }
    with_view(ctx, "l", |v| assert_eq!(fs::symlink_metadata(v.join("d/f")).unwrap().mtime(), 1_200_000_000));
}

pub fn remove_refuses_while_mounted_or_parent(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    ctx.driver.create("ctr", Some("base"), true).unwrap();
    assert!(matches!(ctx.driver.remove("base").unwrap_err().cause, Cause::HasChildren(_)));
    ctx.driver.mount("ctr").unwrap();
    assert!(matches!(ctx.driver.remove("ctr").unwrap_err().cause, Cause::Mounted(1)));
    ctx.driver.unmount("ctr").unwrap();
    assert!(matches!(ctx.driver.unmount("ctr").unwrap_err().cause, Cause::NotMounted));
    ctx.driver.remove("ctr").unwrap();
    ctx.driver.remove("base").unwrap();
    assert!(ctx.driver.get("base").unwrap_err().is_not_found());
    assert!(ctx.driver.remove("base").unwrap_err().is_not_found());
    assert!(ctx.driver.mount("base").unwrap_err().is_not_found());
    assert!(ids(ctx).is_empty());
    assert_no_leftovers(ctx);
}

pub fn mounts_are_shared_and_counted(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    ctx.driver.create("ctr", Some("base"), true).unwrap();
    let p1 = ctx.driver.mount("ctr").unwrap();
    let p2 = ctx.driver.mount("ctr").unwrap();
    assert_eq!(p1, p2, "two users share one mount");
    assert_eq!(ctx.driver.get("ctr").unwrap().mounts, 2);
    let before = mounts_under(&ctx.root).len();
    fs::write(p1.join("written"), b"w").unwrap();
    ctx.driver.unmount("ctr").unwrap();
    assert_eq!(read(&p2.join("written")), b"w", "the second user still sees the mount");
    assert_eq!(mounts_under(&ctx.root).len(), before);
    ctx.driver.unmount("ctr").unwrap();
    assert_eq!(ctx.driver.get("ctr").unwrap().mounts, 0);
    assert!(mounts_under(&ctx.root).len() < before || before == 0, "the last unmount releases the mount");
    // Written data survives unmount and remount.
    with_view(ctx, "ctr", |v| assert_eq!(read(&v.join("written")), b"w"));
}

pub fn bad_input_leaves_nothing(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    let good = TarBuilder::new().file("big", &vec![1u8; 100_000]).file("after", b"a").build();
    let truncated = &good[..good.len() / 2];
    let e = apply(ctx, "t", Some("base"), truncated).unwrap_err();
    assert!(matches!(e.cause, Cause::BadTar(_)), "{e}");
    assert_eq!(e.layer.as_deref(), Some("t"), "the error names the layer: {e}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&good).unwrap();
    let mut gz = gz.finish().unwrap();
    let n = gz.len();
    gz[n - 6] ^= 0xff; // break the CRC
    assert!(apply(ctx, "g", Some("base"), &gz).is_err(), "a corrupt gzip trailer is an error");
    let mut zst = zstd::encode_all(&good[..], 3).unwrap();
    zst.truncate(zst.len() - 10);
    assert!(apply(ctx, "z", Some("base"), &zst).is_err(), "a truncated zstd stream is an error");
    assert!(apply(ctx, "j", None, b"this is not a tar archive at all, just text that goes on for a while......................................................................................................................................................................................................................................................................................................................................................................................................................................................................").is_err());
    assert!(matches!(apply(ctx, "bad id", None, &good).unwrap_err().cause, Cause::InvalidId(_)));
    assert_eq!(ids(ctx), vec!["base"]);
    assert_no_leftovers(ctx);
    // The good stream still applies, compressed too.
    let gz_ok = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&good).unwrap();
        e.finish().unwrap()
    };
    must_apply(ctx, "g", Some("base"), &gz_ok);
    must_apply(ctx, "z", Some("base"), &zstd::encode_all(&good[..], 3).unwrap());
    assert_eq!(
        ctx.driver.get("g").unwrap().diff_id,
        ctx.driver.get("z").unwrap().diff_id,
        "the diff_id is the digest of the uncompressed tar"
    );
}

pub fn hostile_tars_stay_inside(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    let corpus = crate::hostile::corpus(&ctx.outside);
    assert!(corpus.len() >= 30, "the corpus has {} tars", corpus.len());
    for case in corpus {
        let name = case.name;
        let id = format!("h-{name}");
        let r = apply(ctx, &id, Some("base"), &case.tar);
        match case.expect {
            crate::hostile::Expect::Refused => {
                let e = r.expect_err(name);
                assert_eq!(e.layer.as_deref(), Some(id.as_str()), "{name}: the error names the layer: {e}");
                assert!(ctx.driver.get(&id).unwrap_err().is_not_found(), "{name}: a refused layer is not listed");
            }
            crate::hostile::Expect::Applied => {
                r.unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
        assert_eq!(fs::read(ctx.outside.join("secret")).unwrap(), b"secret", "{name}");
        assert!(!ctx.outside.join("pwned").exists(), "{name} wrote outside the root");
        assert_no_leftovers(ctx);
    }
    let out = ctx.outside.to_string_lossy().into_owned();
    with_view(ctx, "h-absolute-name", |v| {
        assert_eq!(read(&v.join(out.trim_start_matches('/')).join("pwned")), b"x");
    });
    with_view(ctx, "h-sparse-10-gib", |v| {
        let md = fs::metadata(v.join("var/log/lastlog")).unwrap();
        assert_eq!(md.len(), crate::hostile::SPARSE_SIZE);
        assert!(md.blocks() * 512 < 64 << 20, "a 10 GiB sparse file took {} bytes", md.blocks() * 512);
    });
    with_view(ctx, "h-write-over-hardlink", |v| {
        assert_eq!(read(&v.join("f")), b"original");
        assert_eq!(read(&v.join("h")), b"replaced");
    });
    with_view(ctx, "h-hardlink-to-symlink", |v| {
        assert_eq!(fs::read_link(v.join("h")).unwrap(), ctx.outside.join("secret"));
    });
    with_view(ctx, "h-whiteout-then-recreate", |v| assert_eq!(names(&v.join("a")), set(&["new"])));
}

pub fn writes_through_lower_symlinks_are_refused(ctx: &Ctx) {
    let out = ctx.outside.to_string_lossy().into_owned();
    must_apply(
        ctx,
        "l1",
        None,
        &TarBuilder::new().symlink("esc", &out).symlink("lib", "usr/lib").dir("usr").dir("usr/lib").build(),
    );
    for (name, tar) in [
        ("file", TarBuilder::new().file("esc/pwned", b"x").build()),
        ("whiteout", TarBuilder::new().whiteout("esc/secret").build()),
        ("inside-link", TarBuilder::new().file("lib/x", b"x").build()),
    ] {
        let e = apply(ctx, name, Some("l1"), &tar).expect_err(name);
        assert!(matches!(e.cause, Cause::Refused(_)), "{name}: {e}");
        assert!(ctx.driver.get(name).unwrap_err().is_not_found());
    }
    assert_no_leftovers(ctx);
}

pub fn zero_zero_char_device_is_refused(ctx: &Ctx) {
    must_apply(ctx, "base", None, &base_tar());
    let t = TarBuilder::new().device("a/x", tar::EntryType::Char, 0, 0, EntryMeta::default()).build();
    let e = apply(ctx, "dev", Some("base"), &t).unwrap_err();
    assert!(matches!(e.cause, Cause::Refused(_)), "{e}");
    assert_eq!(e.path.as_deref(), Some(Path::new("a/x")), "the error names the path: {e}");
    with_view(ctx, "base", |v| assert!(v.join("a/x").is_file()));
}

pub fn usage_and_status(ctx: &Ctx) {
    must_apply(ctx, "base", None, &TarBuilder::new().file("big", &vec![3u8; 1 << 20]).file("small", b"s").build());
    let u = ctx.driver.usage("base").unwrap();
    assert!(u.bytes >= 1 << 20, "usage {u:?} must count the 1 MiB file");
    assert!(u.inodes >= 2, "usage {u:?}");
    let s = ctx.driver.status().unwrap();
    assert_eq!(s.driver, ctx.driver.name());
    assert_eq!(s.layers, 1);
    assert!(!s.backing_fs.is_empty());
    assert!(ctx.driver.usage("nope").unwrap_err().is_not_found());
}
