"""Train a VMamba with a chosen patch ordering (Hydra entry point; the job itself is patchorder.training.run).

    python train.py                                  # experiment=quick: vmamba_micro on digits, CPU
    python train.py ordering=spiral trainer.max_epochs=3
    python train.py -m ordering=row_major,diagonal,morton,spiral
    python train.py experiment=paper data.root=/data/imagenet trainer.devices=8
"""
import hydra
from omegaconf import DictConfig

from patchorder.training.config import register_resolvers

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from patchorder.training.run import main as run_training

    return run_training(cfg)


if __name__ == "__main__":
    main()
