//! A deterministic generated image shaped like real ones: the embedded default
//! workload of `strata bench`, and test data for the benches.
//!
//! * **base**: a distro-like tree — a few thousand files in a few hundred
//!   directories, sizes drawn from a mix like a Debian rootfs (most under 4 KiB, a tail
//!   to several MiB), executables, setuid binaries, symlinks and hardlinks; content
//!   about half compressible, like binaries and text together.
//! * **app**: an application layer — a `node_modules`-like tree of many small files,
//!   plus changed config files in the base.
//! * **cleanup**: a layer that deletes files and a tree, replaces a directory
//!   (opaque) and rewrites files, as package removals and upgrades do.
//!
//! The same seed gives the same bytes on every machine.

use std::io::Write;

use strata_archive::tarbuild::{EntryMeta, TarBuilder};

/// splitmix64: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Bytes that compress about 2:1 (random halves and repeated text halves).
    pub fn content(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        const TEXT: &[u8] = b"the quick brown fox jumps over the lazy dog; lorem ipsum dolor sit amet 0123456789\n";
        while out.len() < len {
            let chunk = (len - out.len()).min(512);
            if self.below(2) == 0 {
                for _ in 0..chunk.div_ceil(8) {
                    out.extend_from_slice(&self.next_u64().to_le_bytes());
                }
            } else {
                let start = self.below(TEXT.len() as u64) as usize;
                for i in 0..chunk {
                    out.push(TEXT[(start + i) % TEXT.len()]);
                }
            }
        }
        out.truncate(len);
        out
    }
    /// A file size drawn from a distro-like mix.
    pub fn file_size(&mut self) -> usize {
        match self.below(100) {
            0..=59 => self.below(4096) as usize,
            60..=89 => 4096 + self.below(60 << 10) as usize,
            90..=98 => (64 << 10) + self.below(960 << 10) as usize,
            _ => (1 << 20) + self.below(7 << 20) as usize,
        }
    }
}

/// One generated layer: its name and uncompressed tar.
pub struct GeneratedLayer {
    pub name: &'static str,
    pub tar: Vec<u8>,
    pub files: usize,
}

/// How big the generated image is.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadSize {
    pub base_dirs: usize,
    pub base_files: usize,
    pub app_files: usize,
}

impl WorkloadSize {
    /// The default: about 3,000 base files (~130 MB), 1,500 app files.
    pub fn default_image() -> Self {
        WorkloadSize { base_dirs: 300, base_files: 3000, app_files: 1500 }
    }
    /// A small image for tests.
    pub fn small() -> Self {
        WorkloadSize { base_dirs: 20, base_files: 200, app_files: 100 }
    }
}

const MTIME: u64 = 1_700_000_000;

/// Generates the three layers of the workload image.
pub fn generate(seed: u64, size: WorkloadSize) -> Vec<GeneratedLayer> {
    let mut rng = Rng::new(seed);
    let mut layers = Vec::new();

    // base
    let mut t = TarBuilder::new();
    let tops =
        ["bin", "etc", "lib", "usr", "usr/bin", "usr/lib", "usr/share", "usr/share/doc", "var", "var/lib", "opt"];
    for d in tops {
        t.dir(d);
    }
    let mut dirs: Vec<String> = Vec::new();
    for i in 0..size.base_dirs {
        let parent = tops[rng.below(tops.len() as u64) as usize];
        let d = format!("{parent}/pkg{i:04}");
        t.dir_with(&d, EntryMeta { mode: 0o755, mtime: MTIME, ..Default::default() });
        dirs.push(d);
    }
    let mut files: Vec<String> = Vec::new();
    for i in 0..size.base_files {
        let dir = &dirs[rng.below(dirs.len() as u64) as usize];
        let name = format!("{dir}/file{i:05}");
        let roll = rng.below(100);
        if roll < 5 && !files.is_empty() {
            let target = files[rng.below(files.len() as u64) as usize].clone();
            t.symlink(&name, &format!("/{target}"));
            continue;
        }
        if roll < 6 && !files.is_empty() {
            let target = files[rng.below(files.len() as u64) as usize].clone();
            t.hardlink(&name, &target);
            continue;
        }
        let mode = match roll {
            6..=25 => 0o755,
            26 => 0o4755,
            _ => 0o644,
        };
        let len = rng.file_size();
        let data = rng.content(len);
        t.file_with(&name, &data, EntryMeta { mode, mtime: MTIME + i as u64, ..Default::default() });
        files.push(name);
    }
    layers.push(GeneratedLayer { name: "base", tar: t.build(), files: size.base_files });

    // app
    let mut t = TarBuilder::new();
    t.dir("app").dir("app/node_modules");
    for i in 0..size.app_files {
        let pkg = format!("app/node_modules/mod{:03}", i / 10);
        if i % 10 == 0 {
            t.dir(&pkg);
        }
        let len = rng.below(8192) as usize;
        t.file(&format!("{pkg}/index{i}.js"), &rng.content(len));
    }
    for _ in 0..20 {
        let f = files[rng.below(files.len() as u64) as usize].clone();
        let len = rng.file_size() / 4;
        t.file(&f, &rng.content(len));
    }
    layers.push(GeneratedLayer { name: "app", tar: t.build(), files: size.app_files + 20 });

    // cleanup: deletions, an opaque replacement, rewrites. Each path is touched once,
    // and nothing under a deleted or opaque directory, as real layer tars do (a
    // whiteout beside an entry it would hide is refused by containerd's overlayfs).
    let mut t = TarBuilder::new();
    t.whiteout("usr/share/doc");
    let opq = loop {
        let d = &dirs[rng.below(dirs.len() as u64) as usize];
        if !d.starts_with("usr/share/doc/") {
            break d.clone();
        }
    };
    t.dir(&opq).opaque(&opq).file(&format!("{opq}/replaced"), b"replaced\n");
    let opq_prefix = format!("{opq}/");
    let mut touched = std::collections::BTreeSet::new();
    let mut pick = |rng: &mut Rng| loop {
        let f = &files[rng.below(files.len() as u64) as usize];
        if !f.starts_with("usr/share/doc/") && !f.starts_with(&opq_prefix) && touched.insert(f.clone()) {
            break f.clone();
        }
    };
    let deletions = (size.base_files / 20).min(files.len() / 4);
    for _ in 0..deletions {
        let f = pick(&mut rng);
        t.whiteout(&f);
    }
    for _ in 0..10.min(files.len() / 4) {
        let f = pick(&mut rng);
        t.file(&f, &rng.content(1000));
    }
    layers.push(GeneratedLayer { name: "cleanup", tar: t.build(), files: deletions + 11 });
    layers
}

/// gzip at the level registries' images typically use.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::new(6));
    e.write_all(data).expect("in-memory write");
    e.finish().expect("in-memory write")
}

/// A one-layer image tar of `files` small files, 100 to a directory (`d<k>/f<i>`): the
/// image of the scaling benches (diff and commit over 500 vs 50,000 files).
pub fn flat_image(files: usize) -> Vec<u8> {
    let mut t = TarBuilder::new();
    for d in 0..files.div_ceil(100) {
        t.dir(&format!("d{d}"));
    }
    for i in 0..files {
        t.file(&format!("d{}/f{i}", i / 100), b"content");
    }
    t.build()
}

/// Rewrites in place 10 files of a [`flat_image`] of `files` files, spread across it,
/// through the mounted `view`.
pub fn rewrite_ten(view: &std::path::Path, files: usize) -> std::io::Result<()> {
    (0..10).try_for_each(|i| {
        let f = i * (files / 10);
        std::fs::write(view.join(format!("d{}/f{f}", f / 100)), b"changed")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_bytes() {
        let a = generate(7, WorkloadSize::small());
        let b = generate(7, WorkloadSize::small());
        assert_eq!(a.len(), 3);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.tar, y.tar, "{}", x.name);
        }
        assert_ne!(generate(8, WorkloadSize::small())[0].tar, a[0].tar);
    }

    /// Every path of the cleanup layer appears once, and none lies under a directory
    /// the same layer deletes or makes opaque (the layer is one containerd accepts).
    #[test]
    fn the_cleanup_layer_touches_each_path_once() {
        for seed in 1..20 {
            let layers = generate(seed, WorkloadSize::small());
            let mut names = Vec::new();
            for e in tar::Archive::new(&layers[2].tar[..]).entries().unwrap() {
                names.push(e.unwrap().path().unwrap().to_string_lossy().trim_end_matches('/').to_string());
            }
            let target = |n: &str| n.replace(".wh.", "");
            let mut seen = std::collections::BTreeSet::new();
            for n in names.iter().filter(|n| !n.ends_with(".wh..wh..opq")) {
                assert!(seen.insert(target(n)), "seed {seed}: {n} touched twice");
            }
            let hidden: Vec<String> = names
                .iter()
                .filter_map(|n| {
                    if let Some(dir) = n.strip_suffix("/.wh..wh..opq") {
                        Some(dir.to_string())
                    } else if n.contains(".wh.") {
                        Some(target(n))
                    } else {
                        None
                    }
                })
                .collect();
            for n in &names {
                for h in &hidden {
                    let inside = n.starts_with(&format!("{h}/"));
                    let opaque_own = n.starts_with(&format!("{h}/")) && names.contains(&format!("{h}/.wh..wh..opq"));
                    assert!(!inside || opaque_own, "seed {seed}: {n} lies under {h}, which the layer deletes");
                }
            }
        }
    }
}
