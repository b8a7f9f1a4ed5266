"""Writes the tabular tutorial's files (docs/tasks/tabular.md), offline, in a few seconds:

  data/train.csv  300 labeled rows     patient_id, 30 measurements, diagnosis (benign / malignant)
  data/pool.csv   126 unlabeled rows   patient_id and the measurements, no diagnosis column
  data/test.csv   143 labeled rows     held out: only for the final evaluation
  teachers/gbdt.pkl    scikit-learn HistGradientBoostingClassifier (gradient-boosted trees, XGBoost-style)
  teachers/linear.pkl  scikit-learn imputer + scaler + logistic regression

The rows are scikit-learn's bundled breast-cancer data set (Wolberg et al., UCI, 569 rows);
about 2 % of the measurement cells are blanked, as in real exports. The teachers are trained
on the raw columns of train.csv, blanks included, as a team would train them outside mtkd.

    python make_data.py [--out DIR]
"""
from __future__ import annotations

import argparse
import csv
import pickle
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def write_csv(path: Path, header: list[str], ids, x: np.ndarray, labels=None) -> None:
    with open(path, "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["patient_id", *header] + (["diagnosis"] if labels is not None else []))
        for i, row in enumerate(x):
            cells = ["" if np.isnan(v) else f"{v:.6g}" for v in row]
            w.writerow([ids[i], *cells] + ([labels[i]] if labels is not None else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent, help="folder for data/ and teachers/")
    args = parser.parse_args()
    bc = load_breast_cancer()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(bc.target))
    x = bc.data[order].astype(np.float64)
    names = np.asarray(bc.target_names)[bc.target[order]]  # 'malignant' / 'benign'
    ids = [f"P{10000 + i}" for i in order]
    x[rng.random(x.shape) < 0.02] = np.nan  # blank cells
    header = [c.replace(" ", "_") for c in bc.feature_names]
    parts = {"train": slice(0, 300), "pool": slice(300, 426), "test": slice(426, None)}
    (args.out / "data").mkdir(parents=True, exist_ok=True)
    for name, rows in parts.items():
        labels = None if name == "pool" else list(names[rows])
        write_csv(args.out / "data" / f"{name}.csv", header, ids[rows], x[rows], labels)
    # teachers trained elsewhere, on the raw training columns (NaN where a cell is blank)
    xt, yt = x[parts["train"]], names[parts["train"]]
    teachers = {"gbdt": HistGradientBoostingClassifier(max_iter=200, random_state=0),
                "linear": make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=1000))}
    (args.out / "teachers").mkdir(exist_ok=True)
    for name, model in teachers.items():
        model.fit(xt, yt)
        with open(args.out / "teachers" / f"{name}.pkl", "wb") as handle:
            pickle.dump(model, handle)
    print(f"wrote {args.out / 'data'} (train 300, pool 126, test {len(x) - 426} rows) and "
          f"{args.out / 'teachers'} ({', '.join(teachers)})")


if __name__ == "__main__":
    main()
