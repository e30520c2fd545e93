"""Temperature scaling of the judge's verdict probability, and how well calibrated it is.

The judge's p_a is sigmoid(z) with z = logit(" A") - logit(" B") at the verdict position (paper 3.7).
A fine-tuned judge is often over-confident: its p_a = 0.95 is right far less than 95% of the time.
Temperature scaling (one parameter, fitted on held-out pairs with known labels) replaces z by z / T;
T > 1 softens, T < 1 sharpens, and the verdict (which side of 0.5) never changes, so accuracy is kept.

The fitted T is stored as `calibration.json` in the model folder; `JudgeModel` and the vLLM judge load
it with `load_calibration` and apply it to every verdict-mode p_a they return. A folder without the
file (or a model that is not a folder) gets the identity.

Pure functions over plain floats; shapes: `p` and `labels` are equal-length sequences (n,), labels 1
when A is the better answer, 0 when B is.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

CALIBRATION_FILE = "calibration.json"
EPS = 1e-6              # p is clipped to [EPS, 1 - EPS] before its logit is taken
MIN_INVERSE_T = 1e-3    # a judge no better than chance gets T = 1000 (p_a about 0.5), never T <= 0


@dataclass(frozen=True)
class Calibration:
    """p -> sigmoid(logit(p) / temperature); temperature 1 is the identity (p returned unchanged)."""

    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"calibration temperature must be a finite number > 0, got {self.temperature}")

    @property
    def is_identity(self) -> bool:
        return self.temperature == 1.0

    def apply(self, p_a: float) -> float:
        if self.is_identity:
            return p_a
        return float(_sigmoid(_logit(np.asarray(p_a, dtype=np.float64)) / self.temperature))

    def apply_many(self, p: Sequence[float]) -> list[float]:
        if self.is_identity:
            return [float(x) for x in p]
        return [float(x) for x in _sigmoid(_logit(np.asarray(p, dtype=np.float64)) / self.temperature)]


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1.0 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|


def load_calibration(model: str | Path | None) -> Calibration:
    """The calibration stored in the model folder `model`; the identity when `model` is None, not a
    local folder (a hub id, an unresolved `tiny:<role>`), or holds no calibration.json. A file that is
    there but unreadable raises (a judge must not silently lose its calibration)."""
    if model is None:
        return Calibration()
    path = Path(model).expanduser() / CALIBRATION_FILE
    if not path.is_file():
        return Calibration()
    try:
        data = json.loads(path.read_text())
        return Calibration(temperature=float(data["temperature"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a valid calibration file: {exc}") from exc


def save_calibration(model_dir: str | Path, calibration: Calibration, report: dict[str, Any]) -> Path:
    """Write calibration.json (temperature plus `report`: ECE before/after, pair counts, source) into
    the model folder and return its path."""
    folder = Path(model_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    path = folder / CALIBRATION_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({**report, "temperature": calibration.temperature}, indent=2, sort_keys=True))
    tmp.replace(path)  # a reader never sees half a file
    return path


def _checked(p: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    p_arr = np.asarray(p, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p_arr.shape != y.shape or p_arr.ndim != 1:
        raise ValueError(f"p and labels must be equal-length 1-d sequences, got {p_arr.shape} and {y.shape}")
    if len(p_arr) == 0:
        raise ValueError("no pairs to calibrate on")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 1 (A better) or 0 (B better)")
    if not (np.isfinite(p_arr).all() and ((p_arr >= 0) & (p_arr <= 1)).all()):
        raise ValueError("probabilities must be finite and in [0, 1]")
    return p_arr, y


def fit_temperature(p_a: Sequence[float], labels: Sequence[int], max_steps: int = 100) -> float:
    """The temperature T minimising the negative log-likelihood of `labels` under sigmoid(z / T),
    z = logit(p_a) (Guo et al. 2017, temperature scaling).

    Fitted as the inverse temperature b = 1/T by Newton steps: the NLL is a one-feature logistic
    regression without intercept in b, so it is convex and Newton converges from b = 1. A judge whose
    verdicts are anti-correlated with the labels gets b clipped to MIN_INVERSE_T.
    """
    p, y = _checked(p_a, labels)
    z = _logit(p)                                       # (n,)
    if not np.any(z):
        return 1.0                                      # every p is 0.5: nothing to scale
    b = 1.0
    for _ in range(max_steps):
        q = _sigmoid(b * z)
        grad = float(((q - y) * z).sum())
        hess = float((q * (1.0 - q) * z * z).sum())
        if hess <= 1e-12:  # saturated at this b: shrink towards the data before stepping again
            b *= 0.5
            continue
        new_b = max(b - grad / hess, MIN_INVERSE_T)
        if abs(new_b - b) < 1e-10 * max(1.0, b):
            b = new_b
            break
        b = new_b
    return 1.0 / b


def reliability_bins(p: Sequence[float], labels: Sequence[int], bins: int = 10) -> list[dict[str, float]]:
    """Equal-width bins of p over [0, 1]: per non-empty bin its range, count, mean p and the share of
    labels that are 1 (the reliability diagram's points; a calibrated judge lies on the diagonal)."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    p_arr, y = _checked(p, labels)
    index = np.minimum((p_arr * bins).astype(int), bins - 1)   # (n,): bin of each pair
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append({"low": b / bins, "high": (b + 1) / bins, "count": int(mask.sum()),
                        "mean_p": float(p_arr[mask].mean()), "frequency": float(y[mask].mean())})
    return out


def expected_calibration_error(p: Sequence[float], labels: Sequence[int], bins: int = 10) -> float:
    """ECE of p_a against labels: sum over equal-width bins of (bin share) * |mean p - share of 1s|.

    Measured on p_a itself (the binary reliability), not on max(p, 1 - p): for a pairwise judge both
    sides are the same statement, and this is the quantity a reward consumer reads.
    """
    n = len(p)
    return float(sum(b["count"] / n * abs(b["mean_p"] - b["frequency"]) for b in reliability_bins(p, labels, bins)))


def negative_log_likelihood(p: Sequence[float], labels: Sequence[int]) -> float:
    """Mean NLL (nats per pair) of labels under p, p clipped to [EPS, 1 - EPS]."""
    p_arr, y = _checked(p, labels)
    p_arr = np.clip(p_arr, EPS, 1.0 - EPS)
    return float(-(y * np.log(p_arr) + (1.0 - y) * np.log1p(-p_arr)).mean())
