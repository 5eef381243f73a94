"""The attention tests' helpers (`attn_helpers`, `triton_checks`) made importable: --import-mode=importlib
puts no test folder on sys.path. The `gpu` marker's skip is the root conftest's."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
