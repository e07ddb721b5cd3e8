"""Suite-wide settings.

The default suite is compile-bound (tiny models, a few steps each), so XLA:CPU
compiles without LLVM optimisation there (`FAST_COMPILE`: about 2x faster to
compile, same results within the tests' tolerances); a run that selects the slow
tests (`make test-slow`: real training) keeps XLA's default. Child processes
started through `tests.helpers.subprocess_env` inherit the choice.
"""
import os

FAST_COMPILE = "--xla_backend_optimization_level=0"


def pytest_configure(config):
    if config.option.markexpr.strip() != "slow":
        flags = os.environ.get("XLA_FLAGS", "")
        if FAST_COMPILE not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} {FAST_COMPILE}".strip()
