"""Checkpoint -> one verified, self-contained ONNX file to the service's contract (``service.contract``).

``python -m export --checkpoint FILE --output model.onnx`` (see ``export.classifier``).
"""
