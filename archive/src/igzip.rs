//! A streaming gzip reader over ISA-L's inflater (`isal-sys`, built from source).
//!
//! Written here rather than taken from `isal-rs`: its reader copies the input through a
//! 16 KiB buffer of its own and reports a stream as corrupt after two calls that produce
//! no output, which a slow network source (a few bytes per read) triggers on valid data
//! (`gzip_members_decode_whole_from_any_reader` in compress.rs fails with it). This one
//! hands ISA-L the caller's `BufRead` buffer directly and tells "no output yet" from
//! "no progress at all".

use std::io::{self, BufRead, Read};

use isal_sys::igzip_lib as ffi;

/// Inflates every gzip member of `inner` in turn; each member's CRC-32 and length are
/// checked by ISA-L against its trailer.
pub struct GzDecoder<R: BufRead> {
    inner: R,
    // About 30 KiB; boxed so that moving the reader stays cheap.
    state: Box<ffi::inflate_state>,
    done: bool,
}

// SAFETY: the state's raw pointers (next_in, next_out) are only set during a `read` call
// and point into buffers borrowed for that call; nothing is shared between threads.
unsafe impl<R: BufRead + Send> Send for GzDecoder<R> {}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt gzip stream: {what}"))
}

impl<R: BufRead> GzDecoder<R> {
    pub fn new(inner: R) -> GzDecoder<R> {
        let mut state = Box::<ffi::inflate_state>::new_uninit();
        // SAFETY: isal_inflate_init initialises every field the inflater reads.
        let mut state = unsafe {
            ffi::isal_inflate_init(state.as_mut_ptr());
            state.assume_init()
        };
        state.crc_flag = ffi::IGZIP_GZIP;
        GzDecoder { inner, state, done: false }
    }

    fn finished_member(&self) -> bool {
        self.state.block_state == ffi::isal_block_state_ISAL_BLOCK_FINISH
    }
}

impl<R: BufRead> Read for GzDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.done {
            return Ok(0);
        }
        loop {
            let finished = self.finished_member();
            let input = self.inner.fill_buf()?;
            if finished {
                if input.is_empty() {
                    self.done = true;
                    return Ok(0);
                }
                // Another member follows (pigz and some registries write several).
                // SAFETY: the state was initialised in new; reset keeps crc_flag.
                unsafe { ffi::isal_inflate_reset(&mut *self.state) };
            }
            let avail_in = input.len().min(u32::MAX as usize) as u32;
            let avail_out = buf.len().min(u32::MAX as usize) as u32;
            let s = &mut *self.state;
            s.next_in = input.as_ptr().cast_mut();
            s.avail_in = avail_in;
            s.next_out = buf.as_mut_ptr();
            s.avail_out = avail_out;
            // SAFETY: next_in/avail_in describe `input` and next_out/avail_out `buf`, both
            // valid for this call; ISA-L reads and writes only within them and keeps what
            // it must carry over in its own state (tmp_in_buffer, tmp_out_buffer).
            let ret = unsafe { ffi::isal_inflate(s) };
            let consumed = (avail_in - s.avail_in) as usize;
            let produced = (avail_out - s.avail_out) as usize;
            s.next_in = std::ptr::null_mut();
            s.next_out = std::ptr::null_mut();
            self.inner.consume(consumed);
            match ret {
                0.. => {}
                ffi::ISAL_INCORRECT_CHECKSUM => return Err(invalid("CRC-32 or length does not match its trailer")),
                ffi::ISAL_INVALID_WRAPPER | ffi::ISAL_UNSUPPORTED_METHOD => {
                    return Err(invalid("bad gzip member header"))
                }
                _ => return Err(invalid("bad deflate data")),
            }
            if produced > 0 {
                return Ok(produced);
            }
            if s.block_state == ffi::isal_block_state_ISAL_BLOCK_FINISH {
                continue;
            }
            if avail_in == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "gzip stream ends early (truncated)"));
            }
            if consumed == 0 {
                return Err(invalid("the inflater makes no progress"));
            }
        }
    }
}
