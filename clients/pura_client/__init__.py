"""Pura client SDK: face embedding (the only torch/dlib code), data sets, evaluation.

Sub-packages:

* ``pura_client.datasets`` — LFW on disk: people, pairs (View 2), identification splits.
* ``pura_client.embedding`` — the face pipeline (reference dlib pipeline, torch port) and the
  on-disk embedding cache shared by tests and benchmarks.
* ``pura_client.evaluate`` — the ``pura-eval`` command.
"""

from __future__ import annotations

__all__: list[str] = []
