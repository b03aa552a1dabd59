"""The model as the worker runs it: the model directory contract, ONNX Runtime sessions, scoring.

Imports nothing else of the project, so ``export/`` and ``models/`` can use it
(the export's parity gate scores through exactly this runtime) and a site can
serve a model with ``onnxruntime`` and ``tokenizers`` alone.

* :mod:`~streams.runtime.manifest` — what a model directory holds and how it is verified;
* :mod:`~streams.runtime.session` — execution provider, variant and session settings;
* :mod:`~streams.runtime.model` — :class:`SentimentModel`: tokenization, chunking, batching;
* :mod:`~streams.runtime.swap` — hot swap when the directory changes.
"""

from streams.runtime.manifest import (MANIFEST_NAME, Borrowed, Manifest, ManifestError, Variant, read_manifest,
                                      sha256_file, verify_directory)
from streams.runtime.model import Prediction, SentimentModel, combine_chunks, load_model, softmax
from streams.runtime.session import (CPU_DISABLED_OPTIMIZERS, available_providers, cgroup_cpu_limit,
                                     choose_variant, open_session, runtime_defaults, usable_cores, variant_source)
from streams.runtime.swap import ModelWatcher

__all__ = [
    "MANIFEST_NAME", "Borrowed", "Manifest", "ManifestError", "Variant", "read_manifest", "sha256_file",
    "verify_directory",
    "Prediction", "SentimentModel", "combine_chunks", "load_model", "softmax",
    "CPU_DISABLED_OPTIMIZERS", "available_providers", "cgroup_cpu_limit", "choose_variant", "open_session",
    "runtime_defaults", "usable_cores", "variant_source", "ModelWatcher",
]
