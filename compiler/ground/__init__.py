"""The ground layer: what every package may import (errors, atomic I/O, onnxruntime sessions).

It imports nothing else of edgec, so `passes/`, `targets/` and `models/` can
use it without reaching into the orchestration (`pipeline`, `cli`, `config`,
`sources`, `export`, the stages); import-linter checks this in `make lint`.
"""
