"""Captioning through any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, Ollama, ...).

Images travel inline as base64 PNG data URLs (servers may have no internet access, so never remote
URLs). Connection failures, timeouts, 408/409/429 and 5xx answers are retried with exponential
backoff (honouring ``Retry-After``); other 4xx answers fail at once with the server's message. The API
key is read from an environment variable when a request is made and only ever sent in the
``Authorization`` header: it is not stored in errors, logs or ``repr``.
"""

from __future__ import annotations

import logging
import os
import time

import httpx

from neurflow.labeler.captioning.base import CaptionerError, CaptionerUnavailable, CaptionRequest, png_data_url

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAICaptioner:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 3,
        max_new_tokens: int = 160,
        backoff_s: float = 1.0,
        image_detail: str = "low",
        transport: httpx.BaseTransport | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"captioner base_url {base_url!r} must start with http:// or https://, e.g. http://localhost:8000/v1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_new_tokens = max_new_tokens
        self.backoff_s = backoff_s
        self.image_detail = image_detail
        self.name = f"openai:{model}@{self.base_url}"
        self._client = httpx.Client(timeout=timeout_s, transport=transport)

    def __repr__(self) -> str:  # no key here, ever
        return f"OpenAICaptioner(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def close(self) -> None:
        self._client.close()

    # -- requests -------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _redact(self, text: str) -> str:
        """Servers sometimes echo the key they rejected; never pass it on."""
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        return text.replace(key, "***") if key and len(key) >= 4 else text

    def _post(self, body: dict) -> dict:
        url = f"{self.base_url}/chat/completions"
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(attempts):
            wait = self.backoff_s * (2**attempt)
            try:
                response = self._client.post(url, json=body, headers=self._headers())
            except httpx.TimeoutException:
                last = f"no answer within {self.timeout_s:g} s"
            except httpx.TransportError as exc:
                last = self._redact(f"{type(exc).__name__}: {exc}")
            else:
                if response.status_code == 200:
                    try:
                        return response.json()
                    except ValueError:
                        raise CaptionerError(f"captioning endpoint {url} returned a non-JSON answer: {response.text[:200]!r}") from None
                detail = self._redact(_error_detail(response))
                if response.status_code not in RETRY_STATUS:
                    raise CaptionerError(f"captioning endpoint {url} refused the request: HTTP {response.status_code}: {detail}")
                last = f"HTTP {response.status_code}: {detail}"
                retry_after = response.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(float(retry_after), 30.0)
            log.warning("captioning request to %s failed (attempt %d/%d): %s", url, attempt + 1, attempts, last)
            if attempt + 1 < attempts:
                time.sleep(wait)
        raise CaptionerUnavailable(
            f"captioning endpoint {url} is unreachable or failing after {attempts} attempt(s): {last}; "
            "check that the server runs and that base_url ends with the API root (e.g. http://localhost:8000/v1)"
        )

    @staticmethod
    def _answer(payload: dict) -> str:
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise CaptionerError(f"captioning endpoint answered without choices[0].message.content: {str(payload)[:200]}") from None
        if isinstance(content, list):  # some servers return content parts
            content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str) or not content.strip():
            raise CaptionerError("captioning endpoint returned an empty answer")
        return content

    def generate(self, request: CaptionRequest) -> str:
        parts: list[dict] = [{"type": "text", "text": request.user}]
        for title, images in zip(request.titles(), request.image_sets):
            parts.append({"type": "text", "text": title})
            parts.extend({"type": "image_url", "image_url": {"url": png_data_url(im), "detail": self.image_detail}} for im in images)
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages.append({"role": "user", "content": parts})
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_new_tokens}
        return self._answer(self._post(body))

    def complete_text(self, system: str, user: str) -> str | None:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": 24}
        return self._answer(self._post(body))


def _error_detail(response: httpx.Response) -> str:
    try:
        payload = response.json()
        message = payload.get("error", {}).get("message") if isinstance(payload.get("error"), dict) else payload.get("error")
        return str(message or payload)[:300]
    except ValueError:
        return response.text[:300]
