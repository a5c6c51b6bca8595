"""Train a VMamba with a chosen patch ordering (Hydra entry point). Not implemented yet."""
import sys

if __name__ == "__main__":
    print("train.py: training is not implemented yet (see the training-pipeline issue); "
          "`make train` runs the ordering demo meanwhile.", file=sys.stderr)
    sys.exit(2)
