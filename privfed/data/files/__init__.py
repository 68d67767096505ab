"""Loaders for the data a site (hospital, lab) brings in its own files.

:func:`load_file` reads what a :class:`FileSpec` describes and returns raw,
unscaled :class:`SiteArrays`:

- ``"csv"``, ``"parquet"``: one row per example (:mod:`.tabular`);
- ``"image_folder"``: ``root/<class>/<image>.png|jpg|jpeg`` (:mod:`.images`);
- ``"npz"``: image arrays with ``x_train``/``y_train`` or MedMNIST keys (:mod:`.images`);
- ``"python"``: a site's own function ``"package.module:function"`` (:mod:`.importpath`).

Every malformed input raises :class:`privfed.data.DataFormatError` naming the
file, the column or key, and what was expected. Preprocessing fitted on one
site's own training data: :class:`Standardizer`, :func:`stratified_holdout`.
"""

from __future__ import annotations

import importlib

from privfed.data.files.preprocess import Standardizer, stratified_holdout
from privfed.data.files.spec import FORMATS, FileSpec, SiteArrays

_LOADERS: dict[str, str] = {
    "csv": "tabular:load_tabular",
    "parquet": "tabular:load_tabular",
    "image_folder": "images:load_image_folder",
    "npz": "images:load_npz",
    "python": "importpath:load_python",
}
"""Each format's loader, imported when first used (pandas and Pillow only where needed)."""


def load_file(spec: FileSpec) -> SiteArrays:
    """Load the site data described by ``spec``.

    Parameters
    ----------
    spec : FileSpec
        Format, path and reading options.

    Returns
    -------
    SiteArrays
        Raw ``float32`` inputs ``(N, F)`` or ``(N, C, H, W)``, ``int64`` labels
        ``(N,)``, the classes and, where the file has one, its test split.

    Raises
    ------
    DataFormatError
        If the file is missing or malformed (see the format's loader).
    """
    module, function = _LOADERS[spec.format].split(":")
    loader = getattr(importlib.import_module(f"privfed.data.files.{module}"), function)
    return loader(spec)


__all__ = [
    "FORMATS",
    "FileSpec",
    "SiteArrays",
    "Standardizer",
    "load_file",
    "stratified_holdout",
]
