"""The inference engine: torch, tokenizers and sentencepiece live here and nowhere above.

Never imports typer, rich, questionary or the settings layer (tests/test_boundaries.py checks it).
Importing this package imports torch, so the API and the CLI import it lazily, inside functions.
"""

import warnings

# torch warns at import time when NumPy is absent; the engine never needs NumPy, so keep stderr clean.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)

import torch  # noqa: E402  (after the filter on purpose)

__all__ = ["torch"]
