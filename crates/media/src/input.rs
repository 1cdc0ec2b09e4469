//! Where a video comes from: a file, a network URL or standard input.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ffmpeg_next as ffmpeg;

use crate::error::MediaError;
use crate::ffmpeg_log;

/// A video source: a local file, an `http(s)://`, `rtsp://`, `rtmp://`, `udp://`... URL (HLS
/// playlists are plain http URLs ending in `.m3u8`), or `-` for standard input.
///
/// Parse one from a command-line string with [`Input::parse`] (or `str::parse`); a string is a
/// URL when it has a `scheme://` prefix, standard input when it is exactly `-`, and a path
/// otherwise.
///
/// ```
/// use vidlm_media::Input;
/// assert!(matches!(Input::parse("clip.mp4"), Input::Path(_)));
/// assert!(matches!(Input::parse("https://example.com/a.m3u8"), Input::Url(_)));
/// assert!(matches!(Input::parse("-"), Input::Stdin));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Input {
    /// A local file.
    Path(PathBuf),
    /// A URL FFmpeg opens with one of its network protocols.
    Url(String),
    /// Standard input (`-`); not seekable, so sampling decodes sequentially.
    Stdin,
}

/// Network read/connect timeout: a stalled server becomes an error instead of a hang.
const NETWORK_TIMEOUT_US: &str = "15000000";

impl Input {
    /// Classifies a command-line string as a URL, `-` (stdin) or a path. Never fails: whether the
    /// input exists is checked when it is opened.
    pub fn parse(s: &str) -> Input {
        if s == "-" {
            return Input::Stdin;
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
            {
                return Input::Url(s.to_string());
            }
        }
        Input::Path(PathBuf::from(s))
    }

    /// Whether the source can seek (local files can; stdin cannot; URLs are tried and fall back
    /// to sequential reading).
    pub fn is_local_file(&self) -> bool {
        matches!(self, Input::Path(_))
    }

    /// Whether this is a live stream that may never end: a streaming protocol (RTSP, RTMP,
    /// UDP, RTP, SRT, TCP, MMS) or an HLS playlist (`.m3u8`; live when it declares no
    /// duration).
    pub fn is_live_protocol(&self) -> bool {
        let Input::Url(u) = self else { return false };
        let lower = u.to_ascii_lowercase();
        let scheme = lower.split("://").next().unwrap_or("");
        matches!(
            scheme,
            "rtsp"
                | "rtsps"
                | "rtmp"
                | "rtmps"
                | "rtmpt"
                | "rtmpe"
                | "udp"
                | "rtp"
                | "srt"
                | "tcp"
                | "mms"
                | "mmsh"
                | "mmst"
        ) || lower
            .split('?')
            .next()
            .is_some_and(|p| p.ends_with(".m3u8"))
    }

    /// The string handed to libavformat.
    fn ffmpeg_url(&self) -> String {
        match self {
            Input::Path(p) => {
                let s = p.to_string_lossy().into_owned();
                // A path with a colon would be taken for a protocol ("c:x.mp4"); `file:` pins it.
                if s.contains(':') {
                    format!("file:{s}")
                } else {
                    s
                }
            }
            Input::Url(u) => u.clone(),
            Input::Stdin => "pipe:0".to_string(),
        }
    }

    /// Checks what can be checked before FFmpeg sees the input, for precise messages.
    fn precheck(&self) -> Result<(), MediaError> {
        let Input::Path(p) = self else { return Ok(()) };
        let input = self.to_string();
        match std::fs::metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(MediaError::NotFound { input })
            }
            Err(e) => Err(MediaError::Open {
                input,
                reason: e.to_string(),
            }),
            Ok(m) if m.is_dir() => Err(MediaError::IsDirectory { input }),
            Ok(m) if m.is_file() && m.len() == 0 => Err(MediaError::Empty { input }),
            Ok(_) => Ok(()),
        }
    }

    /// Opens the container and reads stream information.
    pub(crate) fn open(&self) -> Result<ffmpeg::format::context::Input, MediaError> {
        crate::init();
        self.precheck()?;
        let mut opts = ffmpeg::Dictionary::new();
        if let Input::Url(url) = self {
            opts.set("rw_timeout", NETWORK_TIMEOUT_US);
            if url.starts_with("rtsp") {
                opts.set("timeout", NETWORK_TIMEOUT_US);
            }
        }
        ffmpeg_log::clear_last_error();
        let url = self.ffmpeg_url();
        ffmpeg::format::input_with_dictionary(Path::new(&url), opts).map_err(|e| self.open_error(e))
    }

    /// Turns an FFmpeg error from opening into a [`MediaError`] with FFmpeg's own log line when
    /// it said something more specific (e.g. "moov atom not found").
    pub(crate) fn open_error(&self, e: ffmpeg::Error) -> MediaError {
        let input = self.to_string();
        let mut reason = lower_first(&e.to_string());
        if let Some(detail) = ffmpeg_log::take_last_error() {
            // FFmpeg's log line is usually the more specific one ("moov atom not found",
            // "Connection to tcp://host:9 failed: Connection refused").
            if detail.to_lowercase().contains(&reason.to_lowercase()) {
                reason = detail;
            } else if !reason.contains(&detail) {
                reason = format!("{reason}: {detail}");
            }
        }
        match e {
            ffmpeg::Error::InvalidData => MediaError::InvalidData { input, reason },
            ffmpeg::Error::Other { errno } if errno == libc_enoent() => {
                MediaError::NotFound { input }
            }
            _ => MediaError::Open { input, reason },
        }
    }
}

fn libc_enoent() -> i32 {
    ffmpeg::util::error::ENOENT
}

/// FFmpeg's messages start with a capital; inside our one-line errors they follow a colon.
pub(crate) fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) if c.clone().next().is_some_and(|n| n.is_lowercase()) => {
            f.to_lowercase().chain(c).collect()
        }
        _ => s.to_string(),
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Path(p) => write!(f, "{}", p.display()),
            Input::Url(u) => f.write_str(u),
            Input::Stdin => f.write_str("<stdin>"),
        }
    }
}

impl FromStr for Input {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Input::parse(s))
    }
}

impl From<&str> for Input {
    fn from(s: &str) -> Self {
        Input::parse(s)
    }
}

impl From<String> for Input {
    fn from(s: String) -> Self {
        Input::parse(&s)
    }
}

impl From<&Path> for Input {
    fn from(p: &Path) -> Self {
        Input::Path(p.to_path_buf())
    }
}

impl From<PathBuf> for Input {
    fn from(p: PathBuf) -> Self {
        Input::Path(p)
    }
}

impl From<&PathBuf> for Input {
    fn from(p: &PathBuf) -> Self {
        Input::Path(p.clone())
    }
}

impl From<&Input> for Input {
    fn from(i: &Input) -> Self {
        i.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_inputs() {
        assert_eq!(Input::parse("-"), Input::Stdin);
        assert_eq!(
            Input::parse("rtsp://cam/1"),
            Input::Url("rtsp://cam/1".into())
        );
        assert_eq!(
            Input::parse("http://127.0.0.1:9/x.mp4"),
            Input::Url("http://127.0.0.1:9/x.mp4".into())
        );
        assert_eq!(Input::parse("a/b:c.mp4"), Input::Path("a/b:c.mp4".into()));
        assert_eq!(Input::parse("://x"), Input::Path("://x".into()));
        assert_eq!(Input::parse("a/b:c.mp4").ffmpeg_url(), "file:a/b:c.mp4");
    }

    #[test]
    fn lowers_only_sentence_case() {
        assert_eq!(lower_first("Invalid data found"), "invalid data found");
        assert_eq!(lower_first("EOF"), "EOF");
    }
}
