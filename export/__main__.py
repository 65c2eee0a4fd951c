"""``python -m export``: a checkpoint or torchvision weights -> one verified, self-contained ONNX file."""

from export.classifier import main

main()
