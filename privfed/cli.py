"""The ``privfed`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import textwrap
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from privfed import __version__
from privfed.checkpoint import RunInterrupted
from privfed.config import ConfigError, ExperimentConfig, load_config
from privfed.data import ChecksumError, DataFormatError, DatasetNotFoundError
from privfed.federated import RoundRecord, TrainingDivergedError
from privfed.keys_cli import register as register_key_commands
from privfed.live import RunInProgressError, partial_dir
from privfed.predict_cli import register as register_predict_command
from privfed.progress import steps
from privfed.run_summary import format_figure, summary_table
from privfed.rundir import (
    flower_simulation,
    read_summary,
    run_dir_for,
    run_problems,
    train_run,
)
from privfed.secure.errors import SecureAggregationError
from privfed.threads import add_threads_argument, cli_threads

__all__ = ["COMMAND_GROUP", "MAIN_JOB", "add_config_arguments", "add_override_arguments",
           "add_quick_argument", "config_overrides", "main", "resolve_config"]

_DESCRIPTION = """\
privfed: privacy-preserving federated learning.

Commands:
  run      with CONFIG: train that federation and write its run directory; without: the
           main job, `privfed compare`
  compare  the main job: the embedded digits federation trained and audited under six
           privacy configurations, one table (experiments plug-in)
  predict  a run's model's predictions (and probabilities) for new data or its test set
  config   print the resolved config (defaults + file + --set overrides) as TOML, every
           key (unset ones as comments)
  audit    measure what each party could learn: membership, inversion, epsilon audit
  sweep    run a grid of configs, resumably, and report them (experiments plug-in)
  report   write a sweep's results tables, plots and report.md (experiments plug-in)

Every config field can be set in the TOML file or with --set SECTION.KEY=VALUE;
`privfed config` prints them all with their current values.
"""

def _config_keys() -> str:
    """One line per config section listing its keys (generated, so never stale)."""
    lines = ["config keys (`privfed config` prints each with its current value; the README's",
             "configuration reference gives the allowed values):"]
    top = [f.name for f in dataclasses.fields(ExperimentConfig) if f.name not in _SECTIONS]
    lines.append(f"  {'(top level)':<12}" + ", ".join(top))
    for section in _SECTIONS:
        names = [f.name for f in dataclasses.fields(getattr(ExperimentConfig(), section))]
        lines += textwrap.wrap(", ".join(names) or "(no options yet)", width=86,
                               initial_indent=f"  {section:<12}", subsequent_indent=" " * 14)
    return "\n".join(lines) + "\n\n"


_SECTIONS = ("data", "model", "federation", "privacy", "secure", "compression", "audit",
             "tracking")

_EPILOG = _config_keys() + """\
examples:
  privfed run                                     # the main job (= privfed compare)
  privfed compare --seed 1 --output-dir results   # the main job, another seed, elsewhere
  privfed run experiments/configs/digits.toml     # one federation
  privfed run experiments/configs/breast_cancer.toml --set federation.rounds=50
  privfed run experiments/configs/digits.toml --set data.partition=dirichlet --set data.alpha=0.1
  privfed run experiments/configs/digits.toml --engine flower-sim
  privfed run experiments/configs/digits.toml --engine flower --superlink 10.0.0.5:9091
  privfed config --set data.dataset=mnist --data-dir ~/data
"""


COMMAND_GROUP = "privfed.commands"
"""Entry-point group of plug-in subcommands: each entry point names a ``register(commands)``
function that adds its parser to the ``argparse`` subparsers and sets ``handler`` (a
callable taking the parsed arguments and returning the exit status). The attacks package's
``privfed audit`` is one; the core never imports its plug-ins."""

CLI_ERRORS = (ConfigError, DatasetNotFoundError, DataFormatError, ChecksumError,
              TrainingDivergedError, SecureAggregationError, RunInProgressError)
"""Errors caused by the user's input or data, the config's or a party's: printed as one line
(:func:`_error_line`), exit status 2."""


def _error_line(err: Exception) -> str:
    """The one line ``privfed`` prints for ``err`` (one of :data:`CLI_ERRORS`): its message,
    with what raised it where the message alone does not say (secure aggregation refusing
    an update names its own parameters, e.g. ``clip``, not the config's)."""
    text = " ".join(str(err).split())
    if isinstance(err, SecureAggregationError):
        return (f"secure aggregation refused the round ({type(err).__name__}): {text} "
                "(see the [secure] section: secure.clip, secure.out_of_range, the threat model)")
    return text


MAIN_JOB = "compare"
"""The command ``privfed run`` runs without a CONFIG: the README's main job, the comparison
of privacy configurations that the experiments package registers as a plug-in."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``privfed`` command line (the installed console script); returns the exit
    status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``). ``["run"]`` without a CONFIG runs the
        main job, ``privfed compare`` (:data:`MAIN_JOB`), with the same options.
    """
    parser, commands = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run" and args.config is None:
            args = _as_main_job(args, commands)
        return args.handler(args)
    except CLI_ERRORS as err:
        line = escape(_error_line(err))
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {line}", highlight=False)
        return 2
    except RunInterrupted as stop:
        Console(stderr=True, soft_wrap=True).print(escape(str(stop)), highlight=False)
        return stop.exit_status
    except KeyboardInterrupt:
        Console(stderr=True, soft_wrap=True).print(
            "interrupted (finished runs and saved checkpoints are kept; the same command "
            "resumes)", highlight=False)
        return 128 + signal.SIGINT


def _as_main_job(args: argparse.Namespace, commands: argparse._SubParsersAction
                 ) -> argparse.Namespace:
    """``privfed run``'s arguments (no CONFIG) as those of :data:`MAIN_JOB`: its defaults,
    with the values of every option the two commands share."""
    if args.engine != "inprocess":
        raise ConfigError(f"--engine {args.engine} needs a CONFIG; the main job (no CONFIG) "
                          "runs in-process")
    if args.rerun:
        raise ConfigError("--rerun needs a CONFIG; the main job (no CONFIG) resumes and "
                          "reuses what is complete: delete a configuration's run directory "
                          "to train it again")
    job = commands.choices.get(MAIN_JOB)
    if job is None:
        raise ConfigError(f"privfed run without a CONFIG runs the main job, `privfed "
                          f"{MAIN_JOB}`, which needs privfed's experiments package; give a "
                          "CONFIG")
    merged = vars(job.parse_args([]))
    merged.update({key: value for key, value in vars(args).items()
                   if key in merged and key != "handler"}, command=MAIN_JOB)
    return argparse.Namespace(**merged)


def add_config_arguments(parser: argparse.ArgumentParser,
                         without: str = "built-in defaults") -> None:
    """The config arguments every command shares: CONFIG (``without`` says what no CONFIG
    means) and :func:`add_override_arguments` (read them back with :func:`resolve_config`)."""
    parser.add_argument("config", nargs="?", metavar="CONFIG",
                        help="TOML config file, or a run directory (its config.toml); "
                             f"default: {without}")
    add_override_arguments(parser)


def add_override_arguments(parser: argparse.ArgumentParser, output_dir: bool = True) -> None:
    """--set, --data-dir, --output-dir (unless ``output_dir`` is False: a command whose
    --output-dir means something else) and --seed (read them back with
    :func:`config_overrides`)."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a field, e.g. --set federation.rounds=50 (repeatable)",
    )
    parser.add_argument("--data-dir", help="dataset directory (overrides data.data_dir, "
                        "env PRIVFED_DATA, and the user cache dir)")
    if output_dir:
        parser.add_argument("--output-dir", help="parent of run directories (default: runs)")
    parser.add_argument("--seed", type=int, help="experiment seed (overrides seed)")


def add_quick_argument(parser: argparse.ArgumentParser) -> None:
    """--quick, of every command that audits (read back by :func:`config_overrides`)."""
    parser.add_argument("--quick", action="store_true",
                        help="a small, fast audit (the same as --set audit.quick=true)")


def config_overrides(args: argparse.Namespace, output_dir: bool = True) -> list[str]:
    """The ``--set`` overrides plus those of --data-dir, --output-dir (unless ``output_dir``
    is False), --seed and --quick (where the command has it, :func:`add_quick_argument`)."""
    overrides = list(args.overrides)
    if getattr(args, "quick", False):
        overrides.append("audit.quick=true")
    if args.data_dir is not None:
        overrides.append(f"data.data_dir={_toml_string(args.data_dir)}")
    if output_dir and args.output_dir is not None:
        overrides.append(f"output_dir={_toml_string(args.output_dir)}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    return overrides


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    """The config named by :func:`add_config_arguments`'s arguments, overrides applied."""
    overrides = config_overrides(args)
    path = args.config
    if path is not None and Path(path).is_dir():
        path = Path(path) / "config.toml"
    return load_config(path, overrides)


def _parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The parser of every command, and its subparsers (plug-ins' commands included)."""
    parser = argparse.ArgumentParser(
        prog="privfed",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"privfed {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="train a federation and write its run directory (no CONFIG: the main job)",
        description="train the federation of CONFIG and write its run directory; without "
                    f"CONFIG, run the main job, `privfed {MAIN_JOB}`, with the same options")
    add_config_arguments(run, without=f"the main job, `privfed {MAIN_JOB}`")
    run.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    run.add_argument("--rerun", action="store_true",
                     help="train again from round 1 although the run directory holds "
                          "this config's complete run (it is then replaced whole) or an "
                          "interrupted run's checkpoint")
    add_threads_argument(run)
    _add_engine_arguments(run)
    run.set_defaults(handler=_run_command)
    config = commands.add_parser("config", help="print the resolved configuration as TOML",
                                 description="print the resolved configuration as TOML")
    add_config_arguments(config)
    config.set_defaults(handler=_config_command)
    register_key_commands(commands)
    register_predict_command(commands)
    for entry_point in entry_points(group=COMMAND_GROUP):
        entry_point.load()(commands)
    return parser, commands


def _config_command(args: argparse.Namespace) -> int:
    print(resolve_config(args).to_toml(), end="")
    return 0


ENGINES = ("inprocess", "flower-sim", "flower")
"""Where ``privfed run`` trains: this process, Flower's simulation engine, or a Flower
deployment (SuperLink and SuperNodes, see the README's "Running across machines")."""


def _add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    engine = parser.add_argument_group(
        "engine", "where to train (the flower engines need: pip install 'privfed[flower]')")
    engine.add_argument("--engine", choices=ENGINES, default="inprocess",
                        help="inprocess (default): this process; flower-sim: Flower's "
                             "simulation engine; flower: a running Flower deployment")
    engine.add_argument("--superlink", metavar="HOST:PORT",
                        help="--engine flower: the SuperLink's address")
    engine.add_argument("--insecure", action="store_true",
                        help="--engine flower: no TLS (a SuperLink started with --insecure)")
    engine.add_argument("--root-certificates", metavar="PEM",
                        help="--engine flower: CA certificate of the SuperLink's TLS certificate")
    engine.add_argument("--stage-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="flower engines: wait this long for the clients' replies to one "
                             "protocol stage; later ones count as dropped (default 300)")


def _run_command(args: argparse.Namespace) -> int:
    config, console = resolve_config(args), Console(quiet=args.quiet)
    cli_threads(args, [config.model.name])
    if args.engine == "inprocess":
        return _run(config, console, rerun=args.rerun)
    return _run_on_flower(config, args, console)


def _reuse(run_dir: Path, config: ExperimentConfig, console: Console, rerun: bool) -> bool:
    """Whether ``run_dir`` holds ``config``'s complete run to show instead of training (not
    with ``rerun``); says why a directory that fails its checks is trained again."""
    problems = run_problems(run_dir, config)
    if not problems and not rerun:
        console.print(f"{run_dir} holds this config's complete run (same fields and data); "
                      "shown, not trained again (--rerun trains it again)")
        console.print(summary_table(read_summary(run_dir)))
        return True
    if problems and run_dir.exists():
        console.print(f"[bold yellow]{run_dir} fails its checks[/] ({'; '.join(problems)}): "
                      "training it again", highlight=False)
    return False


def _run_on_flower(config: ExperimentConfig, args: argparse.Namespace, console: Console) -> int:
    """Train ``config`` on one of the Flower engines; print its summary."""
    try:
        from privfed.integrations import flower
    except ImportError as err:
        raise ConfigError(str(err)) from None
    if args.engine == "flower" and not args.superlink:
        raise ConfigError("--engine flower needs --superlink HOST:PORT (the SuperLink's address)")
    options = flower.FlowerOptions(stage_timeout=args.stage_timeout)
    config = flower.flower_config(config)
    run_dir = run_dir_for(config, args.engine).resolve()
    console.print(f"[bold]privfed run[/] {config.name} on {args.engine} -> {run_dir}")
    if _reuse(run_dir, config, console, args.rerun):
        return 0
    if args.engine == "flower-sim":
        result = train_run(config, run_dir, train=flower_simulation(options))
        console.print(summary_table(result.summary))
        console.print(f"run directory: {run_dir}")
        return 0
    status = flower.run_flower_deployment(
        config, args.superlink, run_dir=run_dir, options=options, insecure=args.insecure,
        root_certificates=args.root_certificates,
    )
    if status != 0:
        return status
    if not (run_dir / "summary.json").exists():
        console.print(f"the ServerApp wrote the run directory {run_dir} on the SuperLink's "
                      "machine (or failed: see its log above)")
        return 0
    console.print(summary_table(read_summary(run_dir)))
    console.print(f"run directory: {run_dir}")
    return 0


def _run(config: ExperimentConfig, console: Console, *, rerun: bool = False) -> int:
    run_dir = run_dir_for(config)
    console.print(f"[bold]privfed run[/] {config.name} -> {run_dir}")
    if _reuse(run_dir, config, console, rerun):
        return 0
    console.print(f"live metrics: {partial_dir(run_dir.absolute()) / 'metrics.jsonl'}",
                  highlight=False)
    rounds = config.federation.rounds
    with steps(console, rounds) as display:

        def on_round(record: RoundRecord) -> None:
            status = f"loss {format_figure(record.train_loss, '.3f')}"
            if record.test_accuracy is not None:
                status += f"  acc {record.test_accuracy:.4f}"
            pooled = (record.federated or {}).get("pooled")
            if pooled:
                status += f"  federated acc {pooled['accuracy']:.4f}"
            display.update(f"round {record.round}/{rounds}  {status}")

        def on_resume(done: int) -> None:
            display.resume(done, f"resuming from the checkpoint after round {done}/{rounds}")

        result = train_run(config, run_dir, on_round=on_round, resume=not rerun,
                           on_resume=on_resume)
    console.print(summary_table(result.summary))
    console.print(f"run directory: {run_dir}")
    return 0


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


if __name__ == "__main__":
    sys.exit(main())
