"""The ``edgeslim`` command line: a thin layer over the Python API.

Subcommands live in their own modules and are imported only when used, so that
``edgeslim bench`` starts on a device without PyTorch.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import importlib.util
import os
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: the packages the CLI runs on (import name: pip name): an install without its dependencies (pip
#: install --no-deps, a device trial) gets one line, not a traceback
_BASE = {"click": "click", "rich": "rich", "yaml": "pyyaml", "pydantic": "pydantic", "numpy": "numpy"}
_missing = [pip for name, pip in _BASE.items() if importlib.util.find_spec(name) is None]
if _missing:
    sys.stderr.write(
        f"error: edgeslim needs {', '.join(_missing)}, not installed here: pip install {' '.join(_missing)} (or "
        "install edgeslim with its dependencies)\n"
    )
    raise SystemExit(2)

import click  # noqa: E402

from edgeslim import __version__  # noqa: E402
from edgeslim.errors import (  # noqa: E402
    EXTRAS,
    EdgeslimError,
    Notice,
    Step,
    WorkerError,
    extra_of,
    first_line,
    install_hint,
    origin,
    out_of_memory,
    renamed,
)

#: command name -> (module, attribute, one-line help shown by ``edgeslim --help``)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("edgeslim.cli.train", "train", "Train a model (baseline or original network slimming)."),
    "info": ("edgeslim.cli.info", "info", "Parameters, MACs per layer and BN scale statistics of a model."),
    "slim": ("edgeslim.cli.slim", "slim", "One-round proximal network slimming, surgery and report."),
    "prune": ("edgeslim.cli.prune", "prune", "Physically remove zero-scale channels (channel surgery)."),
    "graph": ("edgeslim.cli.prune", "graph", "Print the channel dependency groups of a model."),
    "export": ("edgeslim.cli.export", "export", "Export to ONNX (checked in ONNX Runtime) and TensorRT."),
    "bench": ("edgeslim.cli.bench", "bench", "Measure latency and memory, slim against the baseline."),
    "profiles": ("edgeslim.cli.bench", "profiles", "List and show device profiles."),
    "report": ("edgeslim.cli.bench", "report", "Re-render a benchmark result (table, Markdown, PNG)."),
}


def _missing_line(command: str | None, module: str) -> str:
    """One line for a command that needs a package this install lacks (a device install has no torch)."""
    top = module.split(".")[0]
    who = f"'edgeslim {command}'" if command else "this command"
    return f"{who} needs {top}, which is not installed; install it with: {install_hint(extra_of(top))}"


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when it is invoked."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as exc:
            raise EdgeslimError(_missing_line(name, getattr(exc, "name", None) or str(exc))) from exc

    def invoke(self, ctx: click.Context) -> Any:
        """The subcommand; a stop in it is click's Abort (its cause the stop), without the empty line click
        prints first to close a terminal's ``^C`` echo: :func:`_main` prints one where there is such an echo
        (a review: SIGTERM, and Ctrl-C into a pipe, gave an empty line before the error line)."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            raise click.exceptions.Abort() from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Top-level help lists commands from the table, without importing their modules.
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, _, short) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgeslim")
@click.option(
    "--debug", is_flag=True, help="Show the full traceback of an unexpected error (or EDGESLIM_DEBUG=1)."
)
def cli(debug: bool) -> None:
    """edgeslim: slim CNNs with proximal network slimming, cut the zero channels out,
    export to ONNX/TensorRT and measure the result on the target device."""


def _debug_requested(argv: list[str]) -> bool:
    """``--debug`` before the subcommand, or ``EDGESLIM_DEBUG`` set to a non-empty value."""
    if os.environ.get("EDGESLIM_DEBUG", "") not in ("", "0"):
        return True
    for arg in argv:
        if arg == "--debug":
            return True
        if not arg.startswith("-"):  # the subcommand: its own options follow
            return False
    return False


def _usage_line(exc: click.UsageError) -> str:
    """A click usage error as one line, naming the command whose help to read."""
    ctx = exc.ctx
    where = ctx.command_path if ctx is not None else "edgeslim"
    return f"{where}: {exc.format_message()} (see {where} --help)"


def flag_names(command: click.Command) -> dict[str, str]:
    """Python parameter name -> the command's long flag, by the option's name and by its flag: the
    ``names`` a pipeline that writes a report for a person (report.md) is given for its lines."""
    flags: dict[str, str] = {}
    for p in command.params:
        if not isinstance(p, click.Option):
            continue
        flag = max(p.opts, key=len)
        flags[flag.lstrip("-").replace("-", "_")] = flag  # --profile for `profile` ...
        flags.setdefault(p.name or "", flag)  # ... also when click stores it as profile_name
    return flags


def cli_message(exc: EdgeslimError | Notice, command: click.Command | None) -> str:
    """``str(exc)`` with every Python parameter it names (``exc.params``) replaced by ``command``'s
    flag (:func:`~edgeslim.errors.renamed`: the first whole-word occurrence, ``force=True`` becomes
    ``--force``, ``simplify=False`` ``--no-simplify``, or ``(see --flag)`` appended when the name is
    absent), and each step it names by its command line."""
    text = str(exc)
    for step in getattr(exc, "steps", ()):
        text = text.replace(str(step), command_line(step))
    if command is None or not exc.params:
        return text
    return renamed(text, exc.params, flag_names(command))


def command_line(step: Step) -> str:
    """The command line that runs ``step``: its stage's command, each parameter as that command's
    flag (a flag for True, nothing for False, a positional argument as its value)."""
    cmd = cli.get_command(click.Context(cli), step.stage)
    if cmd is None:
        return f"edgeslim {step.stage}"
    flags = flag_names(cmd)
    positional = {p.name for p in cmd.params if isinstance(p, click.Argument)}
    words = ["edgeslim", step.stage]
    for name, value in step.args.items():
        if name in positional:
            words += [shlex.quote(str(v)) for v in (value if isinstance(value, (list, tuple)) else [value])]
        elif value is True:
            words.append(flags.get(name, "--" + name.replace("_", "-")))
        elif value is not False and value is not None:
            # (a list or tuple: comma-separated, as the options take it)
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            words += [flags.get(name, "--" + name.replace("_", "-")), shlex.quote(text)]
    return " ".join(words)


def notice(text: str, command: click.Command) -> str:
    """A pipeline's status line for the terminal: a :class:`~edgeslim.errors.Notice` with its
    parameters shown as ``command``'s flags, anything else as it is."""
    return cli_message(text, command) if isinstance(text, Notice) else str(text)


def _command(args: list[str]) -> click.Command | None:
    """The subcommand that ``args`` invoke (already imported when it raised), or ``None``."""
    name = next((a for a in args if not a.startswith("-")), None)
    if name not in COMMANDS:
        return None
    module, attr, _ = COMMANDS[name]
    mod = sys.modules.get(module)
    return getattr(mod, attr, None) if mod is not None else None


def _interrupted_line(args: list[str], exc: BaseException | None = None) -> str:
    """What an interrupted command left, and for a training run how to continue it."""
    name = next((a for a in args if not a.startswith("-")), "")
    # (pipelines.rundir.run_directory marks the stop; click's Abort is raised from it)
    restored = next((getattr(e, "earlier_run_restored", None) for e in (exc, getattr(exc, "__cause__", None))
                     if getattr(e, "earlier_run_restored", None)), None)  # fmt: skip
    if restored:
        return (
            f"interrupted before this run wrote anything: the earlier run in {restored} is as it was; rerun the "
            "command to replace it"
        )

    out, data = _option(args, "--out"), _option(args, "--data") or ""
    if name == "slim" and out and data.lower().endswith((".yaml", ".yml")):
        from edgeslim.utils.rundir import TRAIN_DIR

        if not (
            Path(out) / TRAIN_DIR
        ).exists():  # (stopped before its first checkpoint: run_directory removed it)
            return "interrupted before the first checkpoint: nothing was kept; run the command again"
        return f"interrupted; a YOLO run starts over: rerun it with --force (--out {shlex.quote(out)})"
    if name in ("train", "slim") and out and (finished := _finished_run(name, out)):
        return f"interrupted; {finished}"
    if name in ("train", "slim") and out:
        resume = _resume_hint(args)
        table = _kept_lookup(out) if name == "slim" else None
        if resume is None and table is not None:  # (a rerun reuses it: pipelines.slim._reused_lookup)
            forced = (
                " without --force" if "--force" in args or any(a.startswith("--force=") for a in args) else ""
            )
            return (
                "interrupted before the first epoch ended: nothing was saved to continue but the latency lookup "
                f"({shlex.quote(table)}); run the command again{forced} and it reuses the lookup"
            )
        if resume is None:  # (the run left nothing behind: pipelines.rundir.run_directory)
            return "interrupted before the first epoch ended: nothing was saved to continue; run the command again"
        return f"interrupted; each finished epoch was saved: {resume}"
    # (utils.io.writing: the set is published whole or not at all)
    if name in ("export", "prune", "bench", "report"):
        kept = "; the earlier files are as they were" if "--force" in args else ""
        return f"interrupted before the outputs were published: nothing was written{kept}"
    if name in ("info", "graph", "profiles"):  # (they write nothing)
        return "interrupted"
    return "interrupted; files already written were left complete (writes are atomic)"


def _finished_run(name: str, out: str) -> str | None:
    """What a stopped train or slim run into ``out`` says where the folder holds a finished run (its
    model.pt and report.json: the run had finished, or a ``slim --resume --force`` redoing the finalize
    of one was stopped), whose resume is refused (a review: the hint named that refused resume)."""
    from edgeslim.utils.rundir import MODEL_FILE, REPORT_FILE

    if not ((Path(out) / MODEL_FILE).is_file() and (Path(out) / REPORT_FILE).is_file()):
        return None
    if name == "train":  # (its report.json is written last)
        return f"the run had finished: {out} holds its {MODEL_FILE} and {REPORT_FILE}, nothing to continue"
    return (
        f"{out} still holds the finished run ({MODEL_FILE}, {REPORT_FILE}); to redo its finalize and surgery: "
        f"edgeslim slim --resume --force --out {shlex.quote(out)}"
    )


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # (no isatty, or closed)
        return False


def _kept_lookup(out: str) -> str | None:
    """The latency lookup a slim run measured into ``out`` since this process started, else None."""
    from edgeslim.utils.rundir import TABLE_FILE
    from edgeslim.utils.tmpfiles import process_start_time

    table = Path(out) / TABLE_FILE
    try:
        return str(table) if table.stat().st_mtime >= process_start_time() else None
    except OSError:
        return None


def _option(args: list[str], flag: str) -> str | None:
    """The value ``args`` give ``flag`` (``--flag V`` or ``--flag=V``), else None."""
    return next(
        (v for i, a in enumerate(args) for v in ([args[i + 1]] if a == flag and i + 1 < len(args) else
                                                 [a[len(flag) + 1 :]] if a.startswith(f"{flag}=") else [])),
        None,
    )  # fmt: skip


def _resume_hint(args: list[str], exc: BaseException | None = None) -> str | None:
    """The step that continues a failed or stopped training run (``continue with edgeslim train|slim
    --resume --out DIR``) where its folder holds a checkpoint of it (not an earlier run's), else None."""
    name = next((a for a in args if not a.startswith("-")), "")
    out = _option(args, "--out")
    if name not in ("train", "slim") or not out or getattr(exc, "earlier_run_restored", None):
        return None
    if name == "slim" and (_option(args, "--data") or "").lower().endswith((".yaml", ".yml")):
        return None  # (a YOLO run starts over)
    if _finished_run(name, out):  # (its resume is refused)
        return None
    from edgeslim.utils.rundir import MODEL_FILE, TRAIN_DIR
    from edgeslim.utils.tmpfiles import process_start_time

    try:  # this run's checkpoint: written since it started, or the one it resumes (not an earlier run's,
        # when the run failed or stopped before it took its folder: the review)
        saved = (Path(out) / (TRAIN_DIR if name == "slim" else "") / MODEL_FILE).stat().st_mtime
    except OSError:
        return None
    if (
        "--resume" not in args
        and not any(a.startswith("--resume=") for a in args)
        and saved < process_start_time()
    ):
        return None
    return f"continue with edgeslim {name} --resume --out {shlex.quote(out)}"  # (the run's seed and threads)


def main(argv: list[str] | None = None) -> int:
    """Run an edgeslim command (``argv``, default the process's own arguments): every expected
    failure becomes one red line and exit code 2.

    Expected failures are :class:`EdgeslimError` (bad input, missing files, refused writes),
    click's usage errors (unknown options, values of the wrong type or range) and operating
    system errors (a full disk, a permission). Anything else is a bug: one line with its origin
    and exit code 1, or the full traceback with ``--debug``. A stop (Ctrl-C, SIGTERM) from the moment
    its handlers are in place is one line and exit 130 or 143 (:class:`Stops`); the caller's own
    handlers are back when it returns (a script or notebook that goes on keeps its Ctrl-C).
    """
    return _run(list(sys.argv[1:] if argv is None else argv), keep=False)


def console() -> int:
    """The ``edgeslim`` command (console script, ``python -m edgeslim``): :func:`main` on the process's
    own arguments, whose stop handlers stay until the process exits: a stop in its last moments ends
    it with the command's exit code, never a traceback from the interpreter's exit."""
    return _run(sys.argv[1:], keep=True)


def _run(args: list[str], keep: bool) -> int:
    with _sigterm_interrupts(keep=keep) as stops:
        code = _main(args, stops)
        if keep:  # the process exits now, with this code whatever comes
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):  # (a closed pipe: nothing more to lose)
                    stream.flush()
            stops.exit_code = code
        return code


class Terminated(KeyboardInterrupt):
    """SIGTERM (a timeout, a scheduler cancelling a job), raised where Ctrl-C's KeyboardInterrupt is:
    the same clean-up (measuring processes stopped, temporary folders removed, the run resumable)."""


#: exit codes of a run stopped by Ctrl-C and by SIGTERM (the shell's 128 + signal number)
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
#: seconds after the first SIGTERM within which another is the same request, not a second one: GNU
#: timeout sends its signal to the command and then to the command's whole process group, microseconds
#: apart, and Python may run the handler of the first in between (a review's ``timeout 200 edgeslim slim``
#: died by the second, 50 ms later, mid clean-up, leaving its lock and temporary folders); a person or a
#: supervisor repeating a stop to hurry it does so seconds later
SIGTERM_REPEAT_S = 2.0


class Stops(list[int]):
    """The stop signals (SIGINT, SIGTERM) a command received, in order. A handler raises its stop in
    the command only while :meth:`arm` ed (the command's ``try``): one received before (while the
    handlers are put in place, the console loads) is raised as the command starts, one received after
    (its failure line printing, the handlers put back) is recorded only (an interrupt probe: a signal in
    the first 0.1 s, or a second Ctrl-C while the error line printed, gave a traceback and exit 1). A
    SIGTERM within :data:`SIGTERM_REPEAT_S` of the first is not recorded: the same request again."""

    armed = False
    #: set once the process's own command has ended: a stop then ends the process with it
    exit_code: int | None = None
    #: when the first SIGTERM came (``time.monotonic``)
    terminated_at: float | None = None

    def arm(self) -> None:
        """Raise the stops from here on; one received already, now."""
        self.armed = True
        if self:
            raise Terminated if signal.SIGTERM in self else KeyboardInterrupt

    def disarm(self) -> None:
        self.armed = False


@contextlib.contextmanager
def _sigterm_interrupts(keep: bool = False) -> Iterator[Stops]:
    """SIGTERM raises :class:`Terminated` for the block (in the main thread; the handlers before are
    put back), SIGINT KeyboardInterrupt, both only while the :class:`Stops` it yields are armed. A
    second SIGTERM then ends the process at once (the default action), as does SIGKILL, unless it comes
    within :data:`SIGTERM_REPEAT_S` of the first (GNU timeout's second, to the process group: ignored);
    a second Ctrl-C raises KeyboardInterrupt again, whenever it comes; under
    torchrun (``WORLD_SIZE`` > 1) SIGTERM is left as it is: the launcher stops its workers, and one
    blocked in a collective would not run a Python handler. A handler runs between Python steps: in
    one long native call (a TensorRT engine build) the first SIGTERM takes effect when it returns.
    The stops received also tell a failure they caused in other clothes (a library's import cut short
    reads as an ImportError) to be reported as the stop. With ``keep`` (the process's own command) the
    handlers stay until the process exits: a stop after the command ends it at once with the command's
    exit code (:attr:`Stops.exit_code`), never a traceback from the interpreter's exit."""
    received = Stops()
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        now = time.monotonic()
        since = now - received.terminated_at if received.terminated_at is not None else None
        if received.exit_code is None and since is not None and since < SIGTERM_REPEAT_S:
            return  # (the same request: timeout's second signal, to the process group)
        received.append(signum)
        if received.exit_code is not None:
            os._exit(received.exit_code)
        if received.terminated_at is None:
            received.terminated_at = now
        if not received.armed:
            return
        if received.count(signal.SIGTERM) > 1:  # (the clean-up of the first is taking too long: stop now)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        raise Terminated

    def on_sigint(signum: int, frame: Any) -> None:
        received.append(signum)
        if received.exit_code is not None:
            os._exit(received.exit_code)
        if received.armed:
            raise KeyboardInterrupt

    try:
        before = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield received
        return
    before_int = signal.getsignal(signal.SIGINT)
    if before_int is signal.default_int_handler:  # (a caller's own SIGINT handling is left as it is)
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield received
    finally:
        received.disarm()
        if not keep:
            signal.signal(signal.SIGTERM, before)
            if before_int is signal.default_int_handler:
                signal.signal(signal.SIGINT, before_int)


def _stopped_code(exc: BaseException) -> int:
    cause = exc if isinstance(exc, Terminated) else exc.__cause__ or exc.__context__
    return EXIT_TERMINATED if isinstance(cause, Terminated) else EXIT_INTERRUPTED


def _main(args: list[str], stops: Stops | None = None) -> int:
    """Run the command; a failure is one line on stderr (and, under ``--json``, an error document on
    stdout: see :func:`_json_error`) and its exit code. Stop signals are raised in the command only
    (``stops`` armed): further ones while the failure line prints are recorded, not raised."""
    stops = Stops() if stops is None else stops
    debug = _debug_requested(args)
    try:
        stops.arm()
        cli.main(args=args, prog_name="edgeslim", standalone_mode=False)
        stops.disarm()
        return 0
    except BaseException as exc:  # noqa: BLE001 - the one place that catches everything
        stops.disarm()
        if isinstance(exc, SystemExit):
            raise
        from edgeslim.utils.console import error_line

        line, code, traced = _failure(exc, args, debug, stops)
        if code == EXIT_INTERRUPTED and signal.SIGINT in stops and _isatty(sys.stderr):
            sys.stderr.write("\n")  # (past the terminal's ^C echo)
        if not traced:  # (--debug printed a bug's traceback in place of its line)
            error_line(line)
        _json_error(args, exc, line, code)
        return code


def _failure(
    exc: BaseException, args: list[str], debug: bool, stops: list[int] | None = None
) -> tuple[str, int, bool]:
    """The one line and the exit code of a failed command, and whether a traceback stands in for the
    line (``--debug`` on a bug); after a stop signal (``stops``) any failure is that stop (an interrupt
    probe: a stop while matplotlib loaded read "matplotlib is not installed")."""
    traced = False
    if stops and not isinstance(exc, (click.exceptions.Abort, KeyboardInterrupt)):
        code = EXIT_TERMINATED if signal.SIGTERM in stops else EXIT_INTERRUPTED
        return _interrupted_line(args, exc), code, False
    if debug and not isinstance(exc, (click.exceptions.Abort, click.ClickException, KeyboardInterrupt)):
        traceback.print_exception(exc)
        traced = not isinstance(exc, (EdgeslimError, OSError, MemoryError, ModuleNotFoundError))
    if isinstance(exc, EdgeslimError):
        return cli_message(exc, _command(args)), exc.exit_code, False
    if isinstance(exc, (click.exceptions.Abort, KeyboardInterrupt)):  # (Ctrl-C: click makes it Abort)
        return _interrupted_line(args, exc), _stopped_code(exc), False
    if isinstance(exc, click.UsageError):
        return _usage_line(exc), 2, False
    if isinstance(exc, click.ClickException):
        return exc.format_message(), 2, False
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # a full disk mid-run: a plain rerun is refused, the run resumes (not out of memory: a resume keeps
        # the run's batch size)
        return _os_error_line(exc, then=_resume_hint(args, exc) or "rerun"), 2, False
    if out_of_memory(exc):
        return _memory_line(exc, _command(args)), 2, False
    if isinstance(exc, OSError):
        return _os_error_line(exc), 2, False
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in EXTRAS:
        cmd = _command(args)
        return _missing_line(cmd.name if cmd is not None else None, exc.name or ""), 2, False
    if isinstance(exc, Exception):  # a bug (or the user's own import failing)
        return _internal_line(exc), 1, traced
    raise exc  # (GeneratorExit and the like: not a command's failure)


def _json_error(args: list[str], exc: BaseException, line: str, code: int) -> None:
    """Under ``--json``, a failure also prints ``{"error": {"message", "exit_code", "kind"}}`` on stdout,
    so a script reads one JSON document either way; a collapsed slim prints its report instead (which
    holds the collapse), not both."""
    if "--json" not in args or getattr(exc, "stdout_report", False):
        return
    from edgeslim.utils.console import print_json

    stopped = isinstance(exc, click.exceptions.Abort) or code in (EXIT_INTERRUPTED, EXIT_TERMINATED)
    # (a stop seen as an ImportError: the review; a measuring process's bug: its exception's type)
    kind = "Interrupted" if stopped else exc.kind if isinstance(exc, WorkerError) else type(exc).__name__
    print_json({"error": {"message": line, "exit_code": code, "kind": kind}})


def _internal_line(exc: BaseException) -> str:
    """A bug's line: its type, message and origin (a :class:`WorkerError`'s in its own process)."""
    kind, where = type(exc).__name__, origin(exc)
    if isinstance(exc, WorkerError):
        kind, where = exc.kind, f"{exc.origin} ({exc.process})"
    return (
        f"internal error: {kind}: {str(exc).strip() or '(no message)'} "
        f"at {where}; rerun with edgeslim --debug for the traceback and report it"
    )


def _memory_line(exc: BaseException, cmd: click.Command | None, then: str = "rerun") -> str:
    """One line for running out of memory (:func:`~edgeslim.errors.out_of_memory`): the error's own first
    line (what could not be allocated), the fix with the batch option the command ``cmd`` has, and what to
    do ``then``."""
    said = first_line(exc) if str(exc).strip() else ""
    what = f"out of memory ({said[:200]})" if said and said != "out of memory" else "out of memory"
    flags = {o for p in (cmd.params if cmd is not None else ()) for o in getattr(p, "opts", ())}
    smaller = next(
        (f"a smaller {f} or input" for f in ("--batch-size", "--batch") if f in flags), "a smaller input"
    )
    return f"{what}; free memory ({smaller}), and {then}"


def _os_error_line(exc: OSError, then: str = "rerun") -> str:
    """One line for an operating-system error: what failed, on which file, the fix for its kind, and
    what to do ``then``."""
    import errno
    import urllib.error

    from edgeslim.utils.tmpfiles import tmp_target

    if isinstance(exc, urllib.error.URLError):  # the model's own code tried to download weights
        return (
            f"a download failed ({exc.reason}): the model's code fetches pretrained weights from the network; "
            "build it without them (torchvision: weights=None, weights_backbone=None; timm: pretrained=False) "
            "in your own factory, or download them beforehand"
        )
    if exc.errno is None and str(exc).strip():  # raised with a message (a library's), not by the OS
        fix = "check the path" if isinstance(exc, FileNotFoundError) else "fix what it names"
        return f"{first_line(exc)}; {fix}, and {then}"
    what = exc.filename
    if isinstance(what, str):  # the atomic writer's temporary file stands for its target
        what = tmp_target(what)
    where = f" ({what})" if what else ""
    fix = {
        errno.ENOSPC: "free disk space",
        errno.EDQUOT: "free disk space",
        errno.EACCES: "fix the permissions or choose another path",
        errno.EPERM: "fix the permissions or choose another path",
        errno.EROFS: "choose a path on a writable file system",
        errno.ENOENT: "check the path: its folder is missing or takes no new files",
        errno.ENOTDIR: "check the path: a part of it is a file, not a folder",
    }.get(exc.errno, "free space or memory, or fix the permissions")
    return f"{exc.strerror or type(exc).__name__}{where}; {fix}, and {then}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
