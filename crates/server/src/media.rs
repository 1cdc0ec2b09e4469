//! Media URLs to local inputs: `file://` only under the media root, `data:` base64 payloads, and
//! `http(s)://` only when remote media is allowed, with a size and time limit. Blocking: called
//! from the worker side, never on the async runtime.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;

use crate::ApiError;

/// Where media may come from.
#[derive(Debug, Clone)]
pub struct MediaPolicy {
    /// `file://` paths must resolve (symlinks followed) inside this directory (canonical).
    pub root: PathBuf,
    /// Whether `http(s)://` URLs are fetched.
    pub allow_remote: bool,
    /// Most bytes of one fetched or embedded media item.
    pub max_bytes: u64,
    /// Most seconds one fetch may take (connect and read).
    pub remote_timeout: Duration,
}

/// A video ready for the decoder: a path of the media root or a temporary file that lives as
/// long as this value.
#[derive(Debug)]
pub enum LocalMedia {
    /// A file under the media root.
    Path(PathBuf),
    /// Bytes from a `data:` URL or a fetch, in a temporary file deleted on drop.
    Temp(tempfile::TempPath),
}

impl LocalMedia {
    /// The file's path.
    pub fn path(&self) -> &Path {
        match self {
            LocalMedia::Path(p) => p,
            LocalMedia::Temp(t) => t,
        }
    }
}

impl MediaPolicy {
    /// Resolves a `file://` URL to a file inside the root.
    ///
    /// # Errors
    /// 403 for `..` components, absolute paths outside the root and symlinks leading out of it;
    /// 400 for a file that does not exist or is not a regular file.
    pub fn file_path(&self, url: &str) -> Result<PathBuf, ApiError> {
        let raw = url.strip_prefix("file://").unwrap_or(url);
        let raw = percent_decode(raw)
            .ok_or_else(|| ApiError::bad_request(format!("{url}: bad percent-encoding")))?;
        let path = Path::new(&raw);
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(forbidden(url, "`..` is not allowed in media paths"));
        }
        let joined = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        };
        if !joined.starts_with(&self.root) {
            return Err(forbidden(
                url,
                "outside the server's media root (--media-root)",
            ));
        }
        let real = joined
            .canonicalize()
            .map_err(|e| ApiError::bad_request(format!("{url}: cannot open: {e}")))?;
        if !real.starts_with(&self.root) {
            return Err(forbidden(
                url,
                "a link leading outside the server's media root",
            ));
        }
        if !real.is_file() {
            return Err(ApiError::bad_request(format!("{url}: not a regular file")));
        }
        Ok(real)
    }

    /// The bytes a URL names (for images), at most [`Self::max_bytes`].
    ///
    /// # Errors
    /// As [`Self::file_path`] and [`Self::fetch`]; 400 for bad base64 or another scheme.
    pub fn bytes(&self, url: &str) -> Result<Vec<u8>, ApiError> {
        if url.starts_with("data:") {
            return decode_data_url(url);
        }
        if url.starts_with("file://") {
            let p = self.file_path(url)?;
            let f = std::fs::File::open(&p)
                .map_err(|e| ApiError::bad_request(format!("{url}: cannot open: {e}")))?;
            return read_capped(f, self.max_bytes, url);
        }
        if is_remote(url) {
            return self.fetch(url);
        }
        Err(unknown_scheme(url))
    }

    /// A video URL as a local file.
    ///
    /// # Errors
    /// As [`Self::bytes`]; 500 when the temporary file cannot be written.
    pub fn video(&self, url: &str) -> Result<LocalMedia, ApiError> {
        if url.starts_with("file://") {
            return Ok(LocalMedia::Path(self.file_path(url)?));
        }
        if !(url.starts_with("data:") || is_remote(url)) {
            return Err(unknown_scheme(url));
        }
        let bytes = self.bytes(url)?;
        let mut tmp = tempfile::Builder::new()
            .prefix("vidlm-serve-")
            .tempfile()
            .map_err(|e| ApiError::internal(format!("cannot make a temporary file: {e}")))?;
        tmp.write_all(&bytes)
            .and_then(|_| tmp.flush())
            .map_err(|e| ApiError::internal(format!("cannot write a temporary file: {e}")))?;
        Ok(LocalMedia::Temp(tmp.into_temp_path()))
    }

    /// Fetches an `http(s)://` URL within the size and time limits.
    ///
    /// # Errors
    /// 403 unless remote media is allowed; 400 when the fetch fails, times out or is too large.
    pub fn fetch(&self, url: &str) -> Result<Vec<u8>, ApiError> {
        if !self.allow_remote {
            return Err(forbidden(
                url,
                "remote media is off (start the server with --allow-remote-media)",
            ));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout(self.remote_timeout)
            .redirects(3)
            .build();
        let resp = agent
            .get(url)
            .call()
            .map_err(|e| ApiError::bad_request(format!("{url}: cannot fetch: {e}")))?;
        if let Some(n) = resp
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok())
        {
            if n > self.max_bytes {
                return Err(ApiError::bad_request(format!(
                    "{url}: {n} bytes, over the server's limit of {} bytes",
                    self.max_bytes
                )));
            }
        }
        read_capped(resp.into_reader(), self.max_bytes, url)
    }
}

fn is_remote(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

fn unknown_scheme(url: &str) -> ApiError {
    let shown: String = url.chars().take(40).collect();
    ApiError::bad_request(format!(
        "{shown}: expected a file://, data: or http(s):// URL"
    ))
}

fn forbidden(url: &str, why: &str) -> ApiError {
    ApiError {
        status: axum::http::StatusCode::FORBIDDEN,
        kind: "permission_error",
        code: Some("media_not_allowed"),
        param: Some("messages".into()),
        message: format!("{url}: {why}"),
    }
}

fn read_capped(r: impl Read, max: u64, url: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    r.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("{url}: cannot read: {e}")))?;
    if out.len() as u64 > max {
        return Err(ApiError::bad_request(format!(
            "{url}: over the server's limit of {max} bytes"
        )));
    }
    Ok(out)
}

/// `data:[MIME][;base64],PAYLOAD`; only base64 payloads (media is binary).
fn decode_data_url(url: &str) -> Result<Vec<u8>, ApiError> {
    let rest = &url["data:".len()..];
    let (meta, payload) = rest
        .split_once(',')
        .ok_or_else(|| ApiError::bad_request("data: URL without a `,`"))?;
    if !meta.split(';').any(|p| p == "base64") {
        return Err(ApiError::bad_request(
            "data: URL: expected a base64 payload (data:MIME;base64,...)",
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(payload.trim())
        .map_err(|e| ApiError::bad_request(format!("data: URL: invalid base64: {e}")))
}

/// `%XX` escapes of a URL path; None for a broken escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(root: &Path) -> MediaPolicy {
        MediaPolicy {
            root: root.canonicalize().unwrap(),
            allow_remote: false,
            max_bytes: 1 << 20,
            remote_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn file_urls_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a b.mp4"), b"x").unwrap();
        std::fs::write(dir.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        let p = policy(&root);
        let real = root.canonicalize().unwrap().join("a b.mp4");
        assert_eq!(p.file_path("file://a%20b.mp4").unwrap(), real);
        assert_eq!(
            p.file_path(&format!("file://{}", real.display())).unwrap(),
            real
        );
        for bad in [
            "file://../secret".to_string(),
            format!("file://{}/root/../secret", dir.path().display()),
            format!("file://{}", dir.path().join("secret").display()),
            "file://link".to_string(),
            "file:///etc/passwd".to_string(),
        ] {
            let e = p.file_path(&bad).unwrap_err();
            assert_eq!(e.status.as_u16(), 403, "{bad}: {e}");
        }
        assert_eq!(
            p.file_path("file://missing.mp4")
                .unwrap_err()
                .status
                .as_u16(),
            400
        );
        assert_eq!(
            p.bytes("http://127.0.0.1:9/x").unwrap_err().status.as_u16(),
            403
        );
        assert_eq!(p.bytes("ftp://x").unwrap_err().status.as_u16(), 400);
    }

    #[test]
    fn data_urls_decode_base64_only() {
        let p = policy(Path::new("."));
        assert_eq!(p.bytes("data:image/png;base64,aGVsbG8=").unwrap(), b"hello");
        assert!(p.bytes("data:text/plain,hello").is_err());
        assert!(p.bytes("data:image/png;base64,@@@").is_err());
        let v = p.video("data:video/mp4;base64,aGVsbG8=").unwrap();
        assert_eq!(std::fs::read(v.path()).unwrap(), b"hello");
    }
}
