"""Write a tiny scikit-learn classifier for ``--adapter sklearn``.

    python -m examples.adapters.save_sklearn models/iris.joblib
    serve-gateway up config/adapter-sklearn.yaml
    curl -s localhost:8080/v1/iris -d '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}'

The data is synthetic (three clusters in four features): no download.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

CENTRES = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])


def save(path: str | Path) -> Path:
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = np.concatenate([c + rng.normal(0, 0.2, (50, 4)) for c in CENTRES])
    y = np.repeat(np.arange(3), 50)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)
    return path


if __name__ == "__main__":
    print(save(sys.argv[1] if len(sys.argv) > 1 else "models/iris.joblib"))
