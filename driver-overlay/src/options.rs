//! Which lowers, upper and options each view is mounted with (from the probed
//! features and what the chain's records say), and mounting it: `lowerdir+`, or classic
//! mount data with short links; private read-only views for lookups.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use driver_core::error::{Cause, Error, Result};
use driver_core::store::LayerMeta;
use driver_core::syscall::Syscalls;
use sha2::Digest;

use crate::features::{self, CopyUp};
use crate::mount::OverlayMount;
use crate::record::OverlayRecord;
use crate::Overlay;

/// A short, stable link name for a layer (10 characters of base32 of its ID's digest).
pub(crate) fn short_link(id: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let d = sha2::Sha256::digest(id.as_bytes());
    let mut bits: u64 = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    (0..10)
        .map(|_| {
            let c = ALPHABET[(bits & 31) as usize] as char;
            bits >>= 5;
            c
        })
        .collect()
}

/// A private read-only mount of a layer's view, released on drop.
pub(crate) struct TempView {
    pub(crate) path: PathBuf,
    sys: Arc<dyn Syscalls>,
}

impl Drop for TempView {
    fn drop(&mut self) {
        let _ = self.sys.unmount(&self.path);
        let _ = fs::remove_dir(&self.path);
    }
}

impl Overlay {
    /// How the views over `chain` copy up: the driver's own way (for a `writable` view
    /// by default metacopy where the lowers' paths fit, [`features::metacopy_fits`],
    /// with the reason when they do not), or more where a layer of the chain recorded
    /// more. An upper that holds redirects or metacopy stubs needs them followed for
    /// good, whatever STRATA_OVERLAY_COPY_UP says today: with metacopy=off overlayfs
    /// answers EPERM to a stub ("refusing to follow metacopy origin"), and with
    /// redirect_dir off a renamed directory shows only its upper part.
    pub(crate) fn copy_up_for(&self, chain: &[LayerMeta], writable: bool) -> Result<(CopyUp, Option<String>)> {
        let probed = self.probed()?;
        let mut way = probed.copy_up;
        let mut why = None;
        if writable && probed.metacopy_where_paths_fit {
            let lowers: Vec<(&str, Option<u64>)> = chain[1..]
                .iter()
                .map(|m| Ok((m.id.as_str(), OverlayRecord::of(m)?.longest_path)))
                .collect::<Result<_>>()?;
            match features::metacopy_fits(&lowers, features::redirect_max()) {
                Ok(()) => way = CopyUp::Metacopy,
                Err(e) => why = Some(e),
            }
        }
        for meta in chain {
            if let Some(recorded) = OverlayRecord::of(meta)?.copy_up {
                way = way.max(recorded);
            }
        }
        let (f, top) = (&probed.features, &chain[0].id);
        if (way == CopyUp::Metacopy && !f.metacopy_pair) || (way >= CopyUp::Redirect && !f.redirect_dir) {
            let why = format!("its chain was written with overlayfs {}, which this kernel refuses", way.name());
            return Err(Error::layer(top, Cause::Unsupported(why)));
        }
        Ok((way, why.filter(|_| way < CopyUp::Metacopy)))
    }

    fn options(&self, copy_up: CopyUp) -> Result<Vec<(String, String)>> {
        let f = &self.probed()?.features;
        let mut o = Vec::new();
        // Every view, read-only ones too: a container's upper holding redirects and
        // metacopy stubs can be a lower (a layer made over a container), and overlayfs
        // refuses to follow a metacopy stub with metacopy=off.
        let (redirect, metacopy) = match copy_up {
            CopyUp::Full => ("off", "off"),
            CopyUp::Redirect => ("on", "off"),
            CopyUp::Metacopy => ("on", "on"),
        };
        if f.index {
            o.push(("index".into(), "off".into()));
        }
        if f.redirect_dir {
            o.push(("redirect_dir".into(), redirect.into()));
        }
        if f.metacopy {
            o.push(("metacopy".into(), metacopy.into()));
        }
        Ok(o)
    }

    /// The overlay for `chain` (top first), copying up `copy_up`: read-only over all of
    /// it, or writable with the first as upper.
    pub(crate) fn overlay_for(&self, chain: &[LayerMeta], writable: bool, copy_up: CopyUp) -> Result<OverlayMount> {
        let (upper, lowers) = if writable { (Some(&chain[0].id), &chain[1..]) } else { (None, chain) };
        let mut lowers: Vec<PathBuf> = lowers.iter().map(|l| self.diff_dir(&l.id)).collect();
        // overlayfs wants two lowers for a lower-only mount and one lower under an
        // upper; an empty directory stands in.
        let min = if writable { 1 } else { 2 };
        while lowers.len() < min {
            lowers.push(self.dir.join("empty"));
        }
        Ok(OverlayMount {
            lowers,
            upper: upper.map(|u| (self.diff_dir(u), self.store.layer_dir(u).join("work"))),
            options: self.options(copy_up)?,
            readonly: !writable,
        })
    }

    /// Mounts `m` at `target`: `lowerdir+` where the kernel has it, else classic mount
    /// data with the short links, from the driver's folder.
    pub(crate) fn mount_at(&self, chain: &[LayerMeta], m: &OverlayMount, target: &Path) -> std::io::Result<()> {
        if self.probed().map_err(std::io::Error::other)?.features.lowerdir_plus {
            return self.sys.mount(&m.fsconfig_spec(), target);
        }
        let mut rel = m.clone();
        for (i, l) in rel.lowers.iter_mut().enumerate() {
            if let Some(layer) = chain.get(i + usize::from(m.upper.is_some())) {
                self.ensure_link(&layer.id)?;
                *l = PathBuf::from("l").join(short_link(&layer.id));
            } else {
                *l = PathBuf::from("empty");
            }
        }
        if let Some((u, w)) = &mut rel.upper {
            *u = u.strip_prefix(&self.dir).map(Path::to_path_buf).unwrap_or(u.clone());
            *w = w.strip_prefix(&self.dir).map(Path::to_path_buf).unwrap_or(w.clone());
        }
        self.sys.mount(&rel.classic_spec(Some(&self.dir))?, target)
    }

    pub(crate) fn ensure_link(&self, id: &str) -> std::io::Result<()> {
        let link = self.dir.join("l").join(short_link(id));
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("../layers").join(id).join("diff"), &link)?;
        }
        Ok(())
    }

    /// A private read-only view of layer `id` (and below), for lookups.
    pub(crate) fn temp_view(&self, id: &str) -> Result<TempView> {
        let chain = self.chain(id)?;
        let path = tempfile::Builder::new()
            // view-<pid>-: recover() leaves the views of live processes alone.
            .prefix(&format!("view-{}-", std::process::id()))
            .tempdir_in(self.dir.join("tmp"))
            .map_err(|e| Error::at(id, self.dir.join("tmp"), e))?
            .keep();
        let view = TempView { path, sys: self.sys.clone() };
        let m = self.overlay_for(&chain, false, self.copy_up_for(&chain, false)?.0)?;
        self.mount_at(&chain, &m, &view.path).map_err(|e| Error::at(id, &view.path, e))?;
        Ok(view)
    }
}
