"""The bundled SmolLM2 served with an adapter, streamed through the official openai client."""

from __future__ import annotations

import pytest

from tests.serve.conftest import API_KEY, start_server


@pytest.mark.slow
def test_openai_client_streams_from_an_adapter_on_the_real_model(tmp_path):
    import openai
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.models import load_model
    from tuneforge.models.load import resolve_model

    base = load_model("smollm2-135m-instruct", device="cpu")
    adapter = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)  # 0.02 or 0.1 leave the greedy answer unchanged
    adapter.save_pretrained(tmp_path / "adapter")
    running = start_server(resolve_model("smollm2-135m-instruct"), {"support": str(tmp_path / "adapter")})
    try:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key=API_KEY, max_retries=0, timeout=300)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        chunks = list(client.chat.completions.create(model="support", messages=messages, max_tokens=12,
                                                     temperature=0, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
        base_text = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12,
                                                   temperature=0).choices[0].message.content
        assert "Paris" in base_text  # the real model answers sensibly through the server
        assert text.strip() and text != base_text  # and the adapter is what answered the stream
    finally:
        running.stop()
