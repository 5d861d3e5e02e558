"""Mutated demo specs: each loads or is one SpecError line, never another exception, never
slow. Seeded, so a failure names a case that reproduces."""

import copy
import random
import time
from pathlib import Path
from typing import Any

import yaml

from search_spaces import MAX_MESSAGE, read_model
from study.spec import SpecError, StudySpec, load_spec

DEMO = Path(__file__).parents[3] / "study" / "specs" / "demo.yaml"
SEED = 20240611
PARSED_CASES = 600  # through the YAML reader and the pydantic models
LOADED_CASES = 30  # through load_spec: search space and model checks too
SLOW = 2.0

_ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    -(10**9),
    2**31,
    2**64,
    10**29,
    1.5,
    -0.0,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    " ",
    "x" * 10_000,
    "ü€😀\u202e\u200b",
    "a\nb",
    "\x00",
    "../../../../etc",
    "/etc",
    "s3://bucket/x",
    "regnetx_002",
    "dwa",
    "semseg",
    [],
    {},
    [1, [2, [3, [4]]]],
    {"name": "asha"},
    ["ew", "dwaa"],
    ["semseg", "semseg"],
]


def _paths(data: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of ``data`` (mappings and lists), the root excluded."""
    found = []
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else []
    )
    for key, value in items:
        found.append((*at, key))
        found.extend(_paths(value, (*at, key)))
    return found


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        data = data[key]
    return data


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _mutate_data(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        paths = _paths(data)
        if not paths:
            break
        path = rng.choice(paths)
        parent = _parent(data, path)
        op = rng.random()
        if op < 0.2:
            del parent[path[-1]]
        elif op < 0.75:
            parent[path[-1]] = copy.deepcopy(rng.choice(_ODD_VALUES))
        elif op < 0.85:
            parent[path[-1]] = _nested(rng.choice([3, 20, 40, 200]))
        elif op < 0.95 and isinstance(parent, dict):
            parent[rng.choice(["extra", "Name", "séed", "x" * 300, "1"])] = parent[path[-1]]
        else:
            value = parent[path[-1]]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                parent[path[-1]] = rng.choice([value * 10**6, -value, value + 0.5, 10**30])
    return data


def _mutate_text(rng: random.Random, text: str) -> str | bytes:
    op = rng.randrange(7)
    lines = text.splitlines(keepends=True)
    if op == 0:  # a key twice: the later one wins
        return text + rng.choice(lines)
    if op == 1:
        return text[: rng.randrange(len(text))]
    if op == 2:  # a billion laughs behind a known field
        bomb = 'l0: &l0 ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
            f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 9)
        )
        return text + bomb + "x_field: *l8\n"
    if op == 3:
        encoded = bytearray(text.encode())
        encoded[rng.randrange(len(encoded))] = rng.choice([0xFF, 0xC3, 0x80, 0x00])
        return bytes(encoded)
    if op == 4:  # an alias of a mapping where a scalar belongs
        return text.replace("scheduler:", "scheduler: &s", 1) + "deepspeed: *s\n"
    if op == 5:
        at = rng.randrange(len(lines))
        return "".join(
            lines[:at] + [rng.choice(["  : :\n", "- [\n", "{{{\n", "\t\n"])] + lines[at:]
        )
    return text + rng.choice(["seed: 99999999999999999999999999999999999\n", "trials: .nan\n"])


def _case(rng: random.Random, demo: dict[str, Any], demo_text: str) -> str | bytes:
    if rng.random() < 0.7:
        return yaml.safe_dump(_mutate_data(rng, demo), allow_unicode=rng.random() < 0.5)
    return _mutate_text(rng, demo_text)


def _check(path: Path, text: str | bytes, load: Any) -> None:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    start = time.perf_counter()
    try:
        load(path)
    except SpecError as err:
        message = str(err)
        assert "\n" not in message and len(message) <= MAX_MESSAGE, (text[:200], message)
    except Exception as err:  # the point: anything else fails the case
        raise AssertionError(f"{type(err).__name__}: {err!s:.200} for spec {text[:300]!r}") from err
    elapsed = time.perf_counter() - start
    assert elapsed < SLOW, f"{elapsed:.1f}s for spec {text[:300]!r}"


def test_mutated_specs_load_or_are_one_spec_error(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    demo_text = DEMO.read_text()
    demo = yaml.safe_load(demo_text)
    path = tmp_path / "spec.yaml"
    outcomes = {"loaded": 0, "refused": 0}

    def parse(p: Path) -> None:
        try:
            read_model(p, StudySpec, SpecError, "spec")
        except SpecError:
            outcomes["refused"] += 1
            raise
        outcomes["loaded"] += 1

    for _ in range(PARSED_CASES):
        _check(path, _case(rng, demo, demo_text), parse)
    # The mutations must reach both outcomes, or they test nothing.
    assert outcomes["loaded"] > 20 and outcomes["refused"] > 200, outcomes
    for _ in range(LOADED_CASES):
        _check(path, _case(rng, demo, demo_text), load_spec)
