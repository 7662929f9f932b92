"""Judge models behind the :data:`~fedpit.eval.judge.judge.JudgeBackend` interface.

- :class:`OpenAIChatBackend`: any OpenAI-compatible ``/v1/chat/completions`` endpoint
  (vLLM, Ollama, llama.cpp server, OpenAI), with the standard library only.
- :class:`HFChatBackend`: a local Hugging Face chat model, greedy, through its tokenizer's
  chat template.

Both carry ``name`` and ``model`` attributes, which label the judge in result files.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from fedpit.errors import ConfigError, FedPITError, ModelError
from fedpit.eval.judge.judge import JudgeBackend

if TYPE_CHECKING:
    import torch
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from fedpit.lm.runtime import Runtime

ENV_URL = "FEDPIT_JUDGE_URL"
ENV_MODEL = "FEDPIT_JUDGE_MODEL"
ENV_KEY = "FEDPIT_JUDGE_API_KEY"
ENV_KEY_FALLBACK = "OPENAI_API_KEY"
CHAT_PATH = "/chat/completions"


def chat_completions_url(url: str) -> str:
    """The full endpoint for a server's base URL.

    ``http://host:8000``, ``http://host:8000/v1`` and the full
    ``http://host:8000/v1/chat/completions`` all name the same endpoint.
    """
    url = url.rstrip("/")
    if url.endswith(CHAT_PATH):
        return url
    if url.endswith("/v1"):
        return url + CHAT_PATH
    return url + "/v1" + CHAT_PATH


class OpenAIChatBackend:
    """A judge behind an OpenAI-compatible chat-completions endpoint."""

    name = "openai"

    def __init__(
        self,
        url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 60,
        temperature: float = 0,
        max_tokens: int | None = 512,
    ) -> None:
        """Store the endpoint; nothing is sent until the backend is called."""
        self.url = chat_completions_url(url)
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens

    def __call__(self, messages: list[dict[str, str]]) -> str:
        """Send one chat request; return the assistant's reply text."""
        body: dict[str, object] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                payload = json.loads(response.read().decode())
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:300]
            hint = {
                401: f"check the API key (--judge-api-key or {ENV_KEY} / {ENV_KEY_FALLBACK})",
                403: f"check the API key (--judge-api-key or {ENV_KEY} / {ENV_KEY_FALLBACK})",
                404: "check the URL (a server base such as http://host:8000/v1) and the model",
            }.get(err.code, "check the judge server's log")
            raise FedPITError(
                f"judge endpoint {self.url} (model {self.model!r}) answered HTTP {err.code}: "
                f"{detail.strip() or err.reason}; {hint}"
            ) from err
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            reason = getattr(err, "reason", err)
            raise FedPITError(
                f"cannot reach the judge endpoint {self.url}: {reason}; start the server "
                f"(vLLM, Ollama, llama.cpp) or fix --judge-url / {ENV_URL}"
            ) from err
        except json.JSONDecodeError as err:
            raise FedPITError(
                f"judge endpoint {self.url} did not answer with JSON ({err}); is it an "
                "OpenAI-compatible chat-completions server?"
            ) from err
        try:
            content = payload["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as err:
            raise FedPITError(
                f"judge endpoint {self.url} answered without choices[0].message.content: "
                f"{json.dumps(payload)[:300]}"
            ) from err
        return content or ""


def openai_chat_backend(
    url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 60,
    temperature: float = 0,
) -> OpenAIChatBackend:
    """An OpenAI-compatible judge; missing arguments come from the environment.

    Environment: ``FEDPIT_JUDGE_URL``, ``FEDPIT_JUDGE_MODEL``, ``FEDPIT_JUDGE_API_KEY``
    (``OPENAI_API_KEY`` as fallback). Local servers usually need no key.
    """
    url = url or os.environ.get(ENV_URL)
    model = model or os.environ.get(ENV_MODEL)
    api_key = api_key or os.environ.get(ENV_KEY) or os.environ.get(ENV_KEY_FALLBACK)
    if not url:
        raise ConfigError(
            f"the openai judge needs a URL: pass --judge-url or set {ENV_URL} "
            "(e.g. http://127.0.0.1:8000/v1 for vLLM, http://127.0.0.1:11434/v1 for Ollama)"
        )
    if not model:
        raise ConfigError(
            f"the openai judge needs a model name: pass --judge-model or set {ENV_MODEL}"
        )
    return OpenAIChatBackend(url, model, api_key, timeout, temperature)


class HFChatBackend:
    """A local Hugging Face chat model as judge: greedy, through the chat template."""

    name = "hf"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        label: str,
        max_new_tokens: int = 256,
    ) -> None:
        """Wrap a loaded model and tokenizer; the tokenizer must have a chat template."""
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError(
                f"judge model {label!r} has no chat template; use an instruction-tuned chat model"
            )
        from fedpit.lm.batched_generation import make_generate_fn

        self.model = label
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self._net = model
        self._generate = make_generate_fn(model, tokenizer, batch_size=1, progress=False)

    def __call__(self, messages: list[dict[str, str]]) -> str:
        """Generate the judge's reply greedily (adapters of a PEFT model disabled)."""
        from contextlib import nullcontext

        from fedpit.lm.generation import GenerationSpec
        from fedpit.model.prompts import chat_text

        prompt = chat_text(self.tokenizer, messages, add_generation_prompt=True)
        spec = GenerationSpec(max_new_tokens=self.max_new_tokens)
        # The judge is the base model: a run's adapters must not judge their own answers.
        disable = getattr(self._net, "disable_adapter", None)
        with disable() if disable is not None else nullcontext():
            return self._generate([prompt], spec)[0].text


def hf_backend(source: Runtime | str | Path, max_new_tokens: int = 256) -> HFChatBackend:
    """A local judge from a loaded runtime, or a model name/path (as ``model.name``)."""
    from fedpit.lm.runtime import Runtime  # the model stack: only for a local judge

    if isinstance(source, Runtime):
        return HFChatBackend(source.model, source.tokenizer, source.base_name, max_new_tokens)
    import torch

    from fedpit.model import resolve as model_lib

    path = model_lib.prepare(str(source))
    tokenizer = model_lib.load_tokenizer(path)
    net = model_lib.load_model(path, model_lib.pick_device("auto"), torch.float32)
    return HFChatBackend(net, tokenizer, str(source), max_new_tokens)


def add_judge_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--judge none|openai|hf`` and its options to a command's parser."""
    group = parser.add_argument_group("pairwise judge (the paper's win / tie / lose)")
    group.add_argument(
        "--judge",
        choices=("none", "openai", "hf"),
        default="none",
        help="judge backend: an OpenAI-compatible endpoint or a local Hugging Face model",
    )
    group.add_argument(
        "--judge-model",
        metavar="NAME",
        help=f"judge model: served model name (openai; or {ENV_MODEL}) or a name/path (hf)",
    )
    group.add_argument("--judge-url", metavar="URL", help=f"chat-completions server (or {ENV_URL})")
    group.add_argument(
        "--judge-api-key",
        metavar="KEY",
        help=f"API key (default: {ENV_KEY}, then {ENV_KEY_FALLBACK})",
    )
    group.add_argument(
        "--judge-retries",
        type=int,
        default=2,
        metavar="N",
        help="retries of an unreadable judge reply before it counts as unparseable",
    )


def make_backend(args: argparse.Namespace) -> JudgeBackend | None:
    """The judge chosen by :func:`add_judge_arguments` options, or None for ``--judge none``."""
    if args.judge == "none":
        return None
    if args.judge == "openai":
        return openai_chat_backend(args.judge_url, args.judge_model, args.judge_api_key)
    if not args.judge_model:
        raise ConfigError("--judge hf needs --judge-model (a Hugging Face id or a local path)")
    return hf_backend(args.judge_model)
