"""The analytic cost model behind the staged 1080p path (DESIGN §4)."""

from __future__ import annotations

from skyreels_core.benchmark import analytic, step_flops, video_tokens
from skyreels_core.config import get_preset


def test_token_counts_and_quadratic_attention():
    assert video_tokens(1920, 1088, 481) == 121 * 68 * 120
    config = get_preset("wan2.1-t2v-14b")
    small, large = step_flops(config, 10_000, 0, 0), step_flops(config, 100_000, 0, 0)
    assert 10 < large / small < 100  # linear projections plus quadratic attention


def test_staged_path_costs_at_most_a_quarter_of_the_direct_render():
    report = analytic()
    assert report["direct"]["video_tokens"] == 987_360 and report["direct"]["audio_tokens"] == 646
    assert report["staged_over_direct"] <= 0.25
