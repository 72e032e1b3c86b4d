"""dft-bt-scale (paper 000, Fig. 6b): the explosion rule and the digits UNet's seeding."""

from __future__ import annotations

import numpy as np
import torch

from experiments.dft_bt_scale import EXPLOSION_FACTOR, _term_entry
from experiments.digits_unet import sd_ddpm_scheduler, trained_digits_unet
from theory.schedules import scaled_linear_betas


def _terms(ratio_at_t: np.ndarray) -> dict[str, np.ndarray]:
    without_b = np.ones((3, ratio_at_t.size))
    return {"exact_term": without_b * ratio_at_t, "term_without_B": without_b, "adjusted_term": 2 * without_b}


def test_a_panel_explodes_only_when_the_late_ratio_passes_the_factor():
    t = np.arange(1000, 0, -1)
    late_growth = np.where(t >= 950, 2 * EXPLOSION_FACTOR, 1.0)
    early_growth = np.where(t <= 500, 2 * EXPLOSION_FACTOR, 1.0)  # large ratios before t = 900 do not count
    entry, _ = _term_entry(_terms(late_growth), t)
    assert entry["explodes"] and entry["max_ratio_late"] == 2 * EXPLOSION_FACTOR
    entry, _ = _term_entry(_terms(early_growth), t)
    assert not entry["explodes"] and entry["max_ratio_late"] == 1.0


def test_digits_unet_is_seeded_by_its_streams_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a, _ = trained_digits_unet(3, 0)
    b, _ = trained_digits_unet(3, 0)
    c, _ = trained_digits_unet(4, 0)
    assert torch.equal(torch.random.get_rng_state(), state)
    pa, pb, pc = (torch.cat([p.reshape(-1) for p in m.parameters()]) for m in (a, b, c))
    assert pa.dtype == torch.float64 and torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_the_unet_is_trained_on_the_schedule_of_the_chain():
    np.testing.assert_allclose(sd_ddpm_scheduler().betas.double().numpy(), scaled_linear_betas(1000).numpy(),
                               rtol=1e-6)
