"""Dataset folders: data check, data synth."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from study.cli._common import _Parser, _positive_int


def _print_counts(counts: dict[str, dict[str, int]]) -> None:
    columns = sorted({task for tasks in counts.values() for task in tasks})
    print(f"{'split':8s}" + "".join(f"{c:>12s}" for c in columns))
    for split, tasks in counts.items():
        print(f"{split:8s}" + "".join(f"{tasks.get(c, 0):12d}" for c in columns))


def _picked(count: int, sample: int | None) -> list[int]:
    """Every index, or ``sample`` of them spread evenly over the split."""
    if sample is None or sample >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(sample - 1, 1)) for i in range(sample)})


def _cmd_data_check(args: argparse.Namespace) -> int:
    from study.data import DatasetError, describe_dataset, get_format

    counts = describe_dataset(args.root, args.format)
    _print_counts(counts)
    fmt = get_format(args.format)
    bad = 0
    # Counting finds the files; only decoding them finds a truncated image or NaN depth.
    for split, row in counts.items():
        tasks = [t for t in fmt.tasks if row.get(t, 0) > 0]
        try:
            dataset = fmt.read(args.root, split, tasks)
        except DatasetError as err:
            print(f"bad: {split}: {err}", file=sys.stderr)
            bad += 1
            continue
        picked = _picked(len(dataset), args.sample)
        for index in picked:
            try:
                dataset[index]
            except DatasetError as err:
                print(f"bad: {split}: {err}", file=sys.stderr)
                bad += 1
        # On stderr: stdout stays the table of counts, to parse or pipe.
        print(f"{split}: decoded {len(picked)} of {len(dataset)} samples", file=sys.stderr)
    if bad:
        raise DatasetError(f"{bad} bad file(s) in {args.root}; each is listed above")
    return 0


def _cmd_data_synth(args: argparse.Namespace) -> int:
    from study.data import synthesize

    counts = synthesize(
        args.out,
        args.format,
        train=args.train,
        val=args.val,
        image_size=args.image_size,
        seed=args.seed,
        neighbours=args.neighbours,
    )
    print(f"wrote a synthetic {args.format} dataset to {args.out}")
    _print_counts(counts)
    return 0


def _dataset_format(name: str) -> str:
    """A registered on-disk layout; checked when given, so ``--help`` loads no dataset code."""
    from study.data import DatasetError, get_format

    try:
        get_format(name)
    except DatasetError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return name


def add_commands(commands: Any) -> None:
    data = commands.add_parser("data", help="check a dataset folder, or write a synthetic one")
    datas = data.add_subparsers(dest="data", required=True, parser_class=_Parser)
    check = datas.add_parser("check", help="validate a dataset; print counts per split and task")
    check.add_argument("root", type=Path)
    check.add_argument(
        "--sample",
        type=_positive_int,
        metavar="N",
        help="decode N samples of each split, spread over it, not every one",
    )
    synth = datas.add_parser("synth", help="write synthetic scenes in a real dataset layout")
    synth.add_argument("out", type=Path)
    synth.add_argument("--train", type=_positive_int, default=32)
    synth.add_argument("--val", type=_positive_int, default=8)
    synth.add_argument("--image-size", type=_positive_int, default=64)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--neighbours",
        action="store_true",
        help="also write each image's neighbouring frame (nyud: neighbours/<id>.jpg)",
    )
    for sub in (check, synth):
        sub.add_argument(
            "--format",
            type=_dataset_format,
            required=True,
            metavar="FORMAT",
            help="the folder layout: nyud, pascal, voc, or one registered by a plugin",
        )
    check.set_defaults(func=_cmd_data_check)
    synth.set_defaults(func=_cmd_data_synth)
