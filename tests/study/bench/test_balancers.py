"""The balancer benchmark measures every method it is asked for, in both gradient spaces."""

from study.bench.balancers import format_table, measure_balancers


def test_figures_for_each_method_and_gradient_space() -> None:
    figures = measure_balancers(
        num_tasks=(2,),
        methods=["ew", "mgda", "gradnorm"],
        image_size=32,
        batch_size=4,
        rounds=1,
        steps=1,
    )
    cells = figures["tasks"][2]
    assert set(cells) == {"ew", "mgda", "mgda/representation", "gradnorm"}
    assert cells["ew"]["vs_ew"] == 1.0
    assert all(c["step_ms"] > 0 and c["weights_ms"] >= 0 for c in cells.values())
    table = format_table(figures).splitlines()
    assert table[2].split()[0] == "ew" and len(table) == 2 + len(cells)
