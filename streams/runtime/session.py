"""ONNX Runtime sessions: which execution provider, which variant, which settings.

ONNX Runtime silently falls back to CPU when CUDA libraries are missing, so the
provider actually in use is read back from the session and the variant is
chosen to fit it: fp16 on TensorRT/CUDA, int8 on CPU, unless told otherwise.
CPU defaults come from measurements on small tensors (``bench/cpu_tuning.py``):
single-threaded runs of 4-window sub-batches, one per usable core, with the
slower ORT fusions switched off.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import logging

from streams.runtime.manifest import Manifest, ManifestError, Variant

__all__ = ["available_providers", "choose_variant", "pick_providers", "cgroup_cpu_limit", "usable_cores",
           "runtime_defaults", "open_session", "variant_source", "CPU_DISABLED_OPTIMIZERS", "GPU_PROVIDERS"]

log = logging.getLogger(__name__)

#: Preference order when the caller does not name providers.
_PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = {"TensorrtExecutionProvider", "CUDAExecutionProvider"}

#: ORT graph fusions disabled on CPU. ``SkipLayerNormFusion`` folds
#: Add+Add+LayerNormalization into SkipLayerNormalization, whose CPU kernel
#: (ORT 1.31) took 8x longer per call than the LayerNormalization it replaces
#: in this model's int8 profile; without it the int8 model scores 10 % (one
#: run of 16) to 18 % (parallel runs of 4) more texts/s (bench/cpu_tuning.py).
CPU_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ONNX Runtime is not installed: pip install 'finsentry[cpu]' (or '[gpu]' on CUDA hosts; not both)"
        ) from exc
    return onnxruntime


def available_providers() -> list[str]:
    return list(_ort().get_available_providers())



def choose_variant(manifest: Manifest, provider: str, requested: str | None = None) -> str:
    """fp16 on GPU providers, int8 on CPU, else the manifest default; ``requested`` wins."""
    if requested:
        manifest.variant(requested)  # raises a clear error if missing
        return requested
    preferred = "fp16" if provider in GPU_PROVIDERS else "int8"
    return preferred if preferred in manifest.variants else manifest.default_variant



def pick_providers(requested: Sequence[str] | None) -> list[str]:
    available = available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            log.warning("requested providers not available: %s (available: %s)", missing, available)
        chosen = [p for p in requested if p in available]
    else:
        chosen = [p for p in _PREFERRED if p in available]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # ORT's own fallback, made explicit
    return chosen


def cgroup_cpu_limit(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int | None:
    """Whole CPUs a cgroup v2 quota allows (``docker run --cpus``, compose ``cpus:``), or None.

    A quota does not show in the affinity mask, so without this a container
    limited to 2 CPUs on a 64-core host would start 64 inference threads.

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / "cpu.max"; _ = f.write_text("150000 100000")
    >>> cgroup_cpu_limit(f)
    2
    >>> _ = f.write_text("max 100000"); cgroup_cpu_limit(f) is None
    True
    """
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, -(-int(quota) // int(period)))


def usable_cores() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return min(cores, limit) if limit else cores


def runtime_defaults(provider: str) -> dict[str, int]:
    """Sub-batch size, parallel runs and intra-op threads for ``provider``.

    Measured on 2 cores with the int8 model (``bench/cpu_tuning.py``): 4-window
    sub-batches, one per core, each single-threaded. On GPU: one run of 256.
    """
    if provider in GPU_PROVIDERS:
        return {"max_batch": 256, "parallel": 1, "intra_op_threads": 0}
    cores = usable_cores()
    return {"max_batch": 4, "parallel": cores, "intra_op_threads": 1 if cores > 1 else 0}


def variant_source(directory: Path, variant: Variant) -> Path | bytes:
    """What ORT opens for ``variant``: its file, or, for a variant that borrows initializers from another
    file (the fp16 graph borrows the word embeddings of the int8 one), the graph with those initializers
    dequantized and put back, serialized (needs the ``onnx`` package: the ``[gpu]`` extra)."""
    directory = Path(directory)
    if not variant.borrows:
        return directory / variant.file
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ManifestError(f"variant {variant.file} borrows initializers: pip install onnx ({exc})") from None
    import numpy as np

    model = onnx.load(str(directory / variant.file))
    sources: dict[str, dict] = {}
    for borrowed in variant.borrows:
        if borrowed.file not in sources:
            sources[borrowed.file] = {i.name: i for i in onnx.load(str(directory / borrowed.file)).graph.initializer}
        inits = sources[borrowed.file]
        q = numpy_helper.to_array(inits[borrowed.quantized]).astype(np.float32)
        scale = numpy_helper.to_array(inits[borrowed.scale]).astype(np.float32)
        zero = numpy_helper.to_array(inits[borrowed.zero_point]).astype(np.float32)
        if scale.ndim == 1:  # per-axis (rows)
            scale, zero = scale.reshape(-1, 1), zero.reshape(-1, 1)
        table = ((q - zero) * scale).astype(borrowed.dtype)
        model.graph.initializer.append(numpy_helper.from_array(table, borrowed.name))
    return model.SerializeToString()


def open_session(path: Path | bytes, providers: Sequence[str], intra_op_threads: int = 0,
                 disabled_optimizers: Sequence[str] | None = None):
    """An ORT session (from a file, or a serialized graph: :func:`variant_source`) with the graph
    optimisations this runtime uses: all, minus ``disabled_optimizers`` (default:
    :data:`CPU_DISABLED_OPTIMIZERS` when CPU comes first, none on GPU); on CPU without ORT's
    per-shape memory-pattern cache, which only grows with this runtime's dynamic shapes."""
    ort = _ort()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    on_cpu = providers[0] == "CPUExecutionProvider"
    if on_cpu:
        # The memory-pattern planner caches an allocation plan per input shape, and every sub-batch has
        # a shape of its own (rows x its longest window), so the cache only grows: fed 6,000 random
        # shapes, a bare int8 session went 253 -> 265 MB RSS from call 1,000 on with it, 200 -> 203 MB
        # without, at the same speed (bench/session_memory.py).
        options.enable_mem_pattern = False
    if disabled_optimizers is None:
        disabled_optimizers = CPU_DISABLED_OPTIMIZERS if on_cpu else ()
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, sess_options=options, providers=list(providers),
                                disabled_optimizers=list(disabled_optimizers))
