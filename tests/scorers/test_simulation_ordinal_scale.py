"""The simulation scorer with a simulator whose values only order tokens (`ordinal_scale`): uncalibrated,
only the correlation is reported; calibrated onto the unit's scale, every score is."""

from __future__ import annotations

import dataclasses

from scorer_helpers import record, unit_inputs

from neuroscribe.llm.scripted import ScriptedBackend
from neuroscribe.records import ScoringSet
from neuroscribe.scorers import create_scorer


def never_called(request: object) -> object:
    raise AssertionError("the lexical simulator asked the backend")


async def test_scale_dependent_scores_are_left_out_unless_calibrated() -> None:
    inputs = dataclasses.replace(
        unit_inputs(), scoring=ScoringSet(top=[record(f"t{i}", 3.0) for i in range(3)], random=[]),
        calibration=ScoringSet(top=[record(f"c{i}", 3.0) for i in range(2)], random=[]))  # 3.0 on " apple"
    backend = ScriptedBackend(never_called)  # type: ignore[arg-type]
    plain = await create_scorer("simulation", backend, {"simulator": "lexical"}).score(inputs)
    assert set(plain.scores) == {"ev_correlation"} and plain.scores["ev_correlation"]["top_and_random"] == 1.0
    calibrated = await create_scorer("simulation", backend, {"simulator": "lexical", "calibration": "linear"}
                                     ).score(inputs)
    assert {"ev_correlation", "rsquared", "absolute_dev_explained", "coefficient_of_determination",
            "uncalibrated_ev_correlation", "calibration_slope"} == set(calibrated.scores)
    assert calibrated.scores["rsquared"]["top_and_random"] == 1.0  # 10 -> 3 and 0 -> 0: on the unit's scale
