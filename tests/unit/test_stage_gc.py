"""The data stages run with the cyclic garbage collector's threshold raised, and restore it after."""

from __future__ import annotations

import gc

import pytest

from salesforce_orders import stages


def test_a_stage_runs_with_a_raised_threshold_and_restores_it_even_when_it_fails():
    seen = []

    @stages._collects_garbage_less_often
    def stage(*, fail: bool) -> dict:
        seen.append(gc.get_threshold())
        if fail:
            raise RuntimeError("stage failed")
        return {"ok": True}

    before = gc.get_threshold()
    assert stage(fail=False) == {"ok": True}
    with pytest.raises(RuntimeError):
        stage(fail=True)
    assert seen == [stages._STAGE_GC_THRESHOLD] * 2
    assert seen[0][0] > before[0]
    assert gc.get_threshold() == before


@pytest.mark.parametrize("name", ["extract", "validate", "write_back"])
def test_every_data_stage_collects_less_often(name):
    assert getattr(stages, name).gc_threshold == stages._STAGE_GC_THRESHOLD


@pytest.mark.parametrize("name", ["transform", "load"])
def test_the_batch_stages_collect_only_when_objects_pile_up_beyond_a_batch(name):
    assert getattr(stages, name).gc_threshold == stages._BATCH_GC_THRESHOLD
    assert stages._BATCH_GC_THRESHOLD[0] > stages._STAGE_GC_THRESHOLD[0]
