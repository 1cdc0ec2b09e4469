#!/usr/bin/env python3
"""Reference outputs for vidlm-kernels' CPU preprocess, made by Pillow and transformers.

Writes crates/kernels/tests/fixtures/: for each case a raw file of Pillow's resized RGB bytes
(packed HWC u8), and for the normalize cases transformers' rescale + normalize output (CHW f32,
little endian). Inputs are not stored: both sides generate them with the same LCG (see `pixels`),
so the fixture stays small. Run inside the reference env:
    eval "$(/work/shared/tools/reference-venv.sh)"; python tools/kernel_refs.py
"""
import os
import numpy as np
from PIL import Image
from transformers.image_transforms import normalize, rescale

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "kernels", "tests", "fixtures")

FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "lanczos3": Image.Resampling.LANCZOS}


def pixels(n, seed):
    """n bytes from the LCG x = x * 1103515245 + 12345 (mod 2^31), byte = (x >> 16) & 255."""
    out = np.empty(n, dtype=np.uint8)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 16) & 255
    return out


CASES = [  # (src_w, src_h, dst_w, dst_h, filter, seed)
    (37, 23, 16, 11, "bilinear", 1), (37, 23, 16, 11, "bicubic", 2), (37, 23, 16, 11, "lanczos3", 3),
    (20, 15, 41, 29, "bilinear", 4), (20, 15, 41, 29, "bicubic", 5), (20, 15, 41, 29, "lanczos3", 6),
    (2, 2, 5, 3, "lanczos3", 7), (2, 2, 1, 1, "bicubic", 8),
    (300, 200, 384, 160, "lanczos3", 9), (1279, 719, 128, 96, "lanczos3", 10),
    (1280, 720, 96, 64, "bicubic", 11), (97, 61, 97, 61, "lanczos3", 12),
]
ROW_CASES = [  # (src_w, src_h, dst_w, dst_h, filter, seed, first_row, rows): only these output rows stored
    (1280, 720, 512, 512, "lanczos3", 13, 200, 16), (1920, 1080, 384, 384, "bicubic", 14, 0, 8),
    (720, 1280, 512, 512, "lanczos3", 15, 500, 12),
]
NORM_CASES = {  # case index -> (name, mean, std)
    2: ("siglip", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
    5: ("clip", [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    manifest = []
    for i, (sw, sh, dw, dh, flt, seed) in enumerate(CASES):
        src = pixels(sw * sh * 3, seed).reshape(sh, sw, 3)
        img = Image.fromarray(src, "RGB").resize((dw, dh), resample=FILTERS[flt])
        res = np.asarray(img, dtype=np.uint8)
        name = f"pil_{sw}x{sh}_{dw}x{dh}_{flt}_s{seed}.rgb"
        res.tofile(os.path.join(OUT, name))
        manifest.append(f"resize {sw} {sh} {dw} {dh} {flt} {seed} {name}")
        if i in NORM_CASES:
            nm, mean, std = NORM_CASES[i]
            x = rescale(res, 1 / 255, dtype=np.float32, input_data_format="channels_last")
            x = normalize(x, mean, std, input_data_format="channels_last")
            chw = np.ascontiguousarray(x.transpose(2, 0, 1)).astype("<f4")
            fname = f"hf_{sw}x{sh}_{dw}x{dh}_{flt}_s{seed}_{nm}.f32"
            chw.tofile(os.path.join(OUT, fname))
            manifest.append(f"normalize {sw} {sh} {dw} {dh} {flt} {seed} {fname} {nm}")
    for (sw, sh, dw, dh, flt, seed, r0, n) in ROW_CASES:
        src = pixels(sw * sh * 3, seed).reshape(sh, sw, 3)
        img = Image.fromarray(src, "RGB").resize((dw, dh), resample=FILTERS[flt])
        res = np.asarray(img, dtype=np.uint8)[r0:r0 + n]
        name = f"pil_{sw}x{sh}_{dw}x{dh}_{flt}_s{seed}_rows{r0}-{r0 + n}.rgb"
        res.tofile(os.path.join(OUT, name))
        manifest.append(f"rows {sw} {sh} {dw} {dh} {flt} {seed} {name} {r0}")
    with open(os.path.join(OUT, "manifest.txt"), "w") as f:
        f.write("# made by tools/kernel_refs.py (Pillow + transformers); kind sw sh dw dh filter seed file [norm]\n")
        f.write("\n".join(manifest) + "\n")


if __name__ == "__main__":
    main()
