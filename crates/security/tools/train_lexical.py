#!/usr/bin/env python3
"""Train the built-in lexical model (rules/default.model).

A logistic regression over the distinct words and adjacent word pairs of each
prompt's normalised word view (as the detector sees it: the `detect` example's
`--normalized` output), benign texts weighted twice, L2-regularised; the 4,000
largest weights by magnitude are kept.

Training data:

* every labelled corpus file under tests/data except the measurement rounds in
  HELD_OUT (attacks*.jsonl are label 1, benign*.jsonl label 0);
* benign technical text: chunks (300 to 4,000 characters) of the files matched
  by each `--technical GLOB`, half of the files (chosen by a hash of their
  path) for training. Without it, the model learns that long documentation
  and code look unlike the corpus's benign prompts, and flags them. The
  shipped model used the README.md, CHANGELOG.md and src/lib.rs of the crates
  in the local cargo registry and the Python standard library's modules.
  The shipped model also used the Python packages installed beside the
  standard library and the Debian documentation under /usr/share/doc.
  `--held-out FILE` writes the other half's chunks as JSON lines, to measure
  false positives on technical text the model never saw. Which files the
  globs match depends on the machine (the crates the registry holds), so a
  model retrained elsewhere is close to, not byte for byte, the shipped one.

Needs scikit-learn (pip install scikit-learn).

    cargo build --release -p agent-patterns-security --example detect
    python3 crates/security/tools/train_lexical.py target/release/examples/detect \\
        --technical "$HOME/.cargo/registry/src/*/*/README.md" \\
        --technical "$HOME/.cargo/registry/src/*/*/CHANGELOG.md" \\
        --technical "$HOME/.cargo/registry/src/*/*/src/lib.rs" \\
        --technical "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')/*.py" \\
        --technical "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/*/*.py" \\
        --technical "/usr/share/doc/*/*"
"""
import argparse
import glob
import hashlib
import json
import os
import random
import subprocess
import tempfile

from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "tests", "data")
OUT = os.path.join(HERE, "..", "rules", "default.model")
# Rounds never trained on: they measure the detector on unseen text.
HELD_OUT = ("holdout24", "holdout35", "holdout37", "holdout40", "holdout45", "holdout48", "holdout50", "holdout51", "holdout54", "holdout56", "holdout58", "holdout60", "holdout61", "holdout64", "holdout66", "holdout68")
KEEP = 4000
C = 1.0
BENIGN_WEIGHT = 2.0
CHUNK_SIZES = [300, 600, 1000, 1500, 2500, 4000]
MAX_FILE_CHARS = 8000


def normalized(detect, texts):
    with tempfile.TemporaryFile() as f:
        for t in texts:
            f.write((json.dumps({"text": t}) + "\n").encode())
        f.seek(0)
        out = subprocess.run([detect, "--normalized"], stdin=f, capture_output=True, check=True)
    return [json.loads(line) for line in out.stdout.decode().splitlines()]


def corpus_file(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def technical_chunks(patterns):
    """(training chunks, held-out chunks) of the files the globs match."""
    parts = ([], [])
    for path in sorted({p for g in patterns for p in glob.glob(os.path.expanduser(g))}):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_FILE_CHARS)
        except (OSError, UnicodeDecodeError):
            continue
        part = int(hashlib.md5(path.encode()).hexdigest(), 16) % 2
        rng = random.Random(path)
        at = 0
        while at < len(text):
            size = rng.choice(CHUNK_SIZES)
            piece = text[at:at + size]
            if len(piece.strip()) > 80:
                parts[part].append(piece)
            at += size
    return parts


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("detect", nargs="?", default="target/release/examples/detect")
    args.add_argument("--technical", action="append", default=[], metavar="GLOB")
    args.add_argument("--held-out", metavar="FILE")
    opts = args.parse_args()

    texts, labels = [], []
    for path in sorted(glob.glob(os.path.join(DATA, "*.jsonl"))):
        name = os.path.basename(path)
        if any(h + "." in name for h in HELD_OUT):
            continue
        label = 1 if name.startswith("attacks") else 0 if name.startswith("benign") else None
        if label is None:
            continue
        rows = corpus_file(path)
        texts += rows
        labels += [label] * len(rows)
    train, held = technical_chunks(opts.technical)
    texts += train
    labels += [0] * len(train)
    if opts.held_out:
        with open(opts.held_out, "w", encoding="utf-8") as f:
            for t in held:
                f.write(json.dumps({"text": t}) + "\n")
    words = normalized(opts.detect, texts)
    vec = CountVectorizer(binary=True, ngram_range=(1, 2), token_pattern=r"[^ ]+",
                          min_df=2, lowercase=False)
    matrix = vec.fit_transform(words)
    model = LogisticRegression(C=C, max_iter=3000, class_weight={0: BENIGN_WEIGHT, 1: 1.0})
    model.fit(matrix, labels)
    weights = model.coef_[0]
    names = vec.get_feature_names_out()
    order = sorted(range(len(weights)), key=lambda i: -abs(weights[i]))[:KEEP]
    order.sort(key=lambda i: -weights[i])
    with open(OUT, "w", encoding="utf-8") as f:
        f.write("# Lexical model of the prompt-injection detector: a logistic regression\n")
        f.write("# over the distinct words and adjacent word pairs of the normalised text.\n")
        f.write(f"# Trained by tools/train_lexical.py on {len(texts)} texts ({sum(labels)} attacks, "
                f"{len(train)} chunks of technical text); {KEEP} largest weights kept.\n")
        f.write(f"bias {model.intercept_[0]:.4f}\n")
        for i in order:
            if weights[i] != 0.0:
                f.write(f"{weights[i]:.4f} {names[i]}\n")
    print(f"wrote {OUT}: {len(order)} entries from {len(texts)} texts "
          f"({len(train)} technical chunks, {len(held)} held out)")


if __name__ == "__main__":
    main()
