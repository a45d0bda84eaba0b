"""The `gfa-keras` command (also `python -m gfa_keras`): train, evaluate, tune and report from a shell.

    gfa-keras train --model mlp --dataset digits --method gfa --penalty-weight 0.01 --epochs 10 \\
        --out runs/gfa --evaluate fast
    gfa-keras evaluate runs/gfa/mlp_gfa.keras --dataset digits --attacks autoattack --eps 0.05 0.1 --out runs/cmp
    gfa-keras tune --model mlp --dataset digits --min-weight 1e-3 --max-weight 1 --trials 8 --out runs/tune
    gfa-keras report runs/plain runs/gfa --out runs/cmp
    gfa-keras evaluate runs/gfa/mlp_gfa.keras --attacks autoattack --shard 0/2 --out runs/parts   # and 1/2
    gfa-keras merge runs/parts/mlp_gfa.shard-*-of-2.json --out runs/cmp

Every command but `evaluate --shard` (which writes one shard's JSON for `merge`) writes a report directory
(`report.json`, `report.md`, `report.html` and PNG plots, see `gfa_keras.reports.report_directory`).

Exit codes: 0 success; 1 the run failed (a file missing or corrupt, data not
available, a value the library rejected: the message says which); 2 the command
line is wrong (unknown flag, bad value); 130 interrupted (Ctrl-C; `train --resume`,
and a rerun of `evaluate` or `tune`, continue where it stopped). Errors are one line on stderr;
`--traceback` shows the Python traceback instead.

Models are loaded with Keras' safe mode: a `.keras` file with a `Lambda` layer holds
Python code that would run on loading, and is refused unless `--unsafe-load` is given.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Sequence

import keras
import numpy as np

from gfa_keras.reports import plots, report_directory
from gfa_keras.architectures import ARCHITECTURES, build_architecture
from gfa_keras.attacks import ATTACKS, NORMS
from gfa_keras.data import load_dataset
from gfa_keras.evaluation.cascade import PRESETS, evaluate_robustness
from gfa_keras.evaluation.report import RobustnessReport, json_ready
from gfa_keras.evaluation.shards import merge_shard_reports
from gfa_keras.training.checkpointing import CHECKPOINT_MODEL, CHECKPOINT_STATE, fit_resumable, read_checkpoint
from gfa_keras.training.methods import METHODS, harden
from gfa_keras.tuning.search import DEFAULT_PENALTY_RANGE, OBJECTIVES, TUNERS, tune
from gfa_keras.validation import ArgumentValueError, check_int, check_number

__all__ = [
    "main",
    "build_parser",
    "load_model_file",
    "CommandError",
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROG = "gfa-keras"


class CommandError(Exception):
    """A failure the user can act on; `main` prints it as one line and exits with 1."""


class _UsageError(Exception):
    """A command-line mistake found after parsing; exits with 2 like argparse's own."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (and exit code 2), with a pointer to --help."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------- argument types


def _number_type(convert, check, **bounds):
    """An argparse type: `convert(text)` passed through a `gfa_keras.validation` check, so the
    command line expects what the library expects ("expected a positive integer, received '0'")."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            value = text  # not a number: the check rejects it with the expectation
        try:
            return check("value", value, **bounds)
        except ArgumentValueError as e:
            raise argparse.ArgumentTypeError(f"expected {e.expected}, received {text!r}") from None
    return parse


_positive_int = _number_type(int, check_int, minimum=1)
_non_negative_int = _number_type(int, check_int, minimum=0)
_non_negative_float = _number_type(float, check_number, low=0)
_positive_float = _number_type(float, check_number, low=0, low_open=True)
_fraction = _number_type(float, check_number, low=0, high=1, high_open=True)


def _shard(text):
    """`I/N` -> `(I, N)` with `0 <= I < N`."""
    match = re.fullmatch(r"\s*([+-]?\d+)\s*/\s*([+-]?\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected I/N, shard I of N with 0 <= I < N (e.g. 0/2), received {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"expected I/N with N >= 1 and 0 <= I < N (shards are numbered from 0), "
                                         f"received {text!r}")
    return index, count


def _layers(text):
    """An int N (the first N weighted layers) or comma-separated layer names."""
    if text.strip().isdigit():
        return _positive_int(text)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected an integer or layer names, received {text!r}")
    return names


def _attack_names(text, kind):
    names = [n.strip() for n in text.split(",") if n.strip()]
    valid = sorted(n for n, s in ATTACKS.items() if s.kind == kind)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown attack(s) {unknown}; expected names from {valid}")
    return names


def _attacks(text):
    """A preset name (fast, autoattack, standard) or comma-separated bounded attack names."""
    if text in PRESETS:
        return text
    try:
        return _attack_names(text, "bounded")
    except argparse.ArgumentTypeError as e:
        raise argparse.ArgumentTypeError(f"{e}, or a preset from {sorted(PRESETS)}") from None


def _minimum_norm_attacks(text):
    return [] if text in ("", "none") else _attack_names(text, "minimum_norm")


def _int_list(text):
    try:
        return [_positive_int(v) for v in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, received {text!r}") from None


def _choice_list(choices):
    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated names from {list(choices)}, received {text!r}")
        return values

    return parse


def _model_source(text):
    """A built-in architecture name or the path of a `.keras` file."""
    if text in ARCHITECTURES or text.endswith(".keras"):
        return text
    raise argparse.ArgumentTypeError(
        f"expected a built-in architecture {sorted(ARCHITECTURES)} or a .keras file, received {text!r}"
    )


# ---------------------------------------------------------------- the parser


def _add_data_flags(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default="digits",
                       help="digits (embedded, default), fashion_mnist, cifar10_jpeg, or a prepared TFDS name")
    group.add_argument("--data", metavar="PATH",
                       help="where the data set is: the Fashion-MNIST IDX folder, the CIFAR-10 JPEG zip or "
                            "folder, or the TFDS data_dir")
    group.add_argument("--test-limit", type=_positive_int, metavar="N",
                       help="use only the first N test examples (default: all)")
    return group


def _add_evaluation_flags(parser, *, in_train):
    group = parser.add_argument_group("evaluation" + (" (with --evaluate)" if in_train else ""))
    if in_train:
        group.add_argument("--evaluate", type=_attacks, metavar="ATTACKS",
                           help="after training, evaluate with this attack preset (fast, autoattack) or "
                                "comma-separated attacks, and add the result to the report")
        group.add_argument("--eval-eps", type=_non_negative_float, nargs="+", metavar="EPS",
                           help="bounds to evaluate at, increasing (default: 8/255 for CIFAR-10, else 0.1)")
    else:
        group.add_argument("--attacks", type=_attacks, default="fast",
                           help="a preset (fast = pgd then fgsm; autoattack = apgd_ce, apgd_t, fab_t, square) "
                                "or comma-separated attack names (default: fast)")
        group.add_argument("--eps", type=_non_negative_float, nargs="+", metavar="EPS",
                           help="bounds, increasing, in [0, 1] pixel scale (default: 8/255 for CIFAR-10, else 0.1)")
        group.add_argument("--norm", choices=NORMS, default="linf", help="threat model (default: linf)")
    group.add_argument("--attack-steps", type=_positive_int, metavar="N",
                       help="iterations of the iterative attacks (default: each attack's own)")
    group.add_argument("--restarts", type=_positive_int, default=1,
                       help="restarts of the attacks that have them (default: 1)")
    group.add_argument("--minimum-norm", type=_minimum_norm_attacks, default=[], metavar="ATTACKS",
                       help="comma-separated minimum-norm attacks to run too, e.g. deepfool,ead (default: none)")
    group.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    group.add_argument("--landscape-points", type=_non_negative_int, default=100, metavar="N",
                       help="test points for the radial/tangential loss plot (0: no plot; default: 100)")
    group.add_argument("--eval-batch-size", type=_positive_int, default=256, metavar="N",
                       help="points per block: the largest attack call, and the unit of --shard (default: 256)")


def _add_training_flags(parser):
    group = parser.add_argument_group("training")
    group.add_argument("--method", choices=METHODS, default="gfa", help="the defense (default: gfa)")
    group.add_argument("--penalty-weight", type=_non_negative_float, metavar="W",
                       help="the method's weight: beta for gfa (default 0.01), lambda for datagrad/hybrid, "
                            "TRADES' beta")
    group.add_argument("--layers", type=_layers, default=3,
                       help="GFA taps: N first weighted layers (1 = FIRST, 3 = DEEP) or comma-separated "
                            "layer names (default: 3)")
    group.add_argument("--eps", type=_positive_float, metavar="EPS",
                       help="training perturbation radius for the adversarial methods (pixel scale)")
    group.add_argument("--steps", type=_positive_int, help="training attack steps (default: 7, TRADES 10)")
    group.add_argument("--loss", choices=("crossentropy", "mse"), default="crossentropy",
                       help="task loss: cross-entropy on logits, or the paper's MSE on one-hot labels")
    _add_fit_flags(group, epochs="total epochs", validation_split=0.1,
                   validation="fraction of the training data held out for val_ metrics",
                   seed="seed of the weights and the shuffling")


def _add_fit_flags(group, *, epochs, validation_split, validation, seed):
    """The flags `train` and `tune` share for each model.fit; the help texts say what they mean for each."""
    group.add_argument("--epochs", type=_positive_int, default=10, help=f"{epochs} (default: 10)")
    group.add_argument("--batch-size", type=_positive_int, default=128, help="(default: 128)")
    group.add_argument("--learning-rate", type=_positive_float, default=1e-3, help="Adam's (default: 1e-3)")
    group.add_argument("--validation-split", type=_fraction, default=validation_split,
                       help=f"{validation} (default: {validation_split})")
    group.add_argument("--train-limit", type=_positive_int, metavar="N",
                       help="use the first N training examples only")
    group.add_argument("--seed", type=int, default=0, help=f"{seed} (default: 0)")


def _add_tuning_flags(parser):
    group = parser.add_argument_group("search")
    group.add_argument("--methods", type=_choice_list(METHODS), default=["gfa"], metavar="METHODS",
                       help=f"comma-separated methods to try, from {list(METHODS)} (default: gfa)")
    group.add_argument("--min-weight", type=_positive_float, default=DEFAULT_PENALTY_RANGE[0],
                       help=f"lower end of the penalty weight's log range (default: {DEFAULT_PENALTY_RANGE[0]:g})")
    group.add_argument("--max-weight", type=_positive_float, default=DEFAULT_PENALTY_RANGE[1],
                       help=f"upper end (default: {DEFAULT_PENALTY_RANGE[1]:g})")
    group.add_argument("--layers", type=_int_list, default=[3], metavar="N[,N...]",
                       help="GFA tap depths to try, e.g. 1,3 (FIRST and DEEP; default: 3)")
    group.add_argument("--objective", choices=list(OBJECTIVES), default="tradeoff",
                       help="what to maximise on the validation split (default: tradeoff = "
                            "(clean + robust) / 2)")
    group.add_argument("--eps", type=_positive_float, metavar="EPS",
                       help="the bound of the validation attack (default: 8/255 for CIFAR-10, else 0.1); also "
                            "the training radius of adversarial methods")
    group.add_argument("--norm", choices=NORMS, default="linf", help="threat model (default: linf)")
    group.add_argument("--attack", default="apgd_ce", help="the validation attack (default: apgd_ce)")
    group.add_argument("--attack-steps", type=_positive_int, default=10, metavar="N", help="(default: 10)")
    group.add_argument("--robust-points", type=_positive_int, default=200, metavar="N",
                       help="validation points attacked per epoch (default: 200)")
    group.add_argument("--tuner", choices=TUNERS, default="random", help="(default: random)")
    group.add_argument("--trials", type=_positive_int, default=10, help="trials to run (default: 10)")
    _add_fit_flags(group, epochs="epochs per trial", validation_split=0.2,
                   validation="fraction of the training data the objectives are measured on",
                   seed="seed of the tuner and the weights")


def _add_common_flags(parser, *, out_required=True):
    parser.add_argument("--out", required=out_required, metavar="DIR",
                        help="the report directory to write (created if needed)")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                        help="0 silent, 1 progress bars (default), 2 one line per epoch")
    parser.add_argument("--unsafe-load", action="store_true",
                        help="load .keras files with safe mode off: lets a Lambda layer's code run. Only for "
                             "files you trust")


def build_parser() -> argparse.ArgumentParser:
    """Builds the `gfa-keras` argument parser with its subcommands.

    Returns:
        The `argparse.ArgumentParser`; each subcommand sets `handler`.

    Example:

    ```python
    args = build_parser().parse_args(["report", "runs/gfa"])
    ```
    """
    parser = _Parser(
        prog=PROG,
        description="Harden Keras classifiers against adversarial examples and measure how robust they are.",
        epilog="Exit codes: 0 success, 1 the run failed, 2 bad command line, 130 interrupted.",
    )
    parser.add_argument("--traceback", action="store_true", help="on an error, show the Python traceback")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = commands.add_parser(
        "train", help="train a built-in architecture or a .keras model with a defense",
        description="Train with a defense, checkpoint every epoch, optionally evaluate; writes a report directory.")
    train.add_argument("--model", type=_model_source, default="mlp",
                       help="mlp (the paper's Fashion-MNIST MLP), small_cnn (its CIFAR-10 CNN), madry_cnn, "
                            "resnet18, or a .keras classifier with logits, trained further from its weights "
                            "(default: mlp)")
    train.add_argument("--name", help="the model's name in the report and its file <out>/<name>.keras "
                                      "(default: <model>_<method>)")
    train.add_argument("--resume", action="store_true",
                       help=f"continue from <out>/{CHECKPOINT_MODEL} with the same flags (--epochs may grow)")
    train.add_argument("--overwrite", action="store_true", help="start again even if <out> holds a checkpoint")
    _add_common_flags(train)
    _add_training_flags(train)
    _add_data_flags(train)
    _add_evaluation_flags(train, in_train=True)
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser(
        "evaluate", help="evaluate a .keras model under an attack cascade and write the report",
        description="The per-example worst case over an attack cascade on every test point; the result is added "
                    "to the report directory, so several models can share one report.")
    evaluate.add_argument("model", metavar="MODEL.keras", help="the model file")
    evaluate.add_argument("--name", help="the model's name in the report (default: the file name without .keras)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the attacks (default: 0)")
    evaluate.add_argument("--shard", type=_shard, metavar="I/N",
                          help="evaluate only shard I of N (the blocks of --eval-batch-size points k with k %% N == I) "
                               "and write <out>/<name>.shard-I-of-N.json for `merge`, which joins the N shards into "
                               "exactly the report of one run")
    evaluate.add_argument("--mirrored", action="store_true",
                          help="spread the blocks over the local devices (tf.distribute.MirroredStrategy), one block "
                               "per device at a time; the results are those of one device")
    _add_common_flags(evaluate)
    _add_data_flags(evaluate)
    _add_evaluation_flags(evaluate, in_train=False)
    evaluate.set_defaults(handler=_evaluate)

    tune = commands.add_parser(
        "tune", help="search beta (the penalty weight) with Keras Tuner",
        description="Search the penalty weight on a log scale (and optionally the taps and the method) with Keras "
                    "Tuner on a validation split of the training data; saves the best model and writes a report "
                    "with every trial. Rerunning with the same --out resumes the search.")
    tune.add_argument("--model", type=_model_source, default="mlp",
                      help="mlp, small_cnn, madry_cnn, resnet18 or a .keras file whose architecture is "
                           "re-initialised per trial (default: mlp)")
    tune.add_argument("--name", help="the best model's name in the report and its file <out>/<name>.keras "
                                     "(default: <model>_tuned)")
    tune.add_argument("--overwrite", action="store_true", help="start the search again instead of resuming it")
    _add_common_flags(tune)
    _add_tuning_flags(tune)
    _add_data_flags(tune)
    tune.set_defaults(handler=_tune)

    merge = commands.add_parser(
        "merge", help="join the shard reports of `evaluate --shard I/N` into one report",
        description="Join the N shard reports of one evaluation (evaluate --shard 0/N ... N-1/N, same model, data "
                    "and flags) into the report of the whole test set, equal to that of one evaluate run, and add "
                    "it to the report directory --out.")
    merge.add_argument("shards", nargs="+", metavar="SHARD.json", help="the shard reports, in any order")
    merge.add_argument("--out", required=True, metavar="DIR", help="the report directory to write (created if needed)")
    merge.add_argument("--title", help="the report's title")
    merge.set_defaults(handler=_merge)

    report = commands.add_parser(
        "report", help="render report directories as Markdown, PNG plots and one HTML page",
        description="Render a report directory from its report.json; with several directories, merge their "
                    "models into --out.")
    report.add_argument("directories", nargs="+", metavar="DIR", help="report directories")
    report.add_argument("--out", metavar="DIR", help="where to write the merged report (required with several DIRs)")
    report.add_argument("--title", help="the report's title")
    report.set_defaults(handler=_report)
    return parser


# ---------------------------------------------------------------- shared steps


def load_model_file(path: str | os.PathLike, unsafe: bool = False, compile: bool = False):
    """Loads a `.keras` model with Keras' safe mode on unless `unsafe`.

    Args:
        path: The `.keras` file.
        unsafe: Turn safe mode off (lets a `Lambda` layer's Python code run).
        compile: Restore the saved compile settings and optimizer state (to resume
            training).

    Returns:
        The loaded `keras.Model`.

    Raises:
        CommandError: If the file is missing, not a `.keras` file, refused by safe
            mode, or cannot be read as a Keras model.

    Example:

    ```python
    model = load_model_file("runs/gfa/mlp_gfa.keras")
    ```
    """
    path = Path(path)
    if not path.exists():
        raise CommandError(f"Model file not found: {path}. Expected a .keras file written by model.save() "
                           "or `gfa-keras train`.")
    if path.suffix != ".keras" or not path.is_file():
        raise CommandError(f"Not a .keras file: {path}. Expected a model saved in the Keras 3 format "
                           "(model.save('name.keras')).")
    if not zipfile.is_zipfile(path):
        raise CommandError(f"Cannot load the model {path}: it is not a .keras archive (a zip file); the file is "
                           "corrupt or in another format. Expected a file written by model.save('name.keras').")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=not unsafe)
    except Exception as e:  # noqa: BLE001 (Keras raises many types for a bad file; all mean "cannot load")
        message = " ".join(str(e).split())
        if "safe_mode" in message or "Lambda" in message:
            raise CommandError(
                f"{path} holds a Lambda layer, i.e. Python code that runs on loading; safe mode refused it. "
                "If you trust the file, rerun with --unsafe-load."
            ) from None
        raise CommandError(f"Cannot load the model {path}: {type(e).__name__}: {message[:300]}") from None


def _load_data(args):
    kwargs = {}
    if args.data:
        kwargs = {"fashion_mnist": {"data_dir": args.data}, "cifar10_jpeg": {"path": args.data}}.get(
            args.dataset, {"data_dir": args.data})
    data = load_dataset(args.dataset, **kwargs)
    if args.test_limit:
        data.x_test, data.y_test = data.x_test[:args.test_limit], data.y_test[:args.test_limit]
    if getattr(args, "train_limit", None):
        data.x_train, data.y_train = data.x_train[:args.train_limit], data.y_train[:args.train_limit]
    return data


def _check_fits_data(model, data, path):
    """The model's input and output shapes match the data set, checked before any compute."""
    expected = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if expected is not None and None not in expected and expected != data.input_shape:
        raise CommandError(
            f"The model {path} takes inputs of shape {expected} but {data.name} images have shape "
            f"{data.input_shape}. Expected a --dataset that matches the model."
        )
    outputs = model.output_shape[-1] if not isinstance(model.output_shape, list) else None
    if outputs is not None and outputs != data.num_classes:
        raise CommandError(
            f"The model {path} has {outputs} outputs but {data.name} has {data.num_classes} classes. "
            "Expected one logit per class."
        )


def _default_eps(dataset):
    return [8 / 255] if dataset.startswith("cifar10") else [0.1]


def _evaluate_into_report(model, name, data, args, *, attacks, eps, norm, seed):
    """Runs the robustness evaluation (and the loss landscape), adds both to the report.

    With `args.shard`, writes the shard's report to `<out>/<name>.shard-I-of-N.json`
    instead (shard 0's carries the loss landscape to `merge`).
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shard = getattr(args, "shard", None)
    stem = re.sub(r'[^A-Za-z0-9_.-]+', '_', name) + ("" if shard is None else ".shard-{}-of-{}".format(*shard))
    state = out / f".{stem}.evaluation_state.json"
    strategy = None
    if getattr(args, "mirrored", False):
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
    report = evaluate_robustness(
        model, data.test, attacks, eps=eps, norm=norm, steps=args.attack_steps, restarts=args.restarts,
        seed=seed, batch_size=args.eval_batch_size, minimum_norm_attacks=args.minimum_norm,
        checks=not args.no_checks, state_path=state, strategy=strategy, shard=shard, verbose=args.verbose)
    report.settings["model_name"] = name
    report.settings["dataset"] = data.name
    # Which budget ran, even when silent: a reduced run must not pass for the standard version.
    part = "" if shard is None else " of shard {}/{}".format(*shard)
    print(f"{name}: {report.budget_summary()}, {report.settings['num_points']} points{part}")
    landscape = None
    if args.landscape_points and (shard is None or shard[0] == 0):
        # An all-black image has no radial direction: take the first points that are not.
        usable = np.flatnonzero(np.any(data.x_test.reshape(len(data.x_test), -1) != 0, axis=1))
        points = usable[:args.landscape_points]
        landscape = plots.loss_along_directions(model, data.x_test[points], data.y_test[points], seed=seed)
    if shard is not None:
        if landscape is not None:
            report.shard["landscape"] = json_ready(landscape)
        path = out / f"{stem}.json"
        report.to_json(path)
        print(f"shard report: {path}")
    else:
        report_directory.add_to_report(out, name, robustness=report, landscape=landscape)
    state.unlink(missing_ok=True)
    return report


def _finish_report(out):
    paths = report_directory.render_report(out)
    print(f"report: {paths['html']}")
    return paths


# ---------------------------------------------------------------- train


def _training_settings(args):
    settings = {key: getattr(args, key) for key in (
        "model", "method", "penalty_weight", "layers", "eps", "steps", "loss", "epochs", "batch_size",
        "learning_rate", "validation_split", "train_limit", "seed", "dataset", "data")}
    settings["name"] = _train_name(args)
    return settings


def _resumable_settings(settings):
    """The settings a --resume must repeat: all but --epochs (which may grow)."""
    return {k: v for k, v in settings.items() if k != "epochs"}


def _train_name(args):
    if args.name:
        return args.name
    return f"{Path(args.model).stem}_{args.method}"


def _build_training_model(args, data):
    if args.model in ARCHITECTURES:
        base = build_architecture(args.model, data.input_shape, data.num_classes, seed=args.seed)
    else:
        keras.utils.set_random_seed(args.seed)
        base = load_model_file(args.model, unsafe=args.unsafe_load)
        base = getattr(base, "base_model", base)  # a hardened model is trained again from its classifier
        _check_fits_data(base, data, args.model)
    model = harden(base, layers=args.layers, penalty_weight=args.penalty_weight, method=args.method,
                   eps=args.eps, steps=args.steps, name=_train_name(args))
    if args.loss == "mse":
        loss, metrics = "mse", ["categorical_accuracy"]
    else:
        loss, metrics = keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss=loss, metrics=metrics)
    return model


def _train(args):
    out = Path(args.out)
    settings = _training_settings(args)
    name = settings["name"]
    checkpoint = read_checkpoint(out)
    if args.resume and checkpoint is None:
        raise CommandError(f"Nothing to resume: {out / CHECKPOINT_STATE} does not exist. "
                           "Expected the --out of an interrupted `gfa-keras train`; run without --resume to start.")
    if checkpoint is not None and not (args.resume or args.overwrite):
        raise CommandError(f"{out} already holds a checkpoint (epoch {checkpoint.epoch}). "
                           "Pass --resume to continue it or --overwrite to start again.")
    if METHODS[args.method].needs_eps and args.eps is None:
        raise CommandError(f"--method {args.method} trains against perturbations and needs --eps "
                           "(e.g. 0.1 for the digits or Fashion-MNIST, 0.031 for CIFAR-10).")
    if args.resume:
        differing = checkpoint.differences(_resumable_settings(settings))
        if differing:
            raise CommandError(
                f"Cannot resume {out}: the flags differ from the checkpoint's ({'; '.join(differing)}). "
                "Expected the same flags (only --epochs may change), or --overwrite to start again."
            )
        if checkpoint.epoch >= args.epochs:
            raise CommandError(
                f"Nothing to resume in {out}: it is trained to epoch {checkpoint.epoch} and --epochs is "
                f"{args.epochs}. Expected --epochs greater than {checkpoint.epoch}."
            )
        print(f"resuming {name} from epoch {checkpoint.epoch} of {args.epochs}")
    data = _load_data(args)
    x, y = data.train
    targets = np.eye(data.num_classes, dtype="float32")[y] if args.loss == "mse" else y
    model, history = fit_resumable(
        lambda: _build_training_model(args, data), x, targets, directory=out, epochs=args.epochs,
        settings=_resumable_settings(settings), overwrite=not args.resume, safe_mode=not args.unsafe_load,
        batch_size=args.batch_size, validation_split=args.validation_split, verbose=args.verbose)

    base = getattr(model, "base_model", model)
    model_path = out / f"{name}.keras"
    base.save(model_path)
    print(f"model: {model_path}")
    training = {k: v for k, v in settings.items() if v is not None}
    report_directory.add_to_report(out, name, history=history.history, training=training)
    if args.evaluate:
        keras.utils.set_random_seed(args.seed)
        _evaluate_into_report(base, name, data, args, attacks=args.evaluate,
                              eps=args.eval_eps or _default_eps(args.dataset), norm="linf", seed=args.seed)
    _finish_report(out)
    return EXIT_OK


# ---------------------------------------------------------------- evaluate


def _evaluate(args):
    model_path = Path(args.model)
    name = args.name or model_path.stem
    model = load_model_file(model_path, unsafe=args.unsafe_load)
    model = getattr(model, "base_model", model)
    data = _load_data(args)
    _check_fits_data(model, data, model_path)
    _evaluate_into_report(model, name, data, args, attacks=args.attacks, eps=args.eps or _default_eps(args.dataset),
                          norm=args.norm, seed=args.seed)
    if args.shard is None:
        _finish_report(args.out)
    return EXIT_OK


# ---------------------------------------------------------------- merge


def _merge(args):
    reports = []
    for path in args.shards:
        try:
            reports.append(RobustnessReport.from_json(Path(path)))
        except (OSError, ValueError) as e:
            raise CommandError(f"Cannot read the shard report {path}: {' '.join(str(e).split())}") from None
    merged = merge_shard_reports(reports)
    name = merged.settings.get("model_name", "model")
    owner = next(r for r in reports if r.shard["index"] == 0)
    print(f"{name}: {merged.budget_summary()}, {merged.settings['num_points']} points from "
          f"{len(reports)} shards")
    report_directory.add_to_report(args.out, name, robustness=merged, landscape=owner.shard.get("landscape"),
                                   title=args.title)
    _finish_report(args.out)
    return EXIT_OK


# ---------------------------------------------------------------- tune


def _base_model_factory(args, data):
    """A function returning a fresh classifier per trial (a .keras file is re-initialised)."""
    if args.model in ARCHITECTURES:
        return lambda: build_architecture(args.model, data.input_shape, data.num_classes)
    loaded = load_model_file(args.model, unsafe=args.unsafe_load)
    loaded = getattr(loaded, "base_model", loaded)
    _check_fits_data(loaded, data, args.model)
    return lambda: keras.models.clone_model(loaded)


def _tune(args):
    if args.min_weight >= args.max_weight:
        raise _UsageError(f"--min-weight must be below --max-weight. Received: {args.min_weight:g} >= "
                          f"{args.max_weight:g}")
    if args.validation_split == 0:
        raise _UsageError("the objectives are measured on a validation split: give --validation-split > 0")
    data = _load_data(args)
    x, y = data.train
    n_val = max(1, int(round(len(x) * args.validation_split)))
    if n_val >= len(x):
        raise CommandError(f"--validation-split {args.validation_split} leaves no training data out of {len(x)} "
                           "examples. Expected a smaller split or more data.")
    x_train, y_train, x_val, y_val = x[:-n_val], y[:-n_val], x[-n_val:], y[-n_val:]
    eps = args.eps or _default_eps(args.dataset)[0]
    keras.utils.set_random_seed(args.seed)
    result = tune(
        _base_model_factory(args, data), x_train, y_train, validation_data=(x_val, y_val), tuner=args.tuner,
        max_trials=args.trials, epochs=args.epochs, batch_size=args.batch_size, directory=Path(args.out) / "tuner",
        project_name="search", overwrite=args.overwrite, seed=args.seed, verbose=args.verbose,
        objective=args.objective, penalty_weight=(args.min_weight, args.max_weight), layers=args.layers,
        methods=args.methods, method_options={"eps": eps} if any(METHODS[m].needs_eps for m in args.methods) else {},
        optimizer=lambda: keras.optimizers.Adam(args.learning_rate), attack=args.attack, eps=eps,
        norm=args.norm, attack_steps=args.attack_steps, robust_points=args.robust_points)
    name = args.name or f"{Path(args.model).stem}_tuned"
    best = getattr(result.best_model, "base_model", result.best_model)
    model_path = Path(args.out) / f"{name}.keras"
    best.save(model_path)
    print(f"best: {result.best_hyperparameters}")
    print(f"model: {model_path}")
    tuning = {"objective": result.objective, "direction": result.direction,
              "best_hyperparameters": result.best_hyperparameters, "best_model": model_path.name,
              "trials": result.trials}
    report_directory.add_to_report(args.out, tuning=tuning)
    _finish_report(args.out)
    return EXIT_OK


# ---------------------------------------------------------------- report


def _report(args):
    directories = args.directories
    if len(directories) > 1 and not args.out:
        raise _UsageError("several report directories are merged into one: give --out DIR")
    if args.out and (len(directories) > 1 or Path(args.out).resolve() != Path(directories[0]).resolve()):
        report_directory.merge_reports(directories, args.out, title=args.title)
        target = args.out
    else:
        target = directories[0]
        if args.title:
            report_directory.add_to_report(target, title=args.title)
    _finish_report(target)
    return EXIT_OK


# ---------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `gfa-keras` command.

    Args:
        argv: The arguments without the program name; default `sys.argv[1:]`.

    Returns:
        The exit code: 0 success, 1 the run failed, 2 bad command line, 130 interrupted.

    Example:

    ```python
    code = main(["evaluate", "model.keras", "--dataset", "digits", "--out", "runs/eval"])
    ```
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on a bad command line and 0 after --help
        return EXIT_OK if e.code in (None, 0) else EXIT_USAGE
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        hint = {"train": "rerun with --resume to continue from the last finished epoch",
                "evaluate": "rerun the same command to continue from the last finished attack on a block",
                "tune": "rerun the same command to resume the search"}.get(args.command, "")
        print(f"{PROG} {args.command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    except _UsageError as e:
        if args.traceback:
            raise
        print(f"{PROG} {args.command}: error: {e} (see {PROG} {args.command} --help)", file=sys.stderr)
        return EXIT_USAGE
    except (CommandError, ValueError, OSError, ImportError, RuntimeError) as e:
        if args.traceback:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_FAILURE
