"""Test-wide settings."""

import os

from hypothesis import settings

# Property tests explore the same examples on every run, so CI never turns red on a new random
# draw. HYPOTHESIS_PROFILE=explore draws new random examples each run.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
