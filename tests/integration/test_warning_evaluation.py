"""Churn warnings judged on replayed history: a sample of CDNOW's customers, day by day from
the first day, through the scoring code the platform runs (`crm model evaluate --cdnow
--warnings` replays all of them)."""

from __future__ import annotations

from services.scoring import warning_replay

SAMPLE = 1_000  # about a minute on a loaded 2-core machine


def test_warnings_are_more_precise_than_both_baselines_at_no_less_coverage():
    result = warning_replay.run(SAMPLE, log=lambda _line: None)
    rules = result["rules"]
    mine = rules["platform"]
    assert result["customers"] == SAMPLE and mine["valuable_lapses"] > 300
    assert mine["within_14d_of_purchase"] == 0  # never right after a purchase
    assert rules["gap_2x"]["within_14d_of_purchase"] > 0  # the rule of thumb does fire there
    for baseline in ("gap_2x", "p_alive"):
        assert mine["precision"] > rules[baseline]["precision"], (baseline, rules)
        assert mine["coverage"] >= rules[baseline]["coverage"], (baseline, rules)
    assert warning_replay.beats_baselines(result)
    assert mine["median_lead_days"] > 30  # warned well before the 180 silent days are over
    # The risk reads as a probability: no worse calibrated than BG/NBD's own.
    reliability = result["reliability"]
    assert reliability["risk"]["brier"] <= reliability["bgnbd_p_no_purchase_90d"]["brier"] + 0.002
    for row in reliability["risk"]["table"]:
        if row["customers"] >= 500:
            assert abs(row["predicted"] - row["observed"]) < 0.12, row
    table = warning_replay.tables(result)
    assert "precision" in table and "Brier score" in table
