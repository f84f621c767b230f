"""Shell completion: the candidates for option values, and the scripts that ask the program for them.

The scripts (``completions/`` in the source tree, ``share/`` in an installation, or what
``llmbuilder --install-completion`` writes) are Typer's: on Tab the shell runs ``llmbuilder`` with
``_LLMBUILDER_COMPLETE=complete_<shell>`` and the words typed so far; Click finds the option or argument
being completed and calls one of the callbacks below. So commands and options always complete from the
running program, and only the small shell glue is a file.

A callback returns ``(value, help)`` pairs (zsh and fish show the help). An empty list hands the word
back to the shell's own file-name completion (bash ``-o default``, zsh ``_files``, fish files), which
handles directories, ``~`` and quoting better than a list can; path options therefore list files
themselves only when a keyword (``demo``, ``auto``, ``none``) also matches what was typed.

Everything here is cheap and torch-free: each Tab starts a fresh process. The settings module is imported
by the callbacks that read it, not when the CLI starts (``--help`` imports this module too).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

__all__ = [
    "PROG_NAME",
    "PROG_NAMES",
    "script_files",
    "COMPLETE_VAR",
    "SHELLS",
    "DEVICES",
    "complete_model",
    "local_model_names",
    "complete_path",
    "complete_device",
    "complete_dtype",
    "complete_chat_template",
    "complete_mode",
    "complete_profile",
    "complete_setting_key",
    "complete_setting_value",
    "completion_script",
]

PROG_NAME = "llmbuilder"
#: Every name the program is installed under (pyproject's [project.scripts]): llmbuilder 2.0.0 installs a
#: ``llmbuilder`` command too, so ``llmbuilder-cli`` is the name that always starts this tool. Each gets
#: its own completion scripts (shells look them up by command name); all of them ask this program.
PROG_NAMES: tuple[str, ...] = (PROG_NAME, "llmbuilder-cli")
#: The environment variable that turns a run into a completion request (Click's naming rule).
COMPLETE_VAR = "_LLMBUILDER_COMPLETE"
#: Shell → (file under completions/, the directory under the installation prefix the wheel puts it in:
#: where bash-completion, zsh and fish look for completions of system-wide and --user installs).
SHELLS: dict[str, tuple[str, str]] = {
    "bash": ("bash/llmbuilder", "share/bash-completion/completions"),
    "zsh": ("zsh/_llmbuilder", "share/zsh/site-functions"),
    "fish": ("fish/llmbuilder.fish", "share/fish/vendor_completions.d"),
}

Candidates = list[tuple[str, str]]


def script_files() -> dict[str, tuple[str, str, str]]:
    """Every shipped completion file under completions/ → (shell, command name, directory under the
    installation prefix): the `SHELLS` file of each shell, named after each of `PROG_NAMES`."""
    out = {}
    for prog in PROG_NAMES:
        for shell, (file, where) in SHELLS.items():
            folder, _, name = file.rpartition("/")
            out[f"{folder}/{name.replace(PROG_NAME, prog)}"] = (shell, prog, where)
    return out

DEVICES: Candidates = [
    ("auto", "CUDA, else MPS, else CPU"),
    ("cpu", "the processor"),
    ("cuda", "the first CUDA/ROCm GPU (cuda:N for another)"),
    ("mps", "the Apple GPU"),
]
_DTYPE_HELP = {
    "auto": "float32 on CPU/MPS; bfloat16, else float16, on CUDA",
    "float32": "full precision",
    "bfloat16": "half the memory, float32's range",
    "float16": "half the memory, GPUs",
}
QUANTIZE: Candidates = [("none", "weights as stored (in --dtype)"), ("int8", "weight-only int8 (Llama family)"),
                        ("int4", "weight-only 4-bit, groups of 32 (Llama family, CPU)")]
_MODE_HELP = {"auto": "chat when the model has a chat template, else complete",
              "chat": "a conversation: messages and replies",
              "complete": "each line continued as a prompt (llmbuilder's interactive mode)"}
_TEMPLATE_WORDS: Candidates = [
    ("auto", "the model's chat template, else plain User:/Assistant: turns"),
    ("none", "always plain User:/Assistant: turns"),
]
_BOOLEANS: Candidates = [("true", ""), ("false", "")]
_MAX_LISTED = 200  # paths listed beside the keywords, at most


def _matching(words: Candidates, incomplete: str) -> Candidates:
    return [(w, h) for w, h in words if w.startswith(incomplete)]


def _listing(incomplete: str) -> Candidates:
    """Files and directories (``dir/``) that start with ``incomplete``, spelled as typed (``~`` kept);
    hidden ones only when the name being typed starts with a dot."""
    if "/" in incomplete:
        head, name = incomplete.rsplit("/", 1)
        prefix, where = head + "/", Path(os.path.expanduser(head)) if head else Path("/")
    else:
        prefix, name, where = "", incomplete, Path(".")
    out: Candidates = []
    try:
        entries = sorted(os.scandir(where), key=lambda e: e.name)
    except OSError:
        return out
    for e in entries:
        if not e.name.startswith(name) or (e.name.startswith(".") and not name.startswith(".")):
            continue
        try:
            is_dir = e.is_dir()
        except OSError:
            is_dir = False
        out.append((prefix + e.name + ("/" if is_dir else ""), ""))
        if len(out) >= _MAX_LISTED:
            break
    return out


def _words_or_files(words: Candidates, incomplete: str) -> Candidates:
    """The keywords that match, with the matching paths beside them; nothing (→ the shell's own file
    completion) when no keyword matches."""
    found = _matching(words, incomplete)
    return found + _listing(incomplete) if found else []


def complete_path(incomplete: str) -> Candidates:
    """Any path: left to the shell's file-name completion."""
    return []


def complete_model(incomplete: str) -> Candidates:
    """``--model`` / MODEL: ``demo`` (the built-in model), a model of the local Hugging Face cache by name
    (``ORG/NAME``, as ``llmbuilder list`` shows it), or a file or directory."""
    return _words_or_files([("demo", "the built-in demo model"), *local_model_names()], incomplete)


def local_model_names() -> Candidates:
    """The runnable models of the local Hugging Face cache, as (name, "format, size") pairs."""
    from ..hub import local_models, size_text

    try:
        return [(m.name, f"{m.format}, {size_text(m.size)}") for m in local_models()]
    except Exception:  # a completion must never fail: a damaged cache simply offers nothing
        return []


def complete_device(incomplete: str) -> Candidates:
    """``--device``: auto, cpu, cuda, mps."""
    return _matching(DEVICES, incomplete)


def complete_dtype(incomplete: str) -> Candidates:
    """``--dtype``: auto, float32, bfloat16, float16 (the names settings.py accepts)."""
    from ..settings import DTYPES

    return _matching([(name, _DTYPE_HELP.get(name, "")) for name in DTYPES], incomplete)


def complete_quantize(incomplete: str) -> Candidates:
    """``--quantize``: none, int8, int4."""
    return _matching(QUANTIZE, incomplete)


def complete_mode(incomplete: str) -> Candidates:
    """``--mode``: auto, chat, complete (the names settings.py accepts)."""
    from ..settings import MODES

    return _matching([(name, _MODE_HELP.get(name, "")) for name in MODES], incomplete)


def complete_chat_template(incomplete: str) -> Candidates:
    """``--chat-template``: auto, none, or a Jinja template file."""
    return _words_or_files(_TEMPLATE_WORDS, incomplete)


def complete_profile(incomplete: str) -> Candidates:
    """Profile names from the settings file (nothing when it is missing or damaged: no error on Tab)."""
    from .. import settings as st

    try:
        settings = st.Settings.read()
    except Exception:  # a damaged file is reported by the commands themselves, never while completing
        return []
    default = settings.default_profile or ("default" if "default" in settings.profiles else None)
    out: Candidates = []
    for name, values in settings.profiles.items():
        keys = ", ".join(values) if isinstance(values, dict) and values else "empty"
        out.append((name, ("default profile: " if name == default else "") + keys))
    return _matching(out, incomplete)


def complete_setting_key(incomplete: str) -> Candidates:
    """``config set/unset KEY``: every setting, with its one-line help."""
    from .. import settings as st

    return _matching(list(st.KEYS.items()), incomplete)


def complete_setting_value(ctx: typer.Context, incomplete: str) -> Candidates:
    """``config set KEY VALUE``: values for the KEY already typed (devices, dtypes, true/false, paths)."""
    from .. import settings as st

    try:
        key = st.canonical_key(str(ctx.params.get("key") or ""))
    except Exception:
        return []
    if key == "device":
        return complete_device(incomplete)
    if key == "dtype":
        return complete_dtype(incomplete)
    if key == "quantize":
        return complete_quantize(incomplete)
    if key == "mode":
        return complete_mode(incomplete)
    if key == "model":
        return complete_model(incomplete)
    if key in ("do_sample", "ignore_eos"):
        return _matching(_BOOLEANS, incomplete)
    if key == "threads":
        return _matching([("auto", "1 for small models, else torch's default")], incomplete)
    return []


# ---------------------------------------------------------------------------------------------- scripts
_HEADER = """\
# {shell} completion for {prog} (llmbuilder-cli).
# Generated by scripts/gen_completions.py from the program's own completion script; do not edit.
# The program computes the candidates (commands, options, profiles, devices, dtypes, paths) on Tab.
# Use: {use}
"""
_USE = {
    "bash": "copy it to ~/.local/share/bash-completion/completions/{prog}, "
    "or source it from ~/.bashrc",
    "zsh": "copy it as _{prog} into a directory on $fpath (before compinit runs), or source it "
    "from ~/.zshrc after compinit",
    "fish": "copy it to ~/.config/fish/completions/{prog}.fish",
}


def _zsh_register(prog: str) -> str:
    """The line Typer's zsh script ends with: register the completer function for ``prog``."""
    return f"compdef _{prog.replace('-', '_')}_completion {prog}"


_ZSH_REGISTER = _zsh_register(PROG_NAME)
_ZSH_AUTOLOAD = """\
# Autoloaded from $fpath, this file is the body of the function _{prog} that zsh calls on every Tab:
# complete right away (the first Tab included). Sourced, it registers the completer for later Tabs.
if [[ ${{zsh_eval_context[-1]}} == (loadautofunc|shfunc) ]]; then
  _{func}_completion "$@"
else
  {register}
fi"""


def completion_script(shell: str, prog: str = PROG_NAME) -> str:
    """The completion script for ``shell`` (bash, zsh or fish) and the command name ``prog`` (one of
    `PROG_NAMES`) as shipped in ``completions/``: the script ``prog --show-completion`` would print
    (what ``--install-completion`` installs) under a comment header; for zsh it also completes on the
    first Tab when autoloaded from ``$fpath``. Every name's script asks the program through the same
    `COMPLETE_VAR`."""
    from typer.completion import get_completion_script

    if shell not in SHELLS:
        raise ValueError(f"no completion script for {shell!r} (shells: {', '.join(SHELLS)})")
    if prog not in PROG_NAMES:
        raise ValueError(f"no completion script for the command {prog!r} (commands: {', '.join(PROG_NAMES)})")
    body = get_completion_script(prog_name=prog, complete_var=COMPLETE_VAR, shell=shell).strip()
    header = _HEADER.format(shell=shell, prog=prog, use=_USE[shell].format(prog=prog))
    if shell == "zsh" and body.startswith("#compdef"):  # zsh reads the first line: it must stay first
        register = _zsh_register(prog)
        if body.endswith(register):
            autoload = _ZSH_AUTOLOAD.format(prog=prog, func=prog.replace("-", "_"), register=register)
            body = body[: -len(register)] + autoload
        first, _, rest = body.partition("\n")
        return f"{first}\n{header}{rest}\n"
    return f"{header}\n{body}\n"
