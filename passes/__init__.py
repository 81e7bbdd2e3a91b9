"""The passes: one module per pass (or family), each registering itself by name on import.

`compiler.passmanager.registered_passes()` imports this package, so adding a module here
and listing it below is all it takes to make a pass reachable from pipelines.
"""
if __name__ != "spokeshave.passes":  # its folder is on sys.path: refuse a second copy
    raise ImportError(f"import spokeshave.passes, not {__name__}: one package, one name")

from . import canonicalize, cse, dce, fold_constants, quantize  # noqa: F401
from . import sparsify  # noqa: F401
from . import fold_norms  # noqa: F401
from . import slice  # noqa: F401
from . import smooth, reorder_outliers, outlier_split  # noqa: F401
from . import lorc  # noqa: F401
