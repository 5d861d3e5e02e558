"""Analysis of a study's Parquet store: tidy plot data, seaborn plots, an HTML report.

Everything reads only the store (:mod:`study.store`) and, for hyperparameter
importance, the study's Optuna history (its journal, or the database its spec names), so a
study run on a cluster is analysed anywhere the folder is copied to::

    from study.analysis import load_results, make_plot, save_figure, write_report

    results = load_results("results/demo")
    plot = make_plot("pareto", results, x="gflops", y="delta_m")
    plot.data            # the points drawn, with `on_front`
    save_figure(plot.figure, Path("plots"), "pareto")   # plots/pareto.png and .svg
    write_report(["results/demo"], Path("report.html"))

The ``*_data`` functions turn the trials and history DataFrames into exactly what each
plot draws (docs/ANALYSIS.md says how each is computed); the ``draw_*`` functions draw it.
The terminal leaderboard, the paper tables (``table``), Pareto fronts, seed comparisons
and the critical-difference ranking live here too. Names are
imported on first use: a study's driver that flags its Pareto front does not import the
plotting stack.
"""

from typing import TYPE_CHECKING

from study.exports import lazy_exports

if TYPE_CHECKING:
    from study.analysis._cd import cd_data, cliques, nemenyi_cd, rank_blocks
    from study.analysis._data import (
        FINISHED,
        RUNS,
        PlotDataError,
        curves_data,
        heatmap_data,
        multi_task_trials,
        parallel_data,
        pareto_data,
        pareto_front,
        rank_table,
        ranks_data,
        weights_data,
    )
    from study.analysis._figures import FORMATS, KINDS, Plot, make_plot, png_bytes, save_figure
    from study.analysis._importance import (
        MIN_TRIALS,
        RELIABLE_TRIALS,
        NotEnoughTrials,
        importance_data,
    )
    from study.analysis._labels import column_label, higher_is_better, metric_label
    from study.analysis._leaderboard import (
        configuration_table,
        leaderboard,
        pareto_table,
        stage_table,
        study_summary,
    )
    from study.analysis._paper import SEED_SUMMARIES, TableColumn, delta_m_line, paper_table
    from study.analysis._paper_render import TABLE_FORMATS, render_table, table
    from study.analysis._pareto import configurations, flag_pareto, pareto_mask
    from study.analysis._plots import (
        draw_heatmap,
        draw_importance,
        draw_message,
        draw_pareto,
        draw_ranks,
        method_colors,
    )
    from study.analysis._plots_cd import draw_cd
    from study.analysis._plots_runs import (
        draw_anytime,
        draw_curves,
        draw_parallel,
        draw_weights,
    )
    from study.analysis._report import render_report, write_report
    from study.analysis._results import StudyResults, load_results
    from study.analysis._uncertainty import (
        COARSE_BELOW,
        Comparison,
        compare_best_two,
        paired_bootstrap,
        paired_permutation,
    )

__all__, __getattr__, __dir__ = lazy_exports(__name__, __file__)
