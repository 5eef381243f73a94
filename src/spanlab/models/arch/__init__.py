"""Architecture profiles: one `ArchProfile` per family, one file each, registered here.

    >>> from spanlab.models.arch import profile_for
    >>> profile_for("bamba").name, profile_for("bamba").ssd_scan
    ('mamba2_hybrid', True)

`profile_for(model_or_config_or_model_type)` finds the profile by `config.model_type`, then by the
model's class name, and falls back to `GENERIC` (a registry-based transformers causal LM with no
special abilities) for anything else, so an unknown model behaves as it did before profiles.
Adding a family: a new file here defining its `ArchProfile`, plus one `register_arch` line below
(docs/architecture.md, "How to add an architecture").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from spanlab.errors import SpanlabError
from spanlab.models.arch.base import GROUPS, ArchProfile, registry_attention_modules
from spanlab.models.arch.llama import LLAMA
from spanlab.models.arch.mamba2 import MAMBA, MAMBA2
from spanlab.models.arch.mamba2_hybrid import JAMBA, MAMBA2_HYBRID
from spanlab.models.arch.mamba2attn import MAMBA2ATTN
from spanlab.models.arch.recurrent_gemma import RECURRENT_GEMMA
from spanlab.models.arch.rwkv import RWKV

GENERIC = ArchProfile("generic", display="transformers causal LM",
                      description="any other model: attention found through transformers' registry")


class ArchRegistry(Mapping[str, ArchProfile]):
    """profile name -> ArchProfile, in registration order (iterating gives the names)."""

    def __init__(self) -> None:
        self._profiles: dict[str, ArchProfile] = {}

    def __getitem__(self, name: str) -> ArchProfile:
        return self._profiles[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._profiles)

    def __len__(self) -> int:
        return len(self._profiles)

    def __repr__(self) -> str:
        return f"ArchRegistry({', '.join(self._profiles)})"

    def model_types(self, **flags: bool) -> frozenset[str]:
        """Every covered model_type of the profiles whose fields equal `flags` (e.g. ssd_scan=True)."""
        return frozenset(t for p in self._profiles.values() if all(getattr(p, k) == v for k, v in flags.items())
                         for t in p.model_types)


ARCHS = ArchRegistry()


def register_arch(profile: ArchProfile, *, replace: bool = False) -> ArchProfile:
    """Add `profile` to `ARCHS`. A model_type or zoo name another profile already covers is an
    error (unless `replace`): one model must have exactly one profile."""
    if profile.name in ARCHS._profiles and not replace:
        raise SpanlabError(f"architecture profile {profile.name!r} is already registered")
    for other in ARCHS._profiles.values():
        if other.name == profile.name:
            continue
        clash = (profile.model_types & other.model_types) or (profile.classes & other.classes)
        if clash:
            raise SpanlabError(f"architecture profile {profile.name!r} covers {sorted(clash)}, "
                               f"already covered by {other.name!r}")
        if profile.zoo is not None and profile.zoo in (other.zoo, *other.zoo_aliases):
            raise SpanlabError(f"zoo name {profile.zoo!r} of {profile.name!r} is taken by {other.name!r}")
    ARCHS._profiles[profile.name] = profile
    return profile


def unregister_arch(name: str) -> None:
    """Remove a profile (tests that register toy architectures clean up with this)."""
    ARCHS._profiles.pop(name, None)


def _unwrap(obj: Any) -> Any:
    # peft's PeftModel / accelerate's DDP wrapper around the transformers model.
    get_base = getattr(obj, "get_base_model", None)
    if callable(get_base):
        obj = get_base()
    inner = getattr(obj, "module", None)
    if inner is not None and hasattr(inner, "config"):
        obj = inner
    return obj


def profile_for(obj: Any, *, strict: bool = False) -> ArchProfile:
    """The profile of a model, a transformers config, or a model_type / profile name string.
    Unknown: `GENERIC`, or a SpanlabError naming the known families when `strict`."""
    if isinstance(obj, ArchProfile):
        return obj
    model_type: str | None
    class_name: str | None = None
    if isinstance(obj, str):
        if obj in ARCHS:
            return ARCHS[obj]
        model_type = obj
    else:
        obj = _unwrap(obj)
        config = getattr(obj, "config", obj)
        model_type = getattr(config, "model_type", None) or None
        class_name = type(obj).__name__
    for profile in ARCHS.values():
        if profile.covers(model_type, None):
            return profile
    for profile in ARCHS.values():
        if profile.covers(None, class_name):
            return profile
    if strict:
        what = model_type or class_name or type(obj).__name__
        raise SpanlabError(f"no architecture profile covers {what!r}; known families: {', '.join(ARCHS)}")
    return GENERIC


def zoo_profiles() -> dict[str, ArchProfile]:
    """zoo architecture name -> profile, for the families the zoo can build."""
    return {p.zoo: p for p in ARCHS.values() if p.zoo is not None and p.zoo_builder is not None}


for _profile in (LLAMA, MAMBA2, MAMBA2_HYBRID, MAMBA2ATTN, RECURRENT_GEMMA, RWKV, MAMBA, JAMBA):
    register_arch(_profile)

__all__ = [
    "ARCHS",
    "GENERIC",
    "GROUPS",
    "ArchProfile",
    "profile_for",
    "register_arch",
    "registry_attention_modules",
    "unregister_arch",
    "zoo_profiles",
]
