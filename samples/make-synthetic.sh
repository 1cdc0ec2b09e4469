#!/usr/bin/env bash
# Makes the small synthetic test clips in samples/gen/ with the ffmpeg CLI (lavfi sources), each
# with a known property the tests check. Idempotent (a clip already there is kept) and safe to run
# from several test processes at once (flock, temp file + rename). Takes a few seconds.
#
#   square.mp4       6 s, 25 fps, 320x240, h264 with B-frames, keyframe every 1 s (-g 25), moov
#                    first. A moving square on a background; background and square change colour
#                    at exactly 2.0 s and 4.0 s (frames 50 and 100): two scene cuts.
#   square.ts        the same picture in MPEG-TS: first pts is not 0 (start 1.4 s), no index.
#   longgop.mp4      20 s, 10 fps, 160x120, keyframe every 2 s: sparse sampling should seek.
#   vfr.mp4          variable frame rate: 30 frames at 30 fps, then 20 frames at 10 fps (3 s).
#   rotated.mp4      phone clip: coded 320x180, display matrix -90 as ffprobe prints it (shown
#                    180x320, turned clockwise, like a phone held upright).
#   anamorphic.mp4   coded 160x180 with sample aspect ratio 2:1 (shown 320x180).
#   yuv420p10.mp4    10-bit 4:2:0 h264.
#   yuv422p10.mkv    10-bit 4:2:2 (FFV1).
#   yuv444p.mp4      8-bit 4:4:4 h264.
#   rgb24.mkv        RGB (FFV1, bgr0).
#   pal8.mkv         paletted (PNG frames in Matroska).
#   audio-only.m4a   1 s of AAC audio, no video.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p gen
exec 9>gen/.lock
flock 9

ff() { ffmpeg -nostdin -hide_banner -loglevel error -y "$@"; }

# make NAME ffmpeg-args... : runs ffmpeg writing to a temp file, then renames it into place.
make() {
  local name=$1; shift
  [ -s "gen/$name" ] && return 0
  local tmp="gen/.tmp.$$.$name"
  ff "$@" "$tmp"
  mv -f "$tmp" "gen/$name"
}

# Background colour and square colour switch at 2 s and 4 s; the square moves 40 px/s.
square_graph="color=c=0x203080:s=320x240:r=25:d=2[a];color=c=0xd08020:s=320x240:r=25:d=2[b];\
color=c=0x20a040:s=320x240:r=25:d=2[c];[a][b][c]concat=n=3:v=1:a=0[bg];\
color=c=white:s=80x80:r=25:d=2[s1];color=c=black:s=80x80:r=25:d=2[s2];color=c=red:s=80x80:r=25:d=2[s3];\
[s1][s2][s3]concat=n=3:v=1:a=0[sq];[bg][sq]overlay=x='20+40*t':y=80:shortest=1,format=yuv420p[v]"
x264_small=(-c:v libx264 -preset veryfast -crf 23)

make square.mp4 -filter_complex "$square_graph" -map "[v]" "${x264_small[@]}" -g 25 -bf 2 \
  -movflags +faststart
make square.ts -filter_complex "$square_graph" -map "[v]" "${x264_small[@]}" -g 25 -bf 2 -f mpegts
make longgop.mp4 -f lavfi -i "testsrc2=s=160x120:r=10:d=20" "${x264_small[@]}" -pix_fmt yuv420p \
  -g 20 -keyint_min 20 -sc_threshold 0 -bf 2 -movflags +faststart
make vfr.mp4 -f lavfi -i "testsrc2=s=160x120:r=30:d=5" \
  -vf "select='lt(n,30)+gte(n,30)*not(mod(n-30,3))',setpts='if(lt(N,30),N/30,1+(N-30)/10)/TB',trim=end=3" \
  "${x264_small[@]}" -pix_fmt yuv420p -fps_mode vfr -video_track_timescale 9000
# FFmpeg 5.1 writes a display matrix only when stream-copying with a `rotate` tag: two steps.
make rotated-raw.mp4 -f lavfi -i "testsrc2=s=320x180:r=25:d=1" "${x264_small[@]}" -pix_fmt yuv420p
make rotated.mp4 -i gen/rotated-raw.mp4 -c copy -metadata:s:v:0 rotate=-90
make anamorphic.mp4 -f lavfi -i "testsrc2=s=160x180:r=25:d=1" -vf setsar=2/1 "${x264_small[@]}" \
  -pix_fmt yuv420p
make yuv420p10.mp4 -f lavfi -i "testsrc2=s=160x120:r=25:d=1" "${x264_small[@]}" -pix_fmt yuv420p10le
make yuv422p10.mkv -f lavfi -i "testsrc2=s=160x120:r=25:d=1" -c:v ffv1 -pix_fmt yuv422p10le
make yuv444p.mp4 -f lavfi -i "testsrc2=s=160x120:r=25:d=1" "${x264_small[@]}" -pix_fmt yuv444p
make rgb24.mkv -f lavfi -i "testsrc2=s=160x120:r=25:d=1" -c:v ffv1 -pix_fmt bgr0
make pal8.mkv -f lavfi -i "testsrc2=s=160x120:r=10:d=1" -c:v png -pix_fmt pal8
make audio-only.m4a -f lavfi -i "sine=frequency=440:duration=1" -c:a aac
