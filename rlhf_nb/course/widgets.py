"""Lesson 06's interactive panel: a KL-coefficient slider, a batch-size slider, a Run button, and the curves.

Each Run is drawn over the previous ones (the last MAX_CURVES, labelled by β and batch size, all with the same seed),
so moving a slider and pressing Run shows the difference; the legend is also written as text (`panel.legend`).

The panel does no training itself: `panel.run()` reads the sliders, calls the plain `run_experiment`, and writes the
result into widgets by setting `.value` (never by printing). The figure is a PNG drawn with matplotlib's Agg canvas
into an `ipywidgets.Image`, which redraws in any JupyterLab without ipympl and never leaks into cell outputs.
"""
from __future__ import annotations

import html
import io
import math
from typing import Any, Callable

import ipywidgets as W
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..config import ConfigError
from .experiments import LESSON_RUN, ExperimentResult, run_experiment, samples_html
from .plots import plot_history

PLOT_KEYS = ("objective/scores", "objective/kl", "policy/entropy")
KL_RANGE = (0.0, 0.5, 0.01)  # min, max, step: beyond 0.5 the tiny model barely moves in a few steps
BATCH_RANGE = (4, 64, 4)  # multiples of 4, so that up to 4 minibatches (overrides) always divide the batch
MAX_CURVES = 4  # the last few runs stay on the figure, so moving a slider shows the difference


def curve_label(r: ExperimentResult) -> str:
    """How a run is named on the figure and in the legend readout."""
    return f"β={r.kl_coef:.2f} B={r.batch_size}"


def render_png(results: list[ExperimentResult], keys: tuple[str, ...] = PLOT_KEYS) -> bytes:
    """Draw the last MAX_CURVES runs (newest last) as one row of panels; return PNG bytes. No pyplot, no display."""
    fig = Figure(figsize=(3.2 * len(keys), 2.8), dpi=80)
    FigureCanvasAgg(fig)
    fig.subplots(1, len(keys), squeeze=False)
    for r in results[-MAX_CURVES:]:
        plot_history(r.history, keys=keys, fig=fig, label=curve_label(r))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def readout_html(r: ExperimentResult) -> str:
    """The KL coefficient the run used and its end-of-run averages, as HTML."""
    f = r.final
    return (f"<div class='rlhf-readout'>KL coefficient in use: <b class='rlhf-kl'>{r.kl_coef:.2f}</b> &nbsp; "
            f"batch size: <b>{r.batch_size}</b> &nbsp; steps: {r.steps}<br>"
            f"last-quarter mean: reward <b>{f['objective/scores']:+.3f}</b> &nbsp; KL <b>{f['objective/kl']:.3f}</b> "
            f"&nbsp; RLHF reward {f['objective/rlhf_reward']:+.3f} &nbsp; entropy {f['policy/entropy']:.3f}</div>")


def legend_html(results: list[ExperimentResult]) -> str:
    """The curves on the figure, oldest first, with each run's last-quarter score and KL: the legend as text."""
    items = "".join(f"<li class='rlhf-curve'>{html.escape(curve_label(r))}: score {r.final_reward:+.3f}, "
                    f"KL {r.final_kl:.2f}</li>" for r in results[-MAX_CURVES:])
    return f"<ol class='rlhf-legend'>{items}</ol>"


def check_panel_values(kl_coef: float, batch_size: int, steps: int) -> None:
    """The panel's start values, refused with a ConfigError naming the parameter and its range: an ipywidgets slider
    would otherwise clamp -1 to 0 (or keep nan) without a word, and the first Run would train something else."""
    if not (isinstance(kl_coef, (int, float)) and math.isfinite(kl_coef) and KL_RANGE[0] <= kl_coef <= KL_RANGE[1]):
        raise ConfigError(f"kl_coef must be in [{KL_RANGE[0]:g}, {KL_RANGE[1]:g}] (the slider's range), got {kl_coef!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not BATCH_RANGE[0] <= batch_size <= BATCH_RANGE[1]:
        raise ConfigError(f"batch_size must be an int in [{BATCH_RANGE[0]}, {BATCH_RANGE[1]}] (the slider's range), "
                          f"got {batch_size!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an int >= 1, got {steps!r}")


class TrainingPanel:
    """Sliders + Run button + readout + figure + samples table. `results` records every run, for tests and for you."""

    def __init__(self, kl_coef: float = 0.05, batch_size: int = LESSON_RUN["batch_size"],
                 steps: int = LESSON_RUN["steps"], seed: int = 0,
                 run_on_change: bool = False, run_fn: Callable[..., ExperimentResult] = run_experiment,
                 **overrides: Any) -> None:
        check_panel_values(kl_coef, batch_size, steps)  # a slider would clamp a bad start value silently
        self.steps, self.seed, self.overrides, self.run_fn = steps, seed, overrides, run_fn
        self.results: list[ExperimentResult] = []
        self.kl_slider = W.FloatSlider(value=kl_coef, min=KL_RANGE[0], max=KL_RANGE[1], step=KL_RANGE[2],
                                       description="kl_coef", readout_format=".2f", continuous_update=False)
        self.batch_slider = W.IntSlider(value=batch_size, min=BATCH_RANGE[0], max=BATCH_RANGE[1], step=BATCH_RANGE[2],
                                        description="batch_size", continuous_update=False)
        self.button = W.Button(description="Run", button_style="primary", tooltip=f"train {steps} PPO steps")
        self.readout = W.HTML(value="<div class='rlhf-readout'>Move a slider and press Run.</div>")
        self.figure = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self.legend = W.HTML(value=legend_html([]))
        self.samples = W.HTML()
        self.button.on_click(lambda _button: self.run())
        if run_on_change:  # off by default: each run trains for seconds, so an explicit Run is kinder
            for s in (self.kl_slider, self.batch_slider):
                s.observe(lambda _change: self.run(), names="value")
        self.widget = W.VBox([W.HBox([self.kl_slider, self.batch_slider, self.button]), self.readout, self.figure,
                              self.legend, self.samples])
        self.widget.add_class("rlhf-panel")

    def run(self) -> ExperimentResult | None:
        """Train with the sliders' values and show the result; a bad value is shown in the readout, not raised."""
        kl, bs = float(self.kl_slider.value), int(self.batch_slider.value)
        self.button.disabled = True
        self.readout.value = (f"<div class='rlhf-readout'>Training {self.steps} steps with KL coefficient "
                              f"<b class='rlhf-kl'>{kl:.2f}</b>, batch size {bs}…</div>")
        try:
            result = self.run_fn(kl, bs, steps=self.steps, seed=self.seed, **self.overrides)
        except ConfigError as e:  # a widget callback has nowhere to raise to: say what was wrong where the user looks
            self.readout.value = f"<div class='rlhf-readout rlhf-error'>Not run: {html.escape(str(e))}</div>"
            return None
        finally:
            self.button.disabled = False
        self.show(result)
        return result

    def show(self, result: ExperimentResult) -> None:
        """Record a result (from run() or from a plain run_experiment call) and draw it into the widgets."""
        self.results.append(result)
        self.figure.value = render_png(self.results)
        self.readout.value = readout_html(result)
        self.legend.value = legend_html(self.results)
        self.samples.value = samples_html(result.samples_before, result.samples_after)

    def _repr_mimebundle_(self, **kwargs):  # `panel` as a cell's last line displays the widget
        return self.widget._repr_mimebundle_(**kwargs)


def make_panel(kl_coef: float = 0.05, batch_size: int = LESSON_RUN["batch_size"], steps: int = LESSON_RUN["steps"],
               seed: int = 0, **overrides: Any) -> TrainingPanel:
    """Lesson 06's panel with the sweep's settings (LESSON_RUN); `overrides` go to RunConfig (e.g. reward="length")."""
    overrides = {"learning_rate": LESSON_RUN["learning_rate"], **overrides}
    return TrainingPanel(kl_coef=kl_coef, batch_size=batch_size, steps=steps, seed=seed, **overrides)
