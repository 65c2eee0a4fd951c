"""Offline batch classification and detection on Ray Data with the service's answers (``python -m batch``).

``inputs``: what ``--input`` names and reading a file; ``workers``: the decode tasks and the ORT actors that run on
the cluster; ``job``: the pipeline, its options and output. Ray is an optional extra (``resnet-lab[batch]``), so this
package imports nothing at import time.
"""
