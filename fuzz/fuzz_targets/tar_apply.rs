//! The tar engine on arbitrary input: whatever the bytes, applying them into a root
//! must never change anything outside it. The root and a sibling `outside` directory
//! (holding one sentinel file) live at a fixed path, so seeds from the hostile corpus
//! can aim at it by name.
#![no_main]

use std::fs;
use std::path::Path;

use std::sync::Arc;

use driver_overlay::whiteout::OverlayWhiteouts;
use strata_archive::apply::{apply_layer, ApplyOptions};
use strata_archive::WhiteoutFormat;
use libfuzzer_sys::fuzz_target;

pub const BASE: &str = "/tmp/strata-fuzz-base";

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let base = Path::new(BASE);
    let (root, outside) = (base.join("root"), base.join("outside"));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), b"secret").unwrap();
    let formats: [Arc<dyn WhiteoutFormat>; 2] =
        [Arc::new(strata_archive::DeleteInPlace), Arc::new(OverlayWhiteouts::new("trusted.overlay."))];
    for whiteouts in formats {
        let opts = ApplyOptions::new("fuzz").with_whiteouts(whiteouts);
        let _ = apply_layer(&root, data, &opts);
        assert_eq!(names(base), ["outside", "root"], "something was made beside the root");
        assert_eq!(names(&outside), ["secret"], "something was made outside the root");
        assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret", "the sentinel was changed");
        assert!(fs::symlink_metadata(&root).unwrap().is_dir(), "the root is still a directory");
    }
});
