"""finsentry live pipeline: Kafka -> Faust -> ONNX Runtime -> InfluxDB."""

__version__ = "0.1.0"
