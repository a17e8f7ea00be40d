//! Hot loops of the tar engine: apply throughput (to tmpfs, so the disk is not what is
//! measured), naive diff throughput, and sha256 digest throughput.
//! `cargo bench -p driver-core --bench engine`

use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use sha2::Digest;
use strata_archive::apply::{apply_layer, ApplyOptions};
use strata_archive::diff::naive_diff;
use strata_cli::workload::{generate, WorkloadSize};

fn scratch_parent() -> &'static Path {
    // tmpfs: measure the engine, not the disk.
    if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm")
    } else {
        Path::new("/tmp")
    }
}

fn opts() -> ApplyOptions {
    ApplyOptions::new("bench")
}

fn benches(c: &mut Criterion) {
    let size = WorkloadSize { base_dirs: 100, base_files: 1000, app_files: 500 };
    let layers = generate(42, size);
    let base = &layers[0];

    let mut g = c.benchmark_group("apply");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(base.tar.len() as u64));
    g.bench_function("base layer, MB/s", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(scratch_parent()).unwrap(),
            |dir| apply_layer(dir.path(), &base.tar[..], &opts()).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(base.files as u64));
    g.bench_function("base layer, files/s", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(scratch_parent()).unwrap(),
            |dir| apply_layer(dir.path(), &base.tar[..], &opts()).unwrap(),
            BatchSize::PerIteration,
        )
    });
    let gz = strata_cli::workload::gzip(&base.tar);
    g.throughput(Throughput::Bytes(base.tar.len() as u64));
    g.bench_function("base layer gzip (zlib-rs), MB/s uncompressed", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(scratch_parent()).unwrap(),
            |dir| apply_layer(dir.path(), &gz[..], &opts()).unwrap(),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    // Naive diff: the base with the app and cleanup layers applied, against the base.
    let lower = tempfile::tempdir_in(scratch_parent()).unwrap();
    apply_layer(lower.path(), &base.tar[..], &opts()).unwrap();
    let upper = tempfile::tempdir_in(scratch_parent()).unwrap();
    apply_layer(upper.path(), &base.tar[..], &opts()).unwrap();
    apply_layer(upper.path(), &layers[1].tar[..], &opts()).unwrap();
    apply_layer(upper.path(), &layers[2].tar[..], &opts()).unwrap();
    let mut g = c.benchmark_group("naive_diff");
    g.sample_size(10);
    g.throughput(Throughput::Elements((size.base_files + size.app_files) as u64));
    g.bench_function("walk and compare, files/s", |b| {
        b.iter(|| naive_diff("bench", upper.path(), Some(lower.path()), &Default::default()).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("digest");
    let data = vec![0x5au8; 64 << 20];
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha256 64 MiB", |b| b.iter(|| sha2::Sha256::digest(&data)));
    g.finish();
}

criterion_group!(engine, benches);
criterion_main!(engine);
