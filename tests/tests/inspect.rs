//! `image history` and `image inspect --efficiency` on every driver: the history's
//! sizes add up to the image's (its blobs as a saved layout holds them, and the bytes
//! each driver applied), and planted waste — a file written in one layer and deleted in
//! the next, a file overwritten twice, a directory hidden by an opaque marker — is
//! found to the byte, with dive's CI-mode exit codes.

use std::fs;

use serde_json::Value;
use strata_archive::tarbuild::TarBuilder;
use strata_testkit::hostile_images::Layout;
use strata_tests::changes::gz;
use strata_tests::{on_every_driver, Strata};

on_every_driver!(history_and_efficiency_find_planted_waste);

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Three layers with known waste: /gone (1000 B) written then deleted, /twice written
/// (100 B) and overwritten twice (200 B, 300 B), /opq/x (70 B) hidden by an opaque /opq.
fn planted(dir: &std::path::Path) -> Layout {
    let l1 = TarBuilder::new()
        .file("gone", &bytes(1000, 1))
        .file("twice", &bytes(100, 2))
        .file("keep", &bytes(50, 3))
        .dir("opq")
        .file("opq/x", &bytes(70, 4))
        .build();
    let l2 = TarBuilder::new()
        .whiteout("gone")
        .file("twice", &bytes(200, 5))
        .opaque("opq")
        .file("opq/y", &bytes(5, 6))
        .build();
    let l3 = TarBuilder::new().file("twice", &bytes(300, 7)).build();
    Layout::new(dir, "waste", &[gz(&l1), gz(&l2), gz(&l3)])
}

fn history_and_efficiency_find_planted_waste(s: &Strata) {
    let tmp = tempfile::tempdir().unwrap();
    let layout = planted(&tmp.path().join("layout"));
    s.ok(&["image", "unpack", &format!("{}:waste", layout.dir.display()), "--name", "waste"]);
    // One more layer by commit: its history entry carries the message.
    s.ok(&["container", "create", "c", "--image", "waste"]);
    let mnt = s.ok(&["layer", "mount", "c"]);
    fs::write(std::path::Path::new(mnt.trim()).join("keep"), bytes(60, 8)).unwrap();
    s.ok(&["layer", "unmount", "c"]);
    s.ok(&["container", "commit", "c", "--image", "waste:2", "--message", "keep rewritten"]);

    let rows: Value = serde_json::from_str(&s.ok(&["image", "history", "waste:2", "--json"])).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let get = |i: usize, k: &str| rows[i][k].as_u64().unwrap();
    // Top first: (added, changed, deleted, hidden).
    let want = [(0, 1, 0, 50), (0, 1, 0, 200), (1, 1, 2, 100 + 1000 + 70), (5, 0, 0, 0)];
    for (i, w) in want.iter().enumerate() {
        let got = (get(i, "added"), get(i, "changed"), get(i, "deleted"), get(i, "hidden"));
        assert_eq!(got, *w, "row {i} (top first): {}", rows[i]);
    }
    assert_eq!(rows[0]["comment"], "keep rewritten");
    assert_eq!(rows[0]["created_by"], "strata container commit c");
    // The table names each layer as `layer ls` and `image ls` do, `sha256:` and 12 hex
    // digits (it showed 12 bare hex digits).
    let text = s.ok(&["image", "history", "waste:2"]);
    let shown: Vec<&str> = text.lines().skip(1).filter_map(|l| l.split_whitespace().next()).collect();
    let want: Vec<&str> = rows.iter().map(|r| &r["chain_id"].as_str().unwrap()[..19]).collect();
    assert_eq!(shown, want, "{text}");
    let listed = s.ok(&["layer", "ls"]);
    assert!(want.iter().all(|id| listed.contains(id)), "layer ls shows them the same way:\n{listed}");

    // Sizes add up: the compressed ones to the image's blobs in a saved layout, the
    // unpacked ones to the bytes the driver applied for each layer.
    let saved = tmp.path().join("saved");
    s.ok(&["image", "save", "waste:2", "-o", &saved.display().to_string(), "--format", "oci"]);
    let inspect: Value = serde_json::from_str(&s.ok(&["image", "inspect", "waste:2"])).unwrap();
    let blobs: u64 = inspect["manifest"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let hex = l["digest"].as_str().unwrap().trim_start_matches("sha256:").to_string();
            fs::metadata(saved.join("blobs/sha256").join(hex)).unwrap().len()
        })
        .sum();
    assert_eq!(rows.iter().map(|r| r["compressed"].as_u64().unwrap()).sum::<u64>(), blobs);
    let layers: Value = serde_json::from_str(&s.ok(&["layer", "ls", "--json"])).unwrap();
    let ids: Vec<&str> = inspect["layers"].as_array().unwrap().iter().map(|l| l.as_str().unwrap()).collect();
    let applied: u64 = layers
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| ids.contains(&l["id"].as_str().unwrap()))
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert_eq!(rows.iter().map(|r| r["unpacked"].as_u64().unwrap()).sum::<u64>(), applied);
    assert_eq!(applied, 1000 + 100 + 50 + 70 + 200 + 5 + 300 + 60);

    // Efficiency of the planted image: exactly the planted bytes.
    let e: Value = serde_json::from_str(&s.ok(&["image", "inspect", "waste", "--efficiency", "--json"])).unwrap();
    assert_eq!(e["wasted_bytes"], 1370);
    assert_eq!(e["total_bytes"], 1725);
    let top: Vec<(String, u64, u64)> = e["top_wasted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["path"].as_str().unwrap().to_string(), w["bytes"].as_u64().unwrap(), w["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(top, vec![("/gone".into(), 1000, 1), ("/twice".into(), 300, 2), ("/opq/x".into(), 70, 1)]);
    assert!((e["efficiency"].as_f64().unwrap() - 355.0 / 1725.0).abs() < 1e-9, "{e}");
    // dive's CI mode: over a limit is a failure, with one error line.
    s.ok(&["image", "inspect", "waste", "--efficiency", "--max-wasted-bytes", "1370"]);
    // A limit not met (Error::WastesTooMuch) is exit 1, as many failures are: the line
    // must name the measured figure.
    let err = s.fails_with(1, &["image", "inspect", "waste", "--efficiency", "--max-wasted-bytes", "1369"]);
    assert!(err.contains("1370"), "{err}");
    s.ok(&["image", "inspect", "waste", "--efficiency", "--min-efficiency", "0.2"]);
    s.fails_with(1, &["image", "inspect", "waste", "--efficiency", "--min-efficiency", "0.21"]);
}
