"""The GPU validation (issue #8, docs/gpu-validation.md): ``python -m bench.gpu.validate``, its steps and helpers."""
