"""Let timm and transformers import beside a torchvision whose C++ extension cannot load.

Why this exists: torchvision from PyPI is built against the CUDA torch. Installed beside a CPU torch
(``pip install "torch==2.13.0+cpu" timm`` pulls it in), its ``_C.so`` fails to load (it needs
``libtorch_cuda.so``). torchvision tolerates that for its own ops (``extension._has_ops()`` turns
False), but ``torchvision/_meta_registrations.py`` then calls
``torch.library.register_fake("torchvision::nms")`` (and ``::qnms``) unguarded, which raises
``RuntimeError: operator torchvision::nms does not exist`` and aborts ``import torchvision``. timm
imports torchvision at import time (``timm/layers/create_norm.py``), transformers does when it is
installed (``image_utils``), so both fail to import.

``ensure_importable`` fixes exactly that case and nothing else: when torchvision is installed, not yet
imported, and its extension does not load, it defines the schemas of the two operators that
``_meta_registrations`` registers fake kernels for (``torchvision::nms`` and ``torchvision::qnms``)
in a ``torch.library.Library("torchvision", "DEF")``, so that registration succeeds. No kernel is
registered: calling those detection ops still raises, as it would with the extension missing, and
classification and language models never call them. When the extension loads (a matching
torchvision), or torchvision is absent or already imported, nothing is done. A failed
``import torchvision`` leaves half-initialised modules in ``sys.modules``; those are removed so the
next import starts clean.

Used by the ``timm:`` and ``hf:`` adapters (``bench.foreign.timm_models``, ``bench.foreign.hf_models``)
only, right before they import timm or transformers.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY: list[Any] = []  # keeps the Library alive (its definitions go away with it)


def _extension_loads(package_dir: Path) -> bool:
    """True when torchvision's ``_C`` extension loads into this torch (then torchvision is fine)."""
    import torch

    candidates = sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd"))
    if not candidates:
        return False
    try:
        torch.ops.load_library(str(candidates[0]))
    except (OSError, ImportError, RuntimeError):
        return False
    return True


def ensure_importable() -> bool:
    """Make ``import torchvision`` (and so timm, transformers) work; True when the schemas were defined.

    Idempotent and cheap after the first call.
    """
    if _LIBRARY:
        return True
    tv = sys.modules.get("torchvision")
    if tv is not None and hasattr(tv, "__version__") and hasattr(tv, "ops"):
        return False  # imported successfully before
    import torch

    if tv is None:  # not imported yet: is it installed, and does its extension load?
        spec = importlib.util.find_spec("torchvision")
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            return False  # not installed: timm and transformers import without it
        if _extension_loads(Path(locations[0])):
            return False
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # leftovers of a failed import
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        try:
            lib.define(schema)
        except RuntimeError:  # already defined (by the extension after all, or another library)
            pass
    _LIBRARY.append(lib)
    return True
