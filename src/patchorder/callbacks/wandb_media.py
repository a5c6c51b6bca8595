"""Rendered attention and feature tables to a W&B run (only called when a WandbLogger is present).

Pictures go as ``wandb.Image`` built from uint8 arrays (wandb 0.31 renders float arrays black); embeddings as
``wandb.plot.scatter`` charts, whose table wandb logs under ``<key>_table``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from patchorder.artifacts.render import RenderedAttention

STEP_KEY = "trainer/global_step"  # Lightning's WandbLogger plots every metric against this key


def is_online(run: Any) -> bool:
    return not (getattr(run, "offline", True) or getattr(run, "disabled", False))


def attention_payload(rendered: RenderedAttention, prefix: str = "attention", pictures: bool = True) -> dict:
    """The wandb.log dict of a rendered export: pictures, metric scalars and embedding scatter charts."""
    import wandb

    payload: dict[str, Any] = {f"{prefix}/{k}": v for k, v in rendered.scalars().items()}
    if pictures:
        for key, items in rendered.pictures.items():
            images = [wandb.Image(array, caption=caption) for array, caption in items]
            payload[f"{prefix}/{key}"] = images[0] if len(images) == 1 else images
    for key, table in rendered.embeddings.items():
        data = wandb.Table(columns=table.columns, data=table.rows)
        payload[f"{prefix}/{key}"] = wandb.plot.scatter(data, "x", "y", title=table.title)
    return payload


def log_attention(run: Any, rendered: RenderedAttention, paths: dict, step: int, tag: str,
                  prefix: str = "attention", media: bool = True) -> None:
    """Log a written export to ``run`` at ``step``; the .npz and metrics JSON become an artifact when online.

    ``media=False`` logs only the report (used when the same weights were already logged at this step).
    """
    payload = attention_payload(rendered, prefix) if media else {}
    if paths.get("report") is not None:
        from patchorder.explore import to_wandb_html

        payload[f"{prefix}/report"] = to_wandb_html(paths["report"])
    if payload:
        run.log({**payload, STEP_KEY: step})
    if is_online(run):
        log_artifact(run, paths, tag)


def log_artifact(run: Any, paths: dict, tag: str) -> None:
    import wandb

    artifact = wandb.Artifact(f"attention-{run.id}", type="attention", metadata={"tag": tag})
    for key in ("npz", "metrics", "report"):
        if paths.get(key) is not None:
            artifact.add_file(str(paths[key]), name=Path(paths[key]).name)
    run.log_artifact(artifact, aliases=[tag, "latest"])
