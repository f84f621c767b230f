"""``llmbuilder config``: see and change the settings file (profiles) without opening it.

``show`` prints every effective value and where it came from; ``path``, ``profiles``, ``set``, ``unset``,
``use`` and ``remove`` do what they say. Values are checked with the same rules as the command line
before anything is written, and every write is atomic (see settings.py). Listings go to stdout (they are
what was asked for); confirmations go to stderr. Torch is never imported, and settings.py only when a
command runs (``llmbuilder --help`` imports this module to list the commands).
"""

# No `from __future__ import annotations`: with it Typer compiles every option's annotation from a
# string, several times, on each start of the program (see app.py).

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..errors import ConfigError, UsageError
from ..files import user_path
from .completion import complete_profile, complete_setting_key, complete_setting_value

if TYPE_CHECKING:
    from ..settings import Settings

config_app = typer.Typer(
    help="Show and change saved settings: profiles of default options (see 'config show').",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

ProfileOpt = Annotated[
    Optional[str],
    typer.Option("--profile", "-P", help="Profile to use. Default: LLMBUILDER_PROFILE, else the default profile.",
                 autocompletion=complete_profile),
]


def _show(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value), ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@config_app.command("path")
def path_command() -> None:
    """Print the settings file's path (LLMBUILDER_HOME changes where it is)."""
    from .. import settings as st

    print(st.settings_path())


@config_app.command("show")
def show_command(
    profile: ProfileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object: key → {value, source}.")] = False,
) -> None:
    """Every effective setting, and where it comes from: flag > environment > profile > default."""
    from .. import settings as st

    resolved = st.resolve({}, profile=profile)
    if as_json:
        out = {k: {"value": list(v) if isinstance(v, tuple) else v, "source": resolved.sources[k]}
               for k, v in ((k, resolved.values.get(k)) for k in st.KEYS)}
        print(json.dumps({"profile": resolved.profile, "file": str(resolved.settings.path), "settings": out},
                         ensure_ascii=False))
        return
    print(f"profile: {resolved.profile or '(none)'}    file: {resolved.settings.path}")
    width = max(map(len, st.KEYS))
    for key in st.KEYS:
        value = resolved.values.get(key)
        if key == "model" and value is None:
            value = "demo"
        print(f"{key:<{width}}  {_show(value):<24} {resolved.sources[key]}")


@config_app.command("profiles")
def profiles_command() -> None:
    """List the saved profiles (* marks the default)."""
    from .. import settings as st

    settings = st.Settings.read()
    name, _ = st.active_profile(settings, None, {})
    if not settings.profiles:
        from .app import as_typed

        sys.stderr.write(as_typed(f"no profiles yet in {settings.path}; create one with 'llmbuilder setup' or "
                                  "'llmbuilder config set KEY VALUE'\n"))
        return
    for prof, values in settings.profiles.items():
        mark = "*" if prof == name else " "
        keys = ", ".join(values) or "empty"
        print(f"{mark} {prof}  ({keys})")


def _target(settings: "Settings", profile: str | None) -> str:
    """The profile a write goes to: --profile, else the active profile, else 'default'."""
    from .. import settings as st

    if profile:
        reason = st.valid_profile_name(profile)
        if reason:
            raise UsageError(f"invalid profile name {profile!r}", hint=reason)
        return profile
    import os

    name = os.environ.get(st.PROFILE_ENV) or settings.default_profile
    if not name and "default" in settings.profiles:
        name = "default"
    return name or "default"


def _stored(key: str, text: str) -> Any:
    """The value ``config set`` writes: checked, with paths made absolute and "off" in storable form."""
    from .. import settings as st

    value = st.parse_value(key, text)
    if key in ("model", "tokenizer") and value != "demo":
        p = user_path(value)
        try:
            found = p.exists()
        except OSError as exc:  # e.g. a name longer than the system allows
            raise ConfigError(f"{key} path cannot be used: {exc.strerror or exc}", hint="check the path",
                              field=key) from None
        if not found:
            raise ConfigError(f"{key} path not found: {str(p)[:200]}", hint="check the path", field=key)
        value = str(p.resolve())
    if value is None:  # "off": top_k 0, top_p 1.0 (TOML has no null); seed/others: nothing to store
        value = {"top_k": 0, "top_p": 1.0}.get(key)
    return st.to_toml_value(value)


@config_app.command("set", context_settings={"ignore_unknown_options": True})
def set_command(
    key: Annotated[str, typer.Argument(help="Setting, e.g. temperature, top_k, max_tokens, model.",
                                       autocompletion=complete_setting_key)],
    value: Annotated[str, typer.Argument(help="Its value; several stop strings are separated by '|'.",
                                         autocompletion=complete_setting_value)],
    profile: ProfileOpt = None,
) -> None:
    """Save KEY = VALUE in a profile (created when new); checked before anything is written."""
    import tomlkit

    from .. import settings as st

    key = st.canonical_key(key)
    stored = _stored(key, value)
    name = _target(st.Settings.read(), profile)

    def change(doc: Any) -> None:
        if "profiles" not in doc:
            doc["profiles"] = tomlkit.table(is_super_table=True)
        if name not in doc["profiles"]:
            doc["profiles"][name] = tomlkit.table()
        if stored is None:
            doc["profiles"][name].pop(key, None)
        else:
            doc["profiles"][name][key] = stored

    saved = st.update(change)
    shown = "(unset: random seed)" if stored is None else _show(stored)
    sys.stderr.write(f"{key} = {shown} in profile {name!r} ({saved.path})\n")


@config_app.command("unset")
def unset_command(
    key: Annotated[str, typer.Argument(help="Setting to remove from the profile.", autocompletion=complete_setting_key)],
    profile: ProfileOpt = None,
) -> None:
    """Remove KEY from a profile (the next layer — model defaults or built-in — applies again)."""
    from .. import settings as st

    key = st.canonical_key(key)
    settings = st.Settings.read()
    name = _target(settings, profile)
    if key not in settings.profiles.get(name, {}):
        sys.stderr.write(f"{key} is not set in profile {name!r}; nothing changed\n")
        return

    def change(doc: Any) -> None:
        doc["profiles"][name].pop(key, None)

    st.update(change)
    sys.stderr.write(f"removed {key} from profile {name!r}\n")


@config_app.command("use")
def use_command(
    name: Annotated[str, typer.Argument(help="Profile to use when no --profile is given.", autocompletion=complete_profile)],
) -> None:
    """Make NAME the default profile."""
    from .. import settings as st

    settings = st.Settings.read()
    if name not in settings.profiles:
        raise UsageError(f"no profile named {name!r} (profiles: {', '.join(settings.profiles) or 'none yet'})",
                         hint="create it first with 'llmbuilder config set KEY VALUE --profile NAME'")

    def change(doc: Any) -> None:
        doc["default_profile"] = name

    st.update(change)
    sys.stderr.write(f"default profile: {name}\n")


@config_app.command("remove")
def remove_command(
    name: Annotated[str, typer.Argument(help="Profile to delete.", autocompletion=complete_profile)],
) -> None:
    """Delete a profile (and stop using it by default)."""
    from .. import settings as st

    settings = st.Settings.read()
    if name not in settings.profiles:
        raise UsageError(f"no profile named {name!r}", hint="see 'llmbuilder config profiles'")

    def change(doc: Any) -> None:
        doc["profiles"].pop(name, None)
        if doc.get("default_profile") == name:
            doc.pop("default_profile", None)

    st.update(change)
    sys.stderr.write(f"removed profile {name!r}\n")
