//! Demuxing and decoding one video stream: multi-threaded decoder, seeking, best-effort
//! timestamps, and a record of read errors (truncated files) instead of a hard failure.

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;

use crate::error::MediaError;
use crate::input::{lower_first, Input};
use crate::probe::{self, MediaInfo, StreamFacts};

/// Gives up after this many consecutive unreadable packets (a resync that never succeeds).
const MAX_BAD_PACKETS: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading packets.
    Reading,
    /// End of input sent to the decoder; draining buffered frames.
    Draining,
    /// Nothing more will come.
    Done,
}

/// An open input with a decoder on its chosen video stream.
pub(crate) struct Source {
    pub name: String,
    ictx: ffmpeg::format::context::Input,
    pub info: MediaInfo,
    pub stream_index: usize,
    pub facts: StreamFacts,
    /// Stream start in time-base ticks; timestamps are reported relative to it.
    pub start_ts: i64,
    /// Sample aspect ratio as ffprobe guesses it.
    pub sar: (u32, u32),
    decoder: ffmpeg::decoder::Video,
    frame: ffmpeg::frame::Video,
    packet: ffmpeg::Packet,
    state: State,
    /// Only key packets reach the decoder.
    keyframes_only: bool,
    /// Decode timestamp of the last packet of our stream that was read (the read position).
    pub read_pos: Option<i64>,
    /// The input could not be read to its end (I/O error or truncated data).
    pub read_error: Option<String>,
    /// Whether the input supports seeking.
    pub seekable: bool,
    /// A seek happened, so frame counters no longer start at the first frame.
    pub seeked: bool,
    /// Frames returned since the start (valid while `!seeked`).
    pub frames_out: u64,
    /// Packets sent to the decoder since the start (valid while `!seeked`).
    pub packets_in: u64,
    /// Timestamp of the frame just returned (ticks, absolute).
    last_ts: Option<i64>,
    /// Typical frame duration in ticks, for frames without a timestamp.
    pub frame_ticks: i64,
    /// B-frame reordering delay in ticks: how far a keyframe's presentation time can lie after
    /// its decode time (index timestamps are decode times).
    pub reorder_ticks: i64,
    /// The demuxer seeks by presentation time (MP4), not decode time.
    pub seeks_by_pts: bool,
    pub decode_errors: u64,
    /// Packets presented before this time (absolute ticks) are not wanted: the decoder may
    /// drop the non-reference ones among them (their pictures are never used, and no other
    /// picture depends on them, so the wanted pictures stay bit-identical).
    pub skip_before: Option<i64>,
    skipping: bool,
}

impl Source {
    /// Opens `input`, picks the stream (given or best video) and opens a threaded decoder.
    pub(crate) fn open(
        input: &Input,
        stream: Option<usize>,
        keyframes_only: bool,
    ) -> Result<Source, MediaError> {
        let ictx = input.open()?;
        let name = input.to_string();
        let info = probe::media_info(input, &ictx);
        let stream_index = match stream {
            Some(i) => {
                let Some(s) = info.streams.get(i) else {
                    return Err(MediaError::BadStream {
                        input: name,
                        index: i,
                        reason: format!(
                            "does not exist (the input has {} streams)",
                            info.streams.len()
                        ),
                    });
                };
                if s.codec_type != "video" {
                    return Err(MediaError::BadStream {
                        input: name,
                        index: i,
                        reason: format!("is {}, not video", s.codec_type),
                    });
                }
                i
            }
            None => match info.video_stream {
                Some(i) => i,
                None => {
                    let mut kinds: Vec<String> = Vec::new();
                    for t in ["audio", "subtitle", "data", "attachment", "unknown"] {
                        let n = info.streams.iter().filter(|s| s.codec_type == t).count();
                        if n > 0 {
                            kinds.push(format!("{n} {t}"));
                        }
                    }
                    let found = if kinds.is_empty() {
                        "no streams".to_string()
                    } else {
                        kinds.join(", ")
                    };
                    return Err(MediaError::NoVideoStream { input: name, found });
                }
            },
        };
        let st = ictx.stream(stream_index).expect("index checked");
        let facts = StreamFacts::of(&st);
        let start_ts = if st.start_time() == ffi::AV_NOPTS_VALUE {
            0
        } else {
            st.start_time()
        };
        let sar = info.streams[stream_index]
            .sample_aspect_ratio
            .as_deref()
            .and_then(|s| s.split_once(':'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or((1, 1));
        let codec_name = info.streams[stream_index]
            .codec_name
            .clone()
            .unwrap_or_else(|| "unknown".into());
        let dec_err = |reason: String| MediaError::Decoder {
            input: name.clone(),
            stream: stream_index,
            codec: codec_name.clone(),
            reason,
        };
        let mut ctx = ffmpeg::codec::Context::from_parameters(st.parameters())
            .map_err(|e| dec_err(lower_first(&e.to_string())))?;
        // SAFETY: plain field writes on a codec context that is not open yet. Frame threads give
        // the throughput (see docs/dependency-facts.md); slice threads help codecs without
        // frame threading. thread_count 0 = one per core.
        unsafe {
            let p = ctx.as_mut_ptr();
            (*p).thread_count = 0;
            (*p).thread_type = ffi::FF_THREAD_FRAME | ffi::FF_THREAD_SLICE;
        }
        let mut dec = ctx.decoder();
        dec.set_packet_time_base(st.time_base());
        if keyframes_only {
            dec.skip_frame(ffmpeg::codec::discard::Discard::NonKey);
        }
        if ffmpeg::codec::decoder::find(dec.id()).is_none() {
            return Err(dec_err(
                "no decoder for this codec in the FFmpeg libraries".into(),
            ));
        }
        let decoder = dec
            .video()
            .map_err(|e| dec_err(lower_first(&e.to_string())))?;
        let tb = facts.tb;
        let fps = info.streams[stream_index].fps.unwrap_or(25.0);
        let frame_ticks = ((1.0 / fps) / tb).round().max(1.0) as i64;
        // SAFETY: codecpar is valid for the stream's lifetime.
        let video_delay = i64::from(unsafe { (*(*st.as_ptr()).codecpar).video_delay }.max(0));
        // SAFETY: iformat is set for every opened input.
        let seeks_by_pts =
            unsafe { ((*(*ictx.as_ptr()).iformat).flags & ffi::AVFMT_SEEK_TO_PTS) != 0 };
        // SAFETY: pb may be null (e.g. some network demuxers handle I/O themselves).
        let seekable = unsafe {
            let pb = (*ictx.as_ptr()).pb;
            !pb.is_null() && (*pb).seekable != 0 && !matches!(input, Input::Stdin)
        };
        Ok(Source {
            name,
            ictx,
            info,
            stream_index,
            facts,
            start_ts,
            sar,
            decoder,
            frame: ffmpeg::frame::Video::empty(),
            packet: ffmpeg::Packet::empty(),
            state: State::Reading,
            keyframes_only,
            read_pos: None,
            read_error: None,
            seekable,
            seeked: false,
            frames_out: 0,
            packets_in: 0,
            last_ts: None,
            frame_ticks,
            reorder_ticks: video_delay * frame_ticks,
            seeks_by_pts,
            decode_errors: 0,
            skip_before: None,
            skipping: false,
        })
    }

    /// The frame returned by the last successful [`Source::next_frame`].
    pub(crate) fn frame(&self) -> &ffmpeg::frame::Video {
        &self.frame
    }

    /// Seconds of video time (relative to the stream start) of an absolute tick count.
    pub(crate) fn seconds(&self, ts: i64) -> f64 {
        // One rounding (the division) so that e.g. 113 * 512 / 12800 is exactly 4.52.
        (i128::from(ts - self.start_ts) * i128::from(self.facts.tb_num)) as f64
            / self.facts.tb_den as f64
    }

    /// Absolute tick count of a time in seconds relative to the stream start, rounded up so that
    /// a frame at exactly that time compares as not earlier.
    pub(crate) fn ticks_ceil(&self, seconds: f64) -> i64 {
        self.start_ts + (seconds / self.facts.tb - 1e-6).ceil() as i64
    }

    /// Decodes the next frame in presentation order. Returns its absolute timestamp in ticks
    /// (best-effort timestamp, which survives B-frame reordering and missing pts), or `None` at
    /// the end of the stream. Read errors end the stream and are kept in `read_error`.
    pub(crate) fn next_frame(&mut self) -> Result<Option<i64>, MediaError> {
        let mut bad_packets = 0u32;
        loop {
            if self.state == State::Done {
                return Ok(None);
            }
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) => {
                    let ts = match self.frame.timestamp() {
                        Some(t) => t,
                        None => self.last_ts.map_or(self.start_ts, |t| t + self.frame_ticks),
                    };
                    self.last_ts = Some(ts);
                    self.frames_out += 1;
                    return Ok(Some(ts));
                }
                Err(ffmpeg::Error::Eof) => {
                    self.state = State::Done;
                    return Ok(None);
                }
                Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => {}
                Err(e) => {
                    // A broken frame: skip it, as the ffmpeg CLI does.
                    self.decode_errors += 1;
                    tracing::debug!("{}: decode error: {e}", self.name);
                    if self.decode_errors > 10_000 {
                        return Err(MediaError::Decoder {
                            input: self.name.clone(),
                            stream: self.stream_index,
                            codec: self.info.streams[self.stream_index]
                                .codec_name
                                .clone()
                                .unwrap_or_default(),
                            reason: lower_first(&e.to_string()),
                        });
                    }
                    continue;
                }
            }
            if self.state == State::Draining {
                // receive_frame said "again" after EOF was sent: nothing more is coming.
                self.state = State::Done;
                return Ok(None);
            }
            // Feed the next packet of our stream.
            match self.packet.read(&mut self.ictx) {
                Ok(()) => {
                    bad_packets = 0;
                    if self.packet.stream() != self.stream_index {
                        continue;
                    }
                    self.read_pos = self.packet.dts().or(self.packet.pts()).or(self.read_pos);
                    if self.keyframes_only && !self.packet.is_key() {
                        continue;
                    }
                    self.packets_in += 1;
                    if !self.keyframes_only {
                        let skip = matches!((self.skip_before, self.packet.pts()), (Some(t), Some(p)) if p < t);
                        if skip != self.skipping {
                            self.skipping = skip;
                            let mode = if skip {
                                ffi::AVDiscard::AVDISCARD_NONREF
                            } else {
                                ffi::AVDiscard::AVDISCARD_DEFAULT
                            };
                            // SAFETY: skip_frame is a plain field the user may change between
                            // packets; frame threads copy it when the packet is submitted.
                            unsafe { (*self.decoder.as_mut_ptr()).skip_frame = mode };
                        }
                    }
                    if let Err(e) = self.decoder.send_packet(&self.packet) {
                        self.decode_errors += 1;
                        tracing::debug!("{}: packet rejected by the decoder: {e}", self.name);
                    }
                }
                Err(ffmpeg::Error::Eof) => self.send_eof(),
                Err(ffmpeg::Error::InvalidData) if bad_packets < MAX_BAD_PACKETS => {
                    bad_packets += 1
                }
                Err(e) => {
                    let mut reason = lower_first(&e.to_string());
                    if let Some(d) = crate::ffmpeg_log::take_last_error() {
                        reason = format!("{reason}: {d}");
                    }
                    self.read_error = Some(reason);
                    self.send_eof();
                }
            }
        }
    }

    /// Reads packets (without decoding) until `want` keyframes of our stream or `max_packets`
    /// packets; returns the keyframes' timestamps. The caller rewinds afterwards.
    pub(crate) fn scan_keyframes(&mut self, want: usize, max_packets: usize) -> Vec<i64> {
        let mut keys = Vec::new();
        for _ in 0..max_packets {
            if keys.len() >= want {
                break;
            }
            match self.packet.read(&mut self.ictx) {
                Ok(()) => {
                    if self.packet.stream() == self.stream_index && self.packet.is_key() {
                        if let Some(t) = self.packet.dts().or(self.packet.pts()) {
                            keys.push(t);
                        }
                    }
                }
                Err(ffmpeg::Error::InvalidData) => {}
                Err(_) => break,
            }
        }
        keys
    }

    fn send_eof(&mut self) {
        let _ = self.decoder.send_eof();
        self.state = State::Draining;
    }

    /// Goes back to the very beginning of the input: a byte seek to 0 where the format allows it
    /// (a timestamp seek to the start can land after the first keyframe in MPEG-TS), else a
    /// timestamp seek to the stream start.
    pub(crate) fn rewind(&mut self) -> Result<(), MediaError> {
        // SAFETY: a valid, open format context; iformat is set for inputs.
        let byte_ok = unsafe {
            let ctx = self.ictx.as_mut_ptr();
            ((*(*ctx).iformat).flags & ffi::AVFMT_NO_BYTE_SEEK) == 0
                && ffi::av_seek_frame(ctx, -1, 0, ffi::AVSEEK_FLAG_BYTE) >= 0
        };
        if byte_ok {
            self.decoder.flush();
            self.state = State::Reading;
            self.read_pos = None;
            self.last_ts = None;
            self.seeked = true;
            Ok(())
        } else {
            self.seek(self.start_ts)
        }
    }

    /// Seeks to the last keyframe at or before `ts` (absolute ticks) and resets the decoder.
    pub(crate) fn seek(&mut self, ts: i64) -> Result<(), MediaError> {
        let idx = self.stream_index as i32;
        // SAFETY: a valid, open format context; timestamps in the stream's time base.
        let mut r =
            unsafe { ffi::avformat_seek_file(self.ictx.as_mut_ptr(), idx, i64::MIN, ts, ts, 0) };
        if r < 0 {
            // Some demuxers only implement the older API.
            r = unsafe {
                ffi::av_seek_frame(self.ictx.as_mut_ptr(), idx, ts, ffi::AVSEEK_FLAG_BACKWARD)
            };
        }
        if r < 0 {
            return Err(MediaError::Seek {
                input: self.name.clone(),
                seconds: self.seconds(ts),
                reason: lower_first(&ffmpeg::Error::from(r).to_string()),
            });
        }
        self.decoder.flush();
        self.state = State::Reading;
        self.read_pos = None;
        self.last_ts = None;
        self.seeked = true;
        Ok(())
    }
}
