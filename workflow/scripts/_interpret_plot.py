"""Shared by the interpretation scripts: the figure set-up of `_plot` at 8 points, and image
helpers."""
import numpy as np

from _plot import plt, save, use_font_size  # noqa: F401  (save is re-exported to the scripts)

use_font_size(8)


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
