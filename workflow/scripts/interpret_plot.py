"""Shared by the interpretation scripts: deterministic PNGs (Agg, fixed dpi, no software/date
metadata -- identical runs give identical bytes) and image helpers."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from nuwa.atomic import atomic_path  # noqa: E402

DPI = 120
plt.rcParams.update({"font.size": 8, "axes.titlesize": 8, "legend.fontsize": 7})


def save(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def show_image(ax, image):
    """A uint8 (C, H, W) tensor: gray for one channel, RGB for three; no ticks."""
    a = image.numpy()
    if a.shape[0] == 1:
        ax.imshow(a[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(np.transpose(a[:3], (1, 2, 0)), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def class_colors(n):
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20" if n <= 20 else "hsv")
    return [cmap(i if n <= 20 else i / n) for i in range(n)]
