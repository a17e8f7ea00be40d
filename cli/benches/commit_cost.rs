//! What `container commit` costs as the image grows, per driver (needs root):
//! `cargo bench -p strata-cli --bench commit_cost`
//!
//! A container with 10 changed files is committed over a 500-file and a 50,000-file
//! image, on overlay (ext4) and btrfs, each on its own scratch filesystem. The commit
//! takes the driver's own diff (overlay reads the upper directory, btrfs follows
//! generations), so its cost follows the changes, not the image: the two times per
//! driver should be about equal (design §8; the README shows a run).

use criterion::{criterion_group, criterion_main, Criterion};
use driver_btrfs::BtrfsDriver;
use driver_core::Driver;
use driver_overlay::OverlayDriver;
use strata_cli::workload::{flat_image, rewrite_ten};
use strata_image::commit::{commit, CommitOptions, LayerCompression};
use strata_image::images::ImageStore;
use strata_scratch::{FsKind, ScratchFs};

/// Unpacks an image of `files` files as `img` and makes container `ctr` over it with
/// 10 files rewritten.
fn prepare(d: &dyn Driver, dir: &std::path::Path, files: usize) -> ImageStore {
    let layout = dir.join("layout");
    strata_image::image::write_layout(&layout, "img", &[flat_image(files)]).unwrap();
    let (source, img) = strata_image::image::open_source(&format!("{}:img", layout.display()), None).unwrap();
    let images = ImageStore::open(dir).unwrap();
    let top = strata_image::images::unpack(d, &images, source.as_ref(), &img, "img", &|_| {}).unwrap();
    d.create("ctr", top.as_deref(), true).unwrap();
    let v = d.mount("ctr").unwrap();
    let written = rewrite_ten(&v, files);
    d.unmount("ctr").unwrap();
    written.unwrap();
    images
}

fn benches(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: commit_cost needs root (mounts, loop devices)");
        return;
    }
    let opts = CommitOptions { message: None, compression: LayerCompression::Gzip };
    for kind in [FsKind::Ext4, FsKind::Btrfs] {
        let scratch = ScratchFs::new(kind, 4 << 30).unwrap();
        let name = if kind == FsKind::Btrfs { "btrfs" } else { "overlay" };
        let mut g = c.benchmark_group(format!("{name} commit, 10 changed files"));
        g.sample_size(10);
        for files in [500usize, 50_000] {
            let dir = scratch.path().join(format!("s{files}"));
            let d: Box<dyn Driver> = if kind == FsKind::Btrfs {
                Box::new(BtrfsDriver::new(&dir).unwrap())
            } else {
                Box::new(OverlayDriver::new(&dir).unwrap())
            };
            let images = prepare(d.as_ref(), &dir, files);
            assert_eq!(d.changes("ctr").unwrap().len(), 10, "10 files rewritten in place");
            let mut n = 0;
            g.bench_function(format!("over {files} files"), |b| {
                b.iter(|| {
                    n += 1;
                    commit(d.as_ref(), &images, "ctr", &format!("new{n}"), &opts).unwrap()
                })
            });
        }
        g.finish();
    }
}

criterion_group!(commit_cost, benches);
criterion_main!(commit_cost);
