"""The ``edgeslim`` command line: a thin layer over the Python API.

Subcommands live in their own modules and are imported only when used, so that
``edgeslim bench`` starts on a device without PyTorch.
"""

from __future__ import annotations

import importlib
import sys

import click

from edgeslim import __version__
from edgeslim.errors import EdgeslimError

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
            missing = getattr(exc, "name", None) or str(exc)
            raise EdgeslimError(
                f"'edgeslim {name}' needs {missing}, which is not installed; "
                "install the training extra: pip install 'edgeslim[train]'"
            ) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Top-level help lists commands from the table, without importing their modules.
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, _, short) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgeslim")
def cli() -> None:
    """edgeslim: slim CNNs with proximal network slimming, cut the zero channels out,
    export to ONNX/TensorRT and measure the result on the target device."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point: user errors become one red line and exit code 2."""
    from edgeslim.utils.console import error_line

    try:
        cli.main(args=argv, prog_name="edgeslim", standalone_mode=False)
    except EdgeslimError as exc:
        error_line(str(exc))
        return exc.exit_code
    except click.exceptions.Abort:
        error_line("aborted")
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        error_line("interrupted; files already written were left complete (writes are atomic)")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
