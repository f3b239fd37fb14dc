"""Schema fuzzing (schemathesis) of the live server: no generated request may produce a 5xx."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from tests.serve.conftest import API_KEY  # noqa: E402
from tuneforge.config.recipe import Recipe  # noqa: E402
from tuneforge.serve.app import create_app  # noqa: E402


class _SchemaOnly:
    """Enough of an engine to build the app and read its OpenAPI document (no model needed)."""

    adapters = {"lora-a": None, "lora-b": None}


# Names of the checkpoint-model form (ft:<base>:<suffix>:<job>:ckpt-step-<N>) that no job has: the
# fine-tuning server looks each up (routes through its checkpoint resolver) and must answer 404, not 5xx.
CHECKPOINT_NAMES = ["ft:tiny::ftjob-0:ckpt-step-1", "ft:tiny:x:ftjob-0:ckpt-step-999999999", "ft::::ckpt-step-0"]


def _schema() -> dict:
    doc = create_app(_SchemaOnly(), Recipe().serve, "tiny", API_KEY).openapi()  # type: ignore[arg-type]
    # Steer most generated bodies at the served ids so the fuzz reaches generation, not just the 404.
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        model = doc["components"]["schemas"][name]["properties"]["model"]
        model["enum"] = ["tiny", "lora-a", "lora-b", "missing", *CHECKPOINT_NAMES]
        doc["components"]["schemas"][name]["properties"]["max_tokens"] = {
            "anyOf": [{"type": "integer", "minimum": -1, "maximum": 16}, {"type": "null"}]}
    return doc


schema = schemathesis.openapi.from_dict(_schema())


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_server_errors(case, server):
    case.call_and_validate(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"},
                           checks=[not_a_server_error], timeout=60)


@pytest.fixture(scope="module")
def ft_server(tiny_model_dir, tmp_path_factory):
    from tests.serve.conftest import start_server

    running = start_server(tiny_model_dir, state_dir=str(tmp_path_factory.mktemp("fuzz-state")),
                           training_device="cpu")
    yield running
    running.stop()


@schema.include(path_regex="^/v1/(files|fine_tuning|chat/completions)").parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_fine_tuning_routes_no_server_errors(case, ft_server):
    """The fine-tuning API switched on: files and jobs routes (the jobs list's metadata[k]=v filter
    included) and chat with checkpoint-model names answer every generated request below 500."""
    case.call_and_validate(base_url=ft_server.url, headers={"Authorization": f"Bearer {API_KEY}"},
                           checks=[not_a_server_error], timeout=60)
