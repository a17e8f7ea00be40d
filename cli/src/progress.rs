//! Per-layer progress bars for `image unpack` and `image pull` on a terminal: each
//! layer's bar moves with the bytes read from its blob, and ends with the layer's line.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use strata_image::image::{BlobSource, Image};

pub struct ProgressSource<'a> {
    inner: &'a dyn BlobSource,
    /// Bars by blob locator, and by layer index.
    by_locator: HashMap<String, ProgressBar>,
    by_layer: Vec<ProgressBar>,
}

impl<'a> ProgressSource<'a> {
    pub fn new(inner: &'a dyn BlobSource, image: &Image, bars: &MultiProgress, style: ProgressStyle) -> Self {
        let count = image.layers.len();
        let mut by_locator = HashMap::new();
        let mut by_layer = Vec::new();
        for (i, layer) in image.layers.iter().enumerate() {
            let bar = bars.add(ProgressBar::new(layer.size.unwrap_or(0)).with_style(style.clone()));
            let chain_id = &image.chain_ids[i];
            bar.set_message(format!("layer {}/{count} {}", i + 1, crate::output::short_id(chain_id)));
            by_locator.insert(layer.locator.clone(), bar.clone());
            by_layer.push(bar);
        }
        ProgressSource { inner, by_locator, by_layer }
    }

    /// Layer `index` is done: its bar gives way to `line`.
    pub fn finish(&self, index: usize, line: String) {
        if let Some(bar) = self.by_layer.get(index) {
            bar.set_style(ProgressStyle::with_template("{msg}").expect("template"));
            bar.finish_with_message(line);
        }
    }
}

impl BlobSource for ProgressSource<'_> {
    fn open(&self, locator: &str) -> io::Result<Box<dyn Read + Send>> {
        wrap(self.inner, &self.by_locator, locator)
    }

    fn stored_size(&self, locator: &str) -> io::Result<Option<u64>> {
        self.inner.stored_size(locator)
    }

    /// The inner source's handle with the same bars, so layers still open one at a
    /// time when bars are drawn.
    fn shared(&self) -> Option<Arc<dyn BlobSource>> {
        let inner = self.inner.shared()?;
        Some(Arc::new(SharedProgress { inner, by_locator: self.by_locator.clone() }))
    }
}

struct SharedProgress {
    inner: Arc<dyn BlobSource>,
    by_locator: HashMap<String, ProgressBar>,
}

impl BlobSource for SharedProgress {
    fn open(&self, locator: &str) -> io::Result<Box<dyn Read + Send>> {
        wrap(self.inner.as_ref(), &self.by_locator, locator)
    }

    fn stored_size(&self, locator: &str) -> io::Result<Option<u64>> {
        self.inner.stored_size(locator)
    }
}

/// The blob, moving its layer's bar as it is read.
fn wrap(
    inner: &dyn BlobSource,
    bars: &HashMap<String, ProgressBar>,
    locator: &str,
) -> io::Result<Box<dyn Read + Send>> {
    let blob = inner.open(locator)?;
    Ok(match bars.get(locator) {
        Some(bar) => Box::new(bar.wrap_read(blob)),
        None => blob,
    })
}
