"""Figures: the paper's Figures 2-4 recomputed through the library (:mod:`.paper`).

>>> from fibration_theory.plotting import make_paper_figures  # doctest: +SKIP
>>> make_paper_figures("docs/img")  # doctest: +SKIP
"""

from fibration_theory.plotting.paper import (
    Fig2Params,
    Fig3Params,
    Fig4Params,
    make_paper_figures,
    plot_fig2,
    plot_fig3,
    plot_fig4,
)

__all__ = ["Fig2Params", "Fig3Params", "Fig4Params", "make_paper_figures", "plot_fig2",
           "plot_fig3", "plot_fig4"]
