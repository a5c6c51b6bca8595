"""Evaluate a checkpoint (Hydra entry point). Not implemented yet."""
import sys

if __name__ == "__main__":
    print("eval.py: evaluation is not implemented yet (see the training-pipeline issue).", file=sys.stderr)
    sys.exit(2)
