"""The ``llmbuilder`` command: the Typer app, its sub-commands, and the single error-translation point.

`main` runs the app without Click's standalone mode so that every failure reaches one place and becomes
one line on stderr, ``Error: <what> — <how to fix>``, with the documented exit code (see errors.py).
``LLMBUILDER_DEBUG=1`` shows the traceback instead. Nothing here imports torch; the generate command
imports the engine only when it runs, so ``--help``, ``--version`` and shell completion (Typer's
``--install-completion``/``--show-completion``; see completion.py) stay fast.

What ``llmbuilder --help`` costs is importing typer and rich, importing the command modules (whose
signatures define the options), and Typer building every command from those signatures. So the command
modules import their own work (the API, the engine, settings, importlib.metadata) inside the commands,
and they do without ``from __future__ import annotations``: with it every option's ``Annotated[...]``
would be a string that Typer evaluates (compiles) again several times on each start.
"""

import os
import sys
import traceback
from typing import Annotated, Optional, Sequence

import typer

from .._version import __version__
from ..errors import EXIT_INTERRUPTED, EXIT_LOAD, EXIT_RUNTIME, EXIT_USAGE, LLMBuilderError
from .completion import COMPLETE_VAR, PROG_NAME, PROG_NAMES, complete_profile
from .config_cmd import config_app
from .doctor import doctor_command
from .export import export_app
from .generate import text_command
from .info import info_command
from .models import list_command, pull_command, rm_command

app = typer.Typer(
    name="llmbuilder",
    help="Generate text with language models trained by llmbuilder.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
generate_app = typer.Typer(
    help="Generate text with a trained model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(generate_app, name="generate")
generate_app.command("text")(text_command)
app.command("info")(info_command)
app.add_typer(export_app, name="export")
app.add_typer(config_app, name="config")
app.command("doctor")(doctor_command)
app.command("pull")(pull_command)
app.command("list")(list_command)
app.command("rm")(rm_command)


@app.command("setup")
def setup_command(
    profile: Annotated[
        Optional[str],
        typer.Option("--profile", help="Start from this profile's values (and offer to update it).",
                     autocompletion=complete_profile),
    ] = None,
) -> int:
    """Guided setup: choose a model and every setting with explanations, then run and/or save a profile."""
    from .setup import run_setup

    return run_setup({}, profile, invoke)


def invoke(argv: Sequence[str]) -> int:
    """Run ``llmbuilder <argv>`` in this process (the wizard runs the command it built this way)."""
    return run_command(list(argv))


def invoked_as() -> str:
    """The name the user typed, for usage lines and "see '… --help'": ``llmbuilder-cli`` when started by
    that script, else ``llmbuilder`` (also for ``python -m llmbuilder_cli`` and in-process calls)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name in PROG_NAMES else PROG_NAME


def run_command(args: list[str]) -> int:
    """Parse and run one command line, letting every exception through to `main`.

    Click's (Typer's) own ``main`` would turn Ctrl-C into a silent exit 130 and a closed stdout into exit 1
    before `main` could say ``Interrupted.`` or stop quietly, so the context is made and invoked here with
    Click's public calls. A shell-completion request still goes through Click's ``main``, which answers
    it and exits. ``--help``, ``--version`` and ``typer.Exit`` end in their exit code.
    """
    command = typer.main.get_command(app)
    if os.environ.get(COMPLETE_VAR):
        return command.main(args=args, prog_name=PROG_NAME)  # pragma: no cover - answers, then exits
    try:
        with command.make_context(invoked_as(), args) as ctx:
            result = command.invoke(ctx)
    except typer.Exit as exc:
        return exc.exit_code
    except EOFError as exc:  # end of input at a prompt: what Click's main calls an abort
        raise typer.Abort() from exc
    return result if isinstance(result, int) else 0


def version_text() -> str:
    """What ``--version`` prints: this tool's version, then torch's, tokenizers' and Python's. Read from
    the installed packages' metadata, so torch is not imported (``--version`` stays fast)."""
    import platform
    from importlib import metadata

    def installed(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return (
        f"llmbuilder-cli {__version__}\n"
        f"torch {installed('torch')}\n"
        f"tokenizers {installed('tokenizers')}\n"
        f"Python {platform.python_version()} ({platform.system() or 'unknown system'})\n"
    )


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(version_text())
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the versions of llmbuilder-cli, torch and tokenizers, and exit."),
    ] = None,
) -> None:
    """Generate text with language models trained by llmbuilder."""


def _help_for_no_arguments(exc: Exception) -> int:
    """A command group given nothing to do shows its help (Typer's rich help has already printed it; plain
    Click puts it in the message) and succeeds: asking what a command offers is not a mistake."""
    text = exc.format_message() if hasattr(exc, "format_message") else ""
    if text:
        sys.stdout.write(text.rstrip("\n") + "\n")
    sys.stdout.flush()
    return 0


def reader_went_away() -> int:
    """The reader of stdout went away (``| head``): stop quietly with exit code 0, as other Unix tools do.
    stdout now points at the null device, so the text still buffered cannot fail again at exit."""
    _silence_stdout()
    return 0


def as_typed(text: str) -> str:
    """``text`` with the commands it quotes (``'llmbuilder config set …'``) named as the user started the
    program, so a hint can be copied whichever script ran (the messages are written with `PROG_NAME`)."""
    name = invoked_as()
    return text if name == PROG_NAME else text.replace(f"'{PROG_NAME} ", f"'{name} ")


def _error(message: str) -> None:
    text = f"Error: {as_typed(message)}\n"
    try:
        try:
            sys.stderr.write(text)
        except UnicodeEncodeError:  # a path that is not UTF-8, on a strict stream: escape what it cannot take
            sys.stderr.write(text.encode("utf-8", "backslashreplace").decode("utf-8"))
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr itself cannot be written: the exit code still tells
        pass


def _silence_stdout() -> None:
    """Point standard output at the null device, so the interpreter's own flush at exit cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _os_error(exc: OSError) -> str:
    """The error line for an OSError that reached the top: the system refused a read or a write (a full
    disk, /dev/full, a read-only file system, a path through a file). Never a bug of ours to report."""
    from ..files import OUTPUT_ERRNOS, os_error_text

    reason = os_error_text(exc)
    try:
        sys.stdout.flush()
        stdout_ok = True
    except (OSError, ValueError):
        stdout_ok = False
    # Files we open carry their name in the error; a nameless write error comes from an output stream.
    if not stdout_ok or (exc.filename is None and exc.errno in OUTPUT_ERRNOS):
        _silence_stdout()
        return f"cannot write the output: {reason} — free some space, or send the output elsewhere"
    where = f" {str(exc.filename)[:200]}" if exc.filename is not None else ""
    return f"cannot read or write{where}: {reason} — check the path, its permissions and the free space"


def _escape_what_stdout_cannot_encode() -> None:
    """File names that are not UTF-8 reach Python as surrogate escapes; printed on a strict stdout (``info``,
    ``config path``, JSON records) they would fail. Written as ``\\udcXX`` escapes instead, as stderr
    always does (inside JSON strings such an escape reads back as the same name). Generated text is
    always valid UTF-8, so it is unchanged."""
    if getattr(sys.stdout, "errors", None) != "strict":
        return
    try:
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (the console script exits with it)."""
    debug = os.environ.get("LLMBUILDER_DEBUG", "") not in ("", "0")
    _escape_what_stdout_cannot_encode()
    try:
        result = run_command(list(argv) if argv is not None else sys.argv[1:])
        sys.stdout.flush()  # a write that fails (a full disk) fails here, not in the interpreter's exit
        return result
    except LLMBuilderError as exc:
        if debug:
            traceback.print_exc()
        _error(exc.one_line())
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\nInterrupted.\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return reader_went_away()
    except OSError as exc:
        if debug:
            traceback.print_exc()
        _error(_os_error(exc))
        return EXIT_USAGE
    except SystemExit as exc:
        if isinstance(exc.__context__, BrokenPipeError):  # rich's console exits 1 itself when stdout closes
            return reader_went_away()
        raise
    except BaseException as exc:  # Click usage errors, a native library's panic, and anything unexpected
        if not isinstance(exc, Exception):
            if type(exc).__name__ != "PanicException":  # the like of SystemExit passes through
                raise
            # A Rust library (tokenizers) panicked on what a file gave it: a tokenizer error, exit 3.
            detail = (str(exc).strip().splitlines() or ["no detail"])[0][:200]
            _error(f"the tokenizer library crashed ({detail}) — the tokenizer file is damaged or hostile; "
                   "use the model's original tokenizer")
            return EXIT_LOAD
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare group (`llmbuilder`, `llmbuilder config`)
            return _help_for_no_arguments(exc)
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # Click's ClickException family
            message = exc.format_message().replace("\n", " ")
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "llmbuilder"
            _error(f"{message} — see '{where} --help'")
            return int(getattr(exc, "exit_code", EXIT_USAGE) or EXIT_USAGE)
        if type(exc).__name__ == "Abort":
            sys.stderr.write("\nAborted.\n")
            return EXIT_INTERRUPTED
        if debug:
            traceback.print_exc()
        detail = str(exc).splitlines()[0] if str(exc) else ""
        _error(
            f"unexpected {type(exc).__name__}{': ' + detail if detail else ''} — this is a bug; "
            "rerun with LLMBUILDER_DEBUG=1 and report the traceback"
        )
        return EXIT_RUNTIME


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
