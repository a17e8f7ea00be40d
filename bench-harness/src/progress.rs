//! Per-layer progress bars for `image unpack` and `image pull` on a terminal: each
//! layer's bar moves with the bytes read from its blob, and ends with the layer's line.

use std::collections::HashMap;
use std::io::{self, Read};

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
            bar.set_message(format!("layer {}/{count} {}", i + 1, &chain_id[..chain_id.len().min(19)]));
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
        let blob = self.inner.open(locator)?;
        Ok(match self.by_locator.get(locator) {
            Some(bar) => Box::new(bar.wrap_read(blob)),
            None => blob,
        })
    }
}
