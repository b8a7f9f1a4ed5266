"""Accuracy of a predictions file (from `mtkd predict`) against the label column of the input file.

    python score.py predictions.csv data/test.csv diagnosis
"""
import csv
import sys

predicted, truth, label = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "diagnosis"
with open(predicted, newline="") as p, open(truth, newline="") as t:
    pairs = list(zip((r["prediction"] for r in csv.DictReader(p)), (r[label] for r in csv.DictReader(t))))
print(f"accuracy of {predicted}: {sum(a == b for a, b in pairs) / len(pairs):.4f} on {len(pairs)} rows")
