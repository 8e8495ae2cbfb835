"""The ``rbl`` command line: ``rbl run``, ``rbl leaderboard``, ``rbl site``, ``rbl list`` and ``rbl bench``.

Exit status: 0 when everything ran, 1 when some matrix cell failed (the rest still ran and was
written), 2 for bad input or a full disk, each reported as one line without a traceback.
"""

from __future__ import annotations

import errno
import shlex
import shutil
import sys
import textwrap
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from . import __version__
from .catalogue import Catalogue, PluginEntry, catalogue
from .choices import (
    DEVICES, EXECUTORS, LEADERBOARD_FORMATS, LR_SCHEDULES, PLUGIN_KINDS, PRECISIONS, PROGRESS_MODES, SITE_FORMATS,
)
from .errors import RblError, UsageError, unknown_choice
from .options import real_number, split_spec_list

if TYPE_CHECKING:
    from .interfaces import DatasetLoader
    from .registry import Registry

Command = TypeVar("Command", bound=Callable)

# The modules behind the commands import torch and pandas: each command imports what it needs when
# it runs, so that `rbl --help` and `rbl list` stay fast (tests/test_cli_imports.py keeps them so).

EXIT_FAILED_CELLS = 1
EXIT_USAGE = 2


class Budget(click.ParamType):
    """A perturbation budget: a number, also written as a fraction (``8/255``, as the field writes CIFAR budgets)."""

    name = "number"

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, float):
            return value
        try:
            return real_number(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number such as 0.03 or 8/255", param, ctx)


BUDGET = Budget()


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"rbl: warning: {message}", file=sys.stderr)


def _with_options(command: Command, options: list[Callable[[Command], Command]]) -> Command:
    """``command`` with ``options`` (click decorators) applied, so that --help lists them in this order."""
    for option in reversed(options):
        command = option(command)
    return command


def trained_model_options(command):
    """The options that decide which trained model a command uses (and so its weights-cache entry): one
    declaration for `rbl run`, `rbl plot` and plugins' commands such as `rbl lsa`, so each reaches the
    models the others trained. The command receives epochs, batch_size, train_eps, lr_schedule,
    early_stop, optimizer, seed, device and cache_dir."""
    options = [
        click.option("--epochs", type=int, default=None, help="Training epochs. [default: the dataset's]"),
        click.option("--batch-size", type=int, default=128, show_default=True, help="Batch size for training and attacks."),
        click.option("--train-eps", type=BUDGET, default=None,
                     help="Training eps of adversarial defenses. [default: the dataset's]"),
        click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="none", show_default=True,
                     help="Per-epoch learning-rate schedule: cosine annealing to 0, or step (x0.1 after 50% and 75% of "
                          "the epochs)."),
        click.option("--early-stop", type=int, default=None, metavar="K",
                     help="Keep the epoch with the best PGD-10 robust accuracy on the last 10% of the training set "
                          "(then held out); stop after K epochs without improvement. [default: off]"),
        click.option("--optimizer", default=None, metavar="SPEC",
                     help="Train every model with this optimizer instead of its own: sgd[lr=,momentum=,weight_decay=,"
                          "nesterov=], adam[lr=,weight_decay=] or adamw[lr=,weight_decay=]. [default: each model's]"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True),
        click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                     help="Trained-weights cache. [default: $RBL_CACHE_DIR or ~/.cache/robustbench_lite]"),
    ]
    return _with_options(command, options)


def _acceleration_options(command):
    """The model's precision, memory format and compilation, shared by `rbl run` and `rbl bench`."""
    options = [
        click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
                     help="bf16: forward passes under bfloat16 autocast (faster on recent GPUs; can change numbers, "
                          "so results are kept apart)."),
        click.option("--channels-last", is_flag=True, help="Weights and image batches in NHWC memory order (cuDNN's fastest convolutions)."),
        click.option("--compile", "compile_model", is_flag=True, help="Run the model through torch.compile."),
    ]
    return _with_options(command, options)


def _pop_acceleration(options: dict) -> dict:
    return {"precision": options.pop("precision"), "channels_last": options.pop("channels_last"),
            "compile": options.pop("compile_model")}


def _listed(ctx: click.Context | None) -> Catalogue:
    """The plugin catalogue, read once per invocation (each read stats the installation and repeats its warnings)."""
    if ctx is None:
        return catalogue()
    meta = ctx.find_root().meta
    if "rbl.catalogue" not in meta:
        meta["rbl.catalogue"] = catalogue()
    return meta["rbl.catalogue"]


class Commands(click.Group):
    """`rbl`'s own commands and those plugins add, imported only when one of the latter runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_listed(ctx).commands})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in _listed(ctx).commands:
            from .registry import default_registry

            default_registry().add_commands(self)
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(map(len, self.list_commands(ctx)))
        plugins = _listed(ctx).commands
        rows = [(name, self.commands[name].get_short_help_str(limit) if name in self.commands else plugins[name])
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class RunCommand(click.Command):
    """`rbl run`, whose help ends with each dataset's defaults and the dataset each model is meant for."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed = _listed(ctx)
        with formatter.section("Datasets and their defaults (of --eps, --train-eps and --epochs)"):
            formatter.write_dl([(entry.name, _facts(entry)) for entry in listed.of_kind("datasets")])
        with formatter.section("Models and the dataset each is meant for (the default --dataset)"):
            formatter.write_dl([(entry.name, dict(entry.facts).get("for", "any"))
                                for entry in listed.of_kind("models")])


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True,
             no_args_is_help=False)
@click.version_option(__version__, prog_name="rbl")
@click.pass_context
def cli(context: click.Context) -> None:
    """robustbench_lite: benchmark the adversarial robustness of PyTorch image classifiers."""
    if context.invoked_subcommand is None:  # bare `rbl` is a request for help, not an error
        click.echo(context.get_help())


@cli.command("run", cls=RunCommand)
@click.option("--models", default="mlp", show_default=True, help="Comma-separated model specs, e.g. cnn,lenet.")
@click.option("--defenses", default="none,at-fgsm,at-pgd", show_default=True, help="Comma-separated defense specs.")
@click.option("--attacks", default="fgsm,pgd", show_default=True, help="Comma-separated attack specs, e.g. 'fgsm,pgd[steps=20]'.")
@click.option("--eps", default=None,
              help="Comma-separated eps grid in [0, 1], fractions allowed (0,2/255,8/255); 0 is always added. "
                   "[default: the dataset's grid]")
@click.option("--dataset", default=None,
              help="Dataset spec, e.g. mnist or 'npz[path=FILE]'. [default: the one the models are meant for "
                   "(listed below), else moons]")
@click.option("--n-examples", type=int, default=None, help="Evaluate on the first N test points. [default: all]")
@trained_model_options
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
              help="Where torchvision datasets live (downloaded there when online).")
@click.option("--no-cache", is_flag=True,
              help="Always train and attack: neither read nor write cached weights, nor reuse stored results.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("leaderboards"), show_default=True)
@click.option("--db", type=click.Path(path_type=Path), default=None,
              help="Results store (SQLite): finished cells are reused from it, so a crashed run resumes. [default: OUT/results.db]")
@click.option("--shard", default=None, metavar="I/N",
              help="Run only the I-th of N interleaved parts of the trained models (job arrays); merge with "
                   "'rbl leaderboard --db A --db B'.")
@click.option("--name", default=None, help="Benchmark name, the leaderboard files' stem. [default: the dataset's name]")
@click.option("--target", default=None, help="Targeted mode: push every input towards this class (name or index).")
@click.option("--eot", type=int, default=8, show_default=True,
              help="Gradient samples per step (EOT) in the adaptive evaluation of randomized models.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="local", show_default=True,
              help="ray: each trained model's job is a Ray task (one GPU each on CUDA), on the cluster RAY_ADDRESS "
                   "names or a local one; needs the [ray] extra.")
@click.option("--deterministic", is_flag=True,
              help="Deterministic kernels only (repeatable CUDA numbers, slower); CPU runs are repeatable anyway.")
@click.option("--eval-batch-size", type=int, default=None, metavar="N",
              help="Points per attacked batch; larger fills a GPU (halved on out-of-memory). [default: --batch-size]")
@_acceleration_options
@click.option("--progress", type=click.Choice(PROGRESS_MODES), default="auto", show_default=True,
              help="rich: live bars on stderr; plain: one line per finished training or cell, with elapsed time and "
                   "ETA, on stdout (kept by a redirect or a Slurm log); auto: rich in a terminal, else plain.")
@click.option("--quiet", is_flag=True, help="No progress at all (--progress none).")
@click.option("--dry-run", is_flag=True,
              help="Check the input, print the matrix, what is cached or stored, and the estimated cost (timed on one "
                   "batch), then stop: nothing is trained, attacked or written.")
def run_command(**options) -> None:
    """Train (or load) every model under every defense, run every attack at every eps, write the leaderboard."""
    from .acceleration import Acceleration
    from .leaderboard import ranking
    from .runner import run

    progress = options.pop("progress")
    if options.pop("quiet"):
        progress = "none"
    options["use_cache"] = not options.pop("no_cache")
    options["acceleration"] = Acceleration(eval_batch_size=options.pop("eval_batch_size"), **_pop_acceleration(options))
    command = shlex.join(["rbl", *sys.argv[1:]]) if Path(sys.argv[0]).name == "rbl" else None
    frame = run(**options, progress=progress, command=command)
    if options["dry_run"]:
        for line in frame.attrs["plan"].lines():
            click.echo(line)
        return
    click.echo(ranking(frame).to_markdown(index=False, floatfmt=".2f", missingval="failed"))
    for path in frame.attrs.get("files", {}).values():
        click.echo(f"wrote {path}")
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        click.echo(f"{len(failed)} cell(s) failed or are incomplete; see the leaderboard", err=True)
        raise SystemExit(EXIT_FAILED_CELLS)


@cli.command("list")
@click.argument("what", required=False, metavar="[KIND|NAME]")
@click.option("--verbose", "-v", is_flag=True, help="Also each plugin's provider, options with defaults and docstring.")
def list_command(what: str | None, verbose: bool) -> None:
    """Installed plugins, one line each; KIND (attacks, defenses, models, datasets) lists one kind, NAME
    shows one plugin in full."""
    listed = _listed(click.get_current_context())
    entries = listed.entries
    if what in PLUGIN_KINDS:
        entries = listed.of_kind(what)
    elif what is not None:
        entries, verbose = listed.named(what), True
        if not entries:
            raise unknown_choice("plugin kind or name", what, [*PLUGIN_KINDS, *(entry.name for entry in listed.entries)])
    width = shutil.get_terminal_size().columns
    for kind in PLUGIN_KINDS:
        chosen = [entry for entry in entries if entry.kind == kind]
        if not chosen:
            continue
        click.echo(f"{kind} ({len(chosen)})")
        name_width = max(len(entry.name) for entry in chosen)
        for entry in chosen:
            summary = f"[{_facts(entry)}] {entry.description}" if kind in ("datasets", "models") else entry.description
            click.echo(_fit(f"  {entry.name:<{name_width}}  {summary}", width))
            for line in _details(entry, width) if verbose else []:
                click.echo(line)


def _facts(entry: PluginEntry) -> str:
    return "; ".join(f"{what} {value}" for what, value in entry.facts)


def _fit(line: str, width: int) -> str:
    """One terminal line: cut with an ellipsis rather than wrapped."""
    return line if len(line) <= width else line[: max(width - 1, 1)] + "…"


def _details(entry: PluginEntry, width: int) -> list[str]:
    """What `rbl list --verbose` adds under a plugin's line."""
    indent, body = " " * 6, max(width - 6, 40)
    lines = [f"{indent}provided by {entry.provider}" + (f"; {_facts(entry)}" if entry.facts else "")]
    for paragraph in entry.doc.split("\n\n") if entry.doc and entry.doc != entry.description else []:
        lines += textwrap.wrap(" ".join(paragraph.split()), body, initial_indent=indent, subsequent_indent=indent)
    if entry.options:
        lines.append(f"{indent}options (name=default):")
    for name, default, help_ in entry.options:
        lines += textwrap.wrap(f"{name}={default}  {help_}", body, initial_indent=indent + "  ",
                               subsequent_indent=indent + "      ")
    return lines


@cli.command("bench")
@click.option("--attacks", default="fgsm,pgd", show_default=True, help="Comma-separated attack specs, e.g. 'fgsm,pgd[steps=20]'.")
@click.option("--models", default="cnn", show_default=True,
              help="Comma-separated model specs, each with an optional input shape @CxHxW (default 1x28x28), "
                   "e.g. 'cnn,resnet18@3x32x32'.")
@click.option("--batch-size", default=None,
              help="Comma-separated batch sizes, e.g. 128,512. [default: 128; with --tune: 32,64,128,256,512]")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--tune", is_flag=True,
              help="Instead of attacks: time every batch size, in standard and channels-last memory order, on the "
                   "model's forward+backward passes, and print the `rbl run` flags of the fastest whose predictions "
                   "are identical.")
@click.option("--training", is_flag=True,
              help="Instead of attacks: time the training step of each of --defenses on each model, against the "
                   "bound of its passes (k input gradients + one update, about (k + 1) forward+backward).")
@click.option("--defenses", default="at-pgd,trades,at-apgd", show_default=True,
              help="With --training: comma-separated defense specs.")
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True,
              help="Interleaved rounds: each round times ours, the bound's passes and torchattacks in turn; "
                   "medians count.")
@click.option("--max-spread", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Print a ratio only where its per-round values spread no wider than this (half their "
                   "interquartile range over the median); else the table says 'unsteady'.")
@click.option("--no-torchattacks", is_flag=True, help="Skip the comparison with torchattacks.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write every figure to this JSON file.")
@_acceleration_options
def bench_command(attacks: str, models: str, batch_size: str | None, device: str, tune: bool, training: bool,
                  defenses: str, repeats: int, max_spread: float, no_torchattacks: bool, json_path: Path | None,
                  **acceleration) -> None:
    """Attack throughput in images/s, against the bound of the model's passes and against torchattacks."""
    from .acceleration import Acceleration
    from .bench import bench, describe_setting, format_table, write_json

    if tune and training:
        raise UsageError("--tune and --training are two measurements; give one")
    mode = "--tune" if tune else "--training" if training else "an attack benchmark"
    _refuse_given(mode, ("attacks", "no_torchattacks", "precision", "channels_last", "compile_model") if tune or training
                  else ("defenses",))
    if tune:
        _tune_command(models, batch_size, device, repeats, max_spread, json_path)
        return
    if training:
        _training_command(defenses, models, batch_size, device, repeats, max_spread, json_path)
        return
    measurements = bench(attacks, models, batch_size or "128", device, repeats, torchattacks=not no_torchattacks,
                         progress=lambda text: click.echo(f"measuring {text}", err=True),
                         acceleration=Acceleration(**_pop_acceleration(acceleration)))
    click.echo(format_table(measurements, max_spread))
    click.echo(f"{describe_setting(measurements, repeats)}; ratios are time ratios: ours/bound >= 1 is the overhead "
               "over the model's own passes, ours/torchattacks < 1 means ours is faster")
    if json_path is not None:
        write_json(json_path, measurements, repeats, seed=0)
        click.echo(f"wrote {json_path}")


def _refuse_given(mode: str, names: tuple[str, ...]) -> None:
    """One line for an option given on the command line that ``mode`` would silently ignore."""
    context = click.get_current_context()
    for parameter in context.command.params:
        if parameter.name in names and context.get_parameter_source(parameter.name) is click.core.ParameterSource.COMMANDLINE:
            raise UsageError(f"{parameter.opts[0]} does not apply to {mode}")


def _tune_command(models: str, batch_size: str | None, device: str, repeats: int, max_spread: float,
                  json_path: Path | None) -> None:
    from .bench import parse_batch_sizes, write_json
    from .bench_tuning import TUNE_BATCH_SIZES, format_tuning, tune

    tunings = tune(models, parse_batch_sizes(batch_size) if batch_size else TUNE_BATCH_SIZES, device, repeats)
    click.echo(format_tuning(tunings, max_spread))
    if json_path is not None:
        write_json(json_path, tunings, repeats, seed=0, key="tunings", bound=None)
        click.echo(f"wrote {json_path}")


def _training_command(defenses: str, models: str, batch_size: str | None, device: str, repeats: int,
                      max_spread: float, json_path: Path | None) -> None:
    from .bench import parse_batch_sizes, write_json
    from .bench_training import TRAINING_BOUND, bench_training, format_training

    sizes = parse_batch_sizes(batch_size or "128")
    measurements = [measurement for size in sizes for measurement in bench_training(
        defenses, models, size, device, repeats, progress=lambda text: click.echo(f"measuring {text}", err=True))]
    click.echo(format_training(measurements, max_spread))
    click.echo("step/bound >= 1 is the overhead beyond the model's own passes (the optimizer's step included)")
    if json_path is not None:
        write_json(json_path, measurements, repeats, seed=0, key="training", bound=TRAINING_BOUND)
        click.echo(f"wrote {json_path}")


@cli.command("leaderboard")
@click.option("--db", "dbs", multiple=True, required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Results store written by 'rbl run'; repeat to merge the shards of one run.")
@click.option("--name", default=None, help="Benchmark to render. [default: the latest run's]")
@click.option("--run", "run_id", type=int, default=None, help="Run id within the store. [default: the latest]")
@click.option("--format", "fmt", type=click.Choice(LEADERBOARD_FORMATS + SITE_FORMATS), default="md", show_default=True,
              help="What to print: html is a standalone page, robustbench RobustBench-style model_info JSON, "
                   "long-csv one row per cell.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write NAME.csv, NAME.md and NAME.json into this folder instead of printing.")
@click.option("--allow-partial", is_flag=True,
              help="Render a run that has not finished (interrupted or still running); it is marked partial.")
def leaderboard_command(
    dbs: tuple[Path, ...], name: str | None, run_id: int | None, fmt: str, out: Path | None, allow_partial: bool
) -> None:
    """Render the leaderboard of a run from its results store (or merge the stores of several shards)."""
    from . import site as sites
    from .atomic import ensure_writable
    from .leaderboard import refuse_another_run, render, write
    from .runner import cells_frame

    records, metadata = _finished_run(dbs, name, run_id, allow_partial)
    frame = cells_frame(records)
    benchmark = metadata["benchmark"]
    if out is None and fmt in SITE_FORMATS:
        click.echo(sites.render_format(sites.sidecar_of_run(records, metadata), fmt), nl=False)
        return
    if out is None:
        click.echo(render(frame, metadata, benchmark)[fmt], nl=False)
        return
    ensure_writable(out)
    refuse_another_run(out, benchmark, metadata)
    for path in write(frame, metadata, out, benchmark).values():
        click.echo(f"wrote {path}")


@cli.command("site")
@click.option("--json", "sidecars", multiple=True, type=click.Path(path_type=Path),
              help="A leaderboard's JSON sidecar (<out>/<name>.json); repeat for more benchmarks.")
@click.option("--db", "dbs", multiple=True, type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="Results store of one more benchmark, its latest run; repeat to merge the shards of that run.")
@click.option("--name", default=None, help="With --db: the benchmark to take from the stores. [default: the latest run's]")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder the site is written into.")
@click.option("--allow-partial", is_flag=True, help="With --db: include a run that has not finished, marked partial.")
def site_command(sidecars: tuple[Path, ...], dbs: tuple[Path, ...], name: str | None, out: Path,
                 allow_partial: bool) -> None:
    """A static HTML site (index and one page per benchmark) with model_info JSON and long CSV exports."""
    from . import site as sites

    if not sidecars and not dbs:
        raise UsageError("no leaderboard given; pass --json FILE (a sidecar, repeatable) or --db PATH")
    boards = [sites.read_sidecar(path) for path in sidecars]
    if dbs:
        records, metadata = _finished_run(dbs, name, None, allow_partial)
        boards.append(sites.sidecar_of_run(records, metadata))
    command = shlex.join(["rbl", "site", *[arg for path in sidecars for arg in ("--json", str(path))],
                          *[arg for path in dbs for arg in ("--db", str(path))],
                          *(["--name", name] if name else []), *(["--allow-partial"] if allow_partial else []),
                          "--out", str(out)])
    for path in sites.write_site(boards, out, command):
        click.echo(f"wrote {path}")


def _finished_run(dbs: tuple[Path, ...], name: str | None, run_id: int | None, allow_partial: bool):
    """The records and metadata of a run merged from its stores, refused while partial unless allowed."""
    from .leaderboard import partial_reason
    from .store import merged_run

    records, metadata = merged_run(list(dbs), name, run_id)
    partial = partial_reason(metadata)
    if partial and not allow_partial:
        raise UsageError(f"the run is partial: {partial}; finish it by running its command again, "
                         "or pass --allow-partial to render it marked as partial")
    return records, metadata


@cli.group("plot")
def plot_group() -> None:
    """Plots as PNG or SVG (the suffix of --out chooses).

    accuracy: robust accuracy vs eps from a leaderboard's JSON sidecar; rg: its R&G scores per defense
    and attack as bars; boundary: decision regions of a 2-D model under each defense; loss-curves and loss-histogram:
    the loss along random restarts of an attack and its final values (Madry et al.); examples: adversarial images
    and their perturbations over eps; confusion: confusion matrices clean vs attacked. The per-layer
    bar chart of the layer sustainability analysis is written by `rbl lsa` (plugin rbl-lsa).
    """


@plot_group.command("accuracy", short_help="Robust accuracy vs eps from a leaderboard's JSON.")
@click.argument("leaderboard_json", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG or SVG file. [default: <stem>-accuracy.png beside LEADERBOARD_JSON]")
def plot_accuracy_command(leaderboard_json: Path, out: Path | None) -> None:
    """Robust accuracy vs eps, one line per attack and one subplot per (model, defense), from `rbl run`'s JSON."""
    from . import plot as plotting

    path = out or leaderboard_json.with_name(plotting.accuracy_file_name(leaderboard_json.stem))
    plotting.check_output(path)
    cells = plotting.read_cells(leaderboard_json)
    click.echo(f"wrote {plotting.accuracy_vs_eps(cells, path, title=f'{leaderboard_json.stem}: robust accuracy vs ε')}")


@plot_group.command("rg", short_help="R&G score per defense and attack from a leaderboard's JSON.")
@click.argument("leaderboard_json", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG or SVG file. [default: <stem>-rg.png beside LEADERBOARD_JSON]")
def plot_rg_command(leaderboard_json: Path, out: Path | None) -> None:
    """R&G score per (model, defense), one bar per attack and one for the worst case, in rank order, from `rbl run`'s JSON."""
    from . import plot as plotting

    path = out or leaderboard_json.with_name(f"{leaderboard_json.stem}-rg.png")
    plotting.check_output(path)
    ranking = plotting.read_ranking(leaderboard_json)
    click.echo(f"wrote {plotting.rg_scores(ranking, path, title=f'{leaderboard_json.stem}: R&G per defense')}")


# One model, defense and attack: spelled as `rbl run` spells its lists, the singular kept as an alias.
ONE_PLUGIN_OPTIONS = (
    click.option("--models", "--model", "model", default="cnn", show_default=True, metavar="SPEC",
                 help="One model spec, e.g. lenet."),
    click.option("--defenses", "--defense", "defense", default="none", show_default=True, metavar="SPEC",
                 help="One defense the model is trained with."),
    click.option("--attacks", "--attack", "attack", default="pgd", show_default=True, metavar="SPEC",
                 help="One attack spec, e.g. 'pgd[steps=20]'."),
)


def _attacked_model_options(command):
    """The options of `rbl plot examples` and `rbl plot confusion`: the model as `rbl run` trains it (same cache)."""
    options = [
        click.option("--dataset", default=None,
                     help="Dataset spec (images), e.g. 'npz[path=FILE]'. [default: the one the model is meant for]"),
        click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
                     help="Where torchvision datasets live (downloaded there when online)."),
        *ONE_PLUGIN_OPTIONS,
        click.option("--out", type=click.Path(path_type=Path), default=None,
                     help="PNG or SVG file. [default: leaderboards/<plot>-<model>-<defense>-<dataset>-<attack>.png]"),
        click.option("--quiet", is_flag=True, help="No progress bar while training."),
    ]
    return trained_model_options(_with_options(command, options))


def _defense_labels(registry: Registry, defenses: str) -> list[str]:
    """The labels of the comma-separated ``defenses`` (each a spec `trained_model` takes); an unknown
    name or an empty list is one line, before anything is trained."""
    return [registry.create("defenses", spec).label for spec in split_spec_list(defenses)]


def _dataset_loader(dataset: str | None, model: str) -> DatasetLoader:
    """The dataset a one-model command uses: ``dataset``, else the model's own (the rule of `rbl run`)."""
    from .plan import choose_dataset
    from .registry import default_registry

    registry = default_registry()
    return registry.create("datasets", choose_dataset(dataset, [registry.create("models", model)]).spec)


def _attacked_model(plot: str, n: int, *, dataset: str, data_dir: Path, model: str, defense: str, attack: str,
                    epochs: int | None, batch_size: int, train_eps: float | None, lr_schedule: str,
                    early_stop: int | None, optimizer: str | None, seed: int, device: str,
                    cache_dir: Path | None, out: Path | None, quiet: bool):
    """The checked output file, the trained model, the attack, the first ``n`` test points and the class names."""
    import torch

    from . import plot as plotting
    from .registry import default_registry
    from .runner import _slug, trained_model

    registry = default_registry()
    threat = registry.create("attacks", attack)
    stem = "-".join(_slug(part) for part in (plot, registry.create("models", model).label,
                                            registry.create("defenses", defense).label,
                                            _dataset_loader(dataset, model).name, threat.label))
    path = out or Path("leaderboards") / f"{stem}.png"
    plotting.check_output(path)  # before any training or attack
    network, data = trained_model(
        model=model, defense=defense, dataset=dataset, epochs=epochs, batch_size=batch_size, train_eps=train_eps,
        lr_schedule=lr_schedule, early_stop=early_stop, optimizer=optimizer,
        device=device, seed=seed, data_dir=data_dir, cache_dir=cache_dir, progress=not quiet, registry=registry,
    )
    on = next(network.parameters()).device
    torch.manual_seed(seed)  # as the runner seeds every cell: the attack's randomness follows from --seed
    return path, network, threat, data.x_test[:n].to(on), data.y_test[:n].to(on), data.classes


@plot_group.command("examples", short_help="Adversarial images and perturbations over eps.")
@_attacked_model_options
@click.option("--eps", default=None,
              help="Comma-separated eps values in (0, 1], two columns each, e.g. 0.1,0.2,0.3. [default: the dataset's grid]")
@click.option("--n", type=click.IntRange(min=1), default=6, show_default=True, help="Images (rows): the first N test points.")
def plot_examples_command(eps: str | None, n: int, **options) -> None:
    """Per test image: the clean image, then per eps the adversarial image and its (stretched) perturbation."""
    from . import plot as plotting
    from .runner import parse_eps

    budgets = parse_eps(eps, _dataset_loader(options["dataset"], options["model"]).default_eps)[1:]
    if not budgets:
        raise UsageError("--eps needs a value > 0; the clean column already shows eps = 0")
    path, network, threat, x, y, classes = _attacked_model("examples", n, **options)
    click.echo(f"wrote {plotting.adversarial_examples(network, threat, x, y, budgets, classes, path)}")


@plot_group.command("confusion", short_help="Confusion matrices, clean vs attacked.")
@_attacked_model_options
@click.option("--eps", type=BUDGET, default=None, help="Attack budget in (0, 1], e.g. 0.3 or 8/255. [default: the dataset's training eps]")
@click.option("--n-examples", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Evaluate on the first N test points.")
def plot_confusion_command(eps: float | None, n_examples: int, **options) -> None:
    """Confusion matrices of the clean and the attacked predictions, side by side."""
    from . import plot as plotting

    budget = _dataset_loader(options["dataset"], options["model"]).default_train_eps if eps is None else eps
    if not 0.0 < budget <= 1.0:
        raise UsageError(f"--eps must lie in (0, 1] (inputs are images in [0, 1]), got {budget}")
    path, network, threat, x, y, classes = _attacked_model("confusion", n_examples, **options)
    written = plotting.confusion_matrices(network, threat, x, y, budget, classes, path, options["batch_size"])
    click.echo(f"wrote {written}")


@plot_group.command("boundary", short_help="Decision regions of a 2-D model under each defense.")
@click.option("--dataset", default=None, help="A 2-D dataset spec, e.g. moons. [default: the one the model is meant for]")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
              help="Where torchvision datasets live.")
@click.option("--models", "--model", "model", default="mlp", show_default=True, metavar="SPEC", help="One model spec.")
@click.option("--defenses", default="none,at-fgsm,at-pgd", show_default=True,
              help="Comma-separated defenses, one panel each, trained as `rbl run` trains them (same cache).")
@click.option("--n-examples", type=click.IntRange(min=1), default=500, show_default=True,
              help="Test points drawn over the regions: the first N.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG or SVG file. [default: leaderboards/boundary-<model>-<dataset>.png]")
@click.option("--quiet", is_flag=True, help="No progress bar while training.")
@trained_model_options
def plot_boundary_command(dataset: str | None, data_dir: Path, model: str, defenses: str, n_examples: int,
                          out: Path | None, quiet: bool, **training) -> None:
    """Each defense's decision regions over the 2-D input space, with the test points coloured by class."""
    from . import plot as plotting
    from .registry import default_registry
    from .runner import _slug, trained_model

    registry = default_registry()
    loader = _dataset_loader(dataset, model)
    labels = _defense_labels(registry, defenses)
    path = out or Path("leaderboards") / f"boundary-{_slug(registry.create('models', model).label)}-{_slug(loader.name)}.png"
    plotting.check_output(path)
    trained = [trained_model(model=model, defense=label, dataset=dataset, data_dir=data_dir, progress=not quiet,
                             registry=registry, **training) for label in labels]
    data = trained[0][1]
    on = next(trained[0][0].parameters()).device
    written = plotting.decision_boundaries(
        [(f"{model}/{label}", network) for label, (network, _) in zip(labels, trained)],
        data.x_test[:n_examples].to(on), data.y_test[:n_examples], data.classes, path,
        title=f"decision regions on {loader.name}")
    click.echo(f"wrote {written}")


def _restart_options(restarts: int):
    """The options of `rbl plot loss-curves` and `loss-histogram`: the models as `rbl run` trains them, the attack, eps."""
    def decorate(command):
        options = [
            click.option("--dataset", default=None, help="Dataset spec. [default: the one the model is meant for]"),
            click.option("--data-dir", type=click.Path(path_type=Path), default=Path("data"), show_default=True,
                         help="Where torchvision datasets live."),
            click.option("--models", "--model", "model", default="cnn", show_default=True, metavar="SPEC",
                         help="One model spec."),
            click.option("--defenses", default="none,at-pgd", show_default=True,
                         help="Comma-separated defenses, one row each (standard vs adversarially trained)."),
            click.option("--attacks", "--attack", "attack", default="pgd", show_default=True, metavar="SPEC",
                         help="One attack with a random start, e.g. 'pgd[steps=40]'."),
            click.option("--eps", type=BUDGET, default=None, help="Attack budget. [default: the dataset's training eps]"),
            click.option("--n", type=click.IntRange(min=1, max=12), default=4, show_default=True,
                         help="Points (columns): the first N test points."),
            click.option("--restarts", type=click.IntRange(min=1, max=10_000), default=restarts, show_default=True,
                         help="Random restarts per point."),
            click.option("--out", type=click.Path(path_type=Path), default=None,
                         help="PNG or SVG file. [default: leaderboards/<plot>-<model>-<dataset>-<attack>.png]"),
            click.option("--quiet", is_flag=True, help="No progress bar while training."),
        ]
        return trained_model_options(_with_options(command, options))
    return decorate


def _restart_runs(plot: str, *, dataset: str | None, data_dir: Path, model: str, defenses: str, attack: str,
                  eps: float | None, n: int, restarts: int, out: Path | None, quiet: bool, **training):
    """The checked output file and, per defense, its label and :func:`plot.restart_losses` on the first ``n`` test points."""
    import torch

    from . import plot as plotting
    from .registry import default_registry
    from .runner import _slug, trained_model

    registry = default_registry()
    loader = _dataset_loader(dataset, model)
    budget = loader.default_train_eps if eps is None else eps
    threat = registry.create("attacks", attack)
    labels = _defense_labels(registry, defenses)
    stem = "-".join(_slug(part) for part in (plot, registry.create("models", model).label, loader.name, threat.label))
    path = out or Path("leaderboards") / f"{stem}.png"
    plotting.check_output(path)
    runs = []
    for label in labels:
        network, data = trained_model(model=model, defense=label, dataset=dataset, data_dir=data_dir,
                                      progress=not quiet, registry=registry, **training)
        on = next(network.parameters()).device
        torch.manual_seed(training["seed"])  # the random starts follow from --seed, as in rbl run
        losses = plotting.restart_losses(network, threat, data.x_test[:n].to(on), data.y_test[:n].to(on), budget,
                                         restarts)
        runs.append((f"{model}/{label}", losses))
    return path, runs, f"{threat.label} at eps={budget:g}, {restarts} random restarts"


@plot_group.command("loss-curves", short_help="Loss over the iterations of random restarts (Madry et al., Fig. 1).")
@_restart_options(restarts=20)
def plot_loss_curves_command(**options) -> None:
    """The cross-entropy along the attack's iterations from each random restart, per point and defense."""
    from . import plot as plotting

    path, runs, what = _restart_runs("loss-curves", **options)
    click.echo(f"wrote {plotting.loss_curves(runs, path, title=f'cross-entropy along {what}')}")


@plot_group.command("loss-histogram", short_help="Final losses of many random restarts (Madry et al., Fig. 2).")
@_restart_options(restarts=1000)
def plot_loss_histogram_command(**options) -> None:
    """The histogram of the final cross-entropy over the random restarts, per point and defense."""
    from . import plot as plotting

    path, runs, what = _restart_runs("loss-histogram", **options)
    click.echo(f"wrote {plotting.loss_histograms(runs, path, title=f'final cross-entropy of {what}')}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rbl`` script; returns the exit status."""
    warnings.showwarning = _one_line_warning
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="rbl", standalone_mode=False)
    except click.exceptions.UsageError as error:
        print(f"rbl: error: {error.format_message()}", file=sys.stderr)
        return EXIT_USAGE
    except RblError as error:
        print(f"rbl: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        where = f" writing {str(error.filename)!r}" if error.filename is not None else ""
        print(f"rbl: error: disk full{where} ({error.strerror}); what was written before is kept: free some space "
              "and run the same command again to resume", file=sys.stderr)
        return EXIT_USAGE
    except click.exceptions.Abort:
        print("rbl: aborted", file=sys.stderr)
        return 130
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0
