"""spanlab.kernels: the one home of the kernel A/B choices, read from SPANLAB_KERNELS or a run's
`--kernels` / `kernels:`, and documented by one table of docs/eval.md."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest

from spanlab import kernels
from spanlab.errors import SpanlabError

ROOT = Path(__file__).resolve().parents[2]
OLD = ("SPANLAB_SE_BACKEND", "SPANLAB_SE_MEMORY", "SPANLAB_SE_SELECTION", "SPANLAB_DECODE_ATTN",
       "SPANLAB_PREFILL_ATTN", "SPANLAB_DECODE_GRAPHS", "SPANLAB_FUSED", "SPANLAB_SSD")


def test_every_choice_defaults_to_auto_listed_first():
    s = kernels.KernelSettings()
    assert set(kernels.NAMES) == {"se_backend", "se_memory", "se_selection", "decode_attn", "prefill_attn",
                                  "decode_graphs", "fused", "ssd", "ssd_matmul", "mamba2_decode",
                                  "mamba2_prefill", "rglru_scan", "decode_loop"}
    for name in kernels.NAMES:
        assert getattr(s, name) == kernels.choices(name)[0] == "auto"
    assert kernels.choices("mamba2_decode") == ("auto", "torch")  # read by models/mamba2_kernels.py
    assert kernels.choices("mamba2_prefill") == ("auto", "torch")  # read by models/mamba2_prefill_kernels.py
    assert kernels.choices("rglru_scan") == ("auto", "torch")  # read by models/rglru_scan.py
    assert s.spec() == "" and s.changed() == {}


def test_parse_reads_pairs_and_mappings_and_names_what_is_wrong():
    assert kernels.parse("se_backend=cudnn, fused=OFF,") == {"se_backend": "cudnn", "fused": "off"}
    assert kernels.parse({"ssd": "off"}) == {"ssd": "off"}
    assert kernels.parse(None) == kernels.parse("") == {}
    with pytest.raises(SpanlabError, match=r"--kernels: unknown kernel choice 'se_backed'; the choices are "
                                           r"se_backend=auto\|cudnn\|flash\|math\|sdpa; se_memory="):
        kernels.parse("se_backed=cudnn")
    with pytest.raises(SpanlabError, match=r"SPANLAB_KERNELS: fused='no' is not one of auto, off"):
        kernels.parse("fused=no", source="SPANLAB_KERNELS")
    with pytest.raises(SpanlabError, match="'fused' is not KEY=VALUE"):
        kernels.parse("fused")


def test_the_environment_variable_and_the_old_switches():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spelling warns about nothing
        s = kernels.from_env({"SPANLAB_KERNELS": "se_memory=backend,decode_graphs=off"})
    assert (s.se_memory, s.decode_graphs, s.fused) == ("backend", "off", "auto")
    # The old switches still count, each with a warning that gives its new spelling.
    cases = {"SPANLAB_SE_BACKEND": ("cudnn", "se_backend", "cudnn"), "SPANLAB_FUSED": ("0", "fused", "off"),
             "SPANLAB_DECODE_GRAPHS": ("1", "decode_graphs", "auto"), "SPANLAB_SSD": ("false", "ssd", "off"),
             "SPANLAB_PREFILL_ATTN": ("varlen", "prefill_attn", "varlen")}
    for var, (old, field, new) in cases.items():
        with pytest.warns(FutureWarning, match=f"{var}={old} is deprecated.*SPANLAB_KERNELS={field}={new}"):
            assert getattr(kernels.from_env({var: old}), field) == new
    assert set(kernels.LEGACY) == set(OLD)
    # SPANLAB_KERNELS wins over an old switch for the same choice.
    with pytest.warns(FutureWarning):
        assert kernels.from_env({"SPANLAB_FUSED": "0", "SPANLAB_KERNELS": "fused=auto"}).fused == "auto"
    with pytest.raises(SpanlabError, match="SPANLAB_SE_MEMORY: se_memory='fast' is not one of auto, triton, backend"):
        kernels.from_env({"SPANLAB_SE_MEMORY": "fast"})


def test_use_stacks_and_restores_and_configure_sets_the_process():
    base = kernels.current()
    with kernels.use("fused=off") as outer:
        assert kernels.current() is outer and outer.fused == "off"
        with kernels.use({"se_backend": "math"}):
            assert (kernels.current().fused, kernels.current().se_backend) == ("off", "math")
            assert kernels.current().spec() == "se_backend=math,fused=off"
        assert kernels.current().se_backend == base.se_backend
    assert kernels.current() == base
    try:
        assert kernels.configure("ssd=off").ssd == "off" and kernels.current().ssd == "off"
    finally:
        kernels.configure(None)
    assert kernels.current() == base


def test_a_kernel_module_follows_the_setting():
    torch = pytest.importorskip("torch")
    from spanlab.attention.se import default_backends

    q = torch.zeros(1, 1, 4, 8)
    assert default_backends(q) == ("math",)
    with kernels.use("se_backend=sdpa"):
        assert default_backends(q) == ("sdpa",)


def test_docs_table_lists_exactly_the_fields():
    text = (ROOT / "docs" / "eval.md").read_text(encoding="utf-8")
    start = text.index("| choice | values (default first) | what it picks |")
    block = text[start:].split("\n\n", 1)[0].splitlines()
    assert block == kernels.docs_table()
    assert [re.match(r"\| `(\w+)`", row).group(1) for row in block[2:]] == list(kernels.NAMES)


def test_only_the_settings_module_reads_the_switches():
    """Every module that picked a kernel path from os.environ asks spanlab.kernels instead, and
    spanlab.kernels imports nothing of spanlab but errors (it sits under attention and models)."""
    src = ROOT / "src" / "spanlab"
    readers = [str(p.relative_to(src)) for p in src.rglob("*.py") if p.name != "kernels.py"
               and any(v in p.read_text(encoding="utf-8") for v in OLD)]
    assert readers == []
    tree = ast.parse((src / "kernels.py").read_text(encoding="utf-8"))
    spanlab_imports = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                       and (n.module or "").startswith("spanlab")}
    spanlab_imports |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                        if a.name.startswith("spanlab")}
    assert spanlab_imports == {"spanlab.errors"}
