"""The side environment with Nova 34 and Keystone 30, for the tests: the lookup lives in
``bench/side_env.py`` (the benchmarks use it too). A missing environment is an error,
never a skip: these tests must run in CI."""

from bench.side_env import DEFAULT_VENV, ENV_VAR, NovaEnv, NovaEnvMissing, nova_env

__all__ = ["DEFAULT_VENV", "ENV_VAR", "NovaEnv", "NovaEnvMissing", "nova_env"]
