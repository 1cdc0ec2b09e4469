#!/usr/bin/env python3
"""Writes 4-bit (Q4_0 and Q4_1) copies of the tiny SmolVLM2 text GGUF fixture, quantized by the
`gguf` Python package (llama.cpp's own gguf-py, whose quantizers port ggml's reference ones), and
what that package dequantizes them to.

DEV-ONLY: CI never runs it; the Rust tests read what it wrote, which is committed.

From crates/models/tests/fixtures/smolvlm2-256m-tiny-gguf/smolvlm2-256m-tiny-F32.gguf (made by
tools/make_gguf_fixtures.py with llama.cpp's converter) it writes, next to it:
* smolvlm2-256m-tiny-Q4_0.gguf, smolvlm2-256m-tiny-Q4_1.gguf: every metadata key copied, every
  2-D weight quantized (as llama-quantize does for these types; the 1-D norms stay f32),
  `general.file_type` set to the type;
* q4-dequantized.safetensors: for each type, gguf-py's dequantization of two of the quantized
  tensors (`<TYPE>.<tensor name>`, f32, in GGUF's row-major [rows, cols] order), the independent
  reference the Rust loader's dequantization is compared with.

Run from the repository root:

    eval "$(../shared/tools/reference-venv.sh)"
    python tools/make_gguf_q4_fixtures.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType, quants
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
DIR = ROOT / "crates/models/tests/fixtures/smolvlm2-256m-tiny-gguf"
SRC = DIR / "smolvlm2-256m-tiny-F32.gguf"
TYPES = {
    "Q4_0": (GGMLQuantizationType.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "Q4_1": (GGMLQuantizationType.Q4_1, LlamaFileType.MOSTLY_Q4_1),
}
REFERENCE_TENSORS = ["blk.0.attn_q.weight", "blk.1.ffn_down.weight"]


def copy_metadata(reader: GGUFReader, writer: GGUFWriter, file_type: int) -> None:
    for field in reader.fields.values():
        name = field.name
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by the writer itself
        if name == "general.file_type":
            writer.add_uint32(name, file_type)
            continue
        vtype = field.types[0]
        value = field.contents()
        if vtype == GGUFValueType.ARRAY:
            writer.add_key_value(name, value, vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(name, value, vtype)


def main() -> None:
    reader = GGUFReader(SRC)
    arch = reader.fields["general.architecture"].contents()
    reference: dict[str, np.ndarray] = {}
    for tag, (qtype, ftype) in TYPES.items():
        out = DIR / f"smolvlm2-256m-tiny-{tag}.gguf"
        writer = GGUFWriter(out, arch)
        copy_metadata(reader, writer, int(ftype))
        for t in reader.tensors:
            data = np.asarray(t.data, dtype=np.float32)
            if data.ndim == 2:
                q = quants.quantize(data, qtype)
                writer.add_tensor(t.name, q, raw_shape=q.shape, raw_dtype=qtype)
                if t.name in REFERENCE_TENSORS:
                    reference[f"{tag}.{t.name}"] = quants.dequantize(q, qtype).astype(np.float32)
            else:
                writer.add_tensor(t.name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        print(f"wrote {out.relative_to(ROOT)} ({out.stat().st_size} bytes)")
    save_file(reference, str(DIR / "q4-dequantized.safetensors"))


if __name__ == "__main__":
    main()
