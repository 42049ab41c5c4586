"""Probes of frozen encoder features against a label column: I-JEPA's evaluation of what an encoder
learned, apart from the heads and the shared space.

    input   not an encoder: the preprocessed inputs themselves (image pixels flattened, the audio
            log-mel spectrum averaged over time, a caption's bag of token ids), the floor that
            features worth training should clear (I-JEPA's table quotes raw pixels beside its probes)

    linear  scikit-learn's multinomial logistic regression on standardised mean-pooled features,
            its inverse regularisation C picked from C_GRID on a held-out fifth of the training rows
            (then refit on all of them)
    k-NN    DINO's weighted k-NN (Caron et al. 2021, as I-JEPA reports it): cosine similarity to
            the training rows, the k nearest vote with weight exp(sim / 0.07)

Training and test features come from two manifests (`--data`, `--test`) or, with one, from a
seeded 80/20 split of its rows. Rows without a label are left out and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..modality import get_modality
from ..model import MultiJEPA
from .embed import embed_rows, manifest_labels, open_manifest

C_GRID = (0.01, 0.1, 1.0, 10.0)
KNN_TEMPERATURE = 0.07


def labelled_features(model: MultiJEPA, manifest: str | Path, modality: str, encoder: str = "online",
                      batch_size: int = 128, progress: bool = True) -> tuple[np.ndarray, list[str], int]:
    """-> (features (n, D) float32, labels (n,), rows left out for lacking a label) of one modality."""
    dataset = open_manifest(model, manifest, [modality])
    labels = manifest_labels(dataset)
    if labels is None:
        raise ValueError(f"{manifest}: no label column ('{dataset.source.columns.get('label', 'label')}') to probe against")
    encode = ((lambda m, x: input_features(model, m, x)) if encoder == "input"
              else (lambda m, x: model.features(m, x, encoder)))
    feats, _ = embed_rows(model, dataset, batch_size=batch_size, progress=progress, encode=encode)
    if modality not in feats:
        raise ValueError(f"{manifest}: no rows with {modality}")
    x, rows = feats[modality]
    keep = [i for i, r in enumerate(rows.tolist()) if labels[r] is not None]
    return x[keep].numpy(), [labels[r] for r in rows[keep].tolist()], len(rows) - len(keep)


def input_features(model: MultiJEPA, modality: str, x: torch.Tensor) -> torch.Tensor:
    """Preprocessed inputs -> (B, F) with no network (`Modality.raw_features`): image pixels, the
    mean log-mel spectrum of audio, token counts of text over its length."""
    return get_modality(modality).raw_features(model.processors.of(modality), x)


def linear_probe(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, test_y: list[str],
                 seed: int = 0) -> dict:
    """Top-1 of logistic regression, C chosen on a held-out fifth of the training rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    xtr, xte = scaler.transform(train_x), scaler.transform(test_x)
    ytr = np.asarray(train_y)
    order = np.random.default_rng(seed).permutation(len(ytr))
    fit, val = order[len(ytr) // 5:], order[: len(ytr) // 5]

    def model(c, rows):
        return LogisticRegression(C=c, max_iter=2000).fit(xtr[rows], ytr[rows])

    if len(val) and len(set(ytr[fit])) > 1:
        best_c = max(C_GRID, key=lambda c: (model(c, fit).predict(xtr[val]) == ytr[val]).mean())
    else:
        best_c = 1.0
    clf = model(best_c, np.arange(len(ytr)))
    return {"top1": float((clf.predict(xte) == np.asarray(test_y)).mean()), "C": best_c}


def knn_probe(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, test_y: list[str], k: int = 20) -> dict:
    """Top-1 of DINO's weighted k-NN classifier on cosine similarity."""
    classes = sorted(set(train_y))
    code = {c: i for i, c in enumerate(classes)}
    ytr = torch.tensor([code[y] for y in train_y])
    a = torch.nn.functional.normalize(torch.from_numpy(train_x).float(), dim=1)
    b = torch.nn.functional.normalize(torch.from_numpy(test_x).float(), dim=1)
    k = min(k, len(train_y))
    sim, idx = (b @ a.T).topk(k, dim=1)  # (n_test, k)
    votes = torch.zeros(len(test_y), len(classes)).scatter_add_(1, ytr[idx], (sim / KNN_TEMPERATURE).exp())
    pred = [classes[i] for i in votes.argmax(1).tolist()]
    return {"top1": float(np.mean([p == y for p, y in zip(pred, test_y)])), "k": k}


def split_rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded 80/20 split of n rows -> (train positions, test positions)."""
    order = np.random.default_rng(seed).permutation(n)
    cut = n - max(1, n // 5)
    return np.sort(order[:cut]), np.sort(order[cut:])


def probe_eval(model: MultiJEPA, train: str | Path, test: str | Path | None, modalities: list[str],
               encoder: str = "online", k: int = 20, batch_size: int = 128, seed: int = 0,
               progress: bool = True) -> dict:
    """{modality: {"linear": {...}, "knn": {...}, "n_train", "n_test", "unlabelled"}} for each modality."""
    results = {}
    for m in modalities:
        x, y, skipped = labelled_features(model, train, m, encoder, batch_size, progress)
        if test is None:
            tr, te = split_rows(len(y), seed)
            x_test, y_test = x[te], [y[i] for i in te]
            x, y = x[tr], [y[i] for i in tr]
        else:
            x_test, y_test, more = labelled_features(model, test, m, encoder, batch_size, progress)
            skipped += more
        if len(set(y)) < 2 or not y_test:
            raise ValueError(f"{m}: probing needs at least two classes among the training rows and some test rows")
        results[m] = {"linear": linear_probe(x, y, x_test, y_test, seed), "knn": knn_probe(x, y, x_test, y_test, k),
                      "n_train": len(y), "n_test": len(y_test), "unlabelled": skipped, "encoder": encoder}
    return results


def format_probe(results: dict) -> str:
    lines = [f"{'modality':<9} {'linear top-1':>12} {'k-NN top-1':>11} {'train':>6} {'test':>6}"]
    for m, r in results.items():
        lines.append(f"{m:<9} {r['linear']['top1']:>12.3f} {r['knn']['top1']:>11.3f} {r['n_train']:>6} {r['n_test']:>6}")
    return "\n".join(lines)
