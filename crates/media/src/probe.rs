//! `probe`: what is in a media file, with the field names and values `ffprobe` uses.

use std::ffi::CStr;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;
use serde::{Deserialize, Serialize};

use crate::error::MediaError;
use crate::input::Input;

/// What a media file or stream contains: container, duration and streams.
///
/// Field names follow `ffprobe -show_format -show_streams` so the two can be compared; numbers
/// are numbers here (ffprobe prints many as strings). Serialized as JSON by `vidlm probe --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// The input as given.
    pub input: String,
    /// Container short name(s), e.g. `mov,mp4,m4a,3gp,3g2,mj2` (ffprobe `format_name`).
    pub format_name: String,
    /// Container description (ffprobe `format_long_name`).
    pub format_long_name: String,
    /// Container duration in seconds, when known.
    pub duration: Option<f64>,
    /// Container start time in seconds, when known.
    pub start_time: Option<f64>,
    /// Overall bit rate in bit/s, when known.
    pub bit_rate: Option<u64>,
    /// Size in bytes, when the input has one.
    pub size: Option<u64>,
    /// The stream `vidlm frames` decodes by default (FFmpeg's best video stream).
    pub video_stream: Option<usize>,
    /// All streams, in container order.
    pub streams: Vec<StreamInfo>,
    /// Where the data of a truncated file ends, in seconds of the default video stream: its
    /// index lists frames stored past the end of the file.
    pub truncated_at: Option<f64>,
}

/// One stream of a container (ffprobe `-show_streams` fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Absolute stream index.
    pub index: usize,
    /// `video`, `audio`, `subtitle`, `data`, `attachment` or `unknown`.
    pub codec_type: String,
    /// Codec short name, e.g. `h264`.
    pub codec_name: Option<String>,
    /// Codec description.
    pub codec_long_name: Option<String>,
    /// Codec profile, e.g. `High`.
    pub profile: Option<String>,
    /// Stream time base as `num/den`.
    pub time_base: String,
    /// Start time in seconds.
    pub start_time: Option<f64>,
    /// Duration in seconds.
    pub duration: Option<f64>,
    /// Bit rate in bit/s.
    pub bit_rate: Option<u64>,
    /// Frame count the container declares (ffprobe `nb_frames`).
    pub nb_frames: Option<u64>,
    /// Coded width (video).
    pub width: Option<u32>,
    /// Coded height (video).
    pub height: Option<u32>,
    /// Pixel format, e.g. `yuv420p10le` (video).
    pub pix_fmt: Option<String>,
    /// Sample aspect ratio `num:den` (video).
    pub sample_aspect_ratio: Option<String>,
    /// Display aspect ratio `num:den` (video, before rotation).
    pub display_aspect_ratio: Option<String>,
    /// Base frame rate `num/den` (ffprobe `r_frame_rate`).
    pub r_frame_rate: String,
    /// Average frame rate `num/den` (ffprobe `avg_frame_rate`).
    pub avg_frame_rate: String,
    /// Frames per second as a number (average rate, else base rate).
    pub fps: Option<f64>,
    /// `nb_frames` when declared, else duration x fps (see `frame_count_exact`).
    pub frame_count: Option<u64>,
    /// Whether `frame_count` is the container's count rather than an estimate.
    pub frame_count_exact: bool,
    /// Display-matrix rotation as ffprobe prints it (counter-clockwise degrees, e.g. -90 for a
    /// phone video shown turned 90 degrees clockwise); `None` without a display matrix.
    pub rotation: Option<i32>,
    /// Width as displayed: sample aspect ratio applied, then rotation (video).
    pub display_width: Option<u32>,
    /// Height as displayed (video).
    pub display_height: Option<u32>,
    /// Median distance between keyframes in seconds, from the container index (video).
    pub keyframe_interval: Option<f64>,
    /// Audio sample rate in Hz.
    pub sample_rate: Option<u32>,
    /// Audio channel count.
    pub channels: Option<u32>,
    /// `language` tag, when present.
    pub language: Option<String>,
}

/// Reads the container header and stream parameters of `input` (no frames are decoded).
///
/// # Errors
/// [`MediaError`] when the input is missing, a directory, empty, unreachable or not a media
/// file. An input without video is *not* an error here (its `video_stream` is `None`).
///
/// ```no_run
/// let info = vidlm_media::probe(&"samples/bbb-720p-5s.mp4".into()).unwrap();
/// println!("{} s, {} streams", info.duration.unwrap_or(0.0), info.streams.len());
/// ```
pub fn probe(input: &Input) -> Result<MediaInfo, MediaError> {
    let ictx = input.open()?;
    Ok(media_info(input, &ictx))
}

pub(crate) fn media_info(input: &Input, ictx: &ffmpeg::format::context::Input) -> MediaInfo {
    let fmt = ictx.format();
    let video_stream = ictx
        .streams()
        .best(ffmpeg::media::Type::Video)
        .map(|s| s.index());
    let streams: Vec<StreamInfo> = ictx.streams().map(|s| stream_info(ictx, &s)).collect();
    let size = ictx.io_size().and_then(|s| u64::try_from(s).ok());
    let truncated_at = video_stream.and_then(|i| {
        let st = ictx.stream(i)?;
        truncation_point(&st, size?)
    });
    MediaInfo {
        input: input.to_string(),
        format_name: fmt.name().to_string(),
        format_long_name: fmt.description().to_string(),
        duration: av_time(ictx.duration()),
        start_time: av_time(unsafe { (*ictx.as_ptr()).start_time }),
        bit_rate: u64::try_from(ictx.bit_rate()).ok().filter(|&b| b > 0),
        size,
        video_stream,
        streams,
        truncated_at,
    }
}

fn av_time(t: i64) -> Option<f64> {
    (t != ffi::AV_NOPTS_VALUE).then(|| t as f64 / f64::from(ffi::AV_TIME_BASE))
}

fn ratio(r: ffmpeg::Rational, sep: char) -> String {
    format!("{}{sep}{}", r.numerator(), r.denominator())
}

fn rational_f64(r: ffmpeg::Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0)
        .then(|| f64::from(r.numerator()) / f64::from(r.denominator()))
}

fn cstr(p: *const std::ffi::c_char) -> Option<String> {
    // SAFETY: FFmpeg returns static NUL-terminated strings or null.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

fn stream_info(
    ictx: &ffmpeg::format::context::Input,
    st: &ffmpeg::format::stream::Stream,
) -> StreamInfo {
    let facts = StreamFacts::of(st);
    // SAFETY: codecpar is always allocated for a demuxed stream.
    let par = unsafe { &*(*st.as_ptr()).codecpar };
    let codec_type = match par.codec_type {
        ffi::AVMediaType::AVMEDIA_TYPE_VIDEO => "video",
        ffi::AVMediaType::AVMEDIA_TYPE_AUDIO => "audio",
        ffi::AVMediaType::AVMEDIA_TYPE_SUBTITLE => "subtitle",
        ffi::AVMediaType::AVMEDIA_TYPE_DATA => "data",
        ffi::AVMediaType::AVMEDIA_TYPE_ATTACHMENT => "attachment",
        _ => "unknown",
    };
    let is_video = codec_type == "video";
    let is_audio = codec_type == "audio";
    // SAFETY: plain lookups in static tables.
    let (codec_name, codec_long_name, profile) = unsafe {
        let desc = ffi::avcodec_descriptor_get(par.codec_id);
        let long = if desc.is_null() {
            None
        } else {
            cstr((*desc).long_name)
        };
        let name = cstr(ffi::avcodec_get_name(par.codec_id));
        let profile = if par.profile >= 0 {
            cstr(ffi::avcodec_profile_name(par.codec_id, par.profile))
        } else {
            None
        };
        (name, long, profile)
    };
    let pix_fmt = if is_video && par.format >= 0 {
        // SAFETY: format holds an AVPixelFormat for video streams.
        cstr(unsafe {
            ffi::av_get_pix_fmt_name(std::mem::transmute::<i32, ffi::AVPixelFormat>(par.format))
        })
    } else {
        None
    };
    let tb = st.time_base();
    let avg = st.avg_frame_rate();
    let r = st.rate();
    let fps = rational_f64(avg).or_else(|| rational_f64(r));
    let duration = if st.duration() != ffi::AV_NOPTS_VALUE {
        rational_f64(tb).map(|t| st.duration() as f64 * t)
    } else {
        None
    };
    let nb_frames = u64::try_from(st.frames()).ok().filter(|&n| n > 0);
    let (frame_count, frame_count_exact) = match (
        nb_frames,
        fps,
        duration.or_else(|| av_time(ictx.duration())),
    ) {
        (Some(n), _, _) => (Some(n), true),
        (None, Some(f), Some(d)) if is_video => (Some((f * d).round() as u64), false),
        _ => (None, false),
    };
    let (width, height) = if is_video && par.width > 0 {
        (Some(par.width as u32), Some(par.height as u32))
    } else {
        (None, None)
    };
    // SAFETY: the format context and stream pointers are valid for the call.
    let sar = unsafe {
        ffi::av_guess_sample_aspect_ratio(
            ictx.as_ptr() as *mut _,
            st.as_ptr() as *mut _,
            std::ptr::null_mut(),
        )
    };
    let sar_ok = sar.num > 0 && sar.den > 0;
    let sample_aspect_ratio = (is_video && sar_ok).then(|| format!("{}:{}", sar.num, sar.den));
    let display_aspect_ratio = match (width, height) {
        (Some(w), Some(h)) if sar_ok => {
            let (n, d) = reduce(u64::from(w) * sar.num as u64, u64::from(h) * sar.den as u64);
            Some(format!("{n}:{d}"))
        }
        _ => None,
    };
    let (display_width, display_height) = match (width, height) {
        (Some(w), Some(h)) => {
            let (dw, dh) = display_size(
                w,
                h,
                if sar_ok {
                    (sar.num as u32, sar.den as u32)
                } else {
                    (1, 1)
                },
                facts.rotation_cw,
            );
            (Some(dw), Some(dh))
        }
        _ => (None, None),
    };
    let channels =
        (is_audio && par.ch_layout.nb_channels > 0).then_some(par.ch_layout.nb_channels as u32);
    StreamInfo {
        index: st.index(),
        codec_type: codec_type.to_string(),
        codec_name,
        codec_long_name,
        profile,
        time_base: ratio(tb, '/'),
        start_time: (st.start_time() != ffi::AV_NOPTS_VALUE)
            .then(|| rational_f64(tb).map(|t| st.start_time() as f64 * t))
            .flatten(),
        duration,
        bit_rate: u64::try_from(par.bit_rate).ok().filter(|&b| b > 0),
        nb_frames,
        width,
        height,
        pix_fmt,
        sample_aspect_ratio,
        display_aspect_ratio,
        r_frame_rate: ratio(r, '/'),
        avg_frame_rate: ratio(avg, '/'),
        fps,
        frame_count,
        frame_count_exact,
        rotation: facts.rotation_raw.map(|r| r as i32),
        display_width,
        display_height,
        keyframe_interval: if is_video {
            facts.keyframe_interval_secs()
        } else {
            None
        },
        sample_rate: (is_audio && par.sample_rate > 0).then_some(par.sample_rate as u32),
        channels,
        language: st.metadata().get("language").map(str::to_string),
    }
}

fn reduce(a: u64, b: u64) -> (u64, u64) {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = gcd(a, b).max(1);
    (a / g, b / g)
}

/// Display size of a `w`x`h` picture with sample aspect ratio `sar` turned `rotation_cw` degrees.
/// A ratio that would make the picture wider than 16384 pixels (a damaged header) is ignored.
pub(crate) fn display_size(w: u32, h: u32, sar: (u32, u32), rotation_cw: u32) -> (u32, u32) {
    let stretched = (sar.0 > 0 && sar.1 > 0 && sar.0 != sar.1)
        .then(|| (f64::from(w) * f64::from(sar.0) / f64::from(sar.1)).round())
        .filter(|&dw| dw <= 16384.0);
    let dw = match stretched {
        Some(dw) => (dw as u32).max(1),
        None => w,
    };
    if rotation_cw % 180 == 90 {
        (h, dw)
    } else {
        (dw, h)
    }
}

/// What the sampler needs to know about a stream beyond its codec parameters.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamFacts {
    /// av_display_rotation_get's value (counter-clockwise degrees), when there is a matrix.
    pub rotation_raw: Option<f64>,
    /// Clockwise rotation to apply for display: 0, 90, 180 or 270.
    pub rotation_cw: u32,
    /// Keyframe timestamps from the index (stream time base; dts for MP4).
    pub keyframes: Vec<i64>,
    /// Ticks per frame when the index shows a constant frame duration.
    pub cfr_step: Option<i64>,
    /// Stream time base as f64 seconds per tick.
    pub tb: f64,
    /// Stream time base as a fraction (for exact tick -> seconds conversion).
    pub tb_num: i64,
    /// Denominator of the time base.
    pub tb_den: i64,
}

impl StreamFacts {
    pub(crate) fn of(st: &ffmpeg::format::stream::Stream) -> StreamFacts {
        let tbr = st.time_base();
        let (tb_num, tb_den) = if tbr.numerator() > 0 && tbr.denominator() > 0 {
            (i64::from(tbr.numerator()), i64::from(tbr.denominator()))
        } else {
            (1, 90000)
        };
        let mut f = StreamFacts {
            tb: tb_num as f64 / tb_den as f64,
            tb_num,
            tb_den,
            ..Default::default()
        };
        // SAFETY: the stream pointer is valid; side data is returned with its size.
        unsafe {
            let mut size: usize = 0;
            let sd = ffi::av_stream_get_side_data(
                st.as_ptr(),
                ffi::AVPacketSideDataType::AV_PKT_DATA_DISPLAYMATRIX,
                &mut size,
            );
            if !sd.is_null() && size >= 9 * 4 {
                let r = ffi::av_display_rotation_get(sd as *const i32);
                if r.is_finite() {
                    f.rotation_raw = Some(r);
                    // Same normalisation as the ffmpeg CLI's autorotate.
                    let theta = -r.round();
                    let theta = theta - 360.0 * (theta / 360.0 + 0.9 / 360.0).floor();
                    f.rotation_cw = match theta.round() as i64 {
                        t if (t - 90).abs() < 2 => 90,
                        t if (t - 180).abs() < 2 => 180,
                        t if (t - 270).abs() < 2 => 270,
                        _ => 0,
                    };
                }
            }
            let st_ptr = st.as_ptr() as *mut ffi::AVStream;
            let n = ffi::avformat_index_get_entries_count(st_ptr);
            let mut prev: Option<i64> = None;
            let mut step: Option<i64> = None;
            let mut constant = n >= 2;
            for i in 0..n {
                let e = ffi::avformat_index_get_entry(st_ptr, i);
                if e.is_null() {
                    break;
                }
                let ts = (*e).timestamp;
                if crate::timeline::sane(Some(ts)).is_none() {
                    continue;
                }
                if (*e).flags() as i32 & ffi::AVINDEX_KEYFRAME != 0 {
                    f.keyframes.push(ts);
                }
                if let Some(p) = prev {
                    let d = ts - p;
                    match step {
                        None => step = Some(d),
                        Some(s) if (d - s).abs() <= 1 => {}
                        Some(_) => constant = false,
                    }
                }
                prev = Some(ts);
            }
            // An index of keyframes only (Matroska cues) is not a frame grid: require the index
            // to hold every frame the container declares.
            let declared = st.frames();
            if constant && step.is_some_and(|s| s > 0) && declared > 0 && i64::from(n) == declared {
                f.cfr_step = step;
            }
        }
        f.keyframes.sort_unstable();
        f
    }

    pub(crate) fn keyframe_interval_secs(&self) -> Option<f64> {
        if self.keyframes.len() < 2 {
            return None;
        }
        let mut gaps: Vec<i64> = self.keyframes.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        Some(gaps[gaps.len() / 2] as f64 * self.tb)
    }
}

/// The time where the data of a truncated file ends: the first index entry stored past `size`.
fn truncation_point(st: &ffmpeg::format::stream::Stream, size: u64) -> Option<f64> {
    // SAFETY: the pointer is only used for the index lookups below, while `st` is borrowed.
    let st_ptr = unsafe { st.as_ptr() } as *mut ffi::AVStream;
    let tb = rational_f64(st.time_base())?;
    let start = if st.start_time() == ffi::AV_NOPTS_VALUE {
        0
    } else {
        st.start_time()
    };
    // SAFETY: index entries are read-only here and the stream outlives the loop.
    unsafe {
        let n = ffi::avformat_index_get_entries_count(st_ptr);
        let mut cut: Option<i64> = None;
        for i in 0..n {
            let e = ffi::avformat_index_get_entry(st_ptr, i);
            if e.is_null() {
                break;
            }
            let end = (*e).pos + i64::from((*e).size());
            if (*e).pos >= 0 && end > size as i64 {
                cut = Some(cut.map_or((*e).timestamp, |c: i64| c.min((*e).timestamp)));
            }
        }
        cut.map(|c| (c.saturating_sub(start) as f64 * tb).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_sizes() {
        assert_eq!(display_size(1280, 720, (1, 1), 0), (1280, 720));
        assert_eq!(display_size(1280, 720, (1, 1), 90), (720, 1280));
        assert_eq!(display_size(160, 180, (2, 1), 0), (320, 180));
        assert_eq!(display_size(160, 180, (2, 1), 270), (180, 320));
    }
}
