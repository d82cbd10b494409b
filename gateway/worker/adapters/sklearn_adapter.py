"""scikit-learn: a joblib or pickle file of anything with ``predict`` (estimator, pipeline).

Runs on the CPU whatever the device setting (scikit-learn has no GPU path). A model that records
``n_features_in_`` gets its instances checked (a wrong length is a 400 naming the instance) and
a warm-up call; one that does not (a text pipeline) takes whatever numpy makes of the batch.
Loading a pickle runs code from the file: serve only files you trust.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np

from gateway.worker.adapters.arrays import InputSpec
from gateway.worker.adapters.base import Adapter, log

_PICKLE_SUFFIXES = (".pkl", ".pickle")


class SklearnAdapter(Adapter):
    framework = "sklearn"

    def _open(self) -> None:
        if self.requested_device == "cuda":
            raise RuntimeError("--device cuda: scikit-learn runs on the CPU only")
        if self.path.suffix in _PICKLE_SUFFIXES:
            with open(self.path, "rb") as f:
                model = pickle.load(f)     # the operator's own file: see the docstring
        else:
            import joblib
            model = joblib.load(self.path)
        if not callable(getattr(model, "predict", None)):
            raise TypeError(f"{self.path} holds a {type(model).__name__}, which has no predict()")
        self.model: Any = model
        n = getattr(model, "n_features_in_", None)
        if isinstance(n, (int, np.integer)):
            self.inputs = [InputSpec("X", np.dtype(np.float64), (int(n),))]
        else:
            log.info("%s does not record n_features_in_: instances are passed as numpy makes "
                     "them", self.path)
            self.inputs = [InputSpec("X")]

    def _run(self, feeds: dict[str, np.ndarray]) -> Any:
        return self.model.predict(feeds["X"])
