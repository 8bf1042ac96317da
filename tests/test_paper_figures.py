"""Figures 2-4 of the paper: the files are produced, and the data behind them is right.

The data checks compare the figures' arrays with the paper's definitions written out here
(thresholds ``C`` and ``(1 + 1/k) C`` of eq 10, the regime table of Fig 2b/3b, the local
regimes of Section 5.2) and with the loop transcriptions of ``tests/reference.py``.
"""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import reference
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.contour import ContourSet

from fibration_theory import figures_cli, gating, regimes
from fibration_theory.hierarchy import Hierarchy
from fibration_theory.plotting import paper

#: float64 sums of a handful of terms: a few ulps of values <= 1
EXACT = 1e-12
#: grid points this close to a regime threshold are ties whose side depends on rounding order
TIE = 1e-9
#: paper's Fig 4c/4d marker positions, read off the PDF's 5800-px raster (1 px = 0.004 in t);
#: Delta was read off Fig 4b bars to +-0.0005 in log r, which moves a crossing by <= ~0.02
PAPER_READ_T = 0.03
#: minimal PNG size for a figure that has content (blank 150-dpi canvases compress to ~10 kB)
MIN_PNG_BYTES = 40_000

SETTINGS = settings(deadline=None, derandomize=True, max_examples=40)


# ----------------------------------------------------------------------------- reference


def channel_label(x: np.ndarray, c: float, k: float) -> np.ndarray:
    """Eq 10's branches: 0 pass-through ``|x| <= C``, 1 rollback, 2 zeroed ``|x| >= C*``."""
    ax = np.abs(x)
    return np.where(ax <= c, 0, np.where(ax < (1 + 1 / k) * c, 1, 2))


#: (channel +, channel -) -> global regime, read from Fig 2b's labels and Fig 3b's caption
GLOBAL_TABLE = {(0, 0): "G-I", (0, 1): "G-II,r", (1, 0): "G-II,r", (0, 2): "G-II",
                (2, 0): "G-II", (1, 1): "G-III,r", (1, 2): "G-III,r", (2, 1): "G-III,r",
                (2, 2): "G-III"}


def global_label(p, n, c_plus, c_minus, k) -> np.ndarray:
    lp, ln = channel_label(p, c_plus, k), channel_label(n, c_minus, k)
    names = np.vectorize(lambda a, b: GLOBAL_TABLE[(int(a), int(b))])(lp, ln)
    return np.vectorize(regimes.GLOBAL_LABELS.index)(names)


def near_threshold(x: np.ndarray, c: float, k: float) -> np.ndarray:
    return (np.abs(np.abs(x) - c) < TIE) | (np.abs(np.abs(x) - (1 + 1 / k) * c) < TIE)


def eq9(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lr = np.log(r)
    return np.maximum(lr, 0).mean(-1), np.maximum(-lr, 0).mean(-1)


# ----------------------------------------------------------------------------- files / CLI


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    figures_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.fixture(scope="module")
def paper_pngs(tmp_path_factory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("figs")
    return figures_cli.run(_args("--paper", "--out", str(out))), out


def test_paper_command_writes_three_nonblank_pngs(paper_pngs):
    rc, out = paper_pngs
    assert rc == 0
    import matplotlib.image as mpimg

    for name in ("fig2.png", "fig3.png", "fig4.png"):
        path = out / name
        assert path.is_file(), f"{path} missing"
        raw = path.read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"
        assert len(raw) > MIN_PNG_BYTES, f"{name}: {len(raw)} bytes"
        img = mpimg.imread(path)
        assert img.shape[0] > 500 and img.shape[1] > 1000, f"{name}: {img.shape}"
        assert img[..., :3].std() > 0.05, f"{name}: nearly uniform image"


def test_make_paper_figures_returns_the_written_paths(tmp_path):
    small = {"fig2": paper.Fig2Params(grid=41), "fig3": paper.Fig3Params(grid=41),
                 "fig4": paper.Fig4Params(n_t=201, grid=41)}
    paths = paper.make_paper_figures(tmp_path / "sub", dpi=40, **small)
    assert [p.name for p in paths] == ["fig2.png", "fig3.png", "fig4.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_figures_needs_a_mode(capsys):
    assert figures_cli.run(_args()) == 2
    assert "--paper" in capsys.readouterr().err


def test_from_without_simulations_module_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fibration_theory.simulations.figures", None)  # import now fails
    assert figures_cli.run(_args("--from", str(tmp_path))) == 1
    err = capsys.readouterr().err
    assert "simulations/figures.py" in err and "--paper" in err, err


def test_from_missing_directory_is_a_clear_error(tmp_path, capsys):
    assert figures_cli.run(_args("--from", str(tmp_path / "nope"))) == 1
    assert "no such directory" in capsys.readouterr().err


def test_from_reports_make_figures_value_error(tmp_path, monkeypatch, capsys):
    def make_figures(d):
        raise ValueError("results_dir: no runs/ directory")

    monkeypatch.setitem(sys.modules, "fibration_theory.simulations.figures",
                        types.SimpleNamespace(make_figures=make_figures))
    assert figures_cli.run(_args("--from", str(tmp_path))) == 1
    assert "no runs/ directory" in capsys.readouterr().err


def test_from_calls_make_figures_and_copies_to_out(tmp_path, monkeypatch, capsys):
    calls = []

    def make_figures(d):
        calls.append(Path(d))
        p = Path(d) / "curve.png"
        p.write_bytes(b"png")
        return [p]

    monkeypatch.setitem(sys.modules, "fibration_theory.simulations.figures",
                        types.SimpleNamespace(make_figures=make_figures))
    res, out = tmp_path / "res", tmp_path / "out"
    res.mkdir()
    assert figures_cli.run(_args("--from", str(res), "--out", str(out))) == 0
    assert calls == [res]
    assert (out / "curve.png").read_bytes() == b"png"
    assert str(out / "curve.png") in capsys.readouterr().out


# ----------------------------------------------------------------------------- Fig 2


@pytest.mark.parametrize("k", [2, 3, 8, 30])
def test_gagg_curve_has_its_breaks_at_C_and_Cstar(k):
    """Property: the plotted g_agg is x up to C, falls with slope -k to 0 at (1+1/k)C, then 0."""
    c = 0.15
    cs = paper.threshold(c, k)
    x = np.array([-0.3, -cs, -c, 0.0, 0.05, c, (c + cs) / 2, cs, 0.3])
    g = paper.gagg_curves(x, c, (k,))[k]
    expect = np.array([reference.g_agg(v, c, k) for v in x])
    np.testing.assert_allclose(g, expect, atol=EXACT, err_msg=f"k={k}")
    assert abs(g[5] - c) < EXACT and abs(g[7]) < EXACT, (k, g)
    h = (cs - c) / 10
    slope = (paper.gagg_curves(np.array([c + 4 * h, c + 6 * h]), c, (k,))[k] @ [-1, 1]) / (2 * h)
    assert abs(slope + k) < 1e-6 * k, (k, slope)


def test_fig2_base_weight_map_matches_eq8_and_regime_table():
    """Property: log w on the (P, N) grid is g(P, C+, k) - g(N, C-, k); labels follow the table."""
    prm = paper.Fig2Params(grid=81)
    d = paper.fig2_data(prm)
    pp, nn = np.meshgrid(d.p, d.n)
    feas = (pp >= 0) & (nn >= 0)
    np.testing.assert_allclose(d.p_agg[feas], pp[feas], atol=EXACT)
    np.testing.assert_allclose(d.n_agg[feas], nn[feas], atol=EXACT)
    expect = np.vectorize(lambda p, n: reference.g_agg(p, prm.c_plus, prm.k_b)
                          - reference.g_agg(n, prm.c_minus, prm.k_b))(pp, nn)
    np.testing.assert_allclose(d.log_w[feas], expect[feas], atol=EXACT)
    assert np.isnan(d.log_w[~feas]).all() and (d.global_[~feas] == -1).all()
    ok = feas & ~near_threshold(pp, prm.c_plus, prm.k_b) & ~near_threshold(nn, prm.c_minus,
                                                                            prm.k_b)
    ref = global_label(pp, nn, prm.c_plus, prm.c_minus, prm.k_b)
    bad = np.argwhere(ok & (d.global_ != ref))
    assert bad.size == 0, f"first mismatch at (P, N) = {pp[tuple(bad[0])], nn[tuple(bad[0])]}"
    assert set(np.unique(d.global_[feas])) == set(range(5)), "all five regimes on the map"


def test_fig2_draws_boundaries_at_C_and_Cstar_and_labels_inside_regions():
    """Property: dashed lines at C+-, dotted at (1+1/k)C+-; each label sits in its regime."""
    prm = paper.Fig2Params(grid=81)
    _fig, axes = paper.plot_fig2(prm)
    ax = axes[0, 1]
    lines = {(ln.get_linestyle(), round(float(np.unique(ln.get_xdata())[0]), 12)
              if ln.get_xdata()[0] == ln.get_xdata()[-1] else None,
              round(float(np.unique(ln.get_ydata())[0]), 12)
              if ln.get_ydata()[0] == ln.get_ydata()[-1] else None) for ln in ax.get_lines()}
    k = prm.k_b
    assert ("--", prm.c_plus, None) in lines, lines
    assert ("--", None, prm.c_minus) in lines, lines
    assert (":", round(1.5 * prm.c_plus, 12), None) in lines, lines  # (1 + 1/2) C+
    assert (":", None, round((1 + 1 / k) * prm.c_minus, 12)) in lines, lines
    texts = [t for t in ax.texts if t.get_text() in regimes.GLOBAL_LABELS]
    assert len(texts) == len(paper.FIG2_LABELS)
    for t in texts:
        p, n = t.get_position()
        ref = global_label(np.array(p), np.array(n), prm.c_plus, prm.c_minus, k)
        assert regimes.GLOBAL_LABELS[int(ref)] == t.get_text(), (t.get_text(), p, n)


@st.composite
def pn_points(draw):
    """(P, N, k): non-negative aggregates within the figure's range, integer slope k >= 2."""
    p = draw(st.floats(0.0, 0.4, allow_nan=False))
    n = draw(st.floats(0.0, 0.3, allow_nan=False))
    k = draw(st.sampled_from([2, 3, 10, 32]))
    return p, n, k


@SETTINGS
@given(pn_points())
def test_pn_point_realised_as_trajectory_has_those_aggregates_and_regime(point):
    """Property: the k-token trajectory (kP, -kN, 0...) has eq 9 aggregates (P, N) and the
    regime the threshold table gives (away from ties)."""
    p, n, k = point
    d = paper.base_weight_map(np.array([p]), np.array([n]), c_plus=0.12, c_minus=0.05, k=k)
    assert abs(d.p_agg[0, 0] - p) < EXACT and abs(d.n_agg[0, 0] - n) < EXACT, point
    if not (near_threshold(np.array(p), 0.12, k) or near_threshold(np.array(n), 0.05, k)):
        assert d.global_[0, 0] == global_label(np.array(p), np.array(n), 0.12, 0.05, k), point


# ----------------------------------------------------------------------------- Fig 3


@pytest.fixture(scope="module")
def fig3_small():
    prm = paper.Fig3Params(grid=61)
    return prm, paper.fig3_data(prm)


def test_fig3_regimes_match_paper_definitions(fig3_small):
    """Property: every grid point's G label follows the thresholds on eq 9's P, N (K = T = 3)
    and its L label counts the tokens with |u_i| >= eps (Section 5.2)."""
    prm, fields = fig3_small
    for f in fields:
        inside = f.global_ >= 0
        r = f.ratios[inside]
        p, n = eq9(r)
        np.testing.assert_allclose(f.p_agg[inside], p, atol=EXACT)
        np.testing.assert_allclose(f.n_agg[inside], n, atol=EXACT)
        ok = ~near_threshold(p, prm.c_plus, prm.T) & ~near_threshold(n, prm.c_minus, prm.T)
        ref = global_label(p, n, prm.c_plus, prm.c_minus, prm.T)
        assert (f.global_[inside][ok] == ref[ok]).all(), r[ok][f.global_[inside][ok] != ref[ok]]
        lr = np.log(r)
        lab = np.where(lr >= 0, 1.0, -1.0)
        u = lab * lr - np.where(lab > 0, p[:, None], n[:, None])  # eq 14
        n_clip = (np.abs(u) >= prm.eps).sum(1)
        ref_l = np.where(n_clip == 0, 0, np.where(n_clip == prm.T, 2, 1))
        tie = (np.abs(np.abs(u) - prm.eps) < TIE).any(1)
        assert (f.local[inside][~tie] == ref_l[~tie]).all()
    full = fields[1]
    assert set(np.unique(full.global_[full.global_ >= 0])) == set(range(5))
    assert set(np.unique(fields[0].local)) == {0, 1, 2}


def test_fig3_delta_j_is_eq18_minus_on_policy(fig3_small):
    """Property: Delta J = (1/T) sum_i G(r)_i A_i - (1/T) sum_i A_i with G from the loop
    reference; in G-I and L-I it is the plain surrogate (1/T) sum (r_i - 1) A_i."""
    prm, (local, full) = fig3_small
    a = np.array(prm.advantages)
    rng = np.random.default_rng(0)
    for f in (local, full):
        inside = np.argwhere(f.global_ >= 0)
        for i, j in inside[rng.choice(len(inside), 60, replace=False)]:
            r = f.ratios[i, j]
            g = reference.fiberpo_G(np.log(r)[None], np.ones((1, 3), bool), prm.c_plus,
                                    prm.c_minus, prm.eps)[0]
            expect = (g * a).mean() - a.mean()
            assert abs(f.delta_j[i, j] - expect) < EXACT, (r, f.delta_j[i, j], expect)
        both = (f.global_ == 0) & (f.local == 0)
        lin = ((f.ratios[both] - 1) * a).mean(1)
        np.testing.assert_allclose(f.delta_j[both], lin, atol=EXACT)
    assert ((local.global_ == 0) & (local.local == 0)).sum() >= 3, "L-I disc is resolved"
    c = (len(local.x) // 2, len(local.y) // 2)
    assert abs(local.delta_j[c]) < 1e-3, "Delta J vanishes at the centroid"


def test_fig3_contours_sit_at_C_and_K_thresholds_and_labels_in_regions(fig3_small):
    """Property: panel (b) draws N and P contours at C and (1+1/K)C, K = 3; each G label
    (and each L label of panel (a)) points into a grid cell of its own regime."""
    prm, data = fig3_small
    _fig, axes = paper.plot_fig3(prm, data)
    levels = {round(float(v), 12) for cs in axes[0, 1].collections if isinstance(cs, ContourSet)
              for v in cs.levels}
    k = prm.T
    assert levels == {round(v, 12) for v in (prm.c_minus, (1 + 1 / k) * prm.c_minus,
                                             prm.c_plus, (1 + 1 / k) * prm.c_plus)}, levels
    for ax, names, spec in ((axes[0, 1], regimes.GLOBAL_LABELS, paper.FIG3_GLOBAL_LABELS),
                            (axes[0, 0], regimes.LOCAL_LABELS, paper.FIG3_LOCAL_LABELS)):
        texts = [t for t in ax.texts if t.get_text() in names]
        # panel (a) also points "L-I" at the centroid
        assert len(texts) == len(spec) + (names is regimes.LOCAL_LABELS)
        for t in texts:
            x, y = t.xy if hasattr(t, "xy") else t.get_position()  # an arrow's target
            r = paper.ternary_to_ratios(np.array([[x, y]]))[0]
            p, n = eq9(r)
            if names is regimes.GLOBAL_LABELS:
                got = regimes.GLOBAL_LABELS[int(global_label(p, n, prm.c_plus, prm.c_minus, k))]
            else:
                lr = np.log(r)
                lab = np.where(lr >= 0, 1.0, -1.0)
                u = lab * lr - np.where(lab > 0, p, n)
                m = int((np.abs(u) >= prm.eps).sum())
                got = regimes.LOCAL_LABELS[0 if m == 0 else 2 if m == k else 1]
            assert got == t.get_text(), (t.get_text(), got, r)


# ----------------------------------------------------------------------------- Fig 4


@st.composite
def trajectories(draw):
    """A [3, T] float64 log-ratio batch, T in 1..12, entries in [-0.4, 0.4], some exactly 0."""
    t = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**31))
    x = np.random.default_rng(seed).uniform(-0.4, 0.4, (3, t))
    x[np.random.default_rng(seed + 1).random((3, t)) < 0.2] = 0.0
    return torch.as_tensor(x)


@SETTINGS
@given(trajectories())
def test_fig4_gate_with_k_equal_T_is_the_library_fiberpo(x):
    """Property: the composition Fig 4 uses (slope k apart from T) is gating.fiberpo_log_ratio
    when k = T_tau."""
    h = Hierarchy.from_padded(torch.ones_like(x, dtype=torch.bool))
    kw = {"c_plus": 0.12, "c_minus": 0.05, "eps": 0.04}
    log_g = paper.fiberpo_log_gate(x, h, k=x.shape[1], **kw)[0]
    torch.testing.assert_close(log_g, gating.fiberpo_log_ratio(x, h, **kw), rtol=0, atol=EXACT,
                               msg=f"x={x.tolist()}")


@pytest.fixture(scope="module")
def drift():
    prm = paper.Fig4Params(n_t=921)
    return prm, paper.drift_path(prm)


def test_fig4_path_is_the_drift_and_on_policy_point(drift):
    """Property: log r = log(1 + t Delta); at t = 0 both objectives equal mean(A)."""
    prm, d = drift
    np.testing.assert_allclose(d.log_r, np.log1p(np.outer(d.t, prm.delta)), atol=EXACT)
    assert np.array_equal(np.sign(prm.delta), np.sign(prm.advantages))
    i = int(np.flatnonzero(d.t == 0)[0])
    mean_a = float(np.mean(prm.advantages))
    assert abs(d.j_fiberpo[i] - mean_a) < EXACT and abs(d.j_grpo[i] - mean_a) < EXACT


def test_fig4_grpo_is_min_r_a_clip_r_a(drift):
    """Property: GRPO's per-token value is min(rA, clip(r, 1-eps, 1+eps) A), mean over tokens."""
    prm, d = drift
    r, a = np.exp(d.log_r), np.array(prm.advantages)
    expect = np.minimum(r * a, np.clip(r, 1 - prm.eps, 1 + prm.eps) * a)
    np.testing.assert_allclose(d.j_tok_grpo, expect, atol=EXACT)
    np.testing.assert_allclose(d.j_grpo, expect.mean(1), atol=EXACT)


def test_fig4_bars_stack_to_the_gated_log_ratio(drift):
    """Property: panel (b)'s red + orange = clip(l u) + log w - clip(l v) = log G (eq 16)."""
    prm, d = drift
    i = int(np.flatnonzero(d.t == prm.t_bar)[0])
    np.testing.assert_allclose(d.numer[i] + (d.log_w[i] - d.denom[i]), d.log_g[i], atol=EXACT)
    np.testing.assert_allclose(np.exp(d.log_g) * np.array(prm.advantages), d.j_tok_fiberpo,
                               atol=EXACT)
    np.testing.assert_allclose(d.j_tok_fiberpo.mean(1), d.j_fiberpo, atol=EXACT)


def test_fig4_markers_where_aggregates_cross_thresholds_and_where_the_paper_draws_them(drift):
    """Property: rollback markers sit where P = C+ / N = C- and zeroing markers at (1+1/k)C;
    the C+- markers fall where the paper's Fig 4c-d draws them (Delta read off Fig 4b only)."""
    prm, d = drift
    m = paper.drift_markers(d, prm)
    for key, agg, c in (("plus_rollback", d.p_agg, prm.c_plus),
                        ("minus_rollback", d.n_agg, prm.c_minus),
                        ("plus_zeroed", d.p_agg, paper.threshold(prm.c_plus, prm.k)),
                        ("minus_zeroed", d.n_agg, paper.threshold(prm.c_minus, prm.k))):
        assert len(m[key]) == 2, (key, m[key])
        for tm in m[key]:
            # the library's label change must bracket the aggregate's crossing of c
            i = int(np.searchsorted(d.t, tm))
            lo, hi = sorted(agg[[i - 1, i]])
            assert d.t[i - 1] <= tm <= d.t[i] and lo - EXACT <= c <= hi + EXACT, (key, tm, lo,
                                                                                   hi, c)
    paper_marks = {"minus_rollback": (-1.193, 1.257), "plus_rollback": (-3.654, 4.091)}
    for key, ts in paper_marks.items():
        assert np.all(np.abs(np.sort(m[key]) - ts) < PAPER_READ_T), (key, m[key], ts)
