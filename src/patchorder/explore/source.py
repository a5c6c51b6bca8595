"""Where an explorer's data comes from: an AttentionExport object, an .npz file, or a run directory."""
from __future__ import annotations

from pathlib import Path

from patchorder.attention import export as export_format
from patchorder.attention.export import AttentionExport
from patchorder.attention.relevance import RELEVANCE_SUFFIX

EXPORT_PATTERN = "attention*.npz"


class ExplorerInputError(ValueError):
    """The user pointed the explorer at something it cannot read; the message says what to pass instead."""


def find_export(path: str | Path) -> Path:
    """The .npz to read for ``path``: the file itself, or the newest ``**/attention*.npz`` under a run directory."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        found = [p for p in path.rglob(EXPORT_PATTERN) if p.is_file() and not p.stem.endswith(RELEVANCE_SUFFIX)]
        if not found:
            raise ExplorerInputError(
                f"no attention export ({EXPORT_PATTERN}) under run directory {path}; train with the attention "
                "callback enabled, run eval.py with attention export on, or pass the .npz file itself")
        return max(found, key=lambda p: (p.stat().st_mtime, str(p)))
    raise ExplorerInputError(f"{path} does not exist; pass an attention .npz file or a run directory that holds one")


def load_export(source: AttentionExport | str | Path) -> tuple[AttentionExport, str]:
    """The export and a short label naming where it came from."""
    if isinstance(source, AttentionExport):
        return source, source.extra.get("source", "") or ""
    npz = find_export(source)
    try:
        return export_format.load(npz), str(npz)
    except (ValueError, KeyError, OSError) as error:  # np.load raises these on files that are not exports
        raise ExplorerInputError(
            f"{npz} is not a readable patchorder attention export ({error}); pass a file written by "
            "patchorder.attention.export.save (the training callback and eval.py write them)") from error


def relevance_path(npz: str | Path) -> Path:
    """Where the whole-model views of export ``npz`` are: <tag>_relevance.npz beside <tag>.npz."""
    npz = Path(npz)
    return npz.with_name(f"{npz.stem}{RELEVANCE_SUFFIX}.npz")


def load_relevance(npz: str | Path | None) -> dict | None:
    """The arrays of the relevance file beside export ``npz`` (maps, curves, ERFs), or None when there is none.

    Read with allow_pickle=False (a file from a user); what the explorer uses is checked in explore.payload."""
    import numpy as np

    path = relevance_path(npz) if npz is not None else None
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files} | {"__source__": path.name}
    except (ValueError, OSError) as error:
        raise ExplorerInputError(f"{path} is not a readable relevance file ({error}); delete it or write it again "
                                 "with eval.py attention.attribution=true") from error
