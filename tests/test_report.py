"""The quality report: per-layer entries, end-to-end error, the PNG plot."""
from __future__ import annotations

import torch

import spokeshave
from spokeshave.compiler.report import output_error


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 60),
                               torch.nn.Linear(60, 8)).eval()


def test_report_lists_layers_skips_and_end_to_end_error(tmp_path):
    m = _mlp()
    cal = [(torch.randn(4, 64),) for _ in range(3)]
    cm = spokeshave.compile(m, (torch.randn(4, 64),), pipeline="quantize{scheme=w4g group=64 method=gptq}",
                            calibration=cal)
    rep = cm.report
    rows = {e.layer: e for e in rep.layers}
    assert rows["0"].status == "quantized" and rows["0"].bits_per_weight == 4 + 32 / 64
    assert 0 < rows["0"].rel_err < 0.05 and 0 < rows["0"].weight_rel_err < 0.05
    assert rows["3"].status == "skipped" and "not divisible by group 64" in rows["3"].reason
    e2e = rep.end_to_end
    assert e2e.batches == 3 and 0 < e2e.rel_mse < 0.05 and 0.9 < e2e.min_cosine < 1
    # The end-to-end error is what the compiled model really does on those batches.
    with torch.no_grad():
        errs = [output_error(m(*b), cm(*b))[0] for b in cal]
    assert abs(e2e.rel_mse - sum(errs) / len(errs)) <= 1e-12 and e2e.max_rel_mse == max(errs)
    text = str(rep)
    assert "skipped (in-features 60 not divisible by group 64)" in text and "end to end over 3" in text
    png = rep.save_plot(str(tmp_path / "err.png"))
    with open(png, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_output_error_needs_the_covariance_some_pass_declared():
    """Round-to-nearest declares no statistics: calibration then records no covariance (it is
    [C, C] per linear input), so the entry has the weight error and no output error."""
    m = _mlp()
    cal = [(torch.randn(4, 64),) for _ in range(2)]
    cm = spokeshave.compile(m, (torch.randn(4, 64),), pipeline="quantize{scheme=w8}", calibration=cal)
    up = cm.report.by_layer("quantize")["0"]
    assert up.rel_err is None and 0 < up.weight_rel_err < 1e-3
    assert cm.context.statistics_needed == frozenset()
    both = spokeshave.compile(m, (torch.randn(4, 64),), calibration=cal,
                              pipeline="quantize{scheme=w8},lorc{rank=4 whiten=true}")
    assert both.report.by_layer("quantize")["0"].rel_err > 0  # lorc's covariance serves both


def test_report_without_calibration_says_so():
    cm = spokeshave.compile(_mlp(), (torch.randn(4, 64),), pipeline="quantize{scheme=w8}")
    assert cm.report.end_to_end is None
    assert "not measured" in str(cm.report)
    assert all(e.status == "quantized" for e in cm.report.layers)


def test_uncompressed_pipeline_has_an_exact_report():
    m = _mlp()
    cal = [(torch.randn(2, 64),)]
    cm = spokeshave.compile(m, (torch.randn(2, 64),), pipeline="canonicalize,cse,dce", calibration=cal)
    assert cm.report.layers == []
    assert cm.report.end_to_end.rel_mse == 0.0
