"""privfed: privacy-preserving federated learning."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__", "load_model"]

try:
    __version__: str = version("privfed")
    """The installed distribution's version ("0+unknown" in a source tree never installed)."""
except PackageNotFoundError:  # pragma: no cover - a source checkout that was never installed
    __version__ = "0+unknown"


def __getattr__(name: str) -> object:
    """``privfed.load_model`` (:func:`privfed.model_file.load_model`), imported when first
    used, so that ``import privfed`` stays light."""
    if name == "load_model":
        from privfed.model_file import load_model

        return load_model
    raise AttributeError(f"module 'privfed' has no attribute {name!r}")
