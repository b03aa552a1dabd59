"""The sentiment labels, in the order every finsentry model emits them.

One definition for the corpus, training, export, the runtime's manifests and
the records on the topics. A score is ``P(positive) - P(negative)``.
"""

from __future__ import annotations

__all__ = ["LABELS", "LabelName"]

from typing import Literal

LabelName = Literal["negative", "neutral", "positive"]

#: Label order of model outputs, manifests, records and corpus files.
LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")
