//! Routes FFmpeg's log into `tracing` instead of stderr, and keeps the last error-level line per
//! thread so that open errors can say *why* ("moov atom not found") and not only FFmpeg's generic
//! return code.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};

use ffmpeg_next::ffi;

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub(crate) fn clear_last_error() {
    LAST_ERROR.with(|l| l.borrow_mut().take());
}

/// The last error-level FFmpeg message logged on this thread since [`clear_last_error`].
pub(crate) fn take_last_error() -> Option<String> {
    LAST_ERROR.with(|l| l.borrow_mut().take())
}

pub(crate) fn install() {
    // SAFETY: `callback` has the signature libavutil expects and never unwinds.
    unsafe { ffi::av_log_set_callback(Some(callback)) };
}

unsafe extern "C" fn callback(
    avcl: *mut c_void,
    level: c_int,
    fmt: *const c_char,
    vl: *mut ffi::__va_list_tag,
) {
    // FFmpeg logs a lot at info/verbose level; format only what can be shown.
    let wanted = level <= ffi::AV_LOG_WARNING || tracing::enabled!(tracing::Level::TRACE);
    if !wanted || fmt.is_null() {
        return;
    }
    let mut buf = [0 as c_char; 1024];
    let mut prefix: c_int = 1;
    // SAFETY: `vl` is the va_list FFmpeg passed us, consumed once; `buf` is writable for its
    // length and av_log_format_line2 always NUL-terminates.
    unsafe {
        ffi::av_log_format_line2(
            avcl,
            level,
            fmt,
            vl,
            buf.as_mut_ptr(),
            buf.len() as c_int,
            &mut prefix,
        )
    };
    // SAFETY: NUL-terminated above.
    let line = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
    let line = line.trim();
    if line.is_empty() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if level <= ffi::AV_LOG_ERROR {
            // Keep the message without the "[mov,mp4,... @ 0x55..]" prefix.
            let msg = match line.find("] ") {
                Some(i) if line.starts_with('[') => &line[i + 2..],
                _ => line,
            };
            LAST_ERROR.with(|l| *l.borrow_mut() = Some(msg.to_string()));
            tracing::debug!(target: "ffmpeg", "{line}");
        } else if level <= ffi::AV_LOG_WARNING {
            tracing::debug!(target: "ffmpeg", "{line}");
        } else {
            tracing::trace!(target: "ffmpeg", "{line}");
        }
    }));
}
