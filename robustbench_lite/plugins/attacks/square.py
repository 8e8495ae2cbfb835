"""Square Attack (Andriushchenko et al., 2020): l-inf random search that needs only the model's scores."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from robustbench_lite.attack_utils import margin_loss, per_sample
from robustbench_lite.errors import UsageError
from robustbench_lite.hookspecs import Register, hookimpl
from robustbench_lite.interfaces import Attack
from robustbench_lite.options import MAX_QUERIES, Option

from ._common import torchattacks_reference

# The paper's schedule for a 10,000-query budget: after each of these query counts the squares'
# area (as a fraction p of the image) halves. Other budgets stretch the schedule to fit (``rescale``).
SCHEDULE_LENGTH = 10_000
HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# Queries spent before the random search: the clean input, then the initial stripes.
SETUP_QUERIES = 2


def random_signs(*shape: int, like: torch.Tensor) -> torch.Tensor:
    return torch.randint(0, 2, shape, device=like.device).to(like.dtype) * 2 - 1


class Square(Attack):
    """Random search over the vertices of the eps-ball, one square window at a time.

    Starts from vertical stripes of +-eps, then each query moves one random square window of
    every sample to a random vertex (one sign per channel) and keeps the move if it lowers the
    margin loss. Windows shrink along the paper's schedule. A sample stops as soon as it is
    misclassified, so the budget goes to the samples still robust. Every sample costs at most
    ``queries`` forward passes, the check of its clean input included; no gradient is used.
    Feature vectors (N x D) are searched as 1 x D images, one coordinate per window.
    """

    name = "square"
    family = "score-based"
    description = "Square Attack, l-inf: score-based black-box random search with the margin loss (Andriushchenko et al. 2020)"
    options = (
        Option("queries", int, 1000, "forward passes per sample, the clean check included", minimum=SETUP_QUERIES,
               maximum=MAX_QUERIES),
        Option("p_init", float, 0.8, "initial fraction of the image that a square window covers", minimum=0.0, maximum=1.0),
        Option("rescale", bool, True,
               "stretch the window schedule (made for 10,000 queries) to the budget; false: halve at its fixed "
               "query counts, as AutoAttack does"),
    )

    def reference(self, model: nn.Module, eps: float, num_classes: int) -> Any | None:
        return torchattacks_reference(self, lambda ta: ta.Square(
            model, norm="Linf", eps=eps, n_queries=self.queries, p_init=self.p_init, seed=0))

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        images = self._as_images(x)

        def margin_of(candidates: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                # z_y - max_{i != y} z_i: negative exactly when misclassified
                return -margin_loss(model(candidates.reshape(-1, *x.shape[1:])), labels)

        x_adv = images.clone()
        if eps == 0:  # the ball is the input itself: nothing to search
            return x_adv.reshape(x.shape)
        pending = (margin_of(images, y) >= 0).nonzero().squeeze(1)
        if len(pending) == 0:
            return x_adv.reshape(x.shape)
        clean, labels = images[pending], y[pending]
        # Vertical stripes: each column of each channel at +eps or -eps, the paper's initialisation.
        n, channels, _, width = clean.shape
        best = torch.clamp(clean + eps * random_signs(n, channels, 1, width, like=clean), 0.0, 1.0)
        best_margin = margin_of(best, labels)
        searches = self.queries - SETUP_QUERIES
        for iteration in range(searches):
            active = (best_margin >= 0).nonzero().squeeze(1)
            if len(active) == 0:
                break
            proposal = self._propose(clean[active], best[active], self._window_side(iteration, searches, clean), eps)
            proposal_margin = margin_of(proposal, labels[active])
            improved = proposal_margin < best_margin[active]
            best[active[improved]] = proposal[improved]
            best_margin[active[improved]] = proposal_margin[improved]
        x_adv[pending] = best
        return x_adv.reshape(x.shape)

    @staticmethod
    def _as_images(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return x
        if x.dim() == 2:
            return x.reshape(len(x), 1, 1, x.shape[1])
        raise UsageError(f"square attacks images (N, C, H, W) or feature vectors (N, D), not shape {tuple(x.shape)}")

    def _window_side(self, iteration: int, searches: int, images: torch.Tensor) -> int:
        """Side of the square window: sqrt(p * H * W), p halving along the (rescaled) schedule."""
        progress = int(iteration / searches * SCHEDULE_LENGTH) if self.rescale else iteration
        fraction = self.p_init / 2 ** sum(progress > point for point in HALVING_POINTS)
        height, width = images.shape[2:]
        return min(max(round(math.sqrt(fraction * height * width)), 1), height, width)

    @staticmethod
    def _propose(clean: torch.Tensor, best: torch.Tensor, side: int, eps: float) -> torch.Tensor:
        """Move one random side x side window of each sample to a random vertex of its eps-ball."""
        n, channels, height, width = clean.shape
        top = torch.randint(0, height - side + 1, (n, 1), device=clean.device)
        left = torch.randint(0, width - side + 1, (n, 1), device=clean.device)
        rows = torch.arange(height, device=clean.device)
        columns = torch.arange(width, device=clean.device)
        in_rows = (rows >= top) & (rows < top + side)
        in_columns = (columns >= left) & (columns < left + side)
        window = (in_rows[:, :, None] & in_columns[:, None, :])[:, None]
        signs = random_signs(n, channels, 1, 1, like=clean)
        proposal = torch.where(window, torch.clamp(clean + eps * signs, 0.0, 1.0), best)
        # A window already at the drawn vertex would waste a query; the opposite vertex differs (eps > 0).
        unchanged = (proposal == best).flatten(1).all(dim=1)
        opposite = torch.where(window, torch.clamp(clean - eps * signs, 0.0, 1.0), best)
        return torch.where(per_sample(unchanged, clean), opposite, proposal)


@hookimpl
def register_attacks(register: Register) -> None:
    register(Square)
