//! Building layer tars entry by entry, with raw names: for the conformance suite,
//! the hostile-tar corpus, the generated workload and the benches.

/// Builds OCI layer tars entry by entry, with raw names (nothing is cleaned up).
pub struct TarBuilder {
    builder: tar::Builder<Vec<u8>>,
}

/// Owner, mode, mtime and xattrs of an entry.
#[derive(Clone, Debug)]
pub struct EntryMeta {
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Default for EntryMeta {
    fn default() -> Self {
        EntryMeta { mode: 0o644, uid: 0, gid: 0, mtime: 1_600_000_000, xattrs: Vec::new() }
    }
}

impl EntryMeta {
    pub fn mode(mode: u32) -> Self {
        EntryMeta { mode, ..Default::default() }
    }
}

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder { builder: tar::Builder::new(Vec::new()) }
    }

    fn header(kind: tar::EntryType, meta: &EntryMeta, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode);
        h.set_uid(meta.uid);
        h.set_gid(meta.gid);
        h.set_mtime(meta.mtime);
        h.set_size(size);
        h
    }

    /// Writes `name` raw: in the header when it fits, else as a GNU long name.
    fn raw_entry(
        &mut self,
        mut h: tar::Header,
        name: &[u8],
        link: Option<&[u8]>,
        data: &[u8],
        meta: &EntryMeta,
    ) -> &mut Self {
        if !meta.xattrs.is_empty() {
            let recs: Vec<(String, Vec<u8>)> =
                meta.xattrs.iter().map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.clone())).collect();
            self.builder.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), v.as_slice()))).unwrap();
        }
        for (field, value, kind) in [(0usize, Some(name), b'L'), (1, link, b'K')] {
            let Some(value) = value else { continue };
            let gnu = h.as_gnu_mut().unwrap();
            let slot: &mut [u8] = if field == 0 { &mut gnu.name } else { &mut gnu.linkname };
            if value.len() <= slot.len() {
                slot.fill(0);
                slot[..value.len()].copy_from_slice(value);
            } else {
                let mut long = tar::Header::new_gnu();
                long.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
                long.set_entry_type(tar::EntryType::new(kind));
                long.set_mode(0o644);
                let mut v = value.to_vec();
                v.push(0);
                long.set_size(v.len() as u64);
                long.set_cksum();
                self.builder.append(&long, &v[..]).unwrap();
                slot.fill(0);
                slot.copy_from_slice(&value[..slot.len()]);
            }
        }
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.dir_with(name, EntryMeta::mode(0o755))
    }
    pub fn dir_with(&mut self, name: &str, meta: EntryMeta) -> &mut Self {
        let h = Self::header(tar::EntryType::Directory, &meta, 0);
        self.raw_entry(h, name.as_bytes(), None, &[], &meta)
    }
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_with(name, data, EntryMeta::default())
    }
    pub fn file_with(&mut self, name: &str, data: &[u8], meta: EntryMeta) -> &mut Self {
        self.raw_file(name.as_bytes(), data, meta)
    }
    pub fn raw_file(&mut self, name: &[u8], data: &[u8], meta: EntryMeta) -> &mut Self {
        let h = Self::header(tar::EntryType::Regular, &meta, data.len() as u64);
        self.raw_entry(h, name, None, data, &meta)
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let meta = EntryMeta::mode(0o777);
        let h = Self::header(tar::EntryType::Symlink, &meta, 0);
        self.raw_entry(h, name.as_bytes(), Some(target.as_bytes()), &[], &meta)
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let meta = EntryMeta::default();
        let h = Self::header(tar::EntryType::Link, &meta, 0);
        self.raw_entry(h, name.as_bytes(), Some(target.as_bytes()), &[], &meta)
    }
    pub fn device(&mut self, name: &str, kind: tar::EntryType, major: u32, minor: u32, meta: EntryMeta) -> &mut Self {
        let mut h = Self::header(kind, &meta, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.raw_entry(h, name.as_bytes(), None, &[], &meta)
    }
    /// `.wh.NAME` for `path` (`dir/name`).
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = path.rsplit_once('/').map(|(d, n)| (format!("{d}/"), n)).unwrap_or((String::new(), path));
        self.file(&format!("{dir}.wh.{name}"), b"")
    }
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }
    /// A GNU sparse file of `size` bytes holding `data` at each offset.
    pub fn sparse(&mut self, name: &str, size: u64, chunks: &[(u64, &[u8])]) -> &mut Self {
        assert!(chunks.len() <= 4, "the GNU header holds four sparse chunks");
        let meta = EntryMeta::default();
        let stored: u64 = chunks.iter().map(|(_, d)| d.len() as u64).sum();
        let mut h = Self::header(tar::EntryType::GNUSparse, &meta, stored);
        {
            let gnu = h.as_gnu_mut().unwrap();
            for (i, (off, data)) in chunks.iter().enumerate() {
                gnu.sparse[i].set_offset(*off);
                gnu.sparse[i].set_length(data.len() as u64);
            }
            gnu.set_real_size(size);
        }
        let data: Vec<u8> = chunks.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        self.raw_entry(h, name.as_bytes(), None, &data, &meta)
    }
    pub fn build(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.builder, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}
