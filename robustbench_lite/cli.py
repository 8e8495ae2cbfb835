"""The ``rbl`` command line: ``rbl run``, ``rbl leaderboard``, ``rbl list`` and ``rbl bench``.

Exit status: 0 when everything ran, 1 when some matrix cell failed (the rest still ran and was
written), 2 for bad input, which is reported as one line without a traceback.
"""

from __future__ import annotations

import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .bench import bench, describe_setting, format_table, write_json
from .errors import RblError
from .leaderboard import FORMATS, ensure_writable, ranking, render, write
from .options import format_value
from .registry import KINDS, default_registry
from .runner import DEVICES, cells_frame, run
from .store import merged_run
from .training import LR_SCHEDULES

EXIT_FAILED_CELLS = 1
EXIT_USAGE = 2


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"rbl: warning: {message}", file=sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rbl")
def cli() -> None:
    """robustbench_lite: benchmark the adversarial robustness of PyTorch image classifiers."""


@cli.command("run")
@click.option("--models", default="mlp", show_default=True, help="Comma-separated model specs, e.g. cnn,lenet.")
@click.option("--defenses", default="none,at-fgsm,at-pgd", show_default=True, help="Comma-separated defense specs.")
@click.option("--attacks", default="fgsm,pgd", show_default=True, help="Comma-separated attack specs, e.g. 'fgsm,pgd[steps=20]'.")
@click.option("--eps", default=None, help="Comma-separated eps grid in [0, 1]; 0 is always added. [default: the dataset's grid]")
@click.option("--dataset", default="moons", show_default=True, help="Dataset spec, e.g. mnist or 'npz[path=FILE]'.")
@click.option("--n-examples", type=int, default=None, help="Evaluate on the first N test points. [default: all]")
@click.option("--epochs", type=int, default=None, help="Training epochs. [default: the dataset's]")
@click.option("--batch-size", type=int, default=128, show_default=True, help="Batch size for training and attacks.")
@click.option("--train-eps", type=float, default=None, help="Training eps of adversarial defenses. [default: the dataset's]")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
              help="Where torchvision datasets live (downloaded there when online).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Trained-weights cache. [default: $RBL_CACHE_DIR or ~/.cache/robustbench_lite]")
@click.option("--no-cache", is_flag=True,
              help="Always train and attack: neither read nor write cached weights, nor reuse stored results.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True)
@click.option("--db", type=click.Path(path_type=Path), default=None,
              help="Results store (SQLite): finished cells are reused from it, so a crashed run resumes. [default: OUT/results.db]")
@click.option("--shard", default=None, metavar="I/N",
              help="Run only the I-th of N parts of the (model, defense) pairs (job arrays); merge with "
                   "'rbl leaderboard --db A --db B'.")
@click.option("--name", default=None, help="Benchmark name, the leaderboard files' stem. [default: the dataset's name]")
@click.option("--target", default=None, help="Targeted mode: push every input towards this class (name or index).")
@click.option("--eot", type=int, default=8, show_default=True,
              help="Gradient samples per step (EOT) in the adaptive evaluation of randomized models.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="none", show_default=True,
              help="Per-epoch learning-rate schedule: cosine annealing to 0, or step (x0.1 after 50% and 75% of the epochs).")
@click.option("--early-stop", type=int, default=None, metavar="K",
              help="Keep the epoch with the best PGD-10 robust accuracy on the last 10% of the training set "
                   "(then held out); stop after K epochs without improvement. [default: off]")
@click.option("--deterministic", is_flag=True,
              help="Deterministic kernels only (repeatable CUDA numbers, slower); CPU runs are repeatable anyway.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def run_command(**options) -> None:
    """Train (or load) every model under every defense, run every attack at every eps, write the leaderboard."""
    quiet = options.pop("quiet")
    options["use_cache"] = not options.pop("no_cache")
    command = shlex.join(["rbl", *sys.argv[1:]]) if Path(sys.argv[0]).name == "rbl" else None
    frame = run(**options, progress=not quiet, command=command)
    click.echo(ranking(frame).to_markdown(index=False, floatfmt=".2f", missingval="failed"))
    for path in frame.attrs.get("files", {}).values():
        click.echo(f"wrote {path}")
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        click.echo(f"{len(failed)} cell(s) failed or are incomplete; see the leaderboard", err=True)
        raise SystemExit(EXIT_FAILED_CELLS)


@cli.command("list")
@click.argument("kind", required=False, type=click.Choice(list(KINDS)))
def list_command(kind: str | None) -> None:
    """List installed plugins: name, providing distribution, description and options."""
    registry = default_registry()
    console = Console()
    for each in [kind] if kind else list(KINDS):
        table = Table(title=each, title_justify="left", show_lines=True)
        table.add_column("name", no_wrap=True)
        table.add_column("provided by", no_wrap=True)
        table.add_column("description", ratio=1)
        table.add_column("options (default)", ratio=1)
        for name, info in registry.infos(each).items():
            options = Text("\n").join(
                Text.assemble((f"{option.name}={format_value(option.default)}", "bold"), f"  {option.help}")
                for option in info.cls.options
            )
            table.add_row(name, info.provider, info.cls.description, options or "-")
        console.print(table)


@cli.command("bench")
@click.option("--attacks", default="fgsm,pgd", show_default=True, help="Comma-separated attack specs, e.g. 'fgsm,pgd[steps=20]'.")
@click.option("--models", default="cnn", show_default=True,
              help="Comma-separated model specs, each with an optional input shape @CxHxW (default 1x28x28), "
                   "e.g. 'cnn,resnet18@3x32x32'.")
@click.option("--batch-size", default="128", show_default=True, help="Comma-separated batch sizes, e.g. 128,512.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed runs of each implementation; the best counts.")
@click.option("--no-torchattacks", is_flag=True, help="Skip the comparison with torchattacks.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write every figure to this JSON file.")
def bench_command(attacks: str, models: str, batch_size: str, device: str, repeats: int, no_torchattacks: bool,
                  json_path: Path | None) -> None:
    """Attack throughput in images/s, against the bound of the model's passes and against torchattacks."""
    measurements = bench(attacks, models, batch_size, device, repeats, torchattacks=not no_torchattacks,
                         progress=lambda text: click.echo(f"measuring {text}", err=True))
    click.echo(format_table(measurements))
    click.echo(f"{describe_setting(measurements, repeats)}; ratios are time ratios: ours/bound >= 1 is the overhead "
               "over the model's own passes, ours/torchattacks < 1 means ours is faster")
    if json_path is not None:
        write_json(json_path, measurements, repeats, seed=0)
        click.echo(f"wrote {json_path}")


@cli.command("leaderboard")
@click.option("--db", "dbs", multiple=True, required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Results store written by 'rbl run'; repeat to merge the shards of one run.")
@click.option("--name", default=None, help="Benchmark to render. [default: the latest run's]")
@click.option("--run", "run_id", type=int, default=None, help="Run id within the store. [default: the latest]")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="md", show_default=True, help="What to print.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write NAME.csv, NAME.md and NAME.json into this folder instead of printing.")
def leaderboard_command(dbs: tuple[Path, ...], name: str | None, run_id: int | None, fmt: str, out: Path | None) -> None:
    """Render the leaderboard of a run from its results store (or merge the stores of several shards)."""
    records, metadata = merged_run(list(dbs), name, run_id)
    frame = cells_frame(records)
    benchmark = metadata["benchmark"]
    if out is None:
        click.echo(render(frame, metadata, benchmark)[fmt], nl=False)
        return
    ensure_writable(out)
    for path in write(frame, metadata, out, benchmark).values():
        click.echo(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rbl`` script; returns the exit status."""
    warnings.showwarning = _one_line_warning
    default_registry().add_commands(cli)
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="rbl", standalone_mode=False)
    except click.exceptions.UsageError as error:
        print(f"rbl: error: {error.format_message()}", file=sys.stderr)
        return EXIT_USAGE
    except RblError as error:
        print(f"rbl: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except click.exceptions.Abort:
        print("rbl: aborted", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
