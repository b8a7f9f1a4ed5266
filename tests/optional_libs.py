"""Whether optional libraries can be used here, for skipif marks."""


def usable(*modules: str) -> bool:
    """True if every module imports. A torchvision built for another torch raises RuntimeError
    (``operator torchvision::nms does not exist``), not ImportError, so any failure counts."""
    import importlib

    try:
        for module in modules:
            importlib.import_module(module)
        return True
    except Exception:  # noqa: BLE001
        return False
