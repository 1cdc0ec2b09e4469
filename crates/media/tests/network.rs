//! Network inputs on the loopback address, each server started and stopped by its test:
//!
//! - http with range requests (a small server written here): the same frames as the file for
//!   every strategy, seeks included;
//! - http without range requests (Python's `http.server`): MPEG-TS and faststart MP4 read in
//!   order give the file's frames; an MP4 whose index is at its end fails saying the server
//!   cannot seek;
//! - HLS: a playlist of segments made by `ffmpeg -f hls`, over the range server.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vidlm_media::{DecodeMode, Input, SampleOptions, SampledFrame, Sampler};

/// A static file server answering `Range: bytes=A-[B]` with 206 (one connection per request).
struct RangeServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RangeServer {
    fn start(root: PathBuf) -> RangeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let root = root.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &root);
                });
            }
        });
        RangeServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for RangeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, root: &Path) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts
        .next()
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_string();
    let mut range: Option<(u64, Option<u64>)> = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("range: bytes=") {
            let (a, b) = v.trim().split_once('-').unwrap_or((v.trim(), ""));
            range = a.parse().ok().map(|a| (a, b.parse().ok()));
        }
    }
    let file = root.join(&path);
    let Ok(data) = std::fs::read(&file) else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    };
    let size = data.len() as u64;
    let (status, start, end) = match range {
        Some((a, _)) if a >= size => {
            return out.write_all(
                format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{size}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
            );
        }
        Some((a, b)) => (
            "206 Partial Content",
            a,
            b.map_or(size - 1, |b| b.min(size - 1)),
        ),
        None => ("200 OK", 0, size.saturating_sub(1)),
    };
    let len = if size == 0 { 0 } else { end - start + 1 };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\nContent-Length: {len}\r\nConnection: close\r\n"
    );
    if status.starts_with("206") {
        head += &format!("Content-Range: bytes {start}-{end}/{size}\r\n");
    }
    head += "\r\n";
    out.write_all(head.as_bytes())?;
    if method != "HEAD" && len > 0 {
        // The client may hang up after a seek: a write error just ends this response.
        out.write_all(&data[start as usize..=end as usize])?;
    }
    out.flush()
}

/// Python's `http.server` (no range requests) on a free port, killed when dropped.
struct PlainServer {
    child: Child,
    port: u16,
}

impl PlainServer {
    fn start(root: &Path) -> PlainServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PlainServer { child, port }
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn conformance_dir() -> PathBuf {
    let st = Command::new("bash")
        .arg(repo().join("samples/make-conformance.sh"))
        .status()
        .unwrap();
    assert!(st.success());
    repo().join("samples/gen/conformance")
}

fn sample_with(
    input: &Input,
    strategy: &str,
    window: Option<(f64, f64)>,
    mode: DecodeMode,
) -> Vec<SampledFrame> {
    let mut o = SampleOptions {
        size: Some((48, 36)),
        mode,
        ..SampleOptions::new(strategy.parse().unwrap())
    };
    if let Some((a, b)) = window {
        o.from = a;
        o.to = Some(b);
    }
    let s = Sampler::open(input, o).unwrap_or_else(|e| panic!("{input} {strategy}: {e}"));
    s.map(|f| f.unwrap_or_else(|e| panic!("{input} {strategy}: {e}")))
        .collect()
}

/// Same times, keyframe flags and pixels; the same index wherever both know it.
fn assert_same(what: &str, want: &[SampledFrame], got: &[SampledFrame]) {
    let t = |v: &[SampledFrame]| v.iter().map(|f| f.pts).collect::<Vec<_>>();
    assert_eq!(t(got), t(want), "{what}: times");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.keyframe, w.keyframe, "{what}: keyframe at {}", g.pts);
        if let (Some(a), Some(b)) = (g.index, w.index) {
            assert_eq!(a, b, "{what}: index at {}", g.pts);
        }
        assert!(g.rgb == w.rgb, "{what}: pixels at {}", g.pts);
    }
}

const CASES: &[(&str, Option<(f64, f64)>)] = &[
    ("fps:1", None),
    ("fps:0.4", None),
    ("frames:6", None),
    ("keyframes", None),
    ("fps:2", Some((1.3, 3.7))),
    ("all", Some((2.5, 3.5))),
];

#[test]
fn http_with_ranges_gives_the_files_frames() {
    let dir = conformance_dir();
    let server = RangeServer::start(dir.clone());
    for clip in [
        "c-mp4.mp4",
        "c-mkv.mkv",
        "x-nocues.mkv",
        "c-webm.webm",
        "c-ts.ts",
        "g-250.mp4",
        "g-250.ts",
        "f-frag.mp4",
        "c-avi.avi",
        "vfr.mp4",
    ] {
        let file = Input::from(dir.join(clip));
        let url = Input::Url(server.url(clip));
        for &(strategy, window) in CASES {
            let want = sample_with(&file, strategy, window, DecodeMode::Sequential);
            for mode in [DecodeMode::Seek, DecodeMode::Auto] {
                let got = sample_with(&url, strategy, window, mode);
                assert_same(
                    &format!("{url} {strategy} {window:?} {mode:?}"),
                    &want,
                    &got,
                );
            }
        }
    }
    // Seeks really went over the network (range requests), and landed right.
    let url = Input::Url(server.url("g-250.mp4"));
    let opts = SampleOptions {
        mode: DecodeMode::Seek,
        ..SampleOptions::new("fps:0.25".parse().unwrap())
    };
    let mut s = Sampler::open(&url, opts).unwrap();
    assert_eq!(s.by_ref().count(), 3);
    assert!(s.stats().seeks > 0, "{:?}", s.stats());
}

#[test]
fn http_without_ranges_reads_in_order() {
    let dir = conformance_dir();
    let server = PlainServer::start(&dir);
    for clip in ["c-ts.ts", "x-faststart.mp4", "x-nocues.mkv"] {
        let file = Input::from(dir.join(clip));
        let url = Input::Url(server.url(clip));
        for &(strategy, window) in CASES {
            let want = sample_with(&file, strategy, window, DecodeMode::Sequential);
            let got = sample_with(&url, strategy, window, DecodeMode::Auto);
            assert_same(&format!("{url} {strategy} {window:?}"), &want, &got);
        }
    }
    // The trailer keeps its index (moov) after 7.8 MB of data: without range requests the
    // reader cannot go back for the data, and says why.
    let samples = PlainServer::start(&repo().join("samples"));
    let url = samples.url("bbb-trailer-720p-55s.mp4");
    let err = Sampler::open(
        &Input::Url(url.clone()),
        SampleOptions::new("fps:1".parse().unwrap()),
    )
    .err()
    .expect("an MP4 with its index at the end cannot be read without seeking");
    let msg = err.to_string();
    assert!(
        msg.contains(&url) && msg.contains("server cannot seek"),
        "{msg}"
    );
}

#[test]
fn hls_playlist_gives_the_segments_frames() {
    let dir = conformance_dir();
    let hls = tempfile::tempdir().unwrap();
    let st = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(dir.join("c-ts.ts"))
        .args([
            "-c",
            "copy",
            "-f",
            "hls",
            "-hls_time",
            "1",
            "-hls_list_size",
            "0",
            "-hls_playlist_type",
            "vod",
        ])
        .arg("-hls_segment_filename")
        .arg(hls.path().join("seg%03d.ts"))
        .arg(hls.path().join("index.m3u8"))
        .status()
        .unwrap();
    assert!(st.success());
    let segments = std::fs::read_dir(hls.path()).unwrap().count() - 1;
    assert!(segments >= 3, "{segments} segments");
    let server = RangeServer::start(hls.path().to_path_buf());
    let file = Input::from(dir.join("c-ts.ts"));
    let url = Input::Url(server.url("index.m3u8"));
    for &(strategy, window) in CASES {
        let want = sample_with(&file, strategy, window, DecodeMode::Sequential);
        let got = sample_with(&url, strategy, window, DecodeMode::Auto);
        assert_same(&format!("{url} {strategy} {window:?}"), &want, &got);
    }
    let port = server.port;
    drop(server);
    // Stopped by the test: nothing answers there any more.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}
