"""The OpenAI-compatible client against a real HTTP server on loopback."""

from __future__ import annotations

import base64
import io
import logging

import pytest
from PIL import Image

from neurflow.client.process import free_loopback_port
from neurflow.labeler.captioning import CaptionRequest
from neurflow.labeler.captioning.base import CaptionerError, CaptionerUnavailable
from neurflow.labeler.captioning.openai_backend import OpenAICaptioner

from .fake_chat_server import FakeChatServer, reply

SECRET = "sk-test-very-secret-0123456789"


def _request(n_sets=1) -> CaptionRequest:
    sets = [[Image.new("RGB", (16, 16), c) for c in ("red", "green")] for _ in range(n_sets)]
    return CaptionRequest(system="be objective", user="what is shared?", image_sets=sets, prompt_id="group_caption", prompt_version="1")


def test_request_carries_base64_images_and_the_key_header(monkeypatch):
    monkeypatch.setenv("NF_TEST_KEY", SECRET)
    with FakeChatServer() as server:
        client = OpenAICaptioner(server.base_url, "tiny-vlm", api_key_env="NF_TEST_KEY", max_retries=0)
        answer = client.generate(_request(n_sets=2))
    assert "Caption: A red circle" in answer
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = req["body"]
    assert body["model"] == "tiny-vlm" and body["temperature"] == 0 and body["max_tokens"] > 0
    assert body["messages"][0] == {"role": "system", "content": "be objective"}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "text", "image_url", "image_url", "text", "image_url", "image_url"]
    assert [p["text"] for p in parts if p["type"] == "text"] == ["what is shared?", "Group 1:", "Group 2:"]
    url = parts[2]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (16, 16) and decoded.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


def test_transient_errors_are_retried_with_backoff():
    answers = [(503, {"error": {"message": "busy"}}), (429, {"error": "slow down"}), (200, reply("Caption: stripes"))]
    with FakeChatServer(answers) as server:
        client = OpenAICaptioner(server.base_url, "m", api_key_env=None, max_retries=3, backoff_s=0.01)
        assert client.generate(_request()) == "Caption: stripes"
    assert len(server.requests) == 3
    assert "Authorization" not in server.requests[0]["headers"]  # no key configured, none sent


def test_client_errors_fail_at_once_with_the_server_message(monkeypatch, caplog):
    monkeypatch.setenv("NF_TEST_KEY", SECRET)
    answers = [(401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}})]
    caplog.set_level(logging.DEBUG)
    with FakeChatServer(answers) as server:
        client = OpenAICaptioner(server.base_url, "m", api_key_env="NF_TEST_KEY", max_retries=3, backoff_s=0.01)
        with pytest.raises(CaptionerError) as info:
            client.generate(_request())
    assert len(server.requests) == 1  # not retried
    assert "HTTP 401" in str(info.value) and "Incorrect API key" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in caplog.text and SECRET not in repr(client)


def test_unreachable_endpoint_is_a_clear_error_without_the_key(monkeypatch, caplog):
    monkeypatch.setenv("NF_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    url = f"http://127.0.0.1:{free_loopback_port()}/v1"
    client = OpenAICaptioner(url, "m", api_key_env="NF_TEST_KEY", max_retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(CaptionerUnavailable) as info:
        client.generate(_request())
    message = str(info.value)
    assert "unreachable" in message and url in message and "3 attempt(s)" in message
    assert caplog.text.count("failed (attempt") == 3
    assert SECRET not in message and SECRET not in caplog.text


def test_timeouts_are_retried_then_reported():
    import time

    def slow(body):
        time.sleep(0.6)
        return 200, reply("Caption: late")

    with FakeChatServer(handler=slow) as server:
        client = OpenAICaptioner(server.base_url, "m", api_key_env=None, max_retries=1, backoff_s=0.01, timeout_s=0.2)
        with pytest.raises(CaptionerUnavailable, match="no answer within 0.2 s"):
            client.generate(_request())
    assert len(server.requests) == 2


def test_malformed_answers_are_clear_errors():
    with FakeChatServer([(200, {"choices": []})]) as server:
        with pytest.raises(CaptionerError, match="without choices"):
            OpenAICaptioner(server.base_url, "m", api_key_env=None, max_retries=0).generate(_request())
    with FakeChatServer([(200, "<html>not json</html>")]) as server:
        with pytest.raises(CaptionerError, match="non-JSON"):
            OpenAICaptioner(server.base_url, "m", api_key_env=None, max_retries=0).generate(_request())


def test_base_url_must_be_http():
    with pytest.raises(ValueError, match="must start with http"):
        OpenAICaptioner("localhost:8000/v1", "m")
