"""A checkpoint or torchvision weights -> one verified, self-contained ONNX file to the service's contract
(``service.contract``).

``python -m export --checkpoint FILE --output model.onnx`` (the command line: ``export.command``; the exporters:
``export.classifier`` and ``export.detector``; torchvision's detectors: ``export.torchvision_detector``).
"""
