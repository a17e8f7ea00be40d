//! A reader that runs its source on another thread, a bounded number of chunks ahead.
//! A driver whose layers start from their parent's tree applies a chain one layer at
//! a time, so the next layer's read, decompression and blob digest check run here, on
//! the other core, while the current layer is being written (and hashed).

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

const CHUNK: usize = 1 << 20;

pub struct ReadAhead {
    rx: Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts reading `source` now, keeping at most `depth` MiB ahead of the consumer.
    pub fn spawn(mut source: Box<dyn Read + Send + 'static>, depth: usize) -> ReadAhead {
        let (tx, rx) = sync_channel(depth.max(1));
        let thread = std::thread::spawn(move || loop {
            let mut buf = vec![0u8; CHUNK];
            let mut filled = 0;
            let result = loop {
                match source.read(&mut buf[filled..]) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        filled += n;
                        if filled == CHUNK {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            buf.truncate(filled);
            let end = filled == 0;
            let msg = match result {
                Ok(()) => Ok(buf),
                Err(e) => Err(e),
            };
            let failed = msg.is_err();
            // The consumer hung up (its apply failed): stop.
            if tx.send(msg).is_err() || failed || end {
                return;
            }
        });
        ReadAhead { rx, current: Vec::new(), pos: 0, done: false, thread: Some(thread) }
    }
}

/// A reader dropped early (its layer's apply failed) waits for its thread: the source
/// it reads may be writing a blob into the content store, and the failed unpack's
/// cleanup, which runs next, must find that blob written and settled, not meet it later
/// (full_disk `vfs_on_a_full_disk` once found 8 MB a detached thread wrote after the
/// cleanup). Hanging up first makes the thread's next send fail, so it stops after at
/// most one more chunk.
impl Drop for ReadAhead {
    fn drop(&mut self) {
        let (_, closed) = sync_channel(1);
        drop(std::mem::replace(&mut self.rx, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // What was read ahead was read before a Ctrl-C: the consumer stops here too,
        // or a layer read ahead whole would be applied (and the next begun) after it.
        if crate::interrupt::requested() {
            return Err(io::Error::other("interrupted (SIGINT or SIGTERM)"));
        }
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    if chunk.is_empty() {
                        self.done = true;
                    }
                    self.current = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_data_and_errors_through() {
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        ReadAhead::spawn(Box::new(io::Cursor::new(data.clone())), 4).read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::InvalidData, "boom"))
            }
        }
        let e = ReadAhead::spawn(Box::new(Failing), 2).read_to_end(&mut out).unwrap_err();
        assert_eq!(e.to_string(), "boom");
    }
}
