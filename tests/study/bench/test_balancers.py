"""The balancer benchmark measures every method it is asked for, in both gradient spaces."""

from study.bench.balancers import format_table, measure_balancers


def test_figures_for_each_method_and_gradient_space() -> None:
    figures = measure_balancers(
        num_tasks=(2,),
        methods=["ew", "mgda", "gradnorm", "graddrop"],
        image_size=32,
        batch_size=4,
        rounds=1,
        steps=1,
        compare_torchjd=True,
    )
    cells = figures["tasks"][2]
    assert set(cells) == {
        "ew",
        "mgda",
        "mgda/representation",
        "gradnorm",
        "graddrop",
        "graddrop/representation",
        "torchjd:mgda",  # torchjd's own step on the same network, for the methods it has
    }
    assert cells["ew"]["vs_ew"] == 1.0
    assert all(c["step_ms"] > 0 for c in cells.values())
    assert cells["torchjd:mgda"]["weights_ms"] is None
    assert all(c["weights_ms"] >= 0 for k, c in cells.items() if not k.startswith("torchjd"))
    table = format_table(figures).splitlines()
    assert table[2].split()[0] == "ew" and len(table) == 2 + len(cells)


def test_torchjd_step_trains_the_projects_network() -> None:
    import torch

    from models import create_model, get_task
    from study.bench._torchjd import torchjd_step

    torch.manual_seed(0)
    tasks = ["semseg", "depth"]
    model = create_model("hard_sharing", tasks, num_classes=4, head_channels=8)
    images = torch.randn(2, 3, 32, 32)
    targets = {"semseg": torch.randint(0, 4, (2, 32, 32)), "depth": torch.rand(2, 1, 32, 32)}

    def losses(preds: dict) -> list:
        return [get_task(t, 4).loss(preds[t], targets[t]) for t in tasks]

    shared_before = [p.detach().clone() for p in model.shared_parameters()]
    head_before = [p.detach().clone() for p in model.task_parameters("depth")]
    step = torchjd_step(model, "upgrad", losses, lr=1e-2)
    step(images)
    assert any(
        not torch.equal(a, b) for a, b in zip(shared_before, model.shared_parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b)
        for a, b in zip(head_before, model.task_parameters("depth"), strict=True)
    )
