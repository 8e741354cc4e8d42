"""Start the app's Streamlit server: ``scprint app`` in the foreground, :func:`serve` in the
background (for scripts and tests)."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from .core import DEFAULT_MAX_UPLOAD_MB

__all__ = ["PAGE", "build_parser", "free_port", "main", "serve", "streamlit_command"]

PAGE = Path(__file__).with_name("page.py")
"""The Streamlit script of the app."""

MISSING_STREAMLIT = (
    "The web app needs Streamlit, which is not installed: "
    "pip install 'scprint-suite[app]' (or pip install streamlit)."
)


def build_parser(prog: str = "scprint app") -> argparse.ArgumentParser:
    """The parser of ``scprint app``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Start the local web app (Streamlit) for predictions."
    )
    parser.add_argument("--models", default="models",
                        help="folder of the model files (default ./models)")  # fmt: skip
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this computer only)")  # fmt: skip
    parser.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest upload, in MB (default {DEFAULT_MAX_UPLOAD_MB})")  # fmt: skip
    return parser


def _hidden_error_details() -> str:
    """The ``client.showErrorDetails`` value hiding tracebacks: ``"none"`` in recent
    Streamlit versions, where ``false`` now means ``"stacktrace"``; ``false`` before."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(p) for p in version("streamlit").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return "none"
    return "none" if (major, minor) >= (1, 41) else "false"


def streamlit_command(args: argparse.Namespace) -> list[str]:
    """The ``streamlit run`` command line starting the page with these options
    (headless, no usage statistics, no file watcher, no error details in the page)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(PAGE),
        "--server.port", str(args.port),
        "--server.address", args.host,
        "--server.headless", "true",
        "--server.maxUploadSize", str(args.max_upload_mb),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.showErrorDetails", _hidden_error_details(),
        "--client.toolbarMode", "minimal",
        "--",
        "--models", str(Path(args.models).expanduser().resolve()),
        "--max-upload-mb", str(args.max_upload_mb),
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``scprint app``: start the server and wait for it (Ctrl-C stops it).

    Returns
    -------
    The server's exit code; 2 when Streamlit is missing.
    """
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.max_upload_mb <= 0:
        parser.error("--max-upload-mb must be positive")
    if importlib.util.find_spec("streamlit") is None:
        print(f"error: {MISSING_STREAMLIT}", file=sys.stderr)
        return 2
    if not Path(args.models).expanduser().is_dir():
        print(f"warning: the models folder {args.models} does not exist yet.", file=sys.stderr)
    print(f"scPRINT app: http://{args.host}:{args.port} (models: {args.models}; Ctrl-C stops)")
    server = subprocess.Popen(streamlit_command(args))
    previous = signal.signal(signal.SIGTERM, lambda *_: server.terminate())
    try:
        return server.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches the server too; wait for it to stop
        server.terminate()
        return server.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serve(
    models: str | os.PathLike,
    *,
    port: int | None = None,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    timeout: float = 60.0,
    log: str | os.PathLike | None = None,
) -> Iterator[str]:
    """Run the app in the background while the ``with`` block runs.

    Parameters
    ----------
    models
        The models folder.
    port
        Port on 127.0.0.1 (default: a free one).
    max_upload_mb
        Largest upload, in MB.
    timeout
        Seconds to wait for the server's health endpoint (``/_stcore/health``).
    log
        File receiving the server's output (default: discarded).

    Yields
    ------
    The app's URL, once the server answers.

    Raises
    ------
    RuntimeError
        The server stopped or did not answer within ``timeout``.
    """
    if importlib.util.find_spec("streamlit") is None:
        raise ImportError(MISSING_STREAMLIT)
    port = free_port() if port is None else port
    args = build_parser().parse_args(
        ["--models", str(models), "--port", str(port), "--max-upload-mb", str(max_upload_mb)]
    )
    url = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log, "ab")) if log is not None else subprocess.DEVNULL
        server = subprocess.Popen(streamlit_command(args), stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while not _healthy(url):
                if server.poll() is not None:
                    raise RuntimeError(f"the app server stopped (exit code {server.returncode})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the app server did not answer within {timeout:.0f} s")
                time.sleep(0.25)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
