//! Which gzip inflater is fastest on real layers: the Debian fixture's layer blobs
//! (`bash tests/fixtures/debian-image.sh` builds it once), inflated to a sink.
//! `cargo bench -p strata-archive --bench inflate`
//!
//! * flate2 with its zlib-rs backend, streaming (what strata used before);
//! * libdeflate (`libdeflater`), whole buffer: the fastest C inflater, but it needs the
//!   whole compressed and uncompressed layer in memory;
//! * `strata_archive::compress::decompress`, what strata uses now: ISA-L, streaming
//!   (`--no-default-features`: flate2 again).
//!
//! Each sample is the CPU time of the thread that inflates (not the wall clock), so that
//! the ratios stay meaningful on a machine shared with builds.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The fixture's layer blobs, read into memory so the disk is not what is measured.
fn layers() -> Option<Vec<Vec<u8>>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash").arg("tests/fixtures/debian-image.sh").current_dir(&root).output().ok()?;
    if !out.status.success() {
        eprintln!("skipped: the Debian fixture could not be built: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    let list = std::fs::read_to_string(dir.join("layers.txt")).ok()?;
    Some(list.lines().map(|l| std::fs::read(dir.join(l)).unwrap()).collect())
}

/// Reads `r` to its end in 256 KiB pieces (the size apply reads in) and counts the bytes.
fn drain(mut r: impl Read) -> u64 {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return n,
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("inflate: {e}"),
        }
    }
}

/// The uncompressed size a gzip member says it has (its last 4 bytes, modulo 2^32).
fn isize_of(gz: &[u8]) -> usize {
    u32::from_le_bytes(gz[gz.len() - 4..].try_into().unwrap()) as usize
}

/// The CPU time (user + system) this thread has used so far.
fn thread_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_THREAD).unwrap();
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Duration::from_micros(us(u.user_time()) + us(u.system_time()))
}

/// Runs `f` `iters` times and returns the thread CPU time it took.
fn cpu_time(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = thread_cpu();
    for _ in 0..iters {
        f();
    }
    thread_cpu() - start
}

fn benches(c: &mut Criterion) {
    let Some(layers) = layers() else { return };
    let plain: u64 = layers.iter().map(|l| drain(flate2::read::MultiGzDecoder::new(&l[..]))).sum();
    let mut g = c.benchmark_group("inflate the Debian fixture's layers");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(plain));
    g.bench_function("flate2 (zlib-rs), streaming", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                let n: u64 = layers.iter().map(|l| drain(flate2::bufread::MultiGzDecoder::new(&l[..]))).sum();
                assert_eq!(n, plain);
            })
        })
    });
    g.bench_function("libdeflate, whole buffer", |b| {
        let mut d = libdeflater::Decompressor::new();
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                let n: u64 = layers
                    .iter()
                    .map(|l| {
                        let mut out = vec![0u8; isize_of(l)];
                        d.gzip_decompress(l, &mut out).unwrap() as u64
                    })
                    .sum();
                assert_eq!(n, plain);
            })
        })
    });
    g.bench_function("strata_archive::compress::decompress", |b| {
        b.iter_custom(|iters| {
            cpu_time(iters, || {
                let n: u64 =
                    layers.iter().map(|l| drain(strata_archive::compress::decompress(&l[..]).unwrap().1)).sum();
                assert_eq!(n, plain);
            })
        })
    });
    g.finish();
}

criterion_group!(inflate, benches);
criterion_main!(inflate);
