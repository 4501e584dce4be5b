"""Each figure function on a small synthetic store: the plotted data are the values that drew them."""

import math

import numpy as np
import pytest

from analysis import figures, load
from analysis.figures import style
from analysis.load import load_study
from tests.test_analysis_stores import (BF16_DIVERGE_STEP, LM_CROSSING_STEP, LM_STEPS, SEEDS, VISION_BRANCH_EPOCHS,
                                        VISION_EPOCHS, VISION_LRS, lm_loss, vision_error, write_bf16_store,
                                        write_lm_store, write_vision_store)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("figures"))
    write_vision_store(root)
    write_lm_store(root)
    write_bf16_store(root)
    return {name: load_study(name, root) for name in ("vision", "lm", "bf16")}


def artists(fig, prefix):
    return {line.get_gid(): line for ax in fig.axes for line in ax.lines
            if line.get_gid() and line.get_gid().startswith(prefix)}


def xy(fig, gid):
    found = [line for ax in fig.axes for line in ax.lines if line.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} lines; there are {sorted(artists(fig, ''))}"
    return found[0].get_xydata()


def seed_mean(fn, seeds=SEEDS):
    return float(np.mean([fn(s) for s in seeds]))


def test_ushape_lines_are_seed_means_and_divergence_is_marked(stores):
    fig = figures.ushape(stores["vision"].finals(), "finetune_test_error")
    decayed = xy(fig, "data:weight_decay=0.001")
    np.testing.assert_allclose(decayed[:, 0], VISION_LRS)
    np.testing.assert_allclose(decayed[:, 1], [seed_mean(lambda s: vision_error(lr, 1e-3, s)) for lr in VISION_LRS])
    plain = xy(fig, "data:weight_decay=0")
    # LR 0.3 without WD: seed 2 diverged, so the line is the mean of seeds 0 and 1 ...
    assert plain[-1, 1] == pytest.approx(seed_mean(lambda s: vision_error(0.3, 0.0, s), seeds=(0, 1)))
    # ... and a red X marks the divergence above the data
    marker = xy(fig, "diverged:trials")
    assert marker[:, 0].tolist() == [0.3] and marker[0, 1] > decayed[:, 1].max()
    assert fig.axes[0].get_xscale() == "log"
    assert "1 failed left out" in fig.axes[0].get_title().replace("\n", " ")
    assert "min–max over seeds" in fig.axes[0].get_title().replace("\n", " ")


def bars(fig, gid):
    """The (x, low, high) of each error bar of the collection ``gid``."""
    found = [c for ax in fig.axes for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1, gid
    return sorted((seg[0, 0], seg[0, 1], seg[1, 1]) for seg in found[0].get_segments())


def test_ushape_spread_is_the_seed_range_and_the_axes_fit_the_data(stores):
    fig = figures.ushape(stores["vision"].finals(), "finetune_test_error")
    # the error bars are the min and max over the seeds (offsets -0.0005, 0, +0.0005), not a t-interval
    for lr, low, high in bars(fig, "spread:weight_decay=0.001"):
        assert low == pytest.approx(vision_error(lr, 1e-3, 0)) and high == pytest.approx(vision_error(lr, 1e-3, 2))
    bottom, top = fig.axes[0].get_ylim()
    assert 0 <= bottom < 0.03 and top < 0.07  # from the data (3%…5.3%), not from -20% to 100%
    assert fig.axes[0].get_yscale() == "linear" and fig.axes[0].get_ylabel() == "test error of the fine-tuned copy (%)"
    assert fig.axes[0].get_xlabel() == "learning rate"
    fig.canvas.draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels and all(t.endswith("%") for t in labels if t) and len(set(labels)) == len(labels)
    # one bad corner (40%) turns the error axis logarithmic, so the U at 3-10% stays readable
    finals = stores["vision"].finals()
    finals.loc[(finals["config/lr"] == 0.3) & (finals["config/weight_decay"] == 1e-3), "finetune_test_error"] = 0.4
    assert figures.ushape(finals, "finetune_test_error").axes[0].get_yscale() == "log"


def test_two_seed_error_bars_stay_in_the_valid_range():
    import pandas as pd

    rows = [{"trial_id": f"t{i}", "status": "finished", "config/lr": lr, "config/weight_decay": 0.0, "config/seed": s,
             "test_error": e} for i, (lr, s, e) in enumerate([(0.01, 0, 0.02), (0.01, 1, 0.10), (0.1, 0, 0.01),
                                                                (0.1, 1, 0.012), (1.0, 0, 0.03), (1.0, 1, 0.2)])]
    fig = figures.ushape(pd.DataFrame(rows), "test_error")
    assert [v for b in bars(fig, "spread:weight_decay=0") for v in b[1:]] == pytest.approx([0.02, 0.10, 0.01, 0.012, 0.03, 0.2])
    assert fig.axes[0].get_ylim()[0] > 0  # a log axis (0.01…0.2) from the data: nothing below 0


def test_heatmap_image_is_the_pivot_of_seed_means(stores):
    fig = figures.heatmap(stores["vision"].finals(), "finetune_test_error")
    image = fig.axes[0].images[0].get_array()
    expected = [[seed_mean(lambda s: vision_error(lr, wd, s), seeds=(0, 1) if (lr, wd) == (0.3, 0.0) else SEEDS)
                 for wd in (0.0, 1e-3)] for lr in VISION_LRS]
    np.testing.assert_allclose(np.ma.getdata(image), expected)
    best = [p for p in fig.axes[0].patches if p.get_gid() == "best"][0]
    assert best.get_xy() == (0.5, 1.5)  # column WD 1e-3, row LR 0.03
    texts = {t.get_gid(): t.get_text() for t in fig.axes[0].texts}
    assert texts["cell:4,0"].endswith("1/3 div")


def test_training_curves_mark_the_lr_decay_and_the_divergence(stores):
    fig = figures.training_curves(stores["vision"].curves(), "train_loss")
    assert [ax.get_title() for ax in fig.axes] == ["WD 0", "WD 0.001"]  # a panel per weight decay
    line = xy(fig, "data:lr=0.1, weight_decay=0.001")
    np.testing.assert_allclose(line[:, 0], range(1, VISION_EPOCHS + 1))
    np.testing.assert_allclose(line[:, 1], [(1 + 1000 * 0.1 * 1e-3) / e for e in range(1, VISION_EPOCHS + 1)])
    assert "lr_drop:4" in artists(fig, "lr_drop")  # the last report at the peak LR (epoch 5 runs at LR/100)
    marker = xy(fig, "diverged:trials")
    assert marker.tolist() == [[3.0, 0.5]]  # epoch 3, last finite train loss (1/2 at epoch 2)
    assert [ln.get_gid() for ln in fig.axes[0].lines if ln.get_gid() == "diverged:trials"]  # in the WD 0 panel
    # one legend for the figure, outside the axes: no per-axes legend covers the curves
    assert not [ax for ax in fig.axes if ax.get_legend()] and len(fig.legends) == 1
    assert "lr=0.003" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_lr_drops_are_steps_not_a_cosine():
    import pandas as pd

    steps = np.arange(0, 1001, 100)
    cosine = 0.1 * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * steps / 1000)))
    step = np.where(steps <= 600, 0.1, 0.01)
    frame = pd.DataFrame({"trial_id": ["c"] * len(steps) + ["s"] * len(steps), "step": np.tile(steps, 2),
                          "lr": np.concatenate([cosine, step])})
    assert load.lr_drops(frame[frame["trial_id"] == "c"], "step") == []
    assert load.lr_drops(frame, "step") == [600.0]


def test_norms_and_effective_lr_panels(stores):
    fig = figures.norms(stores["vision"].curves())
    assert len(fig.axes) == 4  # two metrics × two weight decays
    norm = xy(fig, "data:weight_norm:lr=0.01, weight_decay=0.001")
    np.testing.assert_allclose(norm[:, 1], [10 + 0.5 * e for e in range(1, VISION_EPOCHS + 1)])
    eff = xy(fig, "data:effective_lr:lr=0.01, weight_decay=0.001")
    expected = [(0.01 if e < 5 else 1e-4) / (10 + 0.5 * e) ** 2 for e in range(1, VISION_EPOCHS + 1)]
    np.testing.assert_allclose(eff[:, 1], expected)
    assert fig.axes[2].get_yscale() == "log" and "η/‖w‖²" in fig.axes[2].get_ylabel()
    lm = figures.norms(stores["lm"].curves())  # the LM's effective LR is Adam's, not η/‖w‖²
    assert "Adam" in [ax.get_ylabel() for ax in lm.axes if ax.get_ylabel().startswith("effective learning rate")][0]


def test_hessian_trace_uses_the_fine_tuned_copies(stores):
    fig = figures.hessian_trace(stores["vision"].curves())
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["Tr(Hessian) of the fine-tuned copy",
                                                                        "Tr(Hessian) of the iterate"]
    branch = xy(fig, "data:finetune_hessian_trace:lr=0.1, weight_decay=0")
    np.testing.assert_allclose(branch, [[e, 50 * 0.1 * e] for e in VISION_BRANCH_EPOCHS])


def test_finetune_branches_are_seed_means_per_branch_epoch(stores):
    fig = figures.finetune_branches(stores["vision"].curves())
    assert [ax.get_title() for ax in fig.axes] == ["WD 0", "WD 0.001"]
    line = xy(fig, "data:lr=0.03, weight_decay=0.001")
    final = seed_mean(lambda s: vision_error(0.03, 1e-3, s))
    np.testing.assert_allclose(line, [[e, final + 0.004 * (VISION_BRANCH_EPOCHS[-1] - e)] for e in VISION_BRANCH_EPOCHS])
    for epoch, low, high in bars(fig, "spread:lr=0.03, weight_decay=0.001"):
        offset = 0.004 * (VISION_BRANCH_EPOCHS[-1] - epoch)
        assert low == pytest.approx(vision_error(0.03, 1e-3, 0) + offset)
        assert high == pytest.approx(vision_error(0.03, 1e-3, 2) + offset)
    assert "Figs. 2–3" in fig.get_suptitle()


def test_ema_vs_plain_pairs_each_grid_point(stores):
    fig = figures.ema_vs_plain(stores["vision"].curves())
    plain = xy(fig, "data:plain:lr=0.03, weight_decay=0.001")
    ema = xy(fig, "data:ema:lr=0.03, weight_decay=0.001")
    final = seed_mean(lambda s: vision_error(0.03, 1e-3, s))
    np.testing.assert_allclose(plain[:, 1], [final + 0.01 + 0.02 * (VISION_EPOCHS - e) for e in range(1, VISION_EPOCHS + 1)])
    np.testing.assert_allclose(ema[:, 1], [final + 0.005 + 0.01 * (VISION_EPOCHS - e) for e in range(1, VISION_EPOCHS + 1)])
    lm = figures.ema_vs_plain(stores["lm"].curves())
    assert "data:ema:schedule=cosine, weight_decay=0.3" in artists(lm, "data:ema")


def test_chinchilla_curves_differences_and_crossing(stores):
    fig = figures.chinchilla(stores["lm"].curves(), "val_loss")
    tokens = [s * 1024 for s in LM_STEPS]
    lines = [ln for ln in fig.axes[0].lines if ln.get_gid() == "data:weight_decay=0.3"]  # cosine column, top
    np.testing.assert_allclose(lines[0].get_xydata()[:, 0], tokens)
    np.testing.assert_allclose(lines[0].get_xydata()[:, 1],
                               [seed_mean(lambda s: lm_loss(step, 0.3, "cosine", s)) + 0.01 for step in LM_STEPS])
    diff = [ln for ln in fig.axes[2].lines if ln.get_gid() == "diff:weight_decay=0.3"][0].get_xydata()
    np.testing.assert_allclose(diff[:, 1], [0.03 * (LM_CROSSING_STEP - s) / LM_CROSSING_STEP for s in LM_STEPS], atol=1e-12)
    crossing = [ln for ln in fig.axes[2].lines if ln.get_gid() == "crossing:weight_decay=0.3"][0].get_xydata()
    assert crossing[0, 0] == pytest.approx(LM_CROSSING_STEP * 1024) and crossing[0, 1] == 0
    # each seed's own paired difference is drawn too (here they equal the mean: the seed offsets cancel)
    for seed in SEEDS:
        one = [ln for ln in fig.axes[2].lines if ln.get_gid() == f"seed-diff:weight_decay=0.3:seed={seed}"][0]
        np.testing.assert_allclose(one.get_xydata(), diff, atol=1e-12)
    # the constant column has no crossing
    assert not [ln for ln in fig.axes[3].lines if (ln.get_gid() or "").startswith("crossing")]
    assert [ax.get_title() for ax in fig.axes[:2]] == ["cosine schedule", "constant schedule"]


def test_train_val_gap_figure(stores):
    fig = figures.train_val_gap(stores["lm"].curves(), epsilon=0.05)
    for schedule in ("cosine", "constant"):
        np.testing.assert_allclose(xy(fig, f"data:schedule={schedule}"), [[0.0, 0.01], [0.3, 0.01]])
        assert len(xy(fig, f"seeds:schedule={schedule}")) == 2 * len(SEEDS)  # every seed's own gap
    assert {ln.get_ydata()[0] for ln in fig.axes[0].lines if ln.get_gid() == "epsilon"} == {0.05, -0.05}


def test_divergence_curves_draw_every_seed_and_mark_divergence_points(stores):
    fig = figures.divergence_curves(stores["bf16"].curves(), "train_loss")
    assert [ax.get_title() for ax in fig.axes] == ["precision fp32", "precision bf16-autocast"]
    diverged = xy(fig, "data:bf16-autocast_wd0.0_s0")
    np.testing.assert_allclose(diverged, [[100 * i, 3.0 + 2.0 / i] for i in (1, 2, 3)])  # finite points only
    finished = xy(fig, "data:fp32_wd0.1_s2")
    assert len(finished) == 6 and finished[-1, 1] == pytest.approx(3.0 + 2.0 / 6 + 0.02)
    marks = [ln for ln in fig.axes[1].lines if ln.get_gid() == "diverged:trials"][0].get_xydata()
    # diverged_step and last_finite_loss of seeds 0 and 1, below the clip value
    np.testing.assert_allclose(marks, [[BF16_DIVERGE_STEP, 3.0 + 2.0 / 3 + 0.01 * s] for s in (0, 1)])
    styles = {ln.get_gid(): ln.get_linestyle() for ln in fig.axes[1].lines}
    assert styles["data:bf16-autocast_wd0.0_s0"] != styles["data:bf16-autocast_wd0.0_s1"]  # seeds as line styles
    assert not [ln for ln in fig.axes[0].lines if ln.get_gid() == "diverged:trials"]


def test_status_map_is_the_diverged_fraction(stores):
    fig = figures.status_map(stores["bf16"].trials)
    images = {im.get_gid(): np.ma.getdata(im.get_array()) for ax in fig.axes for im in ax.images}
    np.testing.assert_allclose(images["data:fp32"], [[0.0, 0.0]])
    np.testing.assert_allclose(images["data:bf16-autocast"], [[2 / 3, 0.0]])
    vision = figures.status_map(stores["vision"].trials)  # no precision axis: one panel, failed trial counted
    grid = np.ma.getdata(vision.axes[0].images[0].get_array())
    assert grid.shape == (len(VISION_LRS), 2) and grid[-1, 0] == pytest.approx(1 / 3)
    texts = {t.get_gid(): t.get_text() for t in vision.axes[0].texts}
    assert texts["cell:3,0"] == "0/4\n1f"  # LR 0.1, WD 0: 3 finished + 1 failed


def test_isolation_plot_optimises_over_the_other_axes(stores):
    fin = stores["vision"].finals()
    fig = figures.isolation(fin, "finetune_test_error", "min")
    means = {(lr, wd): seed_mean(lambda s: vision_error(lr, wd, s), seeds=(0, 1) if (lr, wd) == (0.3, 0.0) else SEEDS)
             for lr in VISION_LRS for wd in (0.0, 1e-3)}
    by_lr = xy(fig, "data:lr")
    np.testing.assert_allclose(by_lr, [[lr, min(means[(lr, 0.0)], means[(lr, 1e-3)])] for lr in VISION_LRS])
    by_wd = xy(fig, "data:weight_decay")
    np.testing.assert_allclose(by_wd, [[wd, min(means[(lr, wd)] for lr in VISION_LRS)] for wd in (0.0, 1e-3)])
    # LR 0.3 without WD has 2 seeds (its third failed), the others 3: the title says so
    assert "minimised over the other axes" in fig.get_suptitle() and "mean over 2–3 seeds" in fig.get_suptitle()
    assert [ln.get_xydata()[0, 0] for ax in fig.axes for ln in ax.lines if ln.get_gid() == "diverged:trials"] == [0.3, 0.0]
    lm = figures.isolation(stores["lm"].finals(), "val_loss")  # a categorical axis at positions 0, 1
    assert xy(lm, "data:schedule")[:, 0].tolist() == [0.0, 1.0]
    assert [t.get_text() for t in lm.axes[0].get_xticklabels()] == ["cosine", "constant"]


def test_top_k_curves_are_the_best_trials(stores):
    study = stores["lm"]
    fig = figures.top_k(study.curves(), study.finals(), "val_loss", "min", k=3)
    gids = [ln.get_gid() for ln in fig.axes[0].lines]
    assert gids == ["data:cosine_wd0.3_s0", "data:cosine_wd0.3_s1", "data:cosine_wd0.3_s2"]
    np.testing.assert_allclose(xy(fig, "data:cosine_wd0.3_s0")[:, 1], [lm_loss(s, 0.3, "cosine", 0) + 0.01 for s in LM_STEPS])


def test_compare_best_overlays_each_studys_best_trial(stores):
    lm, bf16 = stores["lm"], stores["bf16"]
    fig = figures.compare_best([("lm", lm.curves(), lm.finals(), "val_loss", "min"),
                                ("bf16", bf16.curves(), bf16.finals(), "val_loss", "min")], "val_loss")
    np.testing.assert_allclose(xy(fig, "data:lm")[:, 1], [lm_loss(s, 0.3, "cosine", 0) + 0.01 for s in LM_STEPS])
    assert xy(fig, "data:bf16")[-1, 1] == pytest.approx(3.0 + 2.0 / 6 + 0.02)  # seed 0 of any finished arm


def test_figures_render_to_png_and_svg(stores):
    from analysis.report import render

    def draw():
        return figures.ushape(stores["vision"].finals(), "finetune_test_error")

    fig = draw()
    assert render(fig, "png")[:8] == b"\x89PNG\r\n\x1a\n"
    svg = render(draw(), "svg")
    assert b"<svg" in svg and render(draw(), "svg") == svg  # no timestamp, fixed ids: a rerun gives the same file
    assert math.isfinite(fig.axes[0].get_ylim()[1])


# ------------------------------------------------------------------ labels, categories, contrast (issue 15, point 3)

def test_axis_labels_are_words_for_the_columns_that_drew_them(stores):
    vision, lm, bf16 = stores["vision"], stores["lm"], stores["bf16"]
    ushape = figures.ushape(vision.finals(), "test_error").axes[0]
    assert (ushape.get_xlabel(), ushape.get_ylabel()) == ("learning rate", "test error (%)")
    heat = figures.heatmap(vision.finals(), "finetune_test_error")
    assert (heat.axes[0].get_xlabel(), heat.axes[0].get_ylabel()) == ("weight decay", "learning rate")
    assert heat.axes[1].get_ylabel() == "test error of the fine-tuned copy (%)"  # the colour bar
    chin = figures.chinchilla(lm.curves(), "val_loss")
    assert (chin.axes[0].get_xlabel(), chin.axes[0].get_ylabel()) == ("tokens seen", "validation loss (nats)")
    assert chin.axes[2].get_ylabel().startswith("validation loss (nats)\nWD − WD 0")
    assert figures.train_val_gap(lm.curves()).axes[0].get_xlabel() == "weight decay"
    div = figures.divergence_curves(bf16.curves(), "train_loss").axes[0]
    assert (div.get_xlabel(), div.get_ylabel()) == ("step", "training loss (nats)")
    status = figures.status_map(bf16.trials).axes[0]
    assert (status.get_xlabel(), status.get_ylabel()) == ("weight decay", "learning rate")
    iso = figures.isolation(lm.finals(), "val_loss")
    assert [ax.get_xlabel() for ax in iso.axes] == ["LR schedule", "weight decay"]
    assert iso.axes[0].get_ylabel() == "validation loss (nats)"
    # names outside the map still read as words, errors with their unit
    assert figures.axis_label("config/beta_2") == "beta 2" and figures.axis_label("val_error") == "val error (%)"


def plan_figures(study):
    from analysis.report import figure_plan

    finals, curves = study.finals(), study.curves()
    for item in figure_plan(study, finals, curves):
        if item.draw is not None:
            yield item.key, item.draw(), finals, curves


def test_no_report_figure_labels_an_axis_with_a_raw_column_name(stores):
    """Every axis (colour bars included) of every figure a report draws, on each store."""
    import re

    for study in stores.values():
        for key, fig, finals, curves in plan_figures(study):
            names = {str(c).removeprefix("config/") for c in [*finals.columns, *curves.columns]}
            snake = {n for n in names if "_" in n}  # val_loss, weight_decay, finetune_test_error, ...
            renamed = {n for n in names if figures.axis_label(n) != n}  # lr → learning rate, schedule → LR schedule
            for ax in fig.axes:
                for text in (ax.get_xlabel(), ax.get_ylabel()):
                    words = set(re.findall(r"[A-Za-z0-9_/]+", text))
                    raw = (words & snake) | ({text.strip()} & renamed)
                    assert not raw, f"{study.name}/{key}: axis label {text!r} uses {raw}"


def test_every_data_line_is_legible_on_white(stores):
    from matplotlib import colormaps

    assert figures.contrast("white", "black") == pytest.approx(21.0)
    assert figures.contrast(colormaps["viridis"](0.9)) < 2  # the lime end the report used to draw with
    lime = figures.legible(colormaps["viridis"](0.9))
    assert figures.contrast(lime) >= figures.MIN_CONTRAST
    assert lime[1] > lime[0] > lime[2]  # darkened, same hue (green > red > blue)
    assert figures.legible("tab:blue") == pytest.approx(matplotlib_rgb("tab:blue"))  # legible already: unchanged
    for n in (2, 5, 9):
        palette = style.line_colors(n, sequential=True)
        assert len(set(palette)) == n and min(map(figures.contrast, palette)) >= figures.MIN_CONTRAST
    for study in stores.values():
        for key, fig, _, _ in plan_figures(study):
            for ax in fig.axes:
                for line in ax.lines:
                    if (line.get_gid() or "").startswith("data:") and line.get_alpha() in (None, 1):
                        assert figures.contrast(line.get_color(), ax.get_facecolor()) >= figures.MIN_CONTRAST, \
                            f"{study.name}/{key}: {line.get_gid()} in {line.get_color()}"


def matplotlib_rgb(name):
    from matplotlib.colors import to_rgb

    return to_rgb(name)


def test_isolation_draws_categories_as_points_on_one_y_scale_with_the_seed_spread(stores):
    fig = figures.isolation(stores["lm"].finals(), "val_loss")
    schedule, wd = xy(fig, "data:schedule"), xy(fig, "data:weight_decay")
    # best over WD per schedule: cosine's best is WD 0.3 (it crosses below WD 0 at step 850), constant's WD 0
    cosine = 1.5 + 3.0 * math.exp(-1000 / 250) + 0.1 * 0.3 * (LM_CROSSING_STEP - 1000) / LM_CROSSING_STEP + 0.01
    constant = 1.5 + 3.0 * math.exp(-1000 / 250) + 0.01
    np.testing.assert_allclose(schedule, [[0, cosine], [1, constant]])
    np.testing.assert_allclose(wd, [[0.0, constant], [0.3, cosine]])
    lines = {ln.get_gid(): ln for ax in fig.axes for ln in ax.lines}
    assert lines["data:schedule"].get_linestyle() == "None" and lines["data:schedule"].get_marker() == "o"
    assert lines["data:weight_decay"].get_linestyle() == "-"  # numeric values are ordered: a line is honest
    assert fig.axes[0].get_xlim() == (-0.5, 1.5)
    # the bars are the min–max over the 3 seeds of the best grid point (seed offsets ±0.001)
    for name, means in (("schedule", [cosine, constant]), ("weight_decay", [constant, cosine])):
        expected = sorted(zip(xy(fig, f"data:{name}")[:, 0], np.array(means) - 0.001, np.array(means) + 0.001))
        np.testing.assert_allclose(bars(fig, f"spread:{name}"), expected)
    # one y scale: the same limits in every panel, which hold every bar
    assert fig.axes[0].get_ylim() == fig.axes[1].get_ylim()
    assert fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[1])
    low, high = fig.axes[0].get_ylim()
    assert low < cosine - 0.001 and high > constant + 0.001
