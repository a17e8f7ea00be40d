//! A layer's uncompressed tar stream, its blob checked against its digest as it is read
//! (and kept in the content store on the way, for an unpack).

use std::io::{self, Read};

use crate::error::{Error, Result};

use crate::chain::{Image, LayerBlob};
use crate::content::ContentStore;
use crate::source::{check_stored_size, BlobSource};
use crate::verify::VerifyingReader;

/// Opens layer `i` of `image` as its uncompressed tar stream, the blob checked against
/// its digest when it ends. The tar is not hashed here: whoever applies it does (the
/// driver's apply computes the diff_id anyway) and checks it against the diff_id.
///
/// With `keep`, a blob that store does not hold yet is written there as it is read (and
/// kept once whole and verified), so that an unpack reads and hashes each blob once.
pub fn open_layer(
    source: &dyn BlobSource,
    image: &Image,
    i: usize,
    keep: Option<&ContentStore>,
) -> Result<Box<dyn Read + Send>> {
    open_layer_blob(source, &image.layers[i], i, keep)
}

fn open_layer_blob(
    source: &dyn BlobSource,
    layer: &LayerBlob,
    i: usize,
    keep: Option<&ContentStore>,
) -> Result<Box<dyn Read + Send>> {
    let what = format!("layer {} (blob {})", i + 1, layer.locator);
    check_stored_size(source, &layer.locator, layer.size).map_err(|e| e.context(&what))?;
    let blob = source.open(&layer.locator).map_err(|e| Error::read(&what, e))?;
    let blob: Box<dyn Read + Send> = match (&layer.digest, keep) {
        (Some(d), Some(store)) if store.kept_size(d).is_none() => {
            Box::new(store.keeping(blob, d, layer.size, format!("blob {d}")).map_err(|e| e.context(&what))?)
        }
        (Some(d), _) => Box::new(VerifyingReader::new(blob, d, layer.size, format!("blob {d}"))),
        (None, _) => blob,
    };
    let (_, plain) = strata_archive::compress::decompress(blob).map_err(|e| Error::read(&what, e))?;
    Ok(Box::new(plain))
}

/// [`open_layer`], deferred to the stream's first read when the source can be shared:
/// an image of a thousand layers then holds one decompressor at a time (per applying
/// thread), not a thousand, and no file descriptor per layer up front.
pub fn open_layer_lazily(
    source: &dyn BlobSource,
    image: &Image,
    i: usize,
    keep: Option<&ContentStore>,
) -> Result<Box<dyn Read + Send>> {
    let Some(shared) = source.shared() else { return open_layer(source, image, i, keep) };
    let layer = image.layers[i].clone();
    let keep = keep.cloned();
    Ok(Box::new(Lazy::Pending(Box::new(move || {
        open_layer_blob(shared.as_ref(), &layer, i, keep.as_ref()).map_err(Error::into_io)
    }))))
}

type Opener = Box<dyn FnOnce() -> io::Result<Box<dyn Read + Send>> + Send>;

enum Lazy {
    Pending(Opener),
    Open(Box<dyn Read + Send>),
    Failed,
}

impl Read for Lazy {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Lazy::Pending(_) = self {
            let Lazy::Pending(open) = std::mem::replace(self, Lazy::Failed) else { unreachable!() };
            *self = Lazy::Open(open()?);
        }
        match self {
            Lazy::Open(r) => r.read(buf),
            _ => Err(io::Error::other("the layer's stream failed to open")),
        }
    }
}
