#!/usr/bin/env python3
"""Converts the tiny SmolVLM2-256M fixture to GGUF with llama.cpp's own converter.

The files it writes are the ones a llama.cpp user has: a text GGUF (`general.architecture` llama)
and an mmproj GGUF (`clip`, projector `idefics3`), each in f32, f16 and q8_0, under
crates/models/tests/fixtures/smolvlm2-256m-tiny-gguf/. The GGUF parity test loads them and compares
with the safetensors fixture.

The converter comes from PyPI's llama-cpp-python source package, which bundles llama.cpp
(commit 0c1e57098; its GitHub repository is too large to fetch here):

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36   # or take the sdist
    tar xzf llama_cpp_python-0.3.36.tar.gz
    eval "$(../shared/tools/reference-venv.sh)"; pip install sentencepiece
    python tools/make_gguf_fixtures.py llama_cpp_python-0.3.36/vendor/llama.cpp

For benchmarks, `--src DIR --out DIR --types f32,q8_0` converts another SmolVLM2 checkpoint (the
full-size random one of tools/make_smolvlm_bench_checkpoint.py, which has no tokenizer: the tiny
fixture's is copied in, the converter pads the vocabulary to the config's size).

Two of the converter's checks reject a random checkpoint; a copy of the fixture is fixed for them,
the weights and tokenizer untouched:
- `text_config.architectures` is set to `["VLlama3ForCausalLM"]`, as the hub's SmolVLM2 has;
- the tiny tokenizer's pre-tokenizer hash is unknown to the converter ("BPE pre-tokenizer was not
  recognized"): it is the same byte-level split SmolLM2 uses, so the converter is told `smollm`.
The third pitfall (llama-mtmd-cli wants a single "\\n\\n" token) only matters to llama.cpp's
runtime, which these fixtures are not run through, and adding a token would change the vocabulary
the safetensors path is compared with; it is left alone unless `--add-double-newline` is given
(benches/llamacpp.sh, which runs llama-mtmd-cli on the converted benchmark checkpoint): then
"\\n\\n" is added to the copy's tokenizer as one more non-special token, at the next free id
(the benchmark checkpoint's embedding has rows to spare; timing does not depend on the values).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "crates/models/tests/fixtures/smolvlm2-256m-tiny"
OUT = ROOT / "crates/models/tests/fixtures/smolvlm2-256m-tiny-gguf"
TYPES = {"f32": "F32", "f16": "F16", "q8_0": "Q8_0"}

# Runs the converter's main() with the pre-tokenizer named (see the module docs).
RUNNER = """
import sys
sys.path.insert(0, sys.argv.pop(1))
import convert_hf_to_gguf as c
from conversion import base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "smollm"
c.main()
"""


def add_double_newline(path: Path, vocab_size: int) -> None:
    """Adds "\\n\\n" as an added (non-special) token at the next free id, when it is not one token."""
    tok = json.loads(path.read_text())
    added = tok.get("added_tokens", [])
    if any(a["content"] == "\n\n" for a in added) or "\u010a\u010a" in tok["model"]["vocab"]:
        return
    used = [*tok["model"]["vocab"].values(), *(a["id"] for a in added)]
    new_id = max(used) + 1
    if new_id >= vocab_size:
        sys.exit(f"{path}: no free id below vocab_size {vocab_size} for a \\n\\n token")
    added.append({"id": new_id, "content": "\n\n", "single_word": False, "lstrip": False,
                  "rstrip": False, "normalized": False, "special": False})
    tok["added_tokens"] = added
    path.write_text(json.dumps(tok, ensure_ascii=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("llama_cpp", type=Path, help="llama.cpp's directory (convert_hf_to_gguf.py)")
    ap.add_argument("--src", type=Path, default=SRC, help="the SmolVLM2 checkpoint")
    ap.add_argument("--out", type=Path, default=OUT, help="where the .gguf files go")
    ap.add_argument("--types", default=",".join(TYPES), help="outtypes, comma-separated")
    ap.add_argument("--add-double-newline", action="store_true",
                    help='add a "\\n\\n" token, which llama-mtmd-cli needs for idefics3 (see above)')
    args = ap.parse_args()
    llama = args.llama_cpp.resolve()
    if not (llama / "convert_hf_to_gguf.py").is_file():
        sys.exit(f"{llama}: no convert_hf_to_gguf.py")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.src.resolve().name
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / stem
        shutil.copytree(args.src, ckpt)
        for f in SRC.iterdir():
            if f.name.startswith(("tokenizer", "chat_template", "processor")) and not (ckpt / f.name).exists():
                shutil.copy(f, ckpt / f.name)
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg["text_config"]["architectures"] = ["VLlama3ForCausalLM"]
        if args.add_double_newline:
            add_double_newline(ckpt / "tokenizer.json", cfg["text_config"]["vocab_size"])
        (ckpt / "config.json").write_text(json.dumps(cfg, indent=2))
        for outtype in args.types.split(","):
            tag = TYPES[outtype]
            for mmproj in (False, True):
                name = f"{'mmproj-' if mmproj else ''}{stem}-{tag}.gguf"
                cmd = [sys.executable, "-c", RUNNER, str(llama), str(ckpt),
                       "--outtype", outtype, "--outfile", str(args.out / name)]
                if mmproj:
                    cmd.append("--mmproj")
                print("+", " ".join(cmd[3:]), flush=True)
                subprocess.run(cmd, check=True)
    for f in sorted(args.out.glob("*.gguf")):
        print(f"{f}: {f.stat().st_size} bytes")


if __name__ == "__main__":
    main()
