"""privfed: privacy-preserving federated learning."""

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__: str = version("privfed")
    """The installed distribution's version ("0+unknown" in a source tree never installed)."""
except PackageNotFoundError:  # pragma: no cover - a source checkout that was never installed
    __version__ = "0+unknown"
