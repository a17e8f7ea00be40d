//! Which options overlay mounts its views with, decided from the probed features,
//! checked through the recording double: nothing is mounted, so neither root nor
//! overlayfs is needed. (The privileged tests mount for real.)

use driver_core::driver::Driver;
use driver_core::syscall::{Call, MountApi, MountSpec, Recording};
use strata_archive::tarbuild::TarBuilder;

use super::*;
use crate::features::Features;
use crate::record::OverlayRecord;

/// Features as a probe would find them: every option known or none.
fn features(lowerdir_plus: bool, known: bool) -> Features {
    Features {
        mounts: true,
        d_type: true,
        lowerdir_plus,
        metacopy: known,
        redirect_dir: known,
        index: known,
        volatile: known,
        userxattr: known,
        metacopy_pair: known,
        metacopy_pair_error: None,
        error: None,
    }
}

/// base (a file), mid over it (a whiteout of base's file, and directories the tar
/// does not describe), a writable ctr over mid; ctr and mid mounted and ctr
/// unmounted. Returns the calls made.
fn run(root: &Path, f: Features, copy_up: CopyUp) -> Vec<Call> {
    let rec = Arc::new(Recording::default());
    let fs = Overlay::with(root, f, (copy_up, None), rec.clone()).unwrap();
    let driver = Layered::from_parts(fs.store.clone(), fs);
    let base = TarBuilder::new().dir("etc").file("etc/a", b"a").build();
    driver.apply_diff("base", None, &mut &base[..]).unwrap();
    let mid = TarBuilder::new().dir("etc").whiteout("etc/a").file("usr/lib/x", b"x").build();
    driver.apply_diff("mid", Some("base"), &mut &mid[..]).unwrap();
    driver.create("ctr", Some("mid"), true).unwrap();
    assert_eq!(driver.mount("ctr").unwrap(), root.join("layers/ctr/merged"));
    driver.unmount("ctr").unwrap();
    driver.mount("mid").unwrap();
    rec.calls()
}

fn mounts(calls: &[Call]) -> Vec<(MountSpec, PathBuf)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Mount { spec, target } => Some((spec.clone(), target.clone())),
            _ => None,
        })
        .collect()
}

fn opts(pairs: &[(&str, &Path)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned())).collect()
}

fn off(known: bool) -> Vec<(String, String)> {
    let names = if known { &["index", "redirect_dir", "metacopy"][..] } else { &[][..] };
    names.iter().map(|k| (k.to_string(), "off".to_string())).collect()
}

#[test]
fn lowerdir_plus_stacks_each_lower_top_first_with_the_probed_options_off() {
    for known in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let diff = |id: &str| root.join("layers").join(id).join("diff");
        let calls = run(root, features(true, known), CopyUp::Full);
        let m = mounts(&calls);
        // mid's implicit usr and usr/lib take their metadata from base's diff
        // directory, looked up as overlayfs would: no view mounted for them.
        assert_eq!(m.len(), 2, "ctr, mid: {m:#?}");
        assert!(m.iter().all(|(_, at)| !at.starts_with(root.join("tmp"))), "{m:#?}");

        // The container: its lowers top first, its own diff as upper.
        let (ctr, ctr_at) = &m[0];
        assert_eq!(ctr_at, &root.join("layers/ctr/merged"));
        let mut want = opts(&[
            ("lowerdir+", &diff("mid")),
            ("lowerdir+", &diff("base")),
            ("upperdir", &diff("ctr")),
            ("workdir", &root.join("layers/ctr/work")),
        ]);
        want.extend(off(known));
        assert_eq!(ctr.options, want, "known={known}");
        assert!(!ctr.readonly);
        // Root mounts keep overlay's xattrs in trusted.*; volatile would lose the
        // upper on a crash: neither is asked for although the kernel has them.
        assert!(ctr.options.iter().all(|(k, _)| k != "userxattr" && k != "volatile"));
        assert!(calls.contains(&Call::Unmount { target: ctr_at.clone() }));

        // A committed layer's view: its own diff on top, read-only.
        let (mid, mid_at) = &m[1];
        assert_eq!(mid_at, &root.join("layers/mid/merged"));
        let mut want = opts(&[("lowerdir+", &diff("mid")), ("lowerdir+", &diff("base"))]);
        want.extend(off(known));
        assert_eq!(mid.options, want);
        assert!(mid.readonly);

        // The whiteout of base's file became a 0/0 device, through the double too.
        assert!(calls.iter().any(|c| matches!(c, Call::Mknod { name, dev: 0, .. } if name == "a")));
    }
}

/// With redirects (and metacopy) on, every view, read-only ones too (they may have
/// a container's upper as a lower), is mounted with them and index off; the
/// writable layer records how it copies up, and a later mount by a driver asked for
/// less neither erases that record nor mounts with less.
#[test]
fn redirect_and_metacopy_views_and_their_record() {
    for (copy_up, redirect, metacopy) in [(CopyUp::Redirect, "on", "off"), (CopyUp::Metacopy, "on", "on")] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let m = mounts(&run(root, features(true, true), copy_up));
        assert_eq!(m.len(), 2);
        let want: Vec<(String, String)> = [("index", "off"), ("redirect_dir", redirect), ("metacopy", metacopy)]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (spec, at) in &m {
            assert!(spec.options.ends_with(&want), "{at:?}: {:?}", spec.options);
        }
        let rec = Arc::new(Recording::default());
        let fs = Overlay::with(root, features(true, true), (CopyUp::Full, None), rec.clone()).unwrap();
        let driver = Layered::from_parts(fs.store.clone(), fs);
        driver.mount("ctr").unwrap();
        // Asked for full copy-up now, the container's view still follows what its
        // upper may hold.
        let again = mounts(&rec.calls());
        assert_eq!(again.len(), 1);
        assert!(again[0].0.options.ends_with(&want), "{:?}", again[0].0.options);
        let store = driver.store();
        let extra = store.get("ctr").unwrap().extra;
        assert_eq!(extra.get("copy_up").and_then(|v| v.as_str()), Some(copy_up.name()), "{extra:?}");
        let ctr = OverlayRecord::of(&store.get("ctr").unwrap()).unwrap();
        assert_eq!(ctr.copy_up, Some(copy_up), "{ctr:?}");
        let mid = OverlayRecord::of(&store.get("mid").unwrap()).unwrap();
        assert_eq!(mid.copy_up, None, "a read-only view copies nothing up");
    }
}

/// Applying layers (all an `image unpack` does here) mounts nothing, so it probes
/// nothing: the kernel's features are probed at the first mount (issue 17: every
/// command paid about 0.3 s of probe mounts), and nothing is recorded meanwhile.
#[test]
fn applying_layers_probes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let rec = Arc::new(Recording::default());
    let fs = Overlay::new(root, None, rec.clone()).unwrap();
    let driver = Layered::from_parts(fs.store.clone(), fs);
    let base = TarBuilder::new().dir("etc").file("etc/a", b"a").build();
    driver.apply_diff("base", None, &mut &base[..]).unwrap();
    // etc, usr and usr/lib are implicit: looked up in base's diff, not in a view.
    let mid = TarBuilder::new().whiteout("etc/a").file("usr/lib/x", b"x").build();
    driver.apply_diff("mid", Some("base"), &mut &mid[..]).unwrap();
    assert!(driver.fs().probed.get().is_none(), "the features were probed");
    assert!(!root.join(features::RECORD).exists());
    assert_eq!(mounts(&rec.calls()), vec![]);
}

/// A layer applied over a container that copied up with redirects (or metacopy)
/// looks its implicit directories up in a mounted view, where overlayfs follows
/// them: the diff directories alone would miss a renamed directory's lower part.
#[test]
fn implicit_dirs_over_a_redirecting_container_are_looked_up_in_a_view() {
    for copy_up in [CopyUp::Redirect, CopyUp::Metacopy] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        run(root, features(true, true), copy_up);
        let rec = Arc::new(Recording::default());
        let fs = Overlay::with(root, features(true, true), (CopyUp::Full, None), rec.clone()).unwrap();
        let driver = Layered::from_parts(fs.store.clone(), fs);
        let over = TarBuilder::new().file("usr/lib/y", b"y").build();
        driver.apply_diff("over", Some("ctr"), &mut &over[..]).unwrap();
        let m = mounts(&rec.calls());
        assert_eq!(m.len(), 1, "{copy_up:?}: {m:#?}");
        assert!(m[0].1.starts_with(root.join("tmp")), "{m:#?}");
        let metacopy = if copy_up == CopyUp::Metacopy { "on" } else { "off" };
        assert!(m[0].0.options.contains(&("metacopy".into(), metacopy.into())), "{:?}", m[0].0.options);
    }
}

/// Every applied layer records the bytes of the longest path it holds (a
/// whiteout's is its directory's: it holds nothing at its own name); a created
/// one records none (its content is unknown until its view is written).
#[test]
fn applied_layers_record_their_longest_path() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let fs = Overlay::new(root, None, Arc::new(Recording::default())).unwrap();
    let driver = Layered::from_parts(fs.store.clone(), fs);
    let longest = |id: &str| OverlayRecord::of(&driver.store().get(id).unwrap()).unwrap().longest_path;
    let base = TarBuilder::new().dir("etc").file("etc/a", b"a").build();
    driver.apply_diff("base", None, &mut &base[..]).unwrap();
    assert_eq!(longest("base"), Some(5));
    let deep = format!("{}/{}", "d".repeat(200), "n".repeat(100));
    let mid = TarBuilder::new().whiteout(&format!("{deep}/{}", "w".repeat(250))).file("usr/lib/x", b"x").build();
    driver.apply_diff("mid", Some("base"), &mut &mid[..]).unwrap();
    assert_eq!(longest("mid"), Some(301), "the whiteout's directory");
    let chain = TarBuilder::new().dir("etc").file(&format!("etc/{}", "f".repeat(255)), b"f").build();
    driver
        .apply_chain(
            vec![driver_core::driver::LayerTar {
                id: "top".into(),
                parent: Some("mid".into()),
                tar: Box::new(std::io::Cursor::new(chain)),
                uncompressed: false,
                diff_id: None,
            }],
            &|_, _| {},
        )
        .unwrap();
    assert_eq!(longest("top"), Some(259), "through apply_chain");
    driver.create("ctr", Some("top"), true).unwrap();
    assert_eq!(longest("ctr"), None);
}

/// A chain recorded as copying up with metacopy, on a kernel that no longer takes
/// metacopy with redirect_dir: the mount is refused as not supported here, naming the
/// layer, and nothing is mounted.
#[test]
fn a_chain_recorded_with_more_than_the_kernel_has_is_unsupported() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    run(root, features(true, true), CopyUp::Metacopy);
    let rec = Arc::new(Recording::default());
    let older = Features { metacopy_pair: false, ..features(true, true) };
    let fs = Overlay::with(root, older, (CopyUp::Redirect, None), rec.clone()).unwrap();
    let driver = Layered::from_parts(fs.store.clone(), fs);
    let e = driver.mount("ctr").unwrap_err();
    assert!(matches!(e.cause, Cause::Unsupported(_)), "{e}");
    assert_eq!(e.layer.as_deref(), Some("ctr"), "{e}");
    assert_eq!(mounts(&rec.calls()), vec![]);
}

#[test]
fn classic_mounts_name_lowers_by_short_links_from_the_driver_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let calls = run(root, features(false, true), CopyUp::Full);
    let m = mounts(&calls);
    let (ctr, _) = &m[0];
    assert_eq!(ctr.api, MountApi::Classic { cwd: Some(root.to_path_buf()) });
    let link = |id: &str| format!("l/{}", short_link(id));
    let mut want = vec![
        ("lowerdir".to_string(), format!("{}:{}", link("mid"), link("base"))),
        ("upperdir".to_string(), "layers/ctr/diff".to_string()),
        ("workdir".to_string(), "layers/ctr/work".to_string()),
    ];
    want.extend(off(true));
    assert_eq!(ctr.options, want);
    for id in ["mid", "base"] {
        let target = fs::read_link(root.join(link(id))).unwrap();
        assert_eq!(target, Path::new("../layers").join(id).join("diff"), "{id}'s link");
    }
}
