"""Ridge least squares from sufficient statistics accumulated over batches (the closed-form refit's solver)."""
from __future__ import annotations

import torch

from ..errors import NuwaError


class RidgeStats:
    """Sufficient statistics of a linear least-squares fit Y ~ X W^T + b, accumulated in float64
    over batches (memory O(in^2 + in*out), whatever the number of rows)."""

    def __init__(self, in_dim: int, out_dim: int, *, bias: bool = True) -> None:
        f64 = dict(dtype=torch.float64)
        self.bias = bias
        self.n = 0
        self.xx = torch.zeros(in_dim, in_dim, **f64)
        self.xy = torch.zeros(in_dim, out_dim, **f64)
        self.x = torch.zeros(in_dim, **f64)
        self.y = torch.zeros(out_dim, **f64)
        self.yy = 0.0  # sum of squares of Y: for the fit errors in the report

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Rows of `x` (..., in) and `y` (..., out); leading dims are flattened (tokens are rows)."""
        x = x.reshape(-1, x.shape[-1]).to("cpu", torch.float64)
        y = y.reshape(-1, y.shape[-1]).to("cpu", torch.float64)
        self.n += x.shape[0]
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.x += x.sum(0)
        self.y += y.sum(0)
        self.yy += float((y * y).sum())

    def _gram(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[X 1]^T [X 1] and [X 1]^T Y (without the bias column when there is no bias)."""
        if not self.bias:
            return self.xx, self.xy
        d = self.xx.shape[0]
        a = torch.empty(d + 1, d + 1, dtype=torch.float64)
        a[:d, :d], a[:d, d], a[d, :d], a[d, d] = self.xx, self.x, self.x, self.n
        return a, torch.cat([self.xy, self.y[None]])

    def scale(self) -> float:
        """Mean variance of the input features (their mean square without a bias column)."""
        if self.n == 0:
            return 0.0
        sq = float(torch.diagonal(self.xx).sum()) / self.n
        if self.bias:
            sq -= float((self.x / self.n).pow(2).sum())
        return max(sq, 0.0) / self.xx.shape[0]

    def solve(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight (out, in) and bias (out,) minimising ||Y - X W^T - b||^2 + ridge * n * s * ||W||^2,
        s the inputs' mean variance (`scale`); the bias is not penalised.

        Scaling by n (rows: calibration tokens) and s makes `ridge` a relative quantity: the
        same value shrinks alike whatever the number of tokens and whatever the scale of a
        layer's activations (value features of a trained ViT are ~0.1 here and ~10 there);
        with whitened inputs it is the share added to every eigenvalue."""
        if self.n == 0:
            raise NuwaError("closed-form recovery: no calibration rows")
        a, b = self._gram()
        d = self.xx.shape[0]
        a = a.clone()
        a[range(d), range(d)] += ridge * self.n * self.scale()
        try:
            theta = torch.linalg.solve(a, b)
        except RuntimeError:  # singular (ridge=0 and redundant inputs): the minimum-norm solution
            theta = torch.linalg.lstsq(a, b, driver="gelsd").solution
        return theta[:d].T.contiguous(), (theta[d].contiguous() if self.bias else None)

    def unexplained(self, weight: torch.Tensor, bias: torch.Tensor | None) -> float:
        """Share of Y's variance (about its mean) that X W^T + b leaves unexplained, 1 - R^2."""
        a, b = self._gram()
        theta = weight.T.to(torch.float64)
        if self.bias:
            theta = torch.cat([theta, (bias if bias is not None else torch.zeros(weight.shape[0]))
                               .to(torch.float64)[None]])
        sse = self.yy - 2 * float((theta * b).sum()) + float((theta * (a @ theta)).sum())
        sst = self.yy - float((self.y ** 2).sum()) / max(self.n, 1)
        return max(sse, 0.0) / sst if sst > 0 else 0.0


def ridge_fit(x: torch.Tensor, y: torch.Tensor, *, ridge: float,
              bias: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Ridge regression of y (n, out) on x (n, in) in one call; see `RidgeStats.solve`."""
    stats = RidgeStats(x.shape[-1], y.shape[-1], bias=bias)
    stats.add(x, y)
    return stats.solve(ridge)
