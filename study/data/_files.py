"""What every dataset loader reads with: its error type and the small readers of its files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from search_spaces import one_line
from study.errors import UserError

__all__ = ["DatasetError", "read_rgb", "read_split", "require_dir"]


class DatasetError(UserError):
    """A dataset folder or file that cannot be read; the message names the path, on one
    line of at most ``MAX_MESSAGE`` characters."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(" ".join(message.split())))


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: folder {path} not found")
    return path


def read_split(path: Path) -> list[str]:
    """Sample ids, one per line (blank lines skipped); each id once."""
    if not path.is_file():
        raise DatasetError(f"split file {path} not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"split file {path} is not UTF-8 text (byte offset {err.start}); "
            "expected one sample id a line"
        ) from None
    except OSError as err:
        raise DatasetError(f"split file {path} cannot be read: {err.strerror}") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"split file {path} lists no samples")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            # A repeated id would weigh its sample twice and may leak it across splits.
            raise DatasetError(
                f"split file {path} lists {name[:80]!r} twice; expected each id once"
            )
        seen.add(name)
    return names


def read_rgb(path: Path) -> torch.Tensor:
    """An image file as float32 (3, H, W) in [0, 1]."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DatasetError(f"image {path} not found") from None
    except (OSError, ValueError, SyntaxError) as err:  # PIL's errors for a broken file
        raise DatasetError(f"image {path} cannot be read: {err}") from None
    return torch.from_numpy(array.transpose(2, 0, 1).copy())
