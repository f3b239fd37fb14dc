"""The official `openai` client against a tuneforge server: adapters, streaming, caps and errors."""

from __future__ import annotations

import httpx
import openai
import pytest
import torch

from tests.serve.conftest import API_KEY

MESSAGES = [{"role": "user", "content": "Name three colours."}]


def reference_answer(model_dir, adapter, tokenizer, max_new_tokens: int) -> str:
    """What plain transformers (+PEFT) greedy generation answers, without tuneforge's engine."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneforge.models.generate import chat_inputs

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    inputs = chat_inputs(tokenizer, MESSAGES)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_streams_a_chat_completion_from_an_adapter(client, lora_runs, tiny_model_dir, tokenizer):
    stream = client.chat.completions.create(
        model="lora-a", messages=MESSAGES, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # really streamed
    assert chunks[-1].usage.completion_tokens >= 1
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish in (["length"], ["stop"])
    assert text == reference_answer(tiny_model_dir, lora_runs["lora-a"] / "adapter", tokenizer, 12)


def test_model_field_selects_adapter_or_base(client, tiny_model_dir, lora_runs, tokenizer):
    answers = {}
    for model in ("tiny", "lora-a", "lora-b"):
        r = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=10, temperature=0)
        answers[model] = r.choices[0].message.content
        assert r.model == model and r.usage.prompt_tokens > 0
    assert len(set(answers.values())) == 3  # each adapter changes the answer
    assert answers["tiny"] == reference_answer(tiny_model_dir, None, tokenizer, 10)
    assert answers["lora-b"] == reference_answer(tiny_model_dir, lora_runs["lora-b"] / "adapter", tokenizer, 10)


def test_models_and_completions(client):
    assert [m.id for m in client.models.list()] == ["tiny", "lora-a", "lora-b"]
    r = client.completions.create(model="lora-b", prompt=["Once upon", "The capital of"], max_tokens=5,
                                  n=2, temperature=0.8, seed=3)
    assert len(r.choices) == 4 and all(c.text for c in r.choices)
    again = client.completions.create(model="lora-b", prompt=["Once upon", "The capital of"], max_tokens=5,
                                      n=2, temperature=0.8, seed=3)
    assert [c.text for c in again.choices] == [c.text for c in r.choices]  # seeded sampling reproduces
    streamed = client.completions.create(model="tiny", prompt="Hello", max_tokens=6, temperature=0, stream=True)
    plain = client.completions.create(model="tiny", prompt="Hello", max_tokens=6, temperature=0)
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text


def test_stop_sequence_truncates_the_answer(client):
    full = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0).choices[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    assert stop.strip()
    r = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0, stop=[stop])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == full[: full.index(stop)]
    streamed = client.completions.create(model="tiny", prompt="Hello", max_tokens=12, temperature=0,
                                         stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full[: full.index(stop)]


def test_every_route_but_health_needs_the_key(server):
    assert httpx.get(server.url + "/health").status_code == 200
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong-key-123", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    for path in ("/docs", "/openapi.json"):
        assert httpx.get(server.url + path).status_code in (401, 404)


@pytest.mark.parametrize(("kwargs", "error", "needle"), [
    ({"model": "nope"}, openai.NotFoundError, "not found"),
    ({"max_tokens": 10_000}, openai.BadRequestError, "max_tokens"),
    ({"n": 50}, openai.BadRequestError, "n=50"),
    ({"stop": ["a", "b", "c", "d", "e"]}, openai.BadRequestError, "stop"),
    ({"temperature": 7}, openai.BadRequestError, "temperature"),
    ({"messages": []}, openai.BadRequestError, "messages"),
    ({"logprobs": True}, openai.BadRequestError, "logprobs"),
])
def test_bad_requests_are_4xx_with_a_clear_message(client, kwargs, error, needle):
    args = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2, **kwargs}
    with pytest.raises(error) as info:
        client.chat.completions.create(**args)
    assert needle in str(info.value)


def test_body_size_and_malformed_json(server):
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    big = b'{"model": "tiny", "prompt": "' + b"x" * 2_000_000 + b'"}'
    assert httpx.post(server.url + "/v1/completions", content=big, headers=headers).status_code == 413
    chunked = httpx.post(server.url + "/v1/completions", content=iter([big[:1_000_000], big[1_000_000:]]),
                         headers=headers)
    assert chunked.status_code == 413
    bad = httpx.post(server.url + "/v1/completions", content=b"{not json", headers=headers)
    assert bad.status_code == 400 and "error" in bad.json()
