"""Shared by the figure scripts: deterministic PNGs -- the Agg backend, a fixed dpi, no software
or date metadata, so identical runs give identical bytes (and dvc.lock does not churn) -- and
the font sizes of a family of figures."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from nuwa.atomic import atomic_path  # noqa: E402

DPI = 120


def use_font_size(size):
    """Body and title text at `size` points, legends one point smaller."""
    plt.rcParams.update({"font.size": size, "axes.titlesize": size, "legend.fontsize": size - 1})


def save(fig, path):
    """Write `fig` as a PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(fig)
