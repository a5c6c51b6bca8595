"""Which ImageNet classes a run uses: the ``subset`` spec of imagenet_subset, resolved to a sorted wnid list.

Spec forms:
- a bundled name: ``imagenette``, ``imagewoof`` (fast.ai, 10 classes each), ``imagenet100`` (CMC, Tian et al.);
- ``all``: every class folder in ``root/train``;
- ``random:N:SEED``: N classes drawn with SEED from the class folders in ``root/train``;
- a list of wnids (``data.subset=[n01440764,n02102040]``) or one comma-separated string;
- a path to a text file: one wnid per line, ``#`` starts a comment, blank lines are skipped, text after the
  wnid on the same line is ignored (so timm's/Kaggle's "wnid description" synset files work as they are).
The class index of a wnid is its position in the sorted list.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from patchorder.errors import DataConfigError

BUNDLED = ("imagenette", "imagewoof", "imagenet100")
WNID = re.compile(r"^n\d{8}$")
RANDOM_SPEC = re.compile(r"^random:(\d+):(\d+)$")


@dataclass(frozen=True)
class ResolvedSubset:
    spec: str  # the spec as the user wrote it (lists joined with commas)
    kind: str  # "bundled", "all", "random", "list" or "file"
    wnids: list[str]  # sorted: index i is class i


def bundled_wnids(name: str) -> list[str]:
    """The wnids of a bundled list, in the file's order."""
    text = resources.files("patchorder.data").joinpath("class_lists", f"{name}.txt").read_text()
    return parse_class_list(text, source=f"bundled list {name!r}")


def parse_class_list(text: str, source: str) -> list[str]:
    """Wnids from class-list text; a line that does not start with a wnid raises an error naming the line."""
    wnids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        wnid = content.split()[0]
        if not WNID.match(wnid):
            raise DataConfigError(
                f"{source}, line {number}: {line.strip()!r} does not start with a wnid like n01440764. "
                "Put one wnid per line; start comments with #."
            )
        if wnid in seen:
            raise DataConfigError(f"{source}, line {number}: {wnid} is listed twice (first on line {seen[wnid]})")
        seen[wnid] = number
        wnids.append(wnid)
    if not wnids:
        raise DataConfigError(f"{source} lists no wnids: put one wnid (e.g. n01440764) per line")
    return wnids


def list_class_folders(split_dir: Path) -> list[str]:
    """Names of the sub-directories of ``split_dir``, hidden ones skipped (only that directory is listed)."""
    with os.scandir(split_dir) as entries:
        return sorted(entry.name for entry in entries if entry.is_dir() and not entry.name.startswith("."))


def resolve_subset(spec: str | Sequence[str], train_dir: Path) -> ResolvedSubset:
    """Turn a spec into the sorted wnid list; ``train_dir`` is only listed for ``all`` and ``random:``."""
    if not isinstance(spec, str):
        return ResolvedSubset(",".join(map(str, spec)), "list", _inline(list(spec)))
    text = spec.strip()
    if text in BUNDLED:
        return ResolvedSubset(text, "bundled", sorted(bundled_wnids(text)))
    if text == "all":
        return ResolvedSubset(text, "all", list_class_folders(train_dir))
    if text.startswith("random"):
        return ResolvedSubset(text, "random", _random(text, train_dir))
    if "," in text or WNID.match(text):
        return ResolvedSubset(text, "list", _inline([part.strip() for part in text.split(",")]))
    path = Path(text).expanduser()
    if path.is_file():
        return ResolvedSubset(text, "file", sorted(parse_class_list(path.read_text(), source=f"class list {path}")))
    raise DataConfigError(
        f"data.subset={text!r} is not a bundled list ({', '.join(BUNDLED)}), 'all', a random:N:SEED spec, "
        f"a list of wnids, or an existing class-list file (looked for {path.resolve()})"
    )


def _inline(wnids: list[str]) -> list[str]:
    bad = [w for w in wnids if not isinstance(w, str) or not WNID.match(w)]
    if bad:
        raise DataConfigError(f"data.subset has entries that are not wnids like n01440764: {bad}")
    duplicates = sorted({w for w in wnids if wnids.count(w) > 1})
    if duplicates:
        raise DataConfigError(f"data.subset lists these wnids more than once: {duplicates}")
    if not wnids:
        raise DataConfigError("data.subset is an empty list: name at least one wnid")
    return sorted(wnids)


def _random(text: str, train_dir: Path) -> list[str]:
    match = RANDOM_SPEC.match(text)
    if not match:
        raise DataConfigError(
            f"data.subset={text!r} is not a valid random spec: write random:N:SEED with two non-negative "
            "integers, e.g. random:10:0 for 10 classes drawn with seed 0"
        )
    count, seed = int(match.group(1)), int(match.group(2))
    available = list_class_folders(train_dir)
    if count < 1:
        raise DataConfigError(f"data.subset={text!r} asks for {count} classes: N must be at least 1")
    if count > len(available):
        raise DataConfigError(
            f"data.subset={text!r} asks for {count} classes but {train_dir} has only {len(available)} class "
            f"folders: use N <= {len(available)}"
        )
    chosen = np.random.default_rng(seed).choice(len(available), size=count, replace=False)
    return sorted(available[i] for i in chosen)
