"""Where the side environment with Nova 34 and Keystone 30 lives: ``$APPLIANCE_NOVA_VENV`` if
set, else ``<repo>/.nova-venv`` (built by ``build/nova-env.sh``, which ``build/bootstrap.sh``
runs). For the tests a missing environment is an error, never a skip (they must run in
CI); the benchmarks report the scenarios that need it as skipped, with the reason.
``tests/realnova/env.py`` re-exports these names for the tests."""

from __future__ import annotations

import os
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ENV_VAR = "APPLIANCE_NOVA_VENV"
DEFAULT_VENV = os.path.join(ROOT, ".nova-venv")


class NovaEnvMissing(RuntimeError):
    pass


@dataclass(frozen=True)
class NovaEnv:
    root: str

    @property
    def bin(self) -> str:
        return os.path.join(self.root, "bin")

    @property
    def python(self) -> str:
        return os.path.join(self.bin, "python")

    def program(self, name: str) -> str:
        """A console script of the side environment (``nova-manage``, ``gunicorn``...)."""
        path = os.path.join(self.bin, name)
        if not os.access(path, os.X_OK):
            raise NovaEnvMissing(f"{path} is missing: the side environment {self.root} is "
                                 f"incomplete; rebuild it with build/nova-env.sh")
        return path

    def site_packages(self) -> str:
        lib = os.path.join(self.root, "lib")
        for name in sorted(os.listdir(lib)):
            candidate = os.path.join(lib, name, "site-packages")
            if name.startswith("python") and os.path.isdir(candidate):
                return candidate
        raise NovaEnvMissing(f"no site-packages under {lib}")

    def subprocess_env(self, **extra: str) -> dict:
        """The environment for a subprocess of the side python: the project's venv and
        PYTHONPATH do not leak in (Nova's dependencies differ from ours)."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env["PATH"] = self.bin + os.pathsep + env.get("PATH", "")
        env["VIRTUAL_ENV"] = self.root
        env.update(extra)
        return env


def nova_env() -> NovaEnv:
    """The side environment, or :class:`NovaEnvMissing` saying how to get one."""
    configured = os.environ.get(ENV_VAR)
    root = configured or DEFAULT_VENV
    python = os.path.join(root, "bin", "python")
    if not os.access(python, os.X_OK):
        source = f"${ENV_VAR}={configured}" if configured else f"{DEFAULT_VENV} (${ENV_VAR} unset)"
        raise NovaEnvMissing(
            f"the side environment with Nova 34 is missing: no {python} for {source}. "
            f"Build it with `bash build/nova-env.sh` (make test runs it through "
            f"build/bootstrap.sh) or point ${ENV_VAR} at an existing one.")
    if not os.access(os.path.join(root, "bin", "nova-manage"), os.X_OK):
        raise NovaEnvMissing(f"{root} has no nova-manage: not a side environment with Nova "
                             f"34; rebuild it with build/nova-env.sh")
    return NovaEnv(os.path.abspath(root))
