#!/usr/bin/env bash
# Makes the conformance matrix (crates/media/tests/conformance.rs) in samples/gen/conformance/:
# small clips (<= 320x240, <= 12 s) made with the ffmpeg CLI, each varying one property from a
# baseline: 160x120, 25 fps, 4.8 s (120 frames), H.264 with B-frames, a keyframe every 30 frames,
# MP4, and two scene cuts (at 1.6 s and 3.2 s, three different test patterns).
#
#   bash samples/make-conformance.sh [DIR]
#
# Idempotent (a clip already there is kept), safe to run from several processes at once (flock,
# temp file + rename), two encodes at a time. A clip whose encoder the local ffmpeg lacks is
# skipped with a note. Writes DIR/clips.txt listing the clips made. Takes ~30 s on 2 cores.
set -euo pipefail
set -f # filter graphs hold [labels], not globs
cd "$(dirname "$0")"
out=${1:-gen/conformance}
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9

encoders=$(ffmpeg -hide_banner -encoders 2>/dev/null)
have() { grep -qE "^ [A-Z.]{6} $1 " <<<"$encoders"; }
ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }

# Three 1.6 s patterns, concatenated: motion for inter prediction, two cuts for scene:T.
src() { # src SECONDS_PER_PART
  local d=$1
  echo "testsrc2=s=160x120:r=25:d=$d[a];smptebars=s=160x120:r=25:d=$d[b];\
testsrc=s=160x120:r=25:d=$d[c];[a][b][c]concat=n=3:v=1:a=0,format=yuv420p"
}
base=$(src 1.6)
x264=(-c:v libx264 -preset veryfast -crf 28 -g 30 -bf 2)

made=()
pids=()
# clip NAME ENCODER ffmpeg-args... : encodes to a temp file, renames it into place. The output
# file name is the last argument's place: "OUT" in the arguments stands for it.
clip() {
  local name=$1 enc=$2; shift 2
  made+=("$name")
  [ -s "$out/$name" ] && return 0
  if [ "$enc" != - ] && ! have "$enc"; then
    echo "note: skipping $name: this ffmpeg has no $enc encoder" >&2
    unset 'made[-1]'
    return 0
  fi
  local tmp="$out/.tmp.$$.$name"
  local args=()
  for a in "$@"; do [ "$a" = OUT ] && args+=("$tmp") || args+=("$a"); done
  (ff "${args[@]}" 2>&1 | grep -v '^Svt\[info\]' >&2 || true; [ -s "$tmp" ] && mv -f "$tmp" "$out/$name") &
  pids+=($!)
  if [ ${#pids[@]} -ge 2 ]; then wait -n || true; pids=($(jobs -pr)); fi
}

# Containers (H.264 unless the container needs another codec; .m4v is raw MPEG-4 part 2).
clip c-mp4.mp4 libx264 -f lavfi -i "$base" "${x264[@]}" OUT
clip c-mov.mov libx264 -f lavfi -i "$base" "${x264[@]}" OUT
clip c-mkv.mkv libx264 -f lavfi -i "$base" "${x264[@]}" OUT
clip c-webm.webm libvpx-vp9 -f lavfi -i "$base" -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -g 30 -b:v 300k OUT
clip c-avi.avi libx264 -f lavfi -i "$base" "${x264[@]}" OUT
clip c-ts.ts libx264 -f lavfi -i "$base" "${x264[@]}" OUT
clip c-flv.flv libx264 -f lavfi -i "$base" "${x264[@]}" OUT
clip c-nut.nut libx264 -f lavfi -i "$base" "${x264[@]}" OUT
clip c-ogv.ogv libtheora -f lavfi -i "$base" -c:v libtheora -q:v 6 -g 30 OUT
clip c-m4v.m4v mpeg4 -f lavfi -i "$base" -c:v mpeg4 -q:v 5 -g 30 -bf 2 -f m4v OUT
clip c-3gp.3gp libx264 -f lavfi -i "$base" "${x264[@]}" OUT
clip c-gif.gif gif -f lavfi -i "$base" -c:v gif OUT
clip c-ivf.ivf libvpx -f lavfi -i "$base" -c:v libvpx -deadline realtime -cpu-used 8 -g 30 -b:v 300k OUT
clip c-h264.h264 libx264 -f lavfi -i "$base" "${x264[@]}" -f h264 OUT
clip c-mpg.mpg mpeg2video -f lavfi -i "$base" -c:v mpeg2video -q:v 5 -g 15 -bf 2 -f mpeg OUT

# Codecs (Matroska unless noted).
clip v-hevc.mkv libx265 -f lavfi -i "$base" -c:v libx265 -preset ultrafast -x265-params log-level=error:keyint=30:bframes=2 OUT
clip v-vp8.mkv libvpx -f lavfi -i "$base" -c:v libvpx -deadline realtime -cpu-used 8 -g 30 -b:v 300k OUT
clip v-vp9.mkv libvpx-vp9 -f lavfi -i "$base" -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -g 30 -b:v 300k OUT
if have libsvtav1; then
  clip v-av1.mkv libsvtav1 -f lavfi -i "$base" -c:v libsvtav1 -preset 12 -g 30 OUT
else
  clip v-av1.mkv libaom-av1 -f lavfi -i "$base" -c:v libaom-av1 -cpu-used 8 -g 30 OUT
fi
clip v-mpeg4.mkv mpeg4 -f lavfi -i "$base" -c:v mpeg4 -q:v 5 -g 30 -bf 2 OUT
clip v-mjpeg.mkv mjpeg -f lavfi -i "$base" -c:v mjpeg -q:v 5 -pix_fmt yuvj420p OUT
clip v-ffv1.mkv ffv1 -f lavfi -i "$base" -c:v ffv1 OUT
clip v-prores.mov prores_ks -f lavfi -i "$base" -c:v prores_ks -profile:v 0 OUT
clip v-mpeg2.ts mpeg2video -f lavfi -i "$base" -c:v mpeg2video -q:v 5 -g 15 -bf 2 OUT

# Keyframe interval: every frame; 250 frames on a 12 s clip (two keyframes, sparse targets seek).
long=$(src 4)
clip g-1.mp4 libx264 -f lavfi -i "$base" -c:v libx264 -preset veryfast -crf 28 -g 1 OUT
clip g-250.mp4 libx264 -f lavfi -i "$long" -c:v libx264 -preset veryfast -crf 28 -g 250 -keyint_min 250 -sc_threshold 0 -bf 2 OUT
clip g-250.mkv libx264 -f lavfi -i "$long" -c:v libx264 -preset veryfast -crf 28 -g 250 -keyint_min 250 -sc_threshold 0 -bf 2 OUT
clip g-250.ts libx264 -f lavfi -i "$long" -c:v libx264 -preset veryfast -crf 28 -g 250 -keyint_min 250 -sc_threshold 0 -bf 2 OUT

# B-frames off (the baseline has them), and MPEG-4 part 2 in AVI with and without.
clip b-off.mp4 libx264 -f lavfi -i "$base" -c:v libx264 -preset veryfast -crf 28 -g 30 -bf 0 OUT
clip b-off.mkv libx264 -f lavfi -i "$base" -c:v libx264 -preset veryfast -crf 28 -g 30 -bf 0 OUT
clip b-mpeg4.avi mpeg4 -f lavfi -i "$base" -c:v mpeg4 -q:v 5 -g 30 -bf 2 OUT
clip b-off-mpeg4.avi mpeg4 -f lavfi -i "$base" -c:v mpeg4 -q:v 5 -g 30 -bf 0 OUT

# Variable frame rate: 25 fps for 1.6 s, then every third frame (8.33 fps), then 25 fps again.
vfr="$base,select='lt(n\,40)+gte(n\,80)+not(mod(n\,3))',setpts='if(lt(N\,40)\,N/25\,if(lt(N\,54)\,1.6+(N-40)*0.12\,3.28+(N-54)/25))/TB'"
clip vfr.mp4 libx264 -f lavfi -i "$vfr" "${x264[@]}" -fps_mode vfr -video_track_timescale 12800 OUT
clip vfr.mkv libx264 -f lavfi -i "$vfr" "${x264[@]}" -fps_mode vfr OUT

# Start times that are not 0.
clip s-ts-offset.ts libx264 -f lavfi -i "$base" "${x264[@]}" -output_ts_offset 3 OUT
clip s-mkv-offset.mkv libx264 -f lavfi -i "$base" "${x264[@]}" -output_ts_offset 5 OUT
clip s-flv-offset.flv libx264 -f lavfi -i "$base" "${x264[@]}" -output_ts_offset 2 OUT

# 1-frame and 4-frame clips.
clip n-1.mp4 libx264 -f lavfi -i "$base" "${x264[@]}" -frames:v 1 OUT
clip n-1.mkv libx264 -f lavfi -i "$base" "${x264[@]}" -frames:v 1 OUT
clip n-4.mp4 libx264 -f lavfi -i "$base" "${x264[@]}" -frames:v 4 OUT
clip n-4.avi ffv1 -f lavfi -i "$base" -c:v ffv1 -frames:v 4 OUT

# 10-bit.
clip d-10bit.mkv libx264 -f lavfi -i "$base" -c:v libx264 -preset veryfast -crf 28 -g 30 -pix_fmt yuv420p10le OUT
clip d-hevc10.mp4 libx265 -f lavfi -i "$base" -c:v libx265 -preset ultrafast -pix_fmt yuv420p10le -x265-params log-level=error:keyint=30 OUT

# Odd sizes.
clip o-vp9-161x97.webm libvpx-vp9 -f lavfi -i "$base,scale=161:97,setsar=1" -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -g 30 -b:v 300k OUT
clip o-ffv1-163x91.mkv ffv1 -f lavfi -i "$base,scale=163:91,setsar=1" -c:v ffv1 OUT

# Index kinds: fragmented MP4; the index at the front; Matroska/WebM written to a pipe (no cues,
# no duration); H.264 stream-copied into AVI.
clip f-frag.mp4 libx264 -f lavfi -i "$base" "${x264[@]}" -movflags frag_keyframe+empty_moov+default_base_moof OUT
clip x-faststart.mp4 libx264 -f lavfi -i "$base" "${x264[@]}" -movflags +faststart OUT
wait
pids=()
pipe_clip() { # pipe_clip NAME FORMAT ffmpeg-args...: written through a pipe, so never seeked back
  local name=$1 fmt=$2; shift 2
  made+=("$name")
  [ -s "$out/$name" ] && return 0
  local tmp="$out/.tmp.$$.$name"
  ff "$@" -f "$fmt" - >"$tmp" && mv -f "$tmp" "$out/$name"
}
pipe_clip x-nocues.mkv matroska -i "$out/c-mkv.mkv" -c copy
pipe_clip x-nocues.webm webm -i "$out/c-webm.webm" -c copy
pipe_clip x-h264-copy.avi avi -i "$out/c-mp4.mp4" -c copy
# Rotation: FFmpeg 5.1 writes a display matrix only when stream-copying with a `rotate` tag.
made+=(r-90.mp4)
[ -s "$out/r-90.mp4" ] || { ff -i "$out/c-mp4.mp4" -c copy -metadata:s:v:0 rotate=-90 "$out/.tmp.$$.r.mp4" && mv -f "$out/.tmp.$$.r.mp4" "$out/r-90.mp4"; }
# An edit list: cut after the first keyframe with stream copy (the packets before 0.5 s are kept
# for decoding and marked to discard).
made+=(s-mp4-edit.mp4)
[ -s "$out/s-mp4-edit.mp4" ] || { ff -ss 0.5 -i "$out/c-mp4.mp4" -c copy "$out/.tmp.$$.e.mp4" && mv -f "$out/.tmp.$$.e.mp4" "$out/s-mp4-edit.mp4"; }

wait
missing=()
for m in "${made[@]}"; do [ -s "$out/$m" ] || missing+=("$m"); done
if [ ${#missing[@]} -gt 0 ]; then echo "error: could not make: ${missing[*]}" >&2; exit 1; fi
printf '%s\n' "${made[@]}" >"$out/clips.txt.tmp"
mv -f "$out/clips.txt.tmp" "$out/clips.txt"
echo "conformance clips: ${#made[@]} in $out"
