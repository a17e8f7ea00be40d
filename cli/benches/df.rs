//! How long `strata df` takes over a store of 100 images, per driver (needs root):
//! `cargo bench -p strata-cli --bench df`
//!
//! 100 images of three layers each (a base shared by all, a layer shared by ten, one
//! of the image's own, 300 files each) and ten containers, on overlay and vfs, each on
//! its own ext4 scratch filesystem. `df` reads the disk use kept for each layer: an
//! image layer's in its metadata since its commit, a container's in `meta/<id>.usage`
//! since the first `df` after its view was last released (a mount makes it stale). Two
//! cases per driver:
//!
//! * `<driver>`: the store as it stands (every count kept): the target is under 200 ms
//!   (design §8);
//! * `<driver>, every container remounted`: each container's view taken and released
//!   before each call, so that `df` walks all ten containers' own trees again (in
//!   parallel) and keeps their counts (the worst case: on vfs each is a full copy of
//!   its image).
//!
//! docs/check.md ("How fast") gives a run.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use driver_core::Driver;
use driver_overlay::OverlayDriver;
use driver_vfs::VfsDriver;
use strata_archive::tarbuild::TarBuilder;
use strata_cli::workload::{flat_image, gzip};
use strata_image::images::ImageStore;
use strata_scratch::{FsKind, ScratchFs};

/// A layer of 300 small files under `dir`.
fn layer(dir: &str) -> Vec<u8> {
    let mut t = TarBuilder::new();
    t.dir(dir);
    for i in 0..300 {
        t.file(&format!("{dir}/f{i}"), format!("{dir} {i}").repeat(20).as_bytes());
    }
    gzip(&t.build())
}

/// Unpacks 100 images and makes 10 containers.
fn prepare(d: &dyn Driver, dir: &std::path::Path) -> ImageStore {
    let images = ImageStore::open(dir).unwrap();
    let base = gzip(&flat_image(300));
    for i in 0..100 {
        let layout = dir.join(format!("layout{i}"));
        let blobs = [base.clone(), layer(&format!("group{}", i / 10)), layer(&format!("own{i}"))];
        strata_image::image::write_layout(&layout, "img", &blobs).unwrap();
        let (source, img) = strata_image::image::open_source(&format!("{}:img", layout.display()), None).unwrap();
        let top = strata_image::images::unpack(d, &images, source.as_ref(), &img, &format!("img{i}"), &|_| {}).unwrap();
        if i % 10 == 0 {
            d.create(&format!("ctr{i}"), top.as_deref(), true).unwrap();
        }
        std::fs::remove_dir_all(&layout).unwrap();
    }
    images
}

fn benches(c: &mut Criterion) {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: df needs root (mounts, loop devices)");
        return;
    }
    let mut g = c.benchmark_group("df, 100 images and 10 containers");
    g.sample_size(20);
    for name in ["overlay", "vfs"] {
        let scratch = ScratchFs::new(FsKind::Ext4, 4 << 30).unwrap();
        let dir = scratch.path().join(name);
        let d: Box<dyn Driver> = if name == "vfs" {
            Box::new(VfsDriver::new(&dir).unwrap())
        } else {
            Box::new(OverlayDriver::new(&dir).unwrap())
        };
        let images = prepare(d.as_ref(), &dir);
        let once = strata_image::df::df(d.as_ref(), &images).unwrap();
        assert_eq!((once.images.len(), once.containers.len()), (100, 10));
        g.bench_function(name, |b| b.iter(|| strata_image::df::df(d.as_ref(), &images).unwrap()));
        let remount = || {
            for i in (0..100).step_by(10) {
                let id = format!("ctr{i}");
                d.mount(&id).unwrap();
                d.unmount(&id).unwrap();
            }
        };
        g.bench_function(format!("{name}, every container remounted"), |b| {
            b.iter_batched(remount, |()| strata_image::df::df(d.as_ref(), &images).unwrap(), BatchSize::PerIteration)
        });
    }
    g.finish();
}

criterion_group!(df, benches);
criterion_main!(df);
