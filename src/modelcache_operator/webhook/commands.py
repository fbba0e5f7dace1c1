"""The commands injected containers run: the prewarm program's contract, as the webhook sees it.

`InjectionSettings` (patch.py) holds one builder of each kind, so tests can inject their own and expect exact
argv. The prewarm hook module is imported lazily (noqa PLC0415) so the webhook and its tests do not depend
on it.
"""

from __future__ import annotations

from typing import Protocol


class PoststartCommand(Protocol):
    def __call__(
        self, tools_dir: str, model_dirs: list[str], concurrency: int, timeout_seconds: int, log_file: str
    ) -> list[str]: ...


class WaitCommand(Protocol):
    def __call__(self, tools_dir: str, model_dir: str, timeout_seconds: int) -> list[str]: ...


class InstallCommand(Protocol):
    def __call__(self, tools_dir: str) -> list[str]: ...


class WarmCommand(Protocol):
    def __call__(
        self, tools_dir: str, model_dirs: list[str], concurrency: int, timeout_seconds: int
    ) -> list[str]: ...


def default_poststart_command(
    tools_dir: str, model_dirs: list[str], concurrency: int, timeout_seconds: int, log_file: str
) -> list[str]:
    from modelcache_operator.prewarm import hook  # noqa: PLC0415

    return hook.poststart_command(tools_dir, model_dirs, concurrency, timeout_seconds, log_file)


def default_wait_command(tools_dir: str, model_dir: str, timeout_seconds: int) -> list[str]:
    from modelcache_operator.prewarm import hook  # noqa: PLC0415

    return hook.wait_command(tools_dir, model_dir, timeout_seconds)


def default_install_command(tools_dir: str) -> list[str]:
    from modelcache_operator.prewarm import hook  # noqa: PLC0415

    return hook.install_command(tools_dir)


def default_warm_command(
    tools_dir: str, model_dirs: list[str], concurrency: int, timeout_seconds: int
) -> list[str]:
    dirs = [arg for d in model_dirs for arg in ("--dir", d)]
    # Same interpreter flags as the hook: ignore PYTHON* env and site-packages; prewarm.py is stdlib-only.
    return [
        "python3",
        "-I",
        "-S",
        f"{tools_dir.rstrip('/')}/prewarm.py",
        "warm",
        *dirs,
        "--concurrency",
        str(concurrency),
        "--timeout",
        str(timeout_seconds),
    ]
