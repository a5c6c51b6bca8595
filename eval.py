"""Evaluate a checkpoint (Hydra entry point; the job itself is patchorder.training.evaluate).

    python eval.py ckpt_path=outputs/<date>/<time>_row_major/checkpoints/last.ckpt
    python eval.py ckpt_path=... ordering=spiral     # trained with one ordering, tested with another
    python eval.py ckpt_path=... split=val
"""
import hydra
from omegaconf import DictConfig

from patchorder.training.config import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    from patchorder.training.evaluate import main as run_evaluation

    return run_evaluation(cfg)


if __name__ == "__main__":
    main()
