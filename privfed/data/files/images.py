"""Image data of one site: a folder per class, or a ``.npz`` of image arrays.

Images come out as ``float32`` ``(N, C, H, W)`` with raw pixel values (0..255
for 8-bit images); scaling is done elsewhere. With ``image_size`` set every
image is resized to ``(H, W)`` with Pillow's bilinear filter; with ``channels``
set grayscale images are repeated to RGB or RGB reduced to luminance
(ITU-R 601-2, as Pillow's ``"L"`` mode).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from privfed.data.errors import DataFormatError
from privfed.data.files.spec import FileSpec, SiteArrays, describe_rows, encode_labels

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
NPZ_LAYOUTS = {
    "generic": {"train": [("x_train", "y_train")], "test": [("x_test", "y_test")]},
    "medmnist": {
        "train": [("train_images", "train_labels"), ("val_images", "val_labels")],
        "test": [("test_images", "test_labels")],
    },
}


def check_finite(x: np.ndarray, where: str) -> None:
    """Raise :class:`DataFormatError` naming ``where`` if ``x`` (``(N, ...)``) holds NaN or inf."""
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise DataFormatError(
            f"{where}: NaN or infinite values in {describe_rows(bad, tabular=False)}"
        )


def match_channels(x: np.ndarray, channels: int | None, where: str) -> np.ndarray:
    """Convert ``(N, C, H, W)`` images to ``channels`` (1 or 3); ``None`` keeps them.

    Raises
    ------
    DataFormatError
        If a conversion is asked for images that have neither 1 nor 3 channels.
    """
    have = x.shape[1]
    if channels is None or channels == have:
        return x
    if have == 1:
        return np.repeat(x, channels, axis=1)
    if have == 3:
        return np.tensordot(x, LUMA, axes=([1], [0]))[:, None].astype(np.float32)
    raise DataFormatError(f"{where}: images have {have} channels; cannot convert to {channels}")


def resize_images(x: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Resize ``float32`` ``(N, C, H, W)`` images to ``size = (H, W)`` (Pillow, bilinear)."""
    if size is None or x.shape[2:] == size:
        return x
    out = np.empty((*x.shape[:2], *size), dtype=np.float32)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            plane = Image.fromarray(np.ascontiguousarray(x[n, c], dtype=np.float32))
            resized = plane.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            out[n, c] = np.asarray(resized, dtype=np.float32)
    return out


def _class_folders(root: Path, classes: tuple[str, ...] | None) -> list[tuple[str, Path]]:
    if not root.is_dir():
        raise DataFormatError(f"{root}: image folder not found")
    folders = {p.name: p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if not folders:
        raise DataFormatError(f"{root}: no class folders; expected {root}/<class>/<image>.png")
    names = sorted(folders) if classes is None else list(classes)
    missing = [c for c in names if c not in folders]
    if missing:
        raise DataFormatError(
            f"{root}: declared class(es) {missing} have no folder (folders: {sorted(folders)})"
        )
    extra = sorted(set(folders) - set(names))
    if extra:
        raise DataFormatError(f"{root}: folder(s) {extra} are not declared classes {names}")
    return [(name, folders[name]) for name in names]


def _image_files(folder: Path) -> list[Path]:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise DataFormatError(
            f"{folder}: class folder holds no images ({', '.join(IMAGE_EXTENSIONS)})"
        )
    return files


def _read_image(path: Path, channels: int | None, size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()
            gray = channels == 1 or (channels is None and img.mode in GRAY_MODES)
            img = img.convert("L" if gray else "RGB")
            if size is not None:
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.float32)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataFormatError(f"{path}: unreadable image ({exc})") from exc
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def load_image_folder(spec: FileSpec) -> SiteArrays:
    """Load images from ``spec.path/<class>/<file>.png|jpg|jpeg``.

    Class folders are taken in ``spec.classes`` order, or sorted by name;
    files within a folder are sorted by name; hidden entries and files with
    other extensions are ignored. With ``channels=None`` the images are
    grayscale if all are, else RGB.

    Parameters
    ----------
    spec : FileSpec
        ``format`` ``"image_folder"``.

    Returns
    -------
    SiteArrays
        ``x`` float32 ``(N, C, H, W)`` in 0..255, ``y`` int64 class indices; no test split.

    Raises
    ------
    DataFormatError
        If the folder is missing or has no class folders, a declared class has
        no folder or a folder is not a declared class, a class folder has no
        images, an image is unreadable, or (without ``image_size``) the images
        differ in size (naming the first file that differs).
    """
    root = Path(spec.path)
    images: list[np.ndarray] = []
    labels: list[int] = []
    paths: list[Path] = []
    folders = _class_folders(root, spec.classes)
    for label, (_, folder) in enumerate(folders):
        for path in _image_files(folder):
            images.append(_read_image(path, spec.channels, spec.image_size))
            labels.append(label)
            paths.append(path)
    for path, image in zip(paths, images, strict=True):
        if image.shape[1:] != images[0].shape[1:]:
            raise DataFormatError(
                f"{path}: image size {image.shape[1:]} differs from {images[0].shape[1:]} of "
                f"{paths[0]}; set data.image_size to resize all images"
            )
    channels = max(image.shape[0] for image in images)
    x = np.stack([match_channels(i[None], channels, str(root))[0] for i in images])
    classes = tuple(name for name, _ in folders)
    return SiteArrays(x=x, y=np.asarray(labels, dtype=np.int64), classes=classes)


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataFormatError(f"{path}: no such npz file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataFormatError(f"{path}: not a readable .npz file ({exc})") from exc


def _npz_layout(arrays: dict[str, np.ndarray], path: Path) -> dict[str, list[tuple[str, str]]]:
    for layout in NPZ_LAYOUTS.values():
        pairs = {
            split: [p for p in layout_pairs if p[0] in arrays or p[1] in arrays]
            for split, layout_pairs in layout.items()
        }
        if not any(pairs.values()):
            continue
        complete = all(key in arrays for split in pairs.values() for p in split for key in p)
        if complete and layout["train"][0] in pairs["train"]:
            return pairs
        break
    expected = " or ".join(
        "{" + ", ".join(k for ps in layout.values() for p in ps for k in p) + "}"
        for layout in NPZ_LAYOUTS.values()
    )
    raise DataFormatError(
        f"{path}: missing or unpaired keys (found: {', '.join(sorted(arrays)) or 'none'}); "
        f"expected {expected} (train keys required, test keys in pairs optional)"
    )


def npz_images(images: np.ndarray, where: str) -> np.ndarray:
    """Convert ``(N, H, W)`` or ``(N, H, W, 1|3)`` images to ``float32`` ``(N, C, H, W)``.

    Raises
    ------
    DataFormatError
        If the array is not numeric, has the wrong number of dimensions, or
        holds NaN or infinite values.
    """
    if images.dtype.kind not in "iuf":
        raise DataFormatError(f"{where}: images must be numeric, got dtype {images.dtype}")
    if images.ndim == 3:
        chw = images[:, None]
    elif images.ndim == 4 and images.shape[3] in (1, 3):
        chw = images.transpose(0, 3, 1, 2)
    else:
        raise DataFormatError(
            f"{where}: images must have shape (N, H, W) or (N, H, W, 3), got {images.shape}"
        )
    x = np.ascontiguousarray(chw, dtype=np.float32)
    check_finite(x, where)
    return x


def integer_labels(labels: np.ndarray, where: str) -> np.ndarray:
    """Check integer-valued labels ``(N,)`` or ``(N, 1)``; return them as ``int64`` ``(N,)``.

    Raises
    ------
    DataFormatError
        If the labels are not numeric, not integer-valued (or NaN), or of another shape.
    """
    if labels.dtype.kind not in "iuf" or labels.shape not in {(len(labels),), (len(labels), 1)}:
        raise DataFormatError(
            f"{where}: labels must be integers of shape (N,) or (N, 1), "
            f"got {labels.dtype} {labels.shape}"
        )
    flat = labels.reshape(-1)
    bad = ~np.isfinite(flat) | (flat != np.round(flat)) if flat.dtype.kind == "f" else None
    if bad is not None and bad.any():
        raise DataFormatError(
            f"{where}: labels must be integer-valued, got NaN or fractions in "
            f"{describe_rows(bad, tabular=False)}"
        )
    return flat.astype(np.int64)


def _npz_split(
    arrays: dict[str, np.ndarray], pairs: list[tuple[str, str]], spec: FileSpec, path: Path
) -> tuple[np.ndarray, np.ndarray] | None:
    parts = []
    for x_key, y_key in pairs:
        x = npz_images(arrays[x_key], f"{path}: key {x_key!r}")
        y = integer_labels(arrays[y_key], f"{path}: key {y_key!r}")
        if len(x) != len(y):
            raise DataFormatError(
                f"{path}: key {x_key!r} has {len(x)} images but key {y_key!r} has {len(y)} labels"
            )
        x = resize_images(
            match_channels(x, spec.channels, f"{path}: key {x_key!r}"), spec.image_size
        )
        if parts and x.shape[1:] != parts[0][0].shape[1:]:
            raise DataFormatError(
                f"{path}: key {x_key!r} images have shape {x.shape[1:]} but key "
                f"{pairs[0][0]!r} has {parts[0][0].shape[1:]}"
            )
        parts.append((x, y))
    if not parts:
        return None
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_npz(spec: FileSpec) -> SiteArrays:
    """Load images from a ``.npz`` file.

    Keys: ``x_train``/``y_train`` with optional ``x_test``/``y_test``, or the
    MedMNIST keys ``train_images``/``train_labels`` with optional
    ``val_*`` (merged into train) and ``test_*``. Images ``(N, H, W)``
    (grayscale) or ``(N, H, W, 3)`` (RGB); labels ``(N,)`` or ``(N, 1)`` integers.

    Parameters
    ----------
    spec : FileSpec
        ``format`` ``"npz"``.

    Returns
    -------
    SiteArrays
        ``x`` float32 ``(N, C, H, W)`` with raw pixel values, ``y`` int64 and,
        when the file has test keys, ``x_test``/``y_test``. Classes are shared
        by both splits.

    Raises
    ------
    DataFormatError
        If the file is missing or unreadable, keys are missing or unpaired
        (listing the keys found and the expected sets), images and labels
        differ in length (naming both keys), images hold NaN or have the wrong
        number of dimensions, or a label is not in ``spec.classes``.
    """
    path = Path(spec.path)
    arrays = _read_npz(path)
    layout = _npz_layout(arrays, path)
    x, y_raw = _npz_split(arrays, layout["train"], spec, path)
    test = _npz_split(arrays, layout["test"], spec, path)
    if test is not None and test[0].shape[1:] != x.shape[1:]:
        raise DataFormatError(
            f"{path}: test images have shape {test[0].shape[1:]} but train images {x.shape[1:]}"
        )
    keys = ", ".join(repr(p[1]) for split in layout.values() for p in split)
    y_all = y_raw if test is None else np.concatenate([y_raw, test[1]])
    labels, classes = encode_labels(y_all, spec.classes, f"{path}: keys {keys}", tabular=False)
    if test is None:
        return SiteArrays(x=x, y=labels, classes=classes)
    y, y_test = labels[: len(y_raw)], labels[len(y_raw) :]
    return SiteArrays(x=x, y=y, classes=classes, x_test=test[0], y_test=y_test)
