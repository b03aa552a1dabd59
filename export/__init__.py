"""Checkpoint -> ONNX model directory with a verified manifest."""
