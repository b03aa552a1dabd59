"""``finsentry export``: checkpoint -> model directory (see export.onnx_export)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["app"]

app = typer.Typer(add_completion=False, help="Export a fine-tuned checkpoint to an ONNX model directory.")


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., exists=True, file_okay=False, help="save_pretrained directory"),
    out: Path = typer.Option(Path("artifacts/model"), help="model directory to write"),
    name: str = typer.Option("finsentry-sentiment", help="model name (InfluxDB tag `model`)"),
    version: str | None = typer.Option(None, help="model version; default: UTC timestamp"),
    max_length: int = typer.Option(128, help="tokens per text at serving time"),
    int8: bool = typer.Option(True, help="build the dynamically quantized int8 variant (CPU)"),
    fp16: bool = typer.Option(True, help="build the fp16 variant for CUDA/TensorRT (with ORT transformer fusions)"),
    fp32_atol: float = typer.Option(1e-4, help="parity gate: max |logit diff| fp32 vs PyTorch"),
    min_agreement: float = typer.Option(0.97, help="parity gate: int8/fp16 label agreement with PyTorch"),
    max_f1_drop: float = typer.Option(0.01, help="parity gate: int8/fp16 macro-F1 drop on the labelled split"),
    keep_fp32: bool = typer.Option(True, help="ship the fp32 graph too (--no-keep-fp32: int8 + fp16 only, "
                                               "what models/default ships)"),
) -> None:
    """Export, run the parity gate (fails the export if not met), write manifest.json with sha256 of every file."""
    from export.onnx_export import ExportOptions, ParityError, export_checkpoint

    try:
        manifest = export_checkpoint(
            checkpoint, out,
            ExportOptions(name=name, version=version, max_length=max_length, int8=int8,
                          fp16=fp16, fp32_atol=fp32_atol, min_agreement=min_agreement, max_f1_drop=max_f1_drop,
                          keep_fp32=keep_fp32),
        )
    except ParityError as exc:
        typer.echo(f"export refused: {exc}", err=True)
        raise typer.Exit(3) from None
    typer.echo(json.dumps({
        "out": str(out), "name": manifest.name, "version": manifest.version,
        "default_variant": manifest.default_variant,
        "parity": {k: v.parity for k, v in manifest.variants.items()},
    }, indent=2))


if __name__ == "__main__":
    app()
