//! What a pull holds at once: each layer's blob is opened when the layer is applied,
//! not all up front, also when progress bars are drawn (on a terminal). Pinned with a
//! low open-files limit: 300 layers under `ulimit -n 64` fail with "Too many open
//! files" if every blob (and its decompressor) is opened before the first is applied.

use std::process::Command;
use std::sync::Arc;

use strata_archive::tarbuild::TarBuilder;
use strata_cli::workload::gzip;
use strata_tests::registry::{Reply, Request, Server, TestImage};
use strata_tests::{privileged, strata_bin, Strata};

const REPO: &str = "strata/many";
const LAYERS: usize = 300;

fn many_layers() -> TestImage {
    let tars: Vec<Vec<u8>> = (0..LAYERS)
        .map(|i| gzip(&TarBuilder::new().file(&format!("f{i}"), i.to_string().as_bytes()).build()))
        .collect();
    TestImage::from_layer_blobs(&tars)
}

/// `strata image pull` under `ulimit -n 64`, through `script` (a terminal: progress
/// bars) or not.
fn pull(s: &Strata, port: u16, terminal: bool) -> (bool, String) {
    let cmd = format!(
        "ulimit -n 64 && {} --root {} --driver {} image pull --insecure 127.0.0.1:{port}/{REPO}:v1",
        strata_bin().display(),
        s.root.display(),
        s.driver
    );
    let o = if terminal {
        Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().unwrap()
    } else {
        Command::new("sh").args(["-c", &cmd]).output().unwrap()
    };
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

#[test]
fn a_pull_opens_one_layer_at_a_time() {
    if !privileged("the pull resource test") || !strata_tests::installed(&["script"], "the pull resource test") {
        return;
    }
    let img = Arc::new(many_layers());
    let served = img.clone();
    let server = Server::start(Arc::new(move |r: &Request| -> Reply { served.answer(REPO, r) }));
    for terminal in [false, true] {
        let s = Strata::new("vfs");
        let (ok, text) = pull(&s, server.port, terminal);
        assert!(ok, "terminal: {terminal}: {text}");
        let images = s.ok(&["image", "ls", "--json"]);
        assert!(images.contains(&format!("\"layers\": {LAYERS}")), "{images}");
    }
}
