"""The course's helpers: the first cell of every lesson (`start`), exercise checkers, plots, experiments, widgets.

    from rlhf_nb.course import start, checks, plots
"""
from . import checks, plots
from .lesson import start

__all__ = ["start", "checks", "plots"]
