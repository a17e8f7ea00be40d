//! How diff and container create scale with the image, per driver (needs root):
//! `cargo bench -p strata-cli --bench diff_scaling`
//!
//! * overlay: the diff of a container with 10 changed files, over a 500-file and a
//!   50,000-file image — its cost should not grow with the image;
//! * btrfs: the same diff found from btrfs generations vs the naive walk, over 50,000
//!   files; and creating a container over the 50,000-file image vs an empty one.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use driver_btrfs::BtrfsDriver;
use driver_core::Driver;
use driver_overlay::OverlayDriver;
use strata_archive::tarbuild::TarBuilder;
use strata_cli::workload::{flat_image, rewrite_ten};
use strata_scratch::{FsKind, ScratchFs};

/// Applies an image of `files` files and a container over it with 10 changed files.
fn prepare(d: &dyn Driver, files: usize) {
    d.apply_diff("img", None, &mut &flat_image(files)[..]).unwrap();
    d.create("ctr", Some("img"), true).unwrap();
    let v = d.mount("ctr").unwrap();
    let written = rewrite_ten(&v, files);
    d.unmount("ctr").unwrap();
    written.unwrap();
}

fn benches(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: diff_scaling needs root (mounts, loop devices)");
        return;
    }
    let mut g = c.benchmark_group("overlay diff, 10 changed files");
    g.sample_size(20);
    let tmp = tempfile::tempdir().unwrap();
    for files in [500usize, 50_000] {
        let d = OverlayDriver::new(&tmp.path().join(format!("o{files}"))).unwrap();
        prepare(&d, files);
        assert_eq!(d.changes("ctr").unwrap().len(), 10, "10 files rewritten in place");
        g.bench_function(format!("over {files} files"), |b| b.iter(|| d.diff("ctr", &mut std::io::sink()).unwrap()));
    }
    g.finish();

    let scratch = ScratchFs::new(FsKind::Btrfs, 4 << 30).unwrap();
    let d = BtrfsDriver::new(&scratch.path().join("big")).unwrap();
    prepare(&d, 50_000);
    let r = d.reserved();
    assert_eq!(d.follow("ctr", r).unwrap().changes, d.naive("ctr", r).unwrap().changes);
    let mut g = c.benchmark_group("btrfs diff, 10 changed files over 50000");
    g.sample_size(10);
    g.bench_function("following generations", |b| b.iter(|| d.follow("ctr", r).unwrap()));
    g.bench_function("naive walk", |b| b.iter(|| d.naive("ctr", r).unwrap()));
    g.finish();

    let empty = BtrfsDriver::new(&scratch.path().join("empty")).unwrap();
    empty.apply_diff("img", None, &mut &TarBuilder::new().build()[..]).unwrap();
    let mut g = c.benchmark_group("btrfs container create");
    g.sample_size(20);
    for (name, drv) in [("over 50000 files", &d as &dyn Driver), ("over an empty image", &empty as &dyn Driver)] {
        let mut n = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                n += 1;
                drv.create(&format!("c{n}"), Some("img"), true).unwrap();
            })
        });
    }
    g.finish();
    drop(d);
    drop(empty);
    drop(scratch);
    let _ = Path::new("");
}

criterion_group!(scaling, benches);
criterion_main!(scaling);
