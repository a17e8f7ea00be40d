//! Deep layer stacks: a 200-layer image applies, mounts and reads back, through the
//! new mount API and through classic mount(2) with short links; and where each stops
//! on this kernel.

use std::fs;
use std::path::PathBuf;

use driver_core::driver::LayerTar;
use driver_core::Driver;
use driver_overlay::mount::{mount_classic_from, mount_fsconfig, unmount, OverlayMount};
use driver_overlay::OverlayDriver;
use strata_archive::tarbuild::TarBuilder;

const LAYERS: usize = 200;

/// Layer i adds `layers/l<i>`, rewrites `counter`, adds `tmp/t<i>` and deletes `tmp/t<i-1>`.
fn layer_tar(i: usize) -> Vec<u8> {
    let mut t = TarBuilder::new();
    if i == 0 {
        t.dir("layers").dir("tmp");
    }
    t.file(&format!("layers/l{i}"), format!("{i}").as_bytes()).file("counter", format!("{i}").as_bytes());
    t.file(&format!("tmp/t{i}"), b"t");
    if i > 0 {
        t.whiteout(&format!("tmp/t{}", i - 1));
    }
    t.build()
}

fn check_view(driver: &dyn Driver, top: &str) {
    let v = driver.mount(top).unwrap();
    assert_eq!(fs::read_to_string(v.join("counter")).unwrap(), format!("{}", LAYERS - 1));
    assert_eq!(fs::read_dir(v.join("layers")).unwrap().count(), LAYERS);
    assert_eq!(fs::read_to_string(v.join("layers/l0")).unwrap(), "0");
    let tmp: Vec<_> = fs::read_dir(v.join("tmp")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(tmp, vec![std::ffi::OsString::from(format!("t{}", LAYERS - 1))]);
    driver.unmount(top).unwrap();
    // And a container over it.
    driver.create("ctr", Some(top), true).unwrap();
    let v = driver.mount("ctr").unwrap();
    fs::write(v.join("layers/l0"), b"changed").unwrap();
    driver.unmount("ctr").unwrap();
    let names: Vec<String> = driver.changes("ctr").unwrap().into_iter().map(|c| c.path.display().to_string()).collect();
    // The copied-up directory is unchanged (same metadata as below), so only the file.
    assert_eq!(names, vec!["layers/l0"]);
    driver.remove("ctr").unwrap();
}

fn run(api: &str) {
    let base = tempfile::tempdir().unwrap();
    std::env::set_var("STRATA_OVERLAY_MOUNT_API", api);
    let driver = OverlayDriver::new(&base.path().join("overlay")).unwrap();
    std::env::remove_var("STRATA_OVERLAY_MOUNT_API");
    let ids: Vec<String> = (0..LAYERS).map(|i| format!("layer{i:03}")).collect();
    // The whole chain at once: extracted in parallel, committed in order.
    let chain = (0..LAYERS)
        .map(|i| LayerTar {
            id: ids[i].clone(),
            parent: i.checked_sub(1).map(|p| ids[p].clone()),
            tar: Box::new(std::io::Cursor::new(layer_tar(i))),
            uncompressed: false,
            diff_id: None,
        })
        .collect();
    driver.apply_chain(chain, &|_, _| {}).unwrap();
    assert_eq!(driver.list().unwrap().len(), LAYERS);
    check_view(&driver, &ids[LAYERS - 1]);
    for id in ids.iter().rev() {
        driver.remove(id).unwrap();
    }
    assert!(strata_testkit::conformance::mounts_under(base.path()).is_empty());
}

#[test]
fn two_hundred_layers_with_lowerdir_plus() {
    if !strata_scratch::privileged("overlay deep-stack tests") {
        return;
    }
    run("auto");
}

#[test]
fn two_hundred_layers_with_classic_mount_and_short_links() {
    if !strata_scratch::privileged("overlay deep-stack tests") {
        return;
    }
    run("classic");
}

/// Finds the largest number of lowers that mounts, each way, and prints it (the
/// numbers quoted in mount.rs and the README come from here).
#[test]
fn stack_limit() {
    if !strata_scratch::privileged("overlay stack-limit measurement") {
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let root = base.path();
    fs::create_dir(root.join("l")).unwrap();
    for i in 0..600 {
        let d = root.join(format!("d{i}"));
        fs::create_dir(&d).unwrap();
        std::os::unix::fs::symlink(&d, root.join("l").join(format!("{i:010}"))).unwrap();
    }
    fs::create_dir(root.join("mnt")).unwrap();
    let target = root.join("mnt");
    let try_mount = |n: usize, classic: bool| -> bool {
        let lowers: Vec<PathBuf> = if classic {
            (0..n).map(|i| PathBuf::from("l").join(format!("{i:010}"))).collect()
        } else {
            (0..n).map(|i| root.join(format!("d{i}"))).collect()
        };
        let m = OverlayMount { lowers, upper: None, options: Vec::new(), readonly: true };
        let ok =
            if classic { mount_classic_from(root, &m, &target).is_ok() } else { mount_fsconfig(&m, &target).is_ok() };
        if ok {
            unmount(&target).unwrap();
        }
        ok
    };
    let largest = |classic: bool| -> usize {
        let (mut lo, mut hi) = (2usize, 600usize);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if try_mount(mid, classic) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    };
    let plus = largest(false);
    let classic = largest(true);
    eprintln!("overlay stack limit on this kernel: lowerdir+ {plus} layers; mount(2) with 10-character links {classic} layers");
    assert!(plus >= LAYERS && classic >= LAYERS, "lowerdir+ {plus}, classic {classic}");
    assert!(strata_testkit::conformance::mounts_under(root).is_empty());
}
