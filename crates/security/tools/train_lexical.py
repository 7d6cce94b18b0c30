#!/usr/bin/env python3
"""Train the built-in lexical model (rules/default.model) from tests/data.

A logistic regression over the distinct words and adjacent word pairs of each
prompt's normalised word view (as the detector sees it: the `detect` example's
`--normalized` output), benign prompts weighted twice, L2-regularised; the
4,000 largest weights by magnitude are kept.

Training data: every labelled corpus file under tests/data except the
measurement rounds named in HELD_OUT (attacks*.jsonl are label 1, benign*.jsonl
label 0). Needs scikit-learn (pip install scikit-learn).

    cargo build --release -p agent-patterns-security --example detect
    python3 crates/security/tools/train_lexical.py target/release/examples/detect
"""
import glob
import json
import os
import subprocess
import sys

from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data")
OUT = os.path.join(HERE, "..", "rules", "default.model")
# Rounds never trained on: they measure the detector on unseen text.
HELD_OUT = ("holdout21", "holdout22")
KEEP = 4000
C = 1.0
BENIGN_WEIGHT = 2.0


def normalized(detect, path):
    with open(path, "rb") as f:
        out = subprocess.run([detect, "--normalized"], stdin=f, capture_output=True, check=True)
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def main():
    detect = sys.argv[1] if len(sys.argv) > 1 else "target/release/examples/detect"
    texts, labels = [], []
    for path in sorted(glob.glob(os.path.join(DATA, "*.jsonl"))):
        name = os.path.basename(path)
        if any(h + "." in name for h in HELD_OUT):
            continue
        label = 1 if name.startswith("attacks") else 0 if name.startswith("benign") else None
        if label is None:
            continue
        rows = normalized(detect, path)
        texts += rows
        labels += [label] * len(rows)
    vec = CountVectorizer(binary=True, ngram_range=(1, 2), token_pattern=r"[^ ]+",
                          min_df=2, lowercase=False)
    matrix = vec.fit_transform(texts)
    model = LogisticRegression(C=C, max_iter=2000, class_weight={0: BENIGN_WEIGHT, 1: 1.0})
    model.fit(matrix, labels)
    weights = model.coef_[0]
    names = vec.get_feature_names_out()
    order = sorted(range(len(weights)), key=lambda i: -abs(weights[i]))[:KEEP]
    order.sort(key=lambda i: -weights[i])
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("# Lexical model of the prompt-injection detector: a logistic regression\n")
        f.write("# over the distinct words and adjacent word pairs of the normalised text.\n")
        f.write(f"# Trained by tools/train_lexical.py on {len(texts)} prompts "
                f"({sum(labels)} attacks); {KEEP} largest weights kept.\n")
        f.write(f"bias {model.intercept_[0]:.4f}\n")
        for i in order:
            if weights[i] != 0.0:
                f.write(f"{weights[i]:.4f} {names[i]}\n")
    print(f"wrote {OUT}: {len(order)} entries from {len(texts)} prompts")


if __name__ == "__main__":
    main()
