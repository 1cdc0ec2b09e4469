//! `vidlm summarize rtsp://...` against a live RTSP stream on the loopback address: the ffmpeg
//! CLI publishes a clip (ANNOUNCE + RECORD) to a small RTSP relay written here, vidlm plays it
//! (DESCRIBE + SETUP + PLAY, RTP interleaved over TCP after the relay refuses UDP), and the
//! window records' times must be the stream's own times. Every process and thread is started and
//! stopped by the test, each with a deadline.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{ffmpeg, fixture_model, vidlm};

/// What publisher and players share.
#[derive(Default)]
struct Shared {
    /// The publisher's session description (from ANNOUNCE).
    sdp: Option<String>,
    /// Connections of the players that sent PLAY: the RTP/RTCP frames go to them.
    players: Vec<TcpStream>,
}

/// A one-stream RTSP relay: one publisher, any number of players, TCP-interleaved RTP only.
struct Relay {
    port: u16,
    state: Arc<(Mutex<Shared>, Condvar)>,
}

const WAIT: Duration = Duration::from_secs(60);

impl Relay {
    fn start() -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Arc<(Mutex<Shared>, Condvar)> = Arc::default();
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = session(conn, &s);
                });
            }
        });
        Relay { port, state }
    }

    fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/live", self.port)
    }

    /// Ends every player's connection (the relay's stop; the listener thread ends with the test
    /// process).
    fn stop(&self) {
        for p in self.state.0.lock().unwrap().players.drain(..) {
            let _ = p.shutdown(Shutdown::Both);
        }
    }
}

/// Serves one RTSP connection: requests, and (for the publisher) interleaved media to relay.
fn session(conn: TcpStream, state: &(Mutex<Shared>, Condvar)) -> std::io::Result<()> {
    conn.set_read_timeout(Some(WAIT))?;
    let mut r = BufReader::new(conn.try_clone()?);
    let mut w = conn.try_clone()?;
    let (lock, cv) = state;
    let mut publisher = false;
    let result = serve_requests(&mut r, &mut w, state, &mut publisher);
    if publisher {
        // The stream has ended: so has every player's (a server closes the connection).
        for p in lock.lock().unwrap().players.drain(..) {
            let _ = p.shutdown(Shutdown::Both);
        }
        cv.notify_all();
    }
    result
}

fn serve_requests(
    r: &mut BufReader<TcpStream>,
    w: &mut TcpStream,
    state: &(Mutex<Shared>, Condvar),
    publisher: &mut bool,
) -> std::io::Result<()> {
    let (lock, cv) = state;
    loop {
        // `$`, channel, 16-bit length: an RTP/RTCP packet from the publisher.
        let first = r.fill_buf()?.first().copied();
        match first {
            None => break,
            Some(b'$') => {
                let mut head = [0u8; 4];
                r.read_exact(&mut head)?;
                let len = u16::from_be_bytes([head[2], head[3]]) as usize;
                let mut data = vec![0u8; len];
                r.read_exact(&mut data)?;
                let mut s = lock.lock().unwrap();
                s.players
                    .retain_mut(|p| p.write_all(&head).and_then(|_| p.write_all(&data)).is_ok());
                continue;
            }
            Some(_) => {}
        }
        let mut line = String::new();
        r.read_line(&mut line)?;
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let url = parts.next().unwrap_or("").to_string();
        let mut cseq = String::from("0");
        let mut length = 0usize;
        let mut transport = String::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((&h, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "cseq" => cseq = v.trim().to_string(),
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "transport" => transport = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0u8; length];
        r.read_exact(&mut body)?;
        if method == "RECORD" {
            *publisher = true;
        }
        let reply = |w: &mut TcpStream, status: &str, extra: &str, body: &str| {
            w.write_all(
                format!(
                    "RTSP/1.0 {status}\r\nCSeq: {cseq}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
        };
        let session = "Session: 4242;timeout=60\r\n";
        match method.as_str() {
            "OPTIONS" => reply(
                w,
                "200 OK",
                "Public: OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, TEARDOWN, GET_PARAMETER\r\n",
                "",
            )?,
            "ANNOUNCE" => {
                lock.lock().unwrap().sdp = Some(String::from_utf8_lossy(&body).into_owned());
                cv.notify_all();
                reply(w, "200 OK", "", "")?;
            }
            "DESCRIBE" => {
                let (s, _) = cv
                    .wait_timeout_while(lock.lock().unwrap(), WAIT, |s| s.sdp.is_none())
                    .unwrap();
                let sdp = s.sdp.clone().unwrap_or_default();
                drop(s);
                let base = format!("Content-Base: {url}/\r\nContent-Type: application/sdp\r\n");
                reply(w, "200 OK", &base, &sdp)?;
            }
            "SETUP" if transport.contains("TCP") || transport.contains("interleaved") => {
                reply(w, "200 OK", &format!("Transport: {transport}\r\n{session}"), "")?
            }
            // Only RTP over the RTSP connection: a player falls back to it.
            "SETUP" => reply(w, "461 Unsupported Transport", "", "")?,
            "RECORD" => {
                // Hold the publisher until a player listens, so the player gets the stream
                // from its first frame.
                let _ = cv
                    .wait_timeout_while(lock.lock().unwrap(), WAIT, |s| s.players.is_empty())
                    .unwrap();
                reply(w, "200 OK", session, "")?;
            }
            "PLAY" => {
                reply(w, "200 OK", &format!("{session}Range: npt=0.000-\r\n"), "")?;
                lock.lock().unwrap().players.push(w.try_clone()?);
                cv.notify_all();
            }
            "TEARDOWN" => {
                reply(w, "200 OK", session, "")?;
                break;
            }
            _ => reply(w, "200 OK", session, "")?,
        }
    }
    Ok(())
}

/// Waits for `child` up to `limit`, killing it past that.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) {
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Publishes `clip` to a fresh relay and runs `vidlm ARGS URL...` as its player; returns the
/// player's stdout.
fn play(clip: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let relay = Relay::start();
    let url = relay.url();
    let mut player = vidlm()
        .arg(args[0])
        .arg(&url)
        .args(&args[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Published as fast as it can be sent: the times must come from the stream, not the clock.
    let mut publisher = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(clip)
        .args([
            "-an",
            "-c",
            "copy",
            "-f",
            "rtsp",
            "-rtsp_transport",
            "tcp",
            &url,
        ])
        .spawn()
        .unwrap();
    wait_bounded(
        &mut publisher,
        Duration::from_secs(120),
        "the ffmpeg publisher",
    );
    wait_bounded(&mut player, Duration::from_secs(300), "vidlm");
    relay.stop();
    let out = player.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn summarizes_an_rtsp_stream_in_windows_with_the_streams_times() {
    let dir = tempfile::tempdir().unwrap();
    // 21.5 s at 25 fps, H.264 with B-frames: frames at 0, 0.04, ... 21.46 s.
    let Some(clip) = ffmpeg(
        dir.path(),
        "live.mp4",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x120:rate=25",
            "-t",
            "21.5",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "50",
        ],
    ) else {
        return;
    };
    // The frames that arrive over RTSP are the file's, at the file's times.
    let times = |json: &[u8]| -> Vec<f64> {
        let v: Value = serde_json::from_slice(json).unwrap();
        v["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["pts"].as_f64().unwrap())
            .collect()
    };
    let live = times(&play(
        &clip,
        &["frames", "--sample", "fps:2", "--json", "--size", "32x32"],
    ));
    let file = vidlm()
        .arg("frames")
        .arg(&clip)
        .args(["--sample", "fps:2", "--json", "--size", "32x32"])
        .output()
        .unwrap();
    assert_eq!(live, times(&file.stdout));
    assert_eq!(live.len(), 43, "{live:?}");

    let out = play(
        &clip,
        &[
            "summarize",
            "--model",
            &fixture_model("smolvlm-tiny-sf2"),
            "--max-new-tokens",
            "4",
            "--window",
            "10s",
            "--merge-threshold",
            "2",
            "--format",
            "json",
        ],
    );
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert!(v["duration"].is_null(), "a live input has no duration");
    let chunks: Vec<(f64, f64)> = v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["start"].as_f64().unwrap(), c["end"].as_f64().unwrap()))
        .collect();
    // Windows of 10 s of stream time from the first frame; the last closes at the last frame
    // sampled (fps:1: at 21 s).
    assert_eq!(
        chunks,
        [(0.0, 10.0), (10.0, 20.0), (20.0, 21.0)],
        "{chunks:?}"
    );
}
