"""``python -m export``: a checkpoint (classifier or detector) or torchvision weights -> one verified ONNX file.

The checkpoint's own ``format`` says which exporter runs (``export.classifier`` or ``export.detector``); each
``--help`` lists its flags (``python -m export --checkpoint DETECTOR.pt --help`` shows the detector's).
"""

from __future__ import annotations

import sys

from export import classifier, detector


def exporter_for(argv: list[str]):
    """The exporter module whose command line ``argv`` is: a detection checkpoint goes to ``export.detector``."""
    if "--checkpoint" in argv[:-1]:
        return detector if detector.is_detection_checkpoint(argv[argv.index("--checkpoint") + 1]) else classifier
    return classifier


if __name__ == "__main__":
    exporter_for(sys.argv[1:]).main(sys.argv[1:])
