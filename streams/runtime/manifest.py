"""The model-directory manifest: the contract between ``export/`` and ``streams/``.

A model directory holds ONNX graph(s), ``tokenizer.json`` and ``manifest.json``.
The manifest names the labels (in output order), the max sequence length, the
version, and the sha256 of every file, so the worker can refuse a tampered or
incomplete directory before it scores anything. No torch import here: the
worker reads manifests without the training stack.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "Borrowed",
    "Variant",
    "Manifest",
    "ManifestError",
    "sha256_file",
    "read_manifest",
    "verify_directory",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "finsentry-model/1"


class ManifestError(RuntimeError):
    """The model directory is missing, incomplete, tampered with or malformed."""


class Borrowed(BaseModel):
    """An initializer a variant does not store but takes, dequantized, from another variant's file.

    The fp16 GPU variant borrows the word-embedding table (half of the model's weights) from the int8
    file, so a release ships both variants within the repository's size budget.
    """

    name: str = Field(description="the initializer's name in the borrowing graph")
    file: str = Field(description="the variant file that holds it")
    quantized: str = Field(description="int8/uint8 initializer in that file")
    scale: str
    zero_point: str
    dtype: str = Field("float16", description="numpy dtype the borrowing graph expects")


class Variant(BaseModel):
    """One ONNX graph of the model (fp32, int8, fp16...)."""

    file: str
    precision: str = Field(description="fp32 | int8 | fp16")
    providers: list[str] = Field(default_factory=list, description="providers it is meant for; empty = any")
    parity: dict[str, Any] = Field(default_factory=dict, description="parity gate results vs PyTorch")
    borrows: list[Borrowed] = Field(default_factory=list, description="initializers taken from another file")


class Manifest(BaseModel):
    format: str = MANIFEST_FORMAT
    name: str
    version: str
    labels: list[str] = Field(min_length=2)
    max_length: int = Field(gt=0)
    tokenizer: str = "tokenizer.json"
    input_names: list[str]
    output_name: str = "logits"
    default_variant: str
    variants: dict[str, Variant]
    files: dict[str, str] = Field(description="file name -> sha256 (hex)")
    source: dict[str, Any] = Field(default_factory=dict, description="checkpoint, data hashes, hyper-parameters")
    metrics: dict[str, Any] = Field(default_factory=dict)
    export: dict[str, Any] = Field(default_factory=dict, description="exporter options and library versions")
    created_at: datetime

    def variant(self, key: str | None = None) -> Variant:
        key = key or self.default_variant
        try:
            return self.variants[key]
        except KeyError:
            raise ManifestError(
                f"model {self.name} {self.version} has no variant {key!r} (has: {', '.join(self.variants)})"
            ) from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    if not Path(directory).is_dir():
        raise ManifestError(f"model directory {directory} does not exist (build one with `finsentry export`)")
    if not path.exists():
        raise ManifestError(f"{directory} is not a model directory: {MANIFEST_NAME} is missing")
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ManifestError(f"{path} is not a valid manifest: {exc}") from None
    if manifest.format != MANIFEST_FORMAT:
        raise ManifestError(f"{path}: unsupported manifest format {manifest.format!r}, expected {MANIFEST_FORMAT}")
    return manifest


def verify_directory(directory: Path, *, only: set[str] | None = None) -> Manifest:
    """Read the manifest and check the sha256 of every listed file (or just ``only``).

    Raises :class:`ManifestError` naming each missing or mismatching file.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    needed = {manifest.tokenizer, *(v.file for v in manifest.variants.values()),
              *(b.file for v in manifest.variants.values() for b in v.borrows)}
    unlisted = needed - manifest.files.keys()
    if unlisted:
        raise ManifestError(f"{directory}: manifest lists no hash for {', '.join(sorted(unlisted))}")
    problems = []
    for name, expected in sorted(manifest.files.items()):
        if only is not None and name not in only:
            continue
        path = directory / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif (actual := sha256_file(path)) != expected:
            problems.append(f"{name} sha256 {actual[:12]}… != manifest {expected[:12]}…")
    if problems:
        raise ManifestError(f"model directory {directory} failed verification: " + "; ".join(problems))
    return manifest
