//! Decoded picture -> packed RGB24: swscale (one context per stream, rebuilt only when the
//! source format or size changes), the stream's colour matrix and range, sample aspect ratio and
//! display-matrix rotation.

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::software::scaling;

use crate::error::MediaError;

/// Key of the cached scaler: source format and size, destination format and size.
type ScalerKey = (Pixel, u32, u32, Pixel, u32, u32);

/// A cached swscale context for one stream.
pub(crate) struct Scaler {
    ctx: Option<(scaling::Context, ScalerKey)>,
    out: ffmpeg::frame::Video,
    flags: scaling::Flags,
}

// SAFETY: the SwsContext is owned exclusively by this value and only used through `&mut self`;
// swscale contexts have no thread affinity.
unsafe impl Send for Scaler {}

impl Scaler {
    pub(crate) fn new(flags: scaling::Flags) -> Self {
        Scaler {
            ctx: None,
            out: ffmpeg::frame::Video::empty(),
            flags,
        }
    }

    /// Converts `src` to `dst_fmt` at `w`x`h`; the result is in `self.out`.
    fn run(
        &mut self,
        src: &ffmpeg::frame::Video,
        dst_fmt: Pixel,
        w: u32,
        h: u32,
    ) -> Result<&ffmpeg::frame::Video, String> {
        let key = (src.format(), src.width(), src.height(), dst_fmt, w, h);
        if self.ctx.as_ref().map(|(_, k)| *k) != Some(key) {
            let mut ctx =
                scaling::Context::get(key.0, key.1, key.2, key.3, key.4, key.5, self.flags)
                    .map_err(|e| e.to_string())?;
            if dst_fmt == Pixel::RGB24 {
                set_colorspace(&mut ctx, src);
            }
            self.ctx = Some((ctx, key));
            self.out = ffmpeg::frame::Video::new(dst_fmt, w, h);
        }
        let (ctx, _) = self.ctx.as_mut().expect("set above");
        ctx.run(src, &mut self.out).map_err(|e| e.to_string())?;
        Ok(&self.out)
    }
}

/// Tells swscale the source's YUV matrix and range (it assumes BT.601 limited otherwise), as
/// FFmpeg's scale filter does.
fn set_colorspace(ctx: &mut scaling::Context, src: &ffmpeg::frame::Video) {
    // SAFETY: raw fields of a valid frame; swscale copies the coefficient tables.
    unsafe {
        let f = src.as_ptr();
        let cs = (*f).colorspace as i32;
        let full = i32::from((*f).color_range == ffi::AVColorRange::AVCOL_RANGE_JPEG);
        let inv = ffi::sws_getCoefficients(cs);
        let table = ffi::sws_getCoefficients(ffi::SWS_CS_DEFAULT);
        // Returns -1 for RGB/paletted sources, where there is no matrix to set.
        let _ = ffi::sws_setColorspaceDetails(
            ctx.as_mut_ptr(),
            inv,
            full,
            table,
            1,
            0,
            1 << 16,
            1 << 16,
        );
    }
}

/// Produces the RGB buffers the sampler returns.
pub(crate) struct RgbConverter {
    scaler: Scaler,
    /// Requested output size after rotation.
    size: Option<(u32, u32)>,
    rotation_cw: u32,
    /// Stream sample aspect ratio (used when a frame carries none).
    stream_sar: (u32, u32),
}

impl RgbConverter {
    pub(crate) fn new(size: Option<(u32, u32)>, rotation_cw: u32, stream_sar: (u32, u32)) -> Self {
        // Bicubic: the ffmpeg CLI's default for scaling, so frames match `-vf scale`.
        RgbConverter {
            scaler: Scaler::new(scaling::Flags::BICUBIC),
            size,
            rotation_cw,
            stream_sar,
        }
    }

    /// Returns packed RGB24 rows (no padding), width and height as displayed.
    pub(crate) fn convert(
        &mut self,
        input: &str,
        src: &ffmpeg::frame::Video,
    ) -> Result<(Vec<u8>, u32, u32), MediaError> {
        let (sw, sh) = (src.width(), src.height());
        let err = |reason: String| MediaError::Convert {
            input: input.to_string(),
            format: format!("{:?}", src.format()).to_lowercase(),
            width: sw,
            height: sh,
            reason,
        };
        if sw == 0 || sh == 0 || src.format() == Pixel::None {
            return Err(err("the decoder returned an empty picture".into()));
        }
        let quarter = self.rotation_cw % 180 == 90;
        // Size before rotation.
        let (tw, th) = match self.size {
            Some((w, h)) if quarter => (h, w),
            Some((w, h)) => (w, h),
            None => {
                let fsar = src.aspect_ratio();
                let sar = if fsar.numerator() > 0 && fsar.denominator() > 0 {
                    (fsar.numerator() as u32, fsar.denominator() as u32)
                } else {
                    self.stream_sar
                };
                crate::probe::display_size(sw, sh, sar, 0)
            }
        };
        let out = self.scaler.run(src, Pixel::RGB24, tw, th).map_err(err)?;
        let stride = out.stride(0);
        let data = out.data(0);
        let row = tw as usize * 3;
        let mut rgb = Vec::with_capacity(row * th as usize);
        for y in 0..th as usize {
            rgb.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        Ok(match self.rotation_cw {
            0 => (rgb, tw, th),
            r => rotate_rgb(&rgb, tw, th, r),
        })
    }
}

/// Turns a packed RGB24 picture clockwise by 90, 180 or 270 degrees.
pub(crate) fn rotate_rgb(src: &[u8], w: u32, h: u32, cw: u32) -> (Vec<u8>, u32, u32) {
    let (w, h) = (w as usize, h as usize);
    let mut dst = vec![0u8; src.len()];
    match cw {
        90 => {
            // dst is h wide, w high: dst(x', y') = src(x = y', y = h-1-x').
            for y in 0..h {
                let srow = &src[y * w * 3..(y + 1) * w * 3];
                let dx = h - 1 - y;
                for x in 0..w {
                    let d = (x * h + dx) * 3;
                    dst[d..d + 3].copy_from_slice(&srow[x * 3..x * 3 + 3]);
                }
            }
            (dst, h as u32, w as u32)
        }
        180 => {
            for y in 0..h {
                for x in 0..w {
                    let s = (y * w + x) * 3;
                    let d = ((h - 1 - y) * w + (w - 1 - x)) * 3;
                    dst[d..d + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
            (dst, w as u32, h as u32)
        }
        270 => {
            // dst(x', y') = src(x = w-1-y', y = x').
            for y in 0..h {
                let srow = &src[y * w * 3..(y + 1) * w * 3];
                for x in 0..w {
                    let d = ((w - 1 - x) * h + y) * 3;
                    dst[d..d + 3].copy_from_slice(&srow[x * 3..x * 3 + 3]);
                }
            }
            (dst, h as u32, w as u32)
        }
        _ => (src.to_vec(), w as u32, h as u32),
    }
}

/// Makes the luma picture the scene score is computed on (FFmpeg's `select` filter scores the
/// luma plane of YUV input).
pub(crate) struct ScenePlanes {
    scaler: Scaler,
    buf: Vec<u8>,
}

/// Scene scores are computed on luma pictures at most this wide: the score is a mean over the
/// picture, and averaging 4x4 blocks first changes it little while making it 16x cheaper.
pub(crate) const SCENE_MAX_WIDTH: u32 = 320;

impl ScenePlanes {
    pub(crate) fn new() -> Self {
        // Area averaging keeps the mean difference close to the full-size one.
        ScenePlanes {
            scaler: Scaler::new(scaling::Flags::AREA),
            buf: Vec::new(),
        }
    }

    /// The 8-bit luma of `src`, downscaled to at most [`SCENE_MAX_WIDTH`] wide.
    pub(crate) fn planes(&mut self, src: &ffmpeg::frame::Video) -> Result<&[u8], String> {
        let (sw, sh) = (src.width(), src.height());
        let (w, h) = if sw > SCENE_MAX_WIDTH {
            (
                SCENE_MAX_WIDTH,
                (u64::from(sh) * u64::from(SCENE_MAX_WIDTH) / u64::from(sw)).max(1) as u32,
            )
        } else {
            (sw, sh)
        };
        self.buf.clear();
        let planar_8bit_yuv = matches!(
            src.format(),
            Pixel::YUV420P
                | Pixel::YUVJ420P
                | Pixel::YUV422P
                | Pixel::YUVJ422P
                | Pixel::YUV444P
                | Pixel::YUVJ444P
                | Pixel::GRAY8
        );
        if planar_8bit_yuv && (w, h) == (sw, sh) {
            copy_plane(src, 0, w, h, &mut self.buf);
        } else {
            // YUV 4:2:0 rather than GRAY8: swscale expands limited-range luma to full range for
            // GRAY8, which would scale every difference by 255/219.
            let (w, h) = ((w + 1) & !1, (h + 1) & !1);
            let out = self.scaler.run(src, Pixel::YUV420P, w, h)?;
            copy_plane(out, 0, w, h, &mut self.buf);
        }
        Ok(&self.buf)
    }
}

fn copy_plane(f: &ffmpeg::frame::Video, plane: usize, w: u32, h: u32, buf: &mut Vec<u8>) {
    let stride = f.stride(plane);
    let data = f.data(plane);
    for y in 0..h as usize {
        buf.extend_from_slice(&data[y * stride..y * stride + w as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_compose() {
        // 3x2 picture with distinct pixels.
        let src: Vec<u8> = (0..18u8).collect();
        let (r90, w, h) = rotate_rgb(&src, 3, 2, 90);
        assert_eq!((w, h), (2, 3));
        // Top-left of the rotated picture is the bottom-left of the source.
        assert_eq!(&r90[0..3], &src[9..12]);
        let (r180, _, _) = rotate_rgb(&r90, 2, 3, 90);
        assert_eq!(r180, rotate_rgb(&src, 3, 2, 180).0);
        let (r270, _, _) = rotate_rgb(&src, 3, 2, 270);
        let (back, w, h) = rotate_rgb(&r270, 2, 3, 90);
        assert_eq!((back, w, h), (src, 3, 2));
    }
}
