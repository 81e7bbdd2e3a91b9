"""spokeshave's cost models (imported as spokeshave.costmodel)."""
if __name__ != "spokeshave.costmodel":  # its folder is on sys.path: refuse a second copy
    raise ImportError(f"import spokeshave.costmodel, not {__name__}: one package, one name")
