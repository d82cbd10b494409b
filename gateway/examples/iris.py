"""Iris: typed input and output. ``predict`` annotates its items with a pydantic model, so the
worker validates and converts every instance (a bad one is a 400 naming its index and field,
with no hand-written checks here) and ``/openapi.json`` / ``/docs`` describe both sides.

The "model" is a fixed nearest-centroid rule over the four classic measurements (cm).
Serve it: ``serve-gateway worker gateway.examples.iris:Iris --port 9000``, then
``curl localhost:9000/predict -d '{"sepal_length": 5.1, "sepal_width": 3.5,
"petal_length": 1.4, "petal_width": 0.2}'``.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

CENTROIDS = {"setosa": (5.0, 3.4, 1.5, 0.2), "versicolor": (5.9, 2.8, 4.3, 1.3),
             "virginica": (6.6, 3.0, 5.6, 2.0)}


class Flower(BaseModel):
    sepal_length: float = Field(gt=0, le=20, description="cm")
    sepal_width: float = Field(gt=0, le=20, description="cm")
    petal_length: float = Field(gt=0, le=20, description="cm")
    petal_width: float = Field(gt=0, le=20, description="cm")


class Species(BaseModel):
    species: str
    distance: float = Field(description="to the nearest centroid, cm")


class Iris:
    def predict(self, flowers: list[Flower]) -> list[Species]:
        out = []
        for f in flowers:
            x = (f.sepal_length, f.sepal_width, f.petal_length, f.petal_width)
            name, c = min(CENTROIDS.items(), key=lambda kv: math.dist(x, kv[1]))
            out.append(Species(species=name, distance=round(math.dist(x, c), 4)))
        return out
