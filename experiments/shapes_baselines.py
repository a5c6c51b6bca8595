"""How much of the shapes task can be solved WITHOUT relating the two marks? Shortcut baselines per task.

The class of a shapes image is the relation between two marks; these baselines see less than that:
- chance: the most frequent class (classes are balanced, so 1 / number of classes);
- first mark only / second mark only: a random forest given the true centre (row, col) of ONE mark, read from the
  generator's layout (the anchor / target in the direction task, either end of the line in the alignment task).
  Near the borders one position rules some classes out (nothing can lie right of a mark at the right edge);
- linear on pixels: logistic regression on the raw pixels (no way to relate two distant marks).
A model that relates the marks can reach 100%; the gap between these numbers and 100% is what the task measures.

    python experiments/shapes_baselines.py            # 600 train / 150 test images per class, medium and hard
    python experiments/shapes_baselines.py --quick    # 200 / 50 per class, medium only
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from patchorder.data import shapes_generator as gen


def centres(layouts, which: str) -> np.ndarray:
    return np.array([[getattr(layout, which).row, getattr(layout, which).col] for layout in layouts])


def accuracy(model, train_x, train_y, test_x, test_y) -> float:
    return float((model.fit(train_x, train_y).predict(test_x) == test_y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    train_n, test_n = (200, 50) if args.quick else (600, 150)
    difficulties = ("medium",) if args.quick else ("medium", "hard")
    print(f"{'task':<10} {'difficulty':<10} {'chance':>7} {'1st mark':>9} {'2nd mark':>9} {'linear px':>10}")
    for task in gen.TASKS:
        for difficulty in difficulties:
            train_images, train_y, train_layouts = gen.generate(train_n, (32, 32), task, difficulty, seed=1)
            test_images, test_y, test_layouts = gen.generate(test_n, (32, 32), task, difficulty, seed=2)
            forest = lambda: RandomForestClassifier(n_estimators=100, min_samples_leaf=5, random_state=0)
            first = accuracy(forest(), centres(train_layouts, "first"), train_y, centres(test_layouts, "first"), test_y)
            second = accuracy(forest(), centres(train_layouts, "second"), train_y, centres(test_layouts, "second"), test_y)
            pixels = accuracy(
                LogisticRegression(max_iter=300),
                train_images.reshape(len(train_images), -1) / 255.0,
                train_y,
                test_images.reshape(len(test_images), -1) / 255.0,
                test_y,
            )
            chance = np.bincount(test_y).max() / len(test_y)
            print(f"{task:<10} {difficulty:<10} {chance:>7.3f} {first:>9.3f} {second:>9.3f} {pixels:>10.3f}")


if __name__ == "__main__":
    main()
