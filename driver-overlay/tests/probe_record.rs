//! The overlay probe is recorded in the driver's folder and trusted only where it was
//! made: same kernel release, same overlay module parameters, same filesystem.

use std::fs;
use std::path::Path;

use driver_overlay::features::{probe, probe_recorded, Features, ProbedOn, RECORD};
use serde_json::{json, Value};

/// Every feature the opposite of `f`'s (but still mounting): what a record from
/// another kernel could claim.
fn inverted(f: &Features) -> Features {
    Features {
        mounts: true,
        d_type: !f.d_type,
        lowerdir_plus: !f.lowerdir_plus,
        metacopy: !f.metacopy,
        redirect_dir: !f.redirect_dir,
        index: !f.index,
        volatile: !f.volatile,
        userxattr: !f.userxattr,
        metacopy_pair: !f.metacopy_pair,
        metacopy_pair_error: None,
        error: None,
    }
}

/// Writes a record claiming `f` was probed on `on` into a fresh folder under `base`
/// (a fresh path: the probe is also kept once per folder per process).
fn forged(base: &Path, name: &str, on: &Value, f: &Features) -> std::path::PathBuf {
    let dir = base.join(name);
    fs::create_dir(&dir).unwrap();
    let record = json!({ "probed_on": on, "features": f });
    fs::write(dir.join(RECORD), serde_json::to_vec(&record).unwrap()).unwrap();
    dir
}

#[test]
fn a_probe_is_recorded_and_trusted_only_where_it_was_made() {
    if !strata_scratch::privileged("overlay probe (mounts)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let first = tmp.path().join("first");
    fs::create_dir(&first).unwrap();
    let real = probe_recorded(&first);
    let plain = tmp.path().join("plain");
    fs::create_dir(&plain).unwrap();
    assert_eq!(probe(&plain), real);
    assert!(!plain.join(RECORD).exists(), "a plain probe (strata probe) leaves no record");
    assert!(real.mounts, "overlay mounts here: {:?}", real.error);
    let record: Value = serde_json::from_slice(&fs::read(first.join(RECORD)).expect("the probe is recorded")).unwrap();
    let here = serde_json::to_value(ProbedOn::now(&first).unwrap()).unwrap();
    assert_eq!(record["probed_on"], here);
    assert_eq!(record["features"], serde_json::to_value(&real).unwrap());

    let lie = inverted(&real);
    // Made here: trusted as it stands (no mount made to check it).
    let trusted = forged(tmp.path(), "same", &here, &lie);
    assert_eq!(probe_recorded(&trusted), lie, "a record made here is used");

    // Made anywhere else: probed again, and the record replaced by what the kernel says.
    let mut stale = Vec::new();
    let mut other_kernel = here.clone();
    other_kernel["kernel"] = json!("2.6.32-stale");
    stale.push(("kernel", other_kernel));
    let mut other_params = here.clone();
    other_params["module_params"] = json!([["redirect_max", "1"]]);
    stale.push(("params", other_params));
    let mut other_fs = here.clone();
    other_fs["dev"] = json!(here["dev"].as_u64().unwrap() + 1);
    stale.push(("dev", other_fs));
    let mut other_type = here.clone();
    other_type["fs_type"] = json!("xfs-stale");
    stale.push(("fs_type", other_type));
    for (what, on) in stale {
        let dir = forged(tmp.path(), what, &on, &lie);
        assert_eq!(probe_recorded(&dir), real, "a record from another {what} is not trusted");
        let rewritten: Value = serde_json::from_slice(&fs::read(dir.join(RECORD)).unwrap()).unwrap();
        assert_eq!(rewritten["probed_on"], here, "the record from another {what} is replaced");
        assert_eq!(rewritten["features"], serde_json::to_value(&real).unwrap());
    }

    // Unreadable: probed again too.
    let broken = tmp.path().join("broken");
    fs::create_dir(&broken).unwrap();
    fs::write(broken.join(RECORD), b"{\"probed_on\":").unwrap();
    assert_eq!(probe_recorded(&broken), real);
}

/// What a process killed while checking or probing left in the driver folder goes when
/// the driver is next opened; what a live process is using stays (a `.d_type-check-`
/// file stayed for good: the check runs only while the folder has no record).
#[test]
fn what_a_killed_probe_left_goes_at_the_next_open() {
    if !strata_scratch::privileged("opens the overlay driver") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("overlay");
    fs::create_dir(&root).unwrap();
    // No process has an ID over pid_max; this test's own process is alive.
    let pid_max: u32 = fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    let (dead, alive) = (pid_max + 1, std::process::id());
    let names =
        |pid: u32| [format!(".d_type-check-{pid}-x1"), format!(".tmp-{pid}-4000000000"), format!("probe-{pid}-y2")];
    for pid in [dead, alive] {
        let [check, record, probe] = names(pid);
        fs::write(root.join(check), b"").unwrap();
        fs::write(root.join(record), b"{").unwrap();
        fs::create_dir_all(root.join(probe).join("merged")).unwrap();
    }
    drop(driver_overlay::open_copying_up(&root, driver_overlay::features::CopyUp::Full).unwrap());
    for name in names(dead) {
        assert!(!root.join(&name).exists(), "{name} of a dead process is left");
    }
    for name in names(alive) {
        assert!(root.join(&name).exists(), "{name} of a live process was removed");
    }
}
