"""Generation settings: the one definition of every default and every validation rule.

`GenerationConfig` is a frozen, validated dataclass. The documented llmbuilder fields come first with
llmbuilder 2.0.0's defaults (100, 0, 0.8, 50, 0.9, 1.0, True) so users see the same behaviour; our own
fields (`seed`, `stop`, `ignore_eos`) follow; ``constraint`` (what the output must match, see constraint.py)
comes last. The CLI, the Python API (and later the wizard and the chat's `/set`) all build their values
through this class, so a rule is written once.

Rules that differ from llmbuilder, on purpose:
  * ``temperature=0`` means greedy decoding (llmbuilder rejects it). Negative values, values between
    0 and ``MIN_TEMPERATURE`` (1e-5) and values above ``MAX_SCALE`` (1e6) are rejected.
  * ``repetition_penalty`` lies in [1/MAX_SCALE, MAX_SCALE]: beyond that float32 logits turn into 0 or
    inf and the distribution stops meaning anything (at 1e6 it is already flat or a point mass).
  * ``top_k`` of ``None`` or ``0`` disables top-k; ``top_p`` of ``None`` or ``1.0`` disables top-p.
  * ``min_new_tokens`` exists (llmbuilder documents it but raises ``TypeError``): EOS is suppressed until
    that many tokens were generated. Stop strings are *not* deferred by it.

llmbuilder's other fields come last, so that llmbuilder code runs unchanged (`LLMBUILDER_FIELDS`): they
are Python-API keywords only, not settings, flags or ``/set`` keys, and ``to_dict``/``field_names`` leave
them out. ``early_stopping=False`` never stops at EOS (like ``ignore_eos=True``); ``eos_token_id`` replaces
the tokenizer's end-of-sequence id(s); ``pad_token_id`` and ``length_penalty`` cannot apply (one sequence,
no beam search), so setting them warns once per process (`IgnoredSettingWarning`) instead of doing
nothing silently.

A config is immutable: it is validated once and then shared (a generator's default, a chat's ``/reset``
point). Assigning a field raises ``FrozenInstanceError`` saying to make a changed copy with
``cfg.replace(...)`` (or ``dataclasses.replace``), which validates the new values.

This module imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .constraint import Constraint
from .errors import ConfigError

__all__ = [
    "GenerationConfig",
    "LLMBUILDER_FIELDS",
    "IgnoredSettingWarning",
    "PROCESSOR_ORDER",
    "FIELD_HELP",
    "FIELD_GUIDE",
    "TEMPERATURE_PRESETS",
    "MIN_TEMPERATURE",
    "MAX_SCALE",
    "parse_field_value",
    "KEY_ALIASES",
    "field_key",
]

#: The fixed order in which logits are transformed before a token is picked (llmbuilder's order,
#: temperature first). Greedy decoding runs the first three stages then takes the argmax.
PROCESSOR_ORDER: tuple[str, ...] = (
    "temperature",
    "repetition_penalty",
    "min_new_tokens",
    "top_k",
    "top_p",
)

#: One-line explanations, shared by --help, the docs and (later) the wizard.
FIELD_HELP: dict[str, str] = {
    "max_new_tokens": "Maximum number of tokens to generate (generation may stop earlier on EOS or a stop string).",
    "min_new_tokens": "Minimum number of tokens to generate: the end-of-sequence token is blocked until then.",
    "temperature": "Divides the logits: <1 sharpens, >1 flattens the distribution. 0 means greedy.",
    "top_k": "Sample only among the k most likely tokens (ties at the k-th value survive). 0 disables.",
    "top_p": "Nucleus sampling: keep the most likely tokens up to cumulative probability p. 1.0 disables.",
    "repetition_penalty": "Penalise every token already in the sequence (prompt included): >1 discourages repeats, 1.0 is off.",
    "do_sample": "Sample from the distribution (True) or always take the most likely token (False, greedy).",
    "seed": "Seed for the sampler's random generator; the same seed on the same stack gives the same text.",
    "stop": "Strings that end generation; the output is cut before the first one found.",
    "ignore_eos": "Keep generating past the end-of-sequence token until max_new_tokens.",
}

#: A paragraph per setting for the setup wizard: what it does and how it works with the others.
FIELD_GUIDE: dict[str, str] = {
    "temperature": (
        "Temperature reshapes the model's choice before a token is drawn: the scores are divided by it. "
        "Below 1 the likely tokens become more likely (focused, predictable text); above 1 the choice "
        "flattens (surprising, and past about 1.5 often incoherent). 0.8 is the usual starting point. It "
        "works together with top-k and top-p: temperature first reshapes the distribution, then top-k and "
        "top-p decide which tokens may be drawn at all, so a high temperature with a tight top-p still "
        "stays coherent."
    ),
    "top_k": (
        "Top-k keeps only the k most likely tokens as candidates. A small k (10-40) keeps text on track; a "
        "large k, or 0 (off), leaves the choice to temperature and top-p. Higher temperature and higher "
        "top-k both widen the choice: raise one at a time and look at the output."
    ),
    "top_p": (
        "Top-p (nucleus sampling) keeps the most likely tokens until their probabilities add up to p. "
        "Unlike top-k it adapts: when the model is sure, few tokens pass; when it is unsure, many do. "
        "0.9 is a good default; 1.0 turns it off. Top-k and top-p both apply: a token must pass both."
    ),
    "max_new_tokens": (
        "The most tokens to generate. Generation stops earlier at the end-of-text token or at a stop "
        "string. A token is roughly three quarters of an English word."
    ),
    "min_new_tokens": (
        "The fewest tokens to generate: the end-of-text token is blocked until then, so the model cannot "
        "stop after a few words. 0 lets it stop whenever it wants. It cannot exceed the maximum."
    ),
    "repetition_penalty": (
        "Makes every token that already appears in the text (the prompt included) less likely. 1.0 is off; "
        "1.1-1.3 discourages loops of the same words; much higher values make the text avoid ordinary "
        "words like 'the'. Values below 1 encourage repeats."
    ),
    "seed": (
        "The seed of the random generator used for sampling. The same seed, settings and model give the "
        "same text again, which makes results reproducible. Leave it empty for a new random seed each "
        "time (it is printed after the text, so a good result can be repeated)."
    ),
    "stop": (
        "Text that ends the generation when it appears; the output is cut before it. Useful to stop at "
        "the end of an answer (for example 'User:') or a paragraph. Separate several with '|'; write \\n "
        "for a line break (\\n\\n stops at the end of a paragraph), \\| and \\\\ for a literal | and \\."
    ),
    "do_sample": (
        "Greedy decoding always takes the most likely token: the same prompt always gives the same text, "
        "and temperature, top-k and top-p do not matter. Sampling draws each token at random from the "
        "shaped distribution: more varied, more natural text."
    ),
}

#: The temperatures of the documented sampling styles (llmbuilder's conservative/balanced/creative).
TEMPERATURE_PRESETS: dict[str, float] = {"focused": 0.3, "balanced": 0.8, "creative": 1.5}

_MAX_SEED = 2**63 - 1

#: Smallest non-zero temperature. Below it z / T overflows float32 for ordinary logits and the
#: distribution is a point mass anyway: use 0 (greedy) for that.
MIN_TEMPERATURE = 1e-5

#: Largest temperature and repetition penalty (and 1/MAX_SCALE the smallest penalty): logits are float32,
#: and dividing by a number float32 cannot hold would turn every score into 0 or NaN.
MAX_SCALE = 1e6


#: llmbuilder's GenerationConfig fields that are not settings of this tool (Python API only).
LLMBUILDER_FIELDS: tuple[str, ...] = ("early_stopping", "eos_token_id", "pad_token_id", "length_penalty")
_LLMBUILDER_ONLY = {"llmbuilder_only": True}  # dataclass field metadata marking them
_NOT_A_SETTING = {"not_a_setting": True}  # metadata of `constraint`: per run (flags, API, batch lines, /format)

#: Why a field cannot apply here, said once per process when a caller first sets it.
_CANNOT_APPLY: dict[str, str] = {
    "pad_token_id": "one sequence is generated at a time, so nothing is ever padded (llmbuilder ignores it too)",
    "length_penalty": "it only scores beams in beam search, which neither llmbuilder nor llmbuilder-cli does "
    "(llmbuilder ignores it too)",
}


class IgnoredSettingWarning(UserWarning):
    """A GenerationConfig field was set that cannot change the generation (``pad_token_id``,
    ``length_penalty``): it is accepted for llmbuilder code, and this says it has no effect."""


_SAID: set[str] = set()  # the fields already warned about in this process


def _warn_cannot_apply(name: str, value: Any) -> None:
    """Warn, the first time in this process, that ``name`` has no effect; the warning points at the
    first frame outside this package (the caller's line), not at dataclasses' machinery."""
    if name in _SAID:
        return
    _SAID.add(name)
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 2
    while frame is not None and (
        frame.f_code.co_filename.startswith(package)
        or frame.f_code.co_filename in (dataclasses.__file__, "<string>")  # dataclasses' generated __init__
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(f"{name}={value!r} has no effect: {_CANNOT_APPLY[name]}", IgnoredSettingWarning,
                  stacklevel=level)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class GenerationConfig:
    """How to turn logits into tokens, validated on construction.

    Invalid values raise :class:`llmbuilder_cli.errors.ConfigError` with a message that names the field,
    the value and the valid range.
    """

    max_new_tokens: int = 100  # tokens to generate at most; > 0
    min_new_tokens: int = 0  # EOS is blocked until this many new tokens exist; 0 <= n <= max_new_tokens
    temperature: float = 0.8  # logits are divided by it; 0 = greedy; else MIN_TEMPERATURE..MAX_SCALE
    top_k: int | None = 50  # None or 0 = off; else keep logits >= the k-th largest (ties survive)
    top_p: float | None = 0.9  # None or 1.0 = off; else 0 < p <= 1, llmbuilder's boundary rule
    repetition_penalty: float = 1.0  # CTRL-style, whole sequence; 1.0 = off; 1/MAX_SCALE..MAX_SCALE
    do_sample: bool = True  # False = greedy (argmax)
    seed: int | None = None  # None = a fresh random seed per generation (reported in the stats)
    stop: tuple[str, ...] = field(default=())  # output is cut before the first stop string
    ignore_eos: bool = False  # True = never stop on EOS
    # llmbuilder's other fields (LLMBUILDER_FIELDS): Python API only, not settings.
    early_stopping: bool = field(default=True, metadata=_LLMBUILDER_ONLY)  # False = never stop on EOS
    eos_token_id: int | None = field(default=None, metadata=_LLMBUILDER_ONLY)  # None = the tokenizer's EOS id(s)
    pad_token_id: int | None = field(default=None, metadata=_LLMBUILDER_ONLY)  # no effect (warns once when set)
    length_penalty: float = field(default=1.0, metadata=_LLMBUILDER_ONLY)  # no effect (warns once unless 1.0)
    # What the output must match (constraint.py); not a setting: given per run, never saved in a profile.
    constraint: Constraint | None = field(default=None, metadata=_NOT_A_SETTING)

    def __post_init__(self) -> None:
        # Normalise friendly input types before validating (lists of stop strings, a single string).
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        elif stop is None:
            stop = ()
        elif isinstance(stop, Iterable):
            stop = tuple(stop)
        object.__setattr__(self, "stop", stop)
        if _is_int(self.top_k) and self.top_k == 0:
            object.__setattr__(self, "top_k", None)
        if _is_number(self.temperature):
            object.__setattr__(self, "temperature", float(self.temperature))
        if _is_number(self.top_p):
            object.__setattr__(self, "top_p", float(self.top_p))
        if _is_number(self.repetition_penalty):
            object.__setattr__(self, "repetition_penalty", float(self.repetition_penalty))
        if _is_number(self.length_penalty):
            object.__setattr__(self, "length_penalty", float(self.length_penalty))
        self._validate()
        if self.pad_token_id is not None:
            _warn_cannot_apply("pad_token_id", self.pad_token_id)
        if self.length_penalty != 1.0:
            _warn_cannot_apply("length_penalty", self.length_penalty)

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        def fail(name: str, rule: str) -> None:
            raise ConfigError(
                f"{name} must be {rule} (got {getattr(self, name)!r})",
                hint=FIELD_HELP.get(name, ""),
                field=name,
            )

        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            fail("max_new_tokens", "a whole number >= 1")
        if isinstance(self.min_new_tokens, float) and 0.0 < self.min_new_tokens <= 10.0:
            # GenerationConfig(100, 0.5): llmbuilder's second field is temperature, ours min_new_tokens.
            raise ConfigError(
                f"min_new_tokens must be a whole number >= 0 (got {self.min_new_tokens!r})",
                hint=f"the second field of this GenerationConfig is min_new_tokens, not temperature as in "
                f"llmbuilder: pass the temperature by name, temperature={self.min_new_tokens!r}",
                field="min_new_tokens",
            )
        if not _is_int(self.min_new_tokens) or self.min_new_tokens < 0:
            fail("min_new_tokens", "a whole number >= 0")
        if self.min_new_tokens > self.max_new_tokens:
            raise ConfigError(
                f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})",
                hint="raise max_new_tokens or lower min_new_tokens",
                field="min_new_tokens",
            )
        if (
            not _is_number(self.temperature)
            or not math.isfinite(self.temperature)
            or not (self.temperature == 0.0 or MIN_TEMPERATURE <= self.temperature <= MAX_SCALE)
        ):
            fail("temperature", f"0 (greedy) or a number from {MIN_TEMPERATURE:g} to {MAX_SCALE:g}")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 0):
            fail("top_k", "a whole number >= 0 (0 disables top-k)")
        if self.top_p is not None and (
            not _is_number(self.top_p) or not math.isfinite(self.top_p) or not 0.0 < self.top_p <= 1.0
        ):
            fail("top_p", "a number in (0, 1] (1.0 disables top-p)")
        if (
            not _is_number(self.repetition_penalty)
            or not math.isfinite(self.repetition_penalty)
            or not 1 / MAX_SCALE <= self.repetition_penalty <= MAX_SCALE
        ):
            fail("repetition_penalty", f"a number from {1 / MAX_SCALE:g} to {MAX_SCALE:g} (1.0 is off)")
        if not isinstance(self.do_sample, bool):
            fail("do_sample", "true or false")
        if not isinstance(self.ignore_eos, bool):
            fail("ignore_eos", "true or false")
        if not isinstance(self.early_stopping, bool):
            fail("early_stopping", "true or false (false never stops at the end-of-sequence token)")
        for name in ("eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                fail(name, "None or a token id (a whole number >= 0)")
        if self.constraint is not None and not isinstance(self.constraint, Constraint):
            raise ConfigError(
                f"constraint must be a Constraint or None (got {type(self.constraint).__name__})",
                hint='build one with Constraint("json_schema", {...}), Constraint("regex", "..."), '
                'Constraint("choice", ["a", "b"]), Constraint("json") or Constraint("grammar", "...")',
                field="constraint",
            )
        if not _is_number(self.length_penalty) or not math.isfinite(self.length_penalty):
            fail("length_penalty", "a finite number")
        if self.seed is not None and (not _is_int(self.seed) or not 0 <= self.seed <= _MAX_SEED):
            fail("seed", f"a whole number between 0 and {_MAX_SEED}")
        for s in self.stop:
            if not isinstance(s, str) or s == "":
                raise ConfigError(
                    f"stop strings must be non-empty text (got {s!r})", hint=FIELD_HELP["stop"], field="stop"
                )

    # ------------------------------------------------------------------ derived views
    @property
    def greedy(self) -> bool:
        """True when tokens are picked by argmax: ``do_sample=False`` or ``temperature == 0``."""
        return not self.do_sample or self.temperature == 0.0

    @property
    def stops_at_eos(self) -> bool:
        """True unless ``ignore_eos`` or ``early_stopping=False`` turns the end-of-sequence stop off."""
        return self.early_stopping and not self.ignore_eos

    def eos_ids_for(self, tokenizer_eos_ids: Sequence[int]) -> tuple[int, ...]:
        """The ids that end generation: none when `stops_at_eos` is False, else ``eos_token_id`` when it
        is set, else the tokenizer's end-of-sequence ids."""
        if not self.stops_at_eos:
            return ()
        if self.eos_token_id is not None:
            return (self.eos_token_id,)
        return tuple(tokenizer_eos_ids)

    def replace(self, **changes: Any) -> "GenerationConfig":
        """A copy with some fields changed, validated again (the way to "change" a frozen config)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings fields (`field_names`) as a JSON-ready dict."""
        d = {name: getattr(self, name) for name in self.field_names()}
        d["stop"] = list(self.stop)
        return d

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The settings fields: what profiles, environment variables, ``/set``, batch lines and
        ``--json``'s ``config`` hold (every field but `LLMBUILDER_FIELDS` and ``constraint``)."""
        return tuple(f.name for f in dataclasses.fields(cls)
                     if not f.metadata.get("llmbuilder_only") and not f.metadata.get("not_a_setting"))


def _refuse_assignment(self: GenerationConfig, name: str, value: Any) -> None:
    """``cfg.temperature = 0.5``: a GenerationConfig is immutable; say how to get a changed copy."""
    raise dataclasses.FrozenInstanceError(
        f"cannot assign to field {name!r}: a GenerationConfig is immutable (validated once, then shared) — "
        f"make a changed copy instead: cfg = cfg.replace({name}={value!r}) "
        f"(or dataclasses.replace(cfg, {name}={value!r}))"
    )


GenerationConfig.__setattr__ = _refuse_assignment  # type: ignore[method-assign,assignment]


#: The one table of friendly spellings for setting keys (the CLI's flag names), used by the flags' help,
#: ``config set`` / settings files (settings.canonical_key) and the chat's ``/set``.
KEY_ALIASES: dict[str, str] = {"max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens"}


def field_key(name: str) -> str:
    """The key a user meant, spelled the program's way: case and surrounding space ignored, hyphens (and
    leading ones, as in a flag) become underscores, aliases map to their field: ``--Max-Tokens`` ->
    ``max_new_tokens``. Whether the key exists is left to the caller, which knows its valid keys."""
    key = name.strip().lower().replace("-", "_").lstrip("_")
    return KEY_ALIASES.get(key, key)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_OFF = {"none", "off", "null", ""}


def parse_field_value(name: str, text: str) -> Any:
    """Turn user text (``/set``, environment variables, settings files) into a typed field value.

    Raises ConfigError naming the field when the text does not parse; range checks happen when the
    value is put into a GenerationConfig.
    """
    fields = GenerationConfig.field_names()
    if name not in fields:
        from difflib import get_close_matches

        close = get_close_matches(name, fields, n=1)
        raise ConfigError(
            f"unknown setting {name!r}",
            hint=f"did you mean {close[0]!r}?" if close else "settings: " + ", ".join(fields),
            field=name,
        )
    raw = text.strip()
    low = raw.lower()
    try:
        if name in ("do_sample", "ignore_eos"):
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if name in ("top_k", "top_p", "seed") and low in _OFF:
            return None
        if name == "stop":
            return () if low in _OFF else tuple(s for s in raw.split("|") if s)
        if name in ("max_new_tokens", "min_new_tokens", "top_k", "seed"):
            return int(raw)
        return float(raw)
    except ValueError:
        kind = {
            "do_sample": "true or false",
            "ignore_eos": "true or false",
            "stop": "text",
        }.get(name, "a whole number" if name in ("max_new_tokens", "min_new_tokens", "top_k", "seed") else "a number")
        raise ConfigError(f"{name} must be {kind} (got {text!r})", hint=FIELD_HELP[name], field=name) from None
