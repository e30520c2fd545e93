"""The OpenAI-compatible client against a real HTTP server on 127.0.0.1 (uvicorn in a thread)."""
from __future__ import annotations

import json
import logging

import pytest
from PIL import Image

from carevl.config import ModelSpec
from carevl.models.backends.openai import OpenAIChatClient, OpenAIGenerator, RequestCache, openai_messages
from carevl.judge_format import judge_messages

from tests.chat_provider import SECRET

def _body(marker: str) -> dict:
    return {"model": "judge", "messages": [{"role": "user", "content": f"compare {marker}"}], "temperature": 0}


def _client(provider, tmp_path, **kw) -> OpenAIChatClient:
    settings = dict(max_concurrency=4, max_retries=3, timeout_s=5.0, backoff_s=0.01)
    settings.update(kw)
    return OpenAIChatClient(provider.endpoint, SECRET, cache=RequestCache(tmp_path / "cache"), **settings)


def test_retries_429_and_500_then_succeeds_and_caches(provider, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    client = _client(provider, tmp_path)
    [result] = client.complete([_body("flaky-1")])
    assert result.text == "Verdict: A\nExplanation: call 3" and result.attempts == 3 and not result.cached
    # A second run is served from the cache: the server sees no new call.
    calls_before = sum(provider.calls.values())
    [again] = _client(provider, tmp_path).complete([_body("flaky-1")])
    assert again.cached and again.text == result.text
    assert sum(provider.calls.values()) == calls_before
    # The key went out in the header only: not in logs, not in the cache, not in the client's repr.
    assert f"Bearer {SECRET}" in provider.auth
    assert SECRET not in caplog.text and SECRET not in repr(client)
    assert all(SECRET not in p.read_text() for p in (tmp_path / "cache").rglob("*.json"))


def test_client_errors_are_not_retried_and_not_cached(provider, tmp_path):
    [result] = _client(provider, tmp_path).complete([_body("bad_request-1")])
    assert result.text is None and result.error == "HTTP 400" and result.attempts == 1
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_gives_up_after_max_retries(provider, tmp_path):
    [result] = _client(provider, tmp_path, max_retries=2).complete([_body("always_500-1")])
    assert result.text is None and "after 3 attempts" in result.error
    assert provider.calls[json.dumps("compare always_500-1")] == 3


def test_timeout_is_retried(provider, tmp_path):
    [result] = _client(provider, tmp_path, timeout_s=0.3).complete([_body("slow-1")])
    assert result.text is not None and result.attempts == 2


def test_malformed_success_is_an_error(provider, tmp_path):
    [result] = _client(provider, tmp_path).complete([_body("empty-1")])
    assert result.text is None and "choices" in result.error


def test_many_requests_keep_their_order(provider, tmp_path):
    bodies = [_body(f"order-{i}") for i in range(20)]
    results = _client(provider, tmp_path, max_concurrency=3).complete(bodies)
    assert [r.text for r in results] == ["Verdict: A\nExplanation: call 1"] * 20
    assert len(results) == 20


def test_generator_sends_the_image_as_a_data_url(provider, tmp_path, monkeypatch):
    monkeypatch.setenv("CAREVL_TEST_KEY", SECRET)
    spec = ModelSpec(path="gpt-judge", kind="vlm", backend="openai", endpoint=provider.endpoint,
                     api_key_env="CAREVL_TEST_KEY")
    gen = OpenAIGenerator(spec, tmp_path / "cache", max_retries=1, backoff_s=0.01)
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    out = gen.generate([judge_messages("q gen", "x", "y")], [image], temperature=0.0, max_new_tokens=32)
    assert out == [["Verdict: A\nExplanation: call 1"]]
    sent = provider.bodies[-1]
    parts = sent["messages"][1]["content"]
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert sent["model"] == "gpt-judge" and sent["max_tokens"] == 32


def test_generator_refuses_a_missing_key(monkeypatch, tmp_path):
    monkeypatch.delenv("CAREVL_MISSING_KEY", raising=False)
    spec = ModelSpec(path="m", kind="vlm", backend="openai", endpoint="http://127.0.0.1:9/v1",
                     api_key_env="CAREVL_MISSING_KEY")
    with pytest.raises(ValueError, match="CAREVL_MISSING_KEY"):
        OpenAIGenerator(spec, tmp_path)


def test_openai_messages_requires_an_image_for_image_parts():
    with pytest.raises(ValueError, match="no image"):
        openai_messages(judge_messages("q", "a", "b"), None)
    text_only = openai_messages(judge_messages("q", "a", "b", with_image=False), None)
    assert text_only[1]["content"][0]["type"] == "text"


def test_a_prefilled_reply_is_sent_for_continuation(provider, tmp_path, monkeypatch):
    monkeypatch.setenv("CAREVL_TEST_KEY", SECRET)
    spec = ModelSpec(path="scorer", kind="vlm", backend="openai", endpoint=provider.endpoint,
                     api_key_env="CAREVL_TEST_KEY")
    gen = OpenAIGenerator(spec, tmp_path / "cache", max_retries=1, backoff_s=0.01)
    prefilled = [{"role": "user", "content": "grade prefill"}, {"role": "assistant", "content": "Score:"}]
    gen.generate([prefilled], [None], temperature=0.0, max_new_tokens=4)
    sent = provider.bodies[-1]
    assert sent["messages"][-1] == {"role": "assistant", "content": "Score:"}
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    gen.generate([[{"role": "user", "content": "grade plain"}]], [None], temperature=0.0, max_new_tokens=4)
    assert "continue_final_message" not in provider.bodies[-1]


def test_each_endpoint_model_uses_its_own_http_settings(monkeypatch, tmp_path, repo_root):
    """Captions and candidates used to borrow the strong judge's HTTP settings; now every endpoint model
    is called with the `http` section of its own spec."""
    from carevl.config import load_config
    from carevl.models.backends import make_generator

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    config = load_config(repo_root / "configs" / "paper.yaml", [
        "models.captioner_api.path=caption-model", "models.captioner_api.kind=vlm",
        "models.captioner_api.backend=openai", "models.captioner_api.endpoint=http://127.0.0.1:9/v1",
        "models.captioner_api.http.max_concurrency=3", "models.captioner_api.http.timeout_s=7",
        "curation.caption_model=captioner_api"])
    judge = make_generator(config.models[config.curation.strong_judge.model], tmp_path)
    caption = make_generator(config.models[config.curation.caption_model], tmp_path)
    assert (judge.client.max_concurrency, judge.client.max_retries) == (64, 8)   # gpt-4o's own section
    assert (caption.client.max_concurrency, caption.client.timeout_s, caption.client.max_retries) == (3, 7.0, 6)
