//! What users of docker, podman and ctr expect from listings: `layer ls`/`image ls`
//! show short IDs (full with `--no-trunc`), human sizes and who uses each layer; JSON
//! says `null` for "none" (docs/json.md).

use serde_json::Value;
use strata_tests::{privileged, Strata};

#[test]
fn listings_truncate_ids_show_human_sizes_and_users() {
    if !privileged("the listing test") {
        return;
    }
    let s = Strata::new("vfs");
    let work = tempfile::tempdir().unwrap();
    let size = strata_cli::workload::WorkloadSize::small();
    let tars: Vec<Vec<u8>> =
        strata_cli::workload::generate(51, size).iter().map(|l| strata_cli::workload::gzip(&l.tar)).collect();
    strata_image::image::write_layout(work.path(), "img", &tars).unwrap();
    // -q: the result on stdout, nothing on stderr; --debug: what happens underneath.
    let o = s.run(&["image", "unpack", "-q", work.path().to_str().unwrap(), "--name", "app"]);
    assert!(o.status.success() && o.stderr.is_empty(), "-q: {}", String::from_utf8_lossy(&o.stderr));
    let top = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let o = s.run(&["--debug", "layer", "ls"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("debug: driver vfs in "), "--debug: {o:?}");
    let o = s.run(&["--log-level", "error", "image", "rm", "nothing-here"]);
    assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1, "only the error: {o:?}");
    s.ok(&["container", "create", "c1", "--image", "app"]);
    assert_eq!(top.len(), 71, "{top}");

    let ls = s.ok(&["layer", "ls"]);
    let rows: Vec<&str> = ls.lines().skip(1).collect();
    assert_eq!(rows.len(), tars.len() + 1, "{ls}");
    assert!(!ls.contains(&top) && ls.contains(&top[..19]), "short IDs by default:\n{ls}");
    for r in rows.iter().filter(|r| r.starts_with("sha256:")) {
        assert!(r.contains("image app") && r.contains("container c1"), "each image layer names its users: {r}");
        assert!(r.contains(" KiB ") || r.contains(" MiB ") || r.contains(" B "), "a human size: {r}");
    }
    let full = s.ok(&["layer", "ls", "--no-trunc"]);
    assert!(full.contains(&top), "--no-trunc shows full IDs:\n{full}");

    let images = s.ok(&["image", "ls"]);
    let row = images.lines().nth(1).unwrap();
    assert!(
        row.starts_with("app ") && row.contains(&top[..19]) && !row.contains(&top) && row.ends_with("c1"),
        "{images}"
    );
    assert!(s.ok(&["image", "ls", "--no-trunc"]).contains(&top));

    let json: Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
    let c1 = json.as_array().unwrap().iter().find(|l| l["id"] == "c1").unwrap();
    assert_eq!((c1["writable"].as_bool(), c1["diff_id"].is_null()), (Some(true), true), "{c1}");
    let t = json.as_array().unwrap().iter().find(|l| l["id"] == top.as_str()).unwrap();
    assert_eq!(t["used_by"], serde_json::json!(["image app", "container c1"]), "{t}");
    let json: Value = serde_json::from_str(&s.ok(&["image", "ls", "--json"])).unwrap();
    assert_eq!(json[0]["containers"], serde_json::json!(["c1"]));
    assert!(json[0]["size"].as_u64().unwrap() > 0);

    // probe: a driver that runs has no fix (null, not "").
    let probe: Value = serde_json::from_str(&s.ok(&["probe", "--json"])).unwrap();
    let vfs = probe["drivers"].as_array().unwrap().iter().find(|d| d["driver"] == "vfs").unwrap();
    assert!(vfs["fix"].is_null(), "{vfs}");
}
