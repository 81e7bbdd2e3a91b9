"""Does the CPU backend compute what the reference does, group by group, on a real model?

    python benchmarks/backend_agreement.py [--model smollm2|minilm] [--pipeline TEXT]
                                           [--perturb 1e-7] [--seeds 2] [--calib 16]

One `compile_module` on the CPU backend, then its compiled IR run three ways on the same
inputs: by the backend (`cm(...)`), by the reference interpreter (`Interpreter` on the same
module and weights: every `spk.fused` region interpreted with torch ops), and by the
reference interpreter with each attention group's output multiplied by
`1 + perturb * randn` (one seed per run). Prints:

* the quality of the first two (SmolLM2: perplexity / fp32 over 8 x 256 held-out tokens;
  MiniLM: min cosine against eager fp32 at 8 x 128) and how far apart their outputs are;
* per group, the worst relative error of the backend's output when the group is given the
  reference's inputs (so errors do not compound: a group's own disagreement);
* the perturbed runs: how far a float32-rounding-sized change in attention moves the
  output and the quality. When the perturbed runs spread as far as the backend does from
  the reference, a quality gap between the two is the model's sensitivity, not a kernel's.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import _peers  # noqa: E402

PIPELINES = {
    "smollm2": "smooth{alpha=0.65},quantize{scheme=w8a8},canonicalize,cse,dce,gqa-attention,fuse",
    "minilm": "smooth{alpha=0.6},quantize{scheme=w8a8g group=128},canonicalize,cse,dce,fuse",
}
WORKLOAD = {"smollm2": "smollm_prefill", "minilm": "minilm8x128"}


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / (b.float().norm() + 1e-30))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2", choices=sorted(PIPELINES))
    ap.add_argument("--pipeline", help="default: the model's int8 recipe (round to nearest)")
    ap.add_argument("--perturb", type=float, default=1e-7, help="relative noise on attention outputs")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--calib", type=int, default=16, help="SmolLM2 calibration windows")
    ap.add_argument("--top", type=int, default=8, help="groups to list")
    args = ap.parse_args()

    import spokeshave
    from spokeshave.compiler.interpreter import Interpreter, reference_runner

    _peers.setup_torch(_peers.usable_cores())
    wl = WORKLOAD[args.model]
    bundle = _peers.load_bundle(args.model, [wl], calib_windows=args.calib)
    pipeline = args.pipeline or PIPELINES[args.model]
    cm = spokeshave.compile_module(bundle.imported(), pipeline=pipeline, backend="cpu",
                                   calibration=bundle.calibration)
    ex = cm.executable
    workload = bundle.workloads[wl]

    def interpreted(select=None):
        it = Interpreter(ex.module, cm.weights, select=select)
        return lambda *x: _first(it(*x))

    def perturbed(seed: int):
        gen = torch.Generator().manual_seed(seed)

        def select(op):
            if op.name != "spk.fused" or op.attributes.get("kind") != "attention":
                return None
            run = reference_runner(op)

            def noisy(a):
                o = run(a)
                return o * (1 + args.perturb * torch.randn(o.shape, generator=gen))
            return noisy
        return interpreted(select)

    reference = interpreted()
    x = workload.inputs
    out_ref = reference(*x)
    print(f"{args.model}, `{pipeline}`: {bundle.quality_name} of the backend "
          f"{bundle.quality(cm, workload):.5f}, of the reference interpreter on the same IR "
          f"{bundle.quality(reference, workload):.5f}; outputs {_rel(cm(*x), out_ref):.2e} apart "
          f"(relative)")

    worst: dict[str, float] = collections.defaultdict(float)

    def both(op):
        compiled = ex._select(op)
        if compiled is None:
            return None
        name, run_ref = ex.plans[op].name, reference_runner(op)

        def run(a):
            mine, theirs = compiled(a), run_ref(a)
            pairs = zip(mine, theirs) if isinstance(mine, (list, tuple)) else [(mine, theirs)]
            for u, v in pairs:
                if torch.is_tensor(u) and u.is_floating_point():
                    worst[name] = max(worst[name], _rel(u, v))
            return theirs
        return run

    interpreted(both)(*x)
    exact = sum(1 for e in worst.values() if e == 0.0)
    print(f"{len(worst)} compiled groups, fed the reference's inputs: {exact} bit-identical; "
          f"the worst relative errors:")
    for name, e in sorted(worst.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"  {e:.2e}  {name}")
    for seed in range(1, args.seeds + 1):
        f = perturbed(seed)
        print(f"reference with attention x (1 + {args.perturb:g} randn), seed {seed}: outputs "
              f"{_rel(f(*x), out_ref):.2e} from the unperturbed, {bundle.quality_name} "
              f"{bundle.quality(f, workload):.5f}")


if __name__ == "__main__":
    main()
