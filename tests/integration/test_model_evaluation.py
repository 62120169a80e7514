"""CDNOW replayed through the platform to the end of calibration (1997-09-30); the live
profiles are checked against what the customers did next (to 1998-06-30)."""

from __future__ import annotations

from services.scoring.evaluate import run


def test_live_profiles_beat_the_cdnow_baselines(tmp_path):
    result = run(tmp_path, log=lambda _line: None)
    assert result["customers"] == 23_570
    assert round(result["silent_share"], 3) == 0.701  # docs/architecture.md, "Replays and checks"
    # The baselines measured in the same run reproduce the numbers in docs/architecture.md.
    assert round(result["auc_recency"], 3) == 0.759
    assert round(result["auc_bgnbd_expected_holdout"], 3) == 0.763
    assert round(result["bgnbd_holdout_ratio"], 3) == 0.857
    # Churn risk ranks the customers who bought nothing at least as well as the better baseline,
    # and the 90-day expectations are at least as close in total.
    assert result["auc_churn_risk"] >= max(result["auc_recency"], result["auc_bgnbd_expected_holdout"])
    assert abs(1 - result["ratio_90d"]) <= abs(1 - result["bgnbd_holdout_ratio"])
