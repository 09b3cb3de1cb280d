"""Build the iris model zoo with scikit-learn + skl2onnx, reproducibly (fixed seeds).

    python models/build_tabular.py --out build/models [--only NAME ...] [--update-cards]

Models (each has a card in models/<name>/model.toml):
- iris-svc: 3-class SVC with Platt probabilities (prediction log, A/B variant "svc");
- iris-rf: random forest (A/B variant "rf");
- iris-setosa, iris-versicolor, iris-virginica: one-vs-rest binary SVCs whose class 0 is
  the target species, as the horizontal-microservice originals had it;
- iris-outlier: One-Class SVM whose decision score is < 0 for an outlier.

Existing artifacts whose sha256 matches their card are reused; every artifact is checked
against its card at the end (or the cards are rewritten with ``--update-cards``).
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable

import numpy as np
from onnx import ModelProto
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, OneClassSVM

from artifacts import arguments, finish, needs_build, report

SEED = 0
SPECIES = ("setosa", "versicolor", "virginica")


def _iris() -> tuple[np.ndarray, np.ndarray]:
    data = load_iris()
    return data.data.astype(np.float32), data.target


def _platt_svc() -> BaseEstimator:
    # Platt-scaled SVC: what SVC(probability=True) did before scikit-learn 1.9 deprecated it.
    return make_pipeline(
        StandardScaler(), CalibratedClassifierCV(SVC(random_state=SEED), ensemble=False)
    )


def _svc() -> BaseEstimator:
    return _platt_svc().fit(*_iris())


def _rf() -> BaseEstimator:
    x, y = _iris()
    return RandomForestClassifier(n_estimators=50, max_depth=4, random_state=SEED).fit(x, y)


def _one_vs_rest(index: int) -> Callable[[], BaseEstimator]:
    def fit() -> BaseEstimator:
        x, y = _iris()
        return _platt_svc().fit(x, np.where(y == index, 0, 1))  # the species is class 0

    return fit


def _outlier() -> BaseEstimator:
    x, _ = _iris()
    return make_pipeline(StandardScaler(), OneClassSVM(nu=0.05, gamma="scale")).fit(x)


BUILDERS: dict[str, Callable[[], BaseEstimator]] = {
    "iris-svc": _svc,
    "iris-rf": _rf,
    **{f"iris-{name}": _one_vs_rest(i) for i, name in enumerate(SPECIES)},
    "iris-outlier": _outlier,
}


def _export(model: BaseEstimator) -> ModelProto:
    options = {"zipmap": False} if hasattr(model, "predict_proba") else None
    with warnings.catch_warnings():
        # skl2onnx 1.20 reads SVC.probA_, deprecated in scikit-learn 1.9 (empty here).
        warnings.filterwarnings("ignore", message=".*probA_|.*probB_", category=FutureWarning)
        onnx_model = to_onnx(
            model,
            initial_types=[("input", FloatTensorType([None, 4]))],
            options={id(model): options} if options else None,
            target_opset=17,
        )
    onnx_model.doc_string = ""
    # skl2onnx lists opsets in set order, which varies with PYTHONHASHSEED: fix the order.
    opsets = sorted((o.domain, o.version) for o in onnx_model.opset_import)
    del onnx_model.opset_import[:]
    for domain, version in opsets:
        onnx_model.opset_import.add(domain=domain, version=version)
    return onnx_model


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, BUILDERS, argv)
    names = args.only or sorted(BUILDERS)
    for name in names:
        target = needs_build(args.cards, args.out, name)
        if target is None:
            report(args.cards, args.out, name, "reused")
            continue
        started = time.perf_counter()
        target.write_bytes(_export(BUILDERS[name]()).SerializeToString())
        report(args.cards, args.out, name, f"built in {time.perf_counter() - started:.1f}s")
    return finish(args.cards, args.out, names, update=args.update_cards)


if __name__ == "__main__":
    sys.exit(main())
