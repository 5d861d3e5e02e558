"""``pretrained: true``: timm's published weights read offline from a Hugging Face hub
cache laid out as the hub writes it, and one clear error when the cache lacks them."""

from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub import constants

from models import create_model
from models._weights import PretrainedWeightsUnavailable
from study.errors import UserError
from study.spec import load_spec

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty hub cache under a temporary HF_HOME, read offline only."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The hub reads both when imported; a process started with them set sees the same.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    yield home / "hub"


def _cache(hub: Path, name: str) -> dict[str, torch.Tensor]:
    """Random weights for timm's ``name`` written where ``pretrained=True`` looks."""
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id
    assert repo.startswith("timm/")
    model = timm.create_model(name, pretrained=False)
    generator = torch.Generator().manual_seed(0)
    state = {
        key: torch.randn(value.shape, generator=generator) if value.is_floating_point() else value
        for key, value in model.state_dict().items()
    }
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / REVISION).mkdir(parents=True)
    safetensors.torch.save_file(state, folder / "snapshots" / REVISION / "model.safetensors")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(REVISION)
    return state


def test_hard_sharing_loads_the_cached_weights(hub: Path) -> None:
    state = _cache(hub, "regnetx_002")
    model = create_model("hard_sharing", ["semseg"], backbone="regnetx_002", pretrained=True)
    own = model.encoder.state_dict()
    assert own and set(own) <= set(state)
    assert all(torch.equal(value, state[key]) for key, value in own.items())
    fresh = create_model("hard_sharing", ["semseg"], backbone="regnetx_002")
    assert not torch.equal(fresh.encoder.stem.conv.weight, state["stem.conv.weight"])


def test_rcm_starts_from_torchvisions_imagenet_resnet(hub: Path) -> None:
    state = _cache(hub, "resnet18.tv_in1k")
    model = create_model("rcm_resnet", ["semseg"], variant="conv", pretrained=True)
    # The conv variant keeps each task's copy of the filters as they were loaded.
    conv = model.layers[0][0].conv1
    loaded = dict(conv.named_parameters()) | dict(conv.named_buffers())
    assert any(torch.equal(t, state["layer1.0.conv1.weight"]) for t in loaded.values())


def test_without_a_cache_pretrained_is_one_clear_error(
    hub: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PretrainedWeightsUnavailable) as raised:
        create_model("hard_sharing", ["semseg"], backbone="regnetx_002", pretrained=True)
    message = str(raised.value)
    assert "\n" not in message
    for named in (str(hub), "HF_HOME", "~/.cache/huggingface", "pretrained_path: FILE"):
        assert named in message

    (tmp_path / "spec.yaml").write_text(
        "name: s\ntasks: [semseg]\nmodel: {backbone: regnetx_002, pretrained: true}\n"
        "methods: [ew]\nbaselines: none\n"
    )
    monkeypatch.chdir(tmp_path)  # the spec named as a user names it, not by a long path
    # The spec check refuses it before Ray starts, as a user error naming the field.
    with pytest.raises(UserError, match="field 'model'.*HF_HOME.*pretrained_path: FILE"):
        load_spec(Path("spec.yaml"))


def test_pretrained_refusals_name_the_way_out() -> None:
    with pytest.raises(ValueError, match="publishes no pretrained weights.*efficientnetv2_s"):
        create_model("vmm", ["semseg"], backbone="efficientnetv2_s", pretrained=True)
    with pytest.raises(ValueError, match="exclude each other"):
        create_model("hard_sharing", ["semseg"], pretrained=True, pretrained_path="w.pt")
