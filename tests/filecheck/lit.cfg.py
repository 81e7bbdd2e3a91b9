# lit configuration for the FileCheck suite (MLIR style).
#
#   python -m pytest tests/test_filecheck.py          # runs this suite through pytest
#   lit -v tests/filecheck                            # or directly (`lit` console script)
#
# Substitutions:
#   spokeshave-opt  -> "<python>" -m spokeshave.opt   (no console script on PATH needed), or
#                      the client of opt_server.py when SPOKESHAVE_OPT_SERVER names a server
#   %roundtrip      -> spokeshave-opt --verify-roundtrip (print, re-parse, re-print; must be a
#                      fixed point, else it fails with a diff): the ROUNDTRIP check of parser tests
#   filecheck       -> the `filecheck` PyPI package (a Python FileCheck clone)
#   not             -> lit's builtin
# `spokeshave` must be installed (`pip install -e .`): its folders map to one import name.
import importlib.util
import os
import shutil
import sys

import lit.formats

config.name = "spokeshave"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir"]
config.excludes = ["lit.cfg.py", "opt_server.py"]

config.test_source_root = os.path.dirname(os.path.abspath(__file__))
config.test_exec_root = config.test_source_root


def _quote(path: str) -> str:
    return f'"{path}"'


python = _quote(sys.executable)
opt = f"{python} -m spokeshave.opt"
# tests/test_filecheck.py runs a fork server that has imported spokeshave once; the client
# hands each call to it (see opt_server.py) and falls back to the line above without one.
if os.environ.get("SPOKESHAVE_OPT_SERVER"):
    opt = f"{python} -S {_quote(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'opt_server.py'))}"

# The `filecheck` package run by this interpreter when it has it (robust inside virtual
# environments), else whatever `filecheck` is on PATH.
if importlib.util.find_spec("filecheck") is not None:
    filecheck = f"{python} -m filecheck"
elif shutil.which("filecheck"):
    filecheck = _quote(shutil.which("filecheck"))
else:
    lit_config.fatal("FileCheck not found: pip install filecheck")

# lit applies config substitutions in this order, before its own (%s, %t...). A tool name
# is replaced only as a whole word, never inside a path (a python living under a
# `.../filecheck-env/...` directory stays intact).
_WORD = r"(?<![\w/.\-]){}(?![\w/.\-])"
config.substitutions.append(("%roundtrip", f"{opt} --verify-roundtrip"))
config.substitutions.append((_WORD.format("spokeshave-opt"), opt))
config.substitutions.append((_WORD.format("filecheck"), filecheck))

# Hashing is deterministic. lit starts tests from a minimal environment; pass through what
# torch, triton and the model loaders read.
if os.environ.get("PYTHONPATH"):
    config.environment["PYTHONPATH"] = os.environ["PYTHONPATH"]
config.environment["PYTHONHASHSEED"] = "0"
_PASS_THROUGH = ("HOME", "TMPDIR", "XDG_CACHE_HOME", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
_PASS_THROUGH_PREFIXES = ("SPOKESHAVE_", "TORCH", "TRITON_", "HF_", "TRANSFORMERS_")
for var, value in os.environ.items():
    if var in _PASS_THROUGH or var.startswith(_PASS_THROUGH_PREFIXES):
        config.environment[var] = value
