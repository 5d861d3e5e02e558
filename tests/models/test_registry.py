import pytest
import torch

import models
from models import count_gflops, count_parameters, create_model, list_models


def test_hard_sharing_predicts_every_task_at_input_size() -> None:
    tasks = ["semseg", "depth", "normals", "edges", "saliency"]
    model = create_model("hard_sharing", tasks, num_classes=7, head_channels=8)
    out = model(torch.randn(2, 3, 32, 48))
    assert set(out) == set(tasks)
    assert out["semseg"].shape == (2, 7, 32, 48)
    assert out["depth"].shape == (2, 1, 32, 48) and bool((out["depth"] > 0).all())
    norms = out["normals"].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)


def test_shared_and_task_parameters_partition_the_model() -> None:
    model = create_model("hard_sharing", ["semseg", "depth"], head_channels=8)
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(t)} for t in ("semseg", "depth")]
    assert shared and all(per_task)
    assert not shared & per_task[0] and not per_task[0] & per_task[1]
    assert len(shared) + sum(map(len, per_task)) == len(list(model.parameters()))


def test_cost_counts_shared_encoder_once() -> None:
    one = create_model("hard_sharing", ["depth"], head_channels=8)
    two = create_model("hard_sharing", ["depth", "edges"], head_channels=8)
    encoder = count_gflops(one.encoder, 64)
    head = count_gflops(one, 64) - encoder
    assert head > 0
    assert count_gflops(two, 64) == pytest.approx(encoder + 2 * head, rel=1e-6)
    assert count_parameters(two) > count_parameters(one)


def test_unknown_architecture_names_the_choices() -> None:
    with pytest.raises(KeyError, match="hard_sharing"):
        create_model("nope", ["depth"])
    assert "hard_sharing" in list_models()


def test_register_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        models.register_model(models.hard_sharing.hard_sharing)


def test_pretrained_path_loads_encoder_weights(tmp_path) -> None:
    source = create_model("hard_sharing", ["depth"], head_channels=8)
    path = tmp_path / "encoder.pt"
    torch.save(source.encoder.state_dict(), path)
    torch.manual_seed(123)
    loaded = create_model("hard_sharing", ["depth"], head_channels=8, pretrained_path=path)
    for a, b in zip(source.encoder.parameters(), loaded.encoder.parameters(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        create_model("hard_sharing", ["depth"], pretrained_path=tmp_path / "missing.pt")
