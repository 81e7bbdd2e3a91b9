"""Quantization quality on the bundled all-MiniLM-L6-v2: embedding fidelity per scheme.

    python benchmarks/quality_minilm.py [--pipelines "quantize{scheme=w8};..."] [--threads N]

Metric, evaluation and calibration sets: `benchmarks/_minilm.py` (min over 32 sentences of
the cosine between compiled and fp32 mean-pooled embeddings). Issue 3's targets: `w8` >=
0.9995; `smooth`/`reorder-outliers` + `w8a8` >= 0.999; `w4g{group=128}` with
`reorder-outliers` and/or `lorc` >= 0.98 (plain round-to-nearest about 0.93). Prints one row
per pipeline: min / second-lowest / mean cosine, compressed-linear count, weight bytes of
the linears (low-rank factors included), compile seconds, and the worst sentence.
"""
from __future__ import annotations

import argparse

import torch

from _minilm import SENTENCES, Bench
from spokeshave import CompiledModel
from spokeshave.compiler.dialect import LINEAR, has_trait, weight_operands

DEFAULT_PIPELINES = [
    "canonicalize,cse,dce",
    # w8: target >= 0.9995
    "quantize{scheme=w8}",
    "quantize{scheme=w8 method=gptq}",
    "outlier-split{scheme=w8}",
    "outlier-split{scheme=w8},lorc{rank=8 whiten=true}",
    # w8a8: as-is, and with outlier handling (target >= 0.999)
    "quantize{scheme=w8a8}",
    "smooth,quantize{scheme=w8a8}",
    "smooth{alpha=0.75},quantize{scheme=w8a8}",
    "reorder-outliers,quantize{scheme=w8a8}",
    "outlier-split{threshold=6.0}",
    "outlier-split{threshold=3.0}",
    "quantize{scheme=fp8}",
    # w4g128: round-to-nearest about 0.93 in the issue; with reorder/lorc target >= 0.98
    "quantize{scheme=w4g group=128}",
    "reorder-outliers{metric=weight},quantize{scheme=w4g group=128}",
    "quantize{scheme=w4g group=128},lorc{rank=8}",
    "quantize{scheme=w4g group=128},lorc{rank=8 whiten=true}",
    "quantize{scheme=w4g group=128 symmetric=false method=gptq act-order}",
    "quantize{scheme=w4g group=128 symmetric=false method=gptq act-order},lorc{rank=8 whiten=true}",
    "quantize{scheme=w4g group=128 symmetric=false method=gptq act-order},lorc{rank=32 whiten=true}",
]


def linear_bytes(cm: CompiledModel) -> int:
    """Bytes of the weights the linears (float or quantized) read, biases excluded."""
    f = cm.module.entry
    total = 0
    for op in f.body.ops:
        if has_trait(op, LINEAR):
            for v in weight_operands(op):
                name = f.param_name(v)
                if name is not None:
                    total += cm.weights[name].nbytes
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipelines", help="';'-separated pipelines (default: the built-in list)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipelines = args.pipelines.split(";") if args.pipelines else DEFAULT_PIPELINES
    bench = Bench()
    print(f"all-MiniLM-L6-v2: {len(SENTENCES)} sentences, {len(bench.calibration)} calibration "
          f"batches; export {bench.export_s:.1f} s")
    print("min cos: the metric; 2nd: the second-lowest sentence; worst: the argmin sentence")
    print(f"{'pipeline':<70} {'min cos':>8} {'2nd':>8} {'mean':>8} {'c-lin':>5} {'MiB':>6} "
          f"{'s':>5}  worst")
    for p in pipelines:
        cm, secs = bench.compile(p)
        cos = bench.cosines(cm)
        srt = cos.sort().values
        nq = sum(op.name.startswith("spk.linear_") for op in cm.module.entry.body.ops)
        worst = SENTENCES[int(cos.argmin())]
        print(f"{p:<70} {float(srt[0]):8.5f} {float(srt[1]):8.5f} {float(cos.mean()):8.5f} "
              f"{nq:5d} {linear_bytes(cm) / 2**20:6.2f} {secs:5.1f}  {worst[:28]}", flush=True)
        skipped = cm.report.skipped()
        if skipped:
            print(f"    skipped {len(skipped)} layers: {skipped[0].reason} ...")


if __name__ == "__main__":
    main()
