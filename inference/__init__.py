"""The torch-free inference core: what an exported file is (``contract``), the one image loader (``imaging``), the
answers (``answers``), finding model files (``model_files``), the runtimes that run them (``runtimes``: ONNX Runtime
and OpenVINO, fp32, bf16 and int8) and the checks that keep a faster precision's answers honest (``precision``).

The HTTP server (``service``), offline batch jobs, the exporters, training and detection all build on it.
"""
