//! `vidlm probe`: container, streams, duration, frame rate and rotation of a video, as text or as
//! the JSON of [`vidlm_media::MediaInfo`] (field names as ffprobe's).

use std::process::ExitCode;

use anyhow::Context;
use vidlm_media::{Input, MediaInfo};

/// Arguments of `vidlm probe`.
#[derive(clap::Args)]
pub struct Args {
    /// Video file, URL (http(s), HLS, RTSP...) or `-` for standard input.
    pub input: String,
    /// Print JSON (vidlm_media::MediaInfo) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `vidlm probe`. A truncated file is reported (info printed, then an error).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let input = Input::parse(&args.input);
    let info = vidlm_media::probe(&input)?;
    let out = if args.json {
        serde_json::to_string_pretty(&info).context("serializing the probe result")? + "\n"
    } else {
        text(&info)
    };
    write_stdout(&out)?;
    if let Some(at) = info.truncated_at {
        let of = info
            .duration
            .map(|d| format!(" of {d:.3} s"))
            .unwrap_or_default();
        anyhow::bail!("{input}: truncated file: data ends at {at:.3} s{of}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn write_stdout(s: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(s.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

fn text(info: &MediaInfo) -> String {
    let mut out = format!("{}: {}", info.input, info.format_name);
    if let Some(d) = info.duration {
        out += &format!(", {d:.3} s");
    }
    if let Some(s) = info.size {
        out += &format!(", {:.1} MB", s as f64 / 1e6);
    }
    if let Some(b) = info.bit_rate {
        out += &format!(", {:.0} kbit/s", b as f64 / 1e3);
    }
    out.push('\n');
    for s in &info.streams {
        let default = if info.video_stream == Some(s.index) {
            " (default)"
        } else {
            ""
        };
        out += &format!(
            "  stream {}{default}: {} {}",
            s.index,
            s.codec_type,
            s.codec_name.as_deref().unwrap_or("?")
        );
        if let Some(p) = &s.profile {
            out += &format!(" ({p})");
        }
        if let (Some(w), Some(h)) = (s.width, s.height) {
            out += &format!(" {w}x{h}");
        }
        if let Some(p) = &s.pix_fmt {
            out += &format!(" {p}");
        }
        if let Some(f) = s.fps {
            out += &format!(", {f:.3} fps");
        }
        if let Some(n) = s.frame_count {
            out += &format!(", {}{n} frames", if s.frame_count_exact { "" } else { "~" });
        }
        if let Some(r) = s.rotation {
            out += &format!(", rotation {r}");
        }
        if let (Some(w), Some(h)) = (s.display_width, s.display_height) {
            if (Some(w), Some(h)) != (s.width, s.height) {
                out += &format!(", shown {w}x{h}");
            }
        }
        if let Some(k) = s.keyframe_interval {
            out += &format!(", keyframe every {k:.2} s");
        }
        if let Some(r) = s.sample_rate {
            out += &format!(" {r} Hz");
        }
        if let Some(c) = s.channels {
            out += &format!(" {c} ch");
        }
        out.push('\n');
    }
    out
}
