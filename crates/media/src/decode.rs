//! Demuxing and decoding one video stream: multi-threaded decoder, seeks that check where they
//! land, best-effort timestamps, the packet scan behind the frame timeline, and a record of read
//! errors (truncated files) instead of a hard failure.

use std::collections::VecDeque;

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;

use crate::error::MediaError;
use crate::input::{lower_first, Input};
use crate::probe::{self, MediaInfo, StreamFacts};
use crate::timeline::{sane, PacketMeta};

/// Gives up after this many consecutive unreadable packets (a resync that never succeeds).
const MAX_BAD_PACKETS: u32 = 1000;

/// Packets read after a seek while looking for the keyframe decoding can start from; a landing
/// that finds none within this many is treated as a failed seek.
const MAX_LANDING_PACKETS: usize = 5000;

/// Most compressed bytes of a non-seekable input held in memory to learn its frame times first
/// (`frames:N` on standard input or a server without range requests).
pub(crate) const MAX_BUFFERED_BYTES: usize = 1 << 30;

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
    /// Stream start in time-base ticks as the container declares it (0 when unknown).
    pub start_ts: i64,
    /// Sample aspect ratio as ffprobe guesses it.
    pub sar: (u32, u32),
    decoder: ffmpeg::decoder::Video,
    frame: ffmpeg::frame::Video,
    state: State,
    /// Only key packets reach the decoder.
    pub keyframes_only: bool,
    /// Packets of our stream read but not yet sent to the decoder: the keyframe a seek landed
    /// on, packets read ahead to learn the frame times of a non-seekable input.
    pending: VecDeque<ffmpeg::Packet>,
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
    /// Packets of our stream taken from the input since the start (valid while `!seeked`).
    packets_read: u64,
    /// Timestamp of the frame just returned (ticks, absolute).
    last_ts: Option<i64>,
    /// Presentation time of the keyframe the last seek landed on, for a first frame without a
    /// timestamp.
    landing_ts: Option<i64>,
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
    /// Whether `skip_before` may drop frames: only when every packet has a presentation time,
    /// since a frame without one gets the time after the frame shown before it, which must not
    /// be a dropped one.
    pub skip_ok: bool,
    skipping: bool,
    /// Packets are dropped unread up to the key packet shown at this time (absolute ticks): no
    /// frame before it is wanted, and it is a clean cut (see `KeyPoint::clean`), so the frames
    /// from it on decode exactly as after a seek to it, without the seek's flush.
    pub drop_until_key: Option<i64>,
    /// Presentation time of the last key packet sent to the decoder (None since a seek).
    pub last_key_pts: Option<i64>,
    /// A decoded frame held back by [`Source::peek`], returned by the next `next_frame`.
    held: Option<i64>,
    /// Byte position of the first packet of our stream, for a rewind by bytes.
    first_pos: Option<i64>,
}

impl Source {
    /// Opens `input`, picks the stream (given or best video) and opens a decoder with
    /// `threads` threads (0 = one per core).
    pub(crate) fn open(
        input: &Input,
        stream: Option<usize>,
        keyframes_only: bool,
        threads: usize,
    ) -> Result<Source, MediaError> {
        let ictx = input.open()?;
        // What FFmpeg logged while opening (e.g. a refused transport it then replaced) is not
        // the reason for a later read error.
        crate::ffmpeg_log::clear_last_error();
        let name = input.to_string();
        let info = probe::media_info(input, &ictx);
        let stream_index = pick_stream(&name, &info, stream)?;
        let st = ictx.stream(stream_index).expect("index checked");
        let facts = StreamFacts::of(&st);
        let start_ts = sane(Some(st.start_time())).unwrap_or(0);
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
            (*p).thread_count = i32::try_from(threads).unwrap_or(0);
            (*p).thread_type = ffi::FF_THREAD_FRAME | ffi::FF_THREAD_SLICE;
            // A damaged header must not make the decoder allocate gigabytes: twice 8K UHD.
            (*p).max_pixels = 2 * 7680 * 4320;
        }
        let mut dec = ctx.decoder();
        dec.set_packet_time_base(st.time_base());
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
        let mut ictx = ictx;
        discard_other_streams(&mut ictx, stream_index);
        // SAFETY: iformat is set for every opened input.
        let seeks_by_pts =
            unsafe { ((*(*ictx.as_ptr()).iformat).flags & ffi::AVFMT_SEEK_TO_PTS) != 0 };
        let seekable = is_seekable(&ictx) && !matches!(input, Input::Stdin);
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
            state: State::Reading,
            keyframes_only,
            pending: VecDeque::new(),
            read_pos: None,
            read_error: None,
            seekable,
            seeked: false,
            frames_out: 0,
            packets_read: 0,
            last_ts: None,
            landing_ts: None,
            frame_ticks,
            reorder_ticks: video_delay.saturating_mul(frame_ticks),
            seeks_by_pts,
            decode_errors: 0,
            skip_before: None,
            skip_ok: false,
            skipping: false,
            drop_until_key: None,
            last_key_pts: None,
            held: None,
            first_pos: None,
        })
    }

    /// The frame returned by the last successful [`Source::next_frame`].
    pub(crate) fn frame(&self) -> &ffmpeg::frame::Video {
        &self.frame
    }

    /// Decodes the first frame and holds it for the next [`Source::next_frame`]; returns its
    /// timestamp (absolute ticks), `None` when the stream has no decodable frame.
    pub(crate) fn peek(&mut self) -> Result<Option<i64>, MediaError> {
        let ts = self.next_frame()?;
        self.held = ts;
        Ok(ts)
    }

    /// Decodes the next frame in presentation order. Returns its absolute timestamp in ticks
    /// (best-effort timestamp, which survives B-frame reordering and missing pts), or `None` at
    /// the end of the stream. Read errors end the stream and are kept in `read_error`.
    pub(crate) fn next_frame(&mut self) -> Result<Option<i64>, MediaError> {
        if let Some(ts) = self.held.take() {
            return Ok(Some(ts));
        }
        loop {
            if self.state == State::Done {
                return Ok(None);
            }
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) => {
                    let ts = match sane(self.frame.timestamp()) {
                        Some(t) => t,
                        None => match self.last_ts {
                            Some(t) => t.saturating_add(self.frame_ticks),
                            None => self.landing_ts.unwrap_or(self.start_ts),
                        },
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
            match self.next_packet() {
                Ok(Some(mut packet)) => {
                    self.read_pos = sane(packet.dts()).or(sane(packet.pts())).or(self.read_pos);
                    let count = self.packets_read - 1;
                    if self.keyframes_only && packet.pts().is_none() && self.reorder_ticks > 0 {
                        // A reordered keyframe without a presentation time: only the decoder,
                        // seeing the packets around it, knows when it is shown. Decode every
                        // packet from here on (the caller keeps the key frames).
                        tracing::debug!(
                            "{}: keyframes without presentation times: decoding every frame",
                            self.name
                        );
                        self.keyframes_only = false;
                    }
                    if self.keyframes_only {
                        if !packet.is_key() {
                            continue;
                        }
                        // Only keyframes reach the decoder, so a reordering decoder cannot
                        // derive their times from the packets around them: give each its own
                        // presentation time (containers without one store decode times).
                        if packet.pts().is_none() {
                            let t = match packet.dts() {
                                Some(d) => d.saturating_add(self.reorder_ticks),
                                None => self.start_ts.saturating_add(
                                    (count as i64).saturating_mul(self.frame_ticks),
                                ),
                            };
                            packet.set_pts(Some(t));
                            // Nor may the decoder fall back to the decode time.
                            packet.set_dts(None);
                        }
                    } else {
                        if let Some(k) = self.drop_until_key {
                            if packet.is_key() && sane(packet.pts()).is_some_and(|p| p >= k) {
                                self.drop_until_key = None;
                            } else {
                                continue;
                            }
                        }
                        if packet.is_key() {
                            self.last_key_pts = sane(packet.pts()).or(self.last_key_pts);
                        }
                        let skip = self.skip_ok
                            && matches!((self.skip_before, packet.pts()), (Some(t), Some(p)) if p < t);
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
                    if let Err(e) = self.decoder.send_packet(&packet) {
                        self.decode_errors += 1;
                        tracing::debug!("{}: packet rejected by the decoder: {e}", self.name);
                    }
                }
                Ok(None) => self.send_eof(),
                Err(reason) => {
                    self.read_error = Some(reason);
                    self.send_eof();
                }
            }
        }
    }

    /// The next packet of our stream: a pending one, else one read from the input. `Ok(None)`
    /// at the end of the input; `Err` with the reason when it cannot be read further.
    fn next_packet(&mut self) -> Result<Option<ffmpeg::Packet>, String> {
        let p = match self.pending.pop_front() {
            Some(p) => Some(p),
            None => self.read_packet()?,
        };
        if p.is_some() {
            self.packets_read += 1;
        }
        Ok(p)
    }

    /// Reads the next packet of our stream from the input, skipping unreadable ones.
    fn read_packet(&mut self) -> Result<Option<ffmpeg::Packet>, String> {
        let mut bad_packets = 0u32;
        loop {
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.ictx) {
                Ok(()) => {
                    if packet.stream() != self.stream_index {
                        continue;
                    }
                    if self.first_pos.is_none() && packet.position() >= 0 {
                        self.first_pos = Some(packet.position() as i64);
                    }
                    return Ok(Some(packet));
                }
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(ffmpeg::Error::InvalidData) if bad_packets < MAX_BAD_PACKETS => {
                    bad_packets += 1
                }
                Err(e) => {
                    let mut reason = lower_first(&e.to_string());
                    if let Some(d) = crate::ffmpeg_log::take_last_error() {
                        reason = format!("{reason}: {d}");
                    }
                    return Err(reason);
                }
            }
        }
    }

    /// Reads packets of our stream ahead, without decoding them, and keeps them for decoding:
    /// until the end of the input, or once `stop` (ticks after the first packet's time) is
    /// passed by `margin` more packets. Returns what the packets say for the frame timeline.
    ///
    /// # Errors
    /// [`MediaError::Unsupported`] when more than [`MAX_BUFFERED_BYTES`] would be held.
    pub(crate) fn read_ahead(
        &mut self,
        stop: Option<i64>,
        margin: usize,
    ) -> Result<Vec<PacketMeta>, MediaError> {
        let mut metas: Vec<PacketMeta> = self.pending.iter().map(PacketMeta::of).collect();
        let mut bytes: usize = self.pending.iter().map(|p| p.size()).sum();
        let mut past = 0usize;
        let mut first: Option<Option<i64>> = metas.first().map(|m| m.pts.or(m.dts));
        loop {
            if stop.is_some() && past > margin {
                break;
            }
            match self.read_packet() {
                Ok(Some(p)) => {
                    bytes += p.size();
                    if bytes > MAX_BUFFERED_BYTES {
                        return Err(MediaError::Unsupported {
                            input: self.name.clone(),
                            reason: format!(
                                "cannot seek, and the window holds more than {} MiB of video to read ahead; give --to to end the window earlier, or use fps:N",
                                MAX_BUFFERED_BYTES >> 20
                            ),
                        });
                    }
                    let t = sane(p.pts()).or(sane(p.dts()));
                    let first = *first.get_or_insert(t);
                    if let (Some(s), Some(t), Some(f)) = (stop, t, first) {
                        if t - f >= s || past > 0 {
                            past += 1;
                        }
                    }
                    metas.push(PacketMeta::of(&p));
                    self.pending.push_back(p);
                }
                Ok(None) => break,
                Err(reason) => {
                    self.read_error = Some(reason);
                    break;
                }
            }
        }
        Ok(metas)
    }

    /// Seeks so that decoding starts at a keyframe whose time is at most `at` (absolute ticks,
    /// compared with the key packet's decode time when `by_dts`, else its presentation time).
    /// Tries the seek timestamps `tries` in order (the latest first): a seek that fails, or
    /// lands on a keyframe after `at`, goes on to the next; after the last, a rewind to the
    /// first packet by bytes, from where decoding goes on without seeking again (damaged
    /// timestamps). Returns the number of seeks made. `seconds` is the target for messages.
    ///
    /// # Errors
    /// [`MediaError::Seek`] when not even the rewind works.
    pub(crate) fn seek_before(
        &mut self,
        at: i64,
        tries: &[i64],
        by_dts: bool,
        seconds: f64,
    ) -> Result<u64, MediaError> {
        let mut seeks = 0;
        let mut why = String::from("no keyframe found at or before it");
        for &ts in tries {
            seeks += 1;
            match self.seek_ts(ts) {
                Ok(()) if self.landed_before(at, by_dts) => return Ok(seeks),
                Ok(()) => tracing::debug!(
                    "{}: seek to {ts} landed after {at}; trying earlier",
                    self.name
                ),
                Err(e) => {
                    tracing::debug!("{}: seek to {ts} failed: {e}", self.name);
                    why = e;
                }
            }
        }
        if let Some(pos) = self.first_pos {
            seeks += 1;
            match self.seek_bytes(pos) {
                Ok(()) if self.landed_before(at, by_dts) => return Ok(seeks),
                Ok(()) if self.seek_bytes(pos).is_ok() => {
                    // Timestamps that contradict the file: from its start, in order.
                    tracing::warn!(
                        "{}: seeking to {seconds:.3} s did not land before it; decoding from the start instead",
                        self.name
                    );
                    self.seekable = false;
                    return Ok(seeks + 1);
                }
                Ok(()) => {}
                Err(e) => why = e,
            }
        }
        Err(MediaError::Seek {
            input: self.name.clone(),
            seconds,
            reason: why,
        })
    }

    /// After a seek: drops packets up to the first key packet of our stream and keeps that one
    /// for decoding. Whether its time is at most `at`.
    fn landed_before(&mut self, at: i64, by_dts: bool) -> bool {
        for _ in 0..MAX_LANDING_PACKETS {
            let p = match self.read_packet() {
                Ok(Some(p)) => p,
                Ok(None) | Err(_) => return false,
            };
            if !p.is_key() {
                continue;
            }
            let t = if by_dts {
                sane(p.dts()).or(sane(p.pts()))
            } else {
                sane(p.pts()).or(sane(p.dts()).map(|d| d.saturating_add(self.reorder_ticks)))
            };
            if t.is_some_and(|t| t > at) {
                return false;
            }
            self.landing_ts =
                sane(p.pts()).or(sane(p.dts()).map(|d| d.saturating_add(self.reorder_ticks)));
            self.read_pos = sane(p.dts()).or(sane(p.pts()));
            self.pending.push_back(p);
            return true;
        }
        false
    }

    fn reset_after_seek(&mut self) {
        self.decoder.flush();
        self.state = State::Reading;
        self.pending.clear();
        self.read_pos = None;
        self.last_ts = None;
        self.landing_ts = None;
        self.held = None;
        self.drop_until_key = None;
        self.last_key_pts = None;
        self.seeked = true;
    }

    /// Seeks the demuxer to the last keyframe at or before `ts` (absolute ticks).
    fn seek_ts(&mut self, ts: i64) -> Result<(), String> {
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
            return Err(lower_first(&ffmpeg::Error::from(r).to_string()));
        }
        self.reset_after_seek();
        Ok(())
    }

    /// Puts the demuxer at byte `pos` (where the format allows byte seeks).
    fn seek_bytes(&mut self, pos: i64) -> Result<(), String> {
        // SAFETY: a valid, open format context; iformat is set for inputs.
        let r = unsafe {
            let ctx = self.ictx.as_mut_ptr();
            if ((*(*ctx).iformat).flags & ffi::AVFMT_NO_BYTE_SEEK) != 0 {
                return Err("the format cannot seek by bytes".into());
            }
            ffi::av_seek_frame(ctx, -1, pos, ffi::AVSEEK_FLAG_BYTE)
        };
        if r < 0 {
            return Err(lower_first(&ffmpeg::Error::from(r).to_string()));
        }
        self.reset_after_seek();
        Ok(())
    }

    /// Reads packets ahead (kept for decoding, no rewind needed) until `want` keyframes of our
    /// stream or `max_packets` packets; returns the keyframes' decode timestamps.
    pub(crate) fn scan_keyframes(&mut self, want: usize, max_packets: usize) -> Vec<i64> {
        let mut keys = Vec::new();
        for _ in 0..max_packets {
            if keys.len() >= want {
                break;
            }
            match self.read_packet() {
                Ok(Some(p)) => {
                    if p.is_key() {
                        if let Some(t) = p.dts().or(p.pts()) {
                            keys.push(t);
                        }
                    }
                    self.pending.push_back(p);
                }
                Ok(None) => break,
                Err(reason) => {
                    self.read_error = Some(reason);
                    break;
                }
            }
        }
        keys
    }

    fn send_eof(&mut self) {
        let _ = self.decoder.send_eof();
        self.state = State::Draining;
    }
}

/// The stream to decode: the one asked for (checked to be video), else FFmpeg's best video
/// stream.
fn pick_stream(name: &str, info: &MediaInfo, stream: Option<usize>) -> Result<usize, MediaError> {
    match stream {
        Some(i) => {
            let Some(s) = info.streams.get(i) else {
                return Err(MediaError::BadStream {
                    input: name.to_string(),
                    index: i,
                    reason: format!(
                        "does not exist (the input has {} streams)",
                        info.streams.len()
                    ),
                });
            };
            if s.codec_type != "video" {
                return Err(MediaError::BadStream {
                    input: name.to_string(),
                    index: i,
                    reason: format!("is {}, not video", s.codec_type),
                });
            }
            Ok(i)
        }
        None => info.video_stream.ok_or_else(|| {
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
            MediaError::NoVideoStream {
                input: name.to_string(),
                found,
            }
        }),
    }
}

/// Tells the demuxer to drop every stream but `keep`: formats that can skip a stream's data
/// (MP4, Matroska) then do not read it at all.
fn discard_other_streams(ictx: &mut ffmpeg::format::context::Input, keep: usize) {
    // SAFETY: `discard` is a plain field the caller may set on any stream of an open input.
    unsafe {
        let ctx = ictx.as_mut_ptr();
        for i in 0..(*ctx).nb_streams as usize {
            if i != keep {
                (**(*ctx).streams.add(i)).discard = ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
    }
}

fn is_seekable(ictx: &ffmpeg::format::context::Input) -> bool {
    // SAFETY: pb may be null (e.g. some network demuxers handle I/O themselves).
    unsafe {
        let pb = (*ictx.as_ptr()).pb;
        !pb.is_null() && (*pb).seekable != 0
    }
}

/// Reads every packet of stream `stream` of `input` (demux only, no decode) on a second
/// connection, so the caller's read position is untouched. Returns what the packets say and
/// the reason the input ended early, if it did.
pub(crate) fn scan_packets(
    input: &Input,
    stream: usize,
) -> Result<(Vec<PacketMeta>, Option<String>), MediaError> {
    let mut ictx = input.open()?;
    discard_other_streams(&mut ictx, stream);
    let mut metas = Vec::new();
    let mut bad_packets = 0u32;
    let mut packet = ffmpeg::Packet::empty();
    loop {
        match packet.read(&mut ictx) {
            Ok(()) => {
                if packet.stream() == stream {
                    metas.push(PacketMeta::of(&packet));
                }
            }
            Err(ffmpeg::Error::Eof) => return Ok((metas, None)),
            Err(ffmpeg::Error::InvalidData) if bad_packets < MAX_BAD_PACKETS => bad_packets += 1,
            Err(e) => return Ok((metas, Some(lower_first(&e.to_string())))),
        }
    }
}
