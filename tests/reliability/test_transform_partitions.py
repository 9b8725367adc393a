"""The transform split into ranges of order ids, as the DAG's mapped ``transform`` instances run it:
a retried instance redoes its own range and leaves the others' work alone, and instances writing
at the same time (two writers on SQLite too) leave what one transform of the whole run leaves.
"""

from __future__ import annotations

import gc
import json
import threading
from typing import Any

# Two ranges of about 150 orders; zero totals skipped, so each range records skipped orders too.
PARTITIONED = {
    "transform_partitions": 2,
    "transform_partition_min_orders": 50,
    "zero_total_policy": "skip",
    "chunk_size": 100,
}


def staged_work(pipeline: Any, run_id: str) -> tuple[dict[str, Any], set[str]]:
    """The run's transformed batches ({first order id: when staged}) and skipped orders."""
    batches = pipeline.query(
        "SELECT first_order_id, staged_at FROM stg_transformed_batches WHERE run_id = :r", r=run_id
    )
    skipped = pipeline.query("SELECT sf_order_id FROM skipped_orders WHERE run_id = :r", r=run_id)
    return {b["first_order_id"]: b["staged_at"] for b in batches}, {s["sf_order_id"] for s in skipped}


def batch_order_ids(pipeline: Any, run_id: str) -> list[list[str]]:
    """The order ids of each of the run's transformed batches."""
    rows = pipeline.query("SELECT payload FROM stg_transformed_batches WHERE run_id = :r", r=run_id)
    payloads = [json.loads(bytes(r["payload"])) for r in rows]  # the batch's JSON as UTF-8 bytes
    return [[record["order"]["sf_order_id"] for record in payload] for payload in payloads]


def in_range(partition: dict[str, str | None], order_id: str) -> bool:
    return (partition["start"] is None or order_id >= partition["start"]) and (
        partition["stop"] is None or order_id < partition["stop"]
    )


def test_retrying_one_instance_leaves_the_other_partitions_work_intact(pipeline: Any) -> None:
    pipeline.set_config(**PARTITIONED)
    run = pipeline.run(until="transform")
    assert run.succeeded, f"{run.failed_stage}: {run.error}"
    first, second = run.results["validate"]["transform_partitions"]
    batches, skipped = staged_work(pipeline, run.run_id)
    assert any(in_range(first, s) for s in skipped) and any(in_range(second, s) for s in skipped)
    assert len([b for b in batches if in_range(first, b)]) > 1 and any(in_range(second, b) for b in batches)
    # a batch lies in the range of the instance that staged it
    for ids in batch_order_ids(pipeline, run.run_id):
        assert in_range(first, ids[0]) == in_range(first, ids[-1])

    retried = pipeline.transform(run, partitions=[0])  # Airflow's retry of map index 0 alone

    batches_after, skipped_after = staged_work(pipeline, run.run_id)
    assert set(batches_after) == set(batches) and skipped_after == skipped
    assert {b: t for b, t in batches_after.items() if in_range(second, b)} == {
        b: t for b, t in batches.items() if in_range(second, b)
    }
    # the retried range's batches staged again
    assert all(batches_after[b] >= batches[b] for b in batches if in_range(first, b))
    assert (
        retried["transformed"] + retried["skipped"]
        < run.results["transform"]["transformed"] + run.results["transform"]["skipped"]
    )

    loaded = pipeline.stage("load", run)
    assert loaded["inserted"] == run.results["transform"]["transformed"] == len(pipeline.loaded_ids())


def test_instances_writing_at_the_same_time_load_what_one_transform_loads(pipeline: Any) -> None:
    """Both instances at once, each with its own connections (two writers of one SQLite file wait
    for each other's write lock): the load then has every order once."""
    from salesforce_orders import stages
    from salesforce_orders.partitions import combine_results

    pipeline.set_config(**PARTITIONED)
    run = pipeline.run(until="validate")
    plan = run.results["validate"]["transform_partitions"]
    results: dict[int, Any] = {}

    def instance(index: int) -> None:
        try:
            results[index] = stages.transform(
                run_id=run.run_id, instance_url=run.results["extract"]["instance_url"], partition=plan[index]
            )
        except Exception as exc:  # reported below
            results[index] = exc

    threshold = gc.get_threshold()  # each stage sets and restores it: threads may interleave that
    threads = [threading.Thread(target=instance, args=(index,)) for index in range(len(plan))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        gc.set_threshold(*threshold)
    assert len(plan) == 2 and all(isinstance(r, dict) for r in results.values()), results
    run.results["transform"] = combine_results([results[i] for i in sorted(results)])

    loaded = pipeline.stage("load", run)
    valid = run.results["validate"]["valid"]
    assert (
        loaded["inserted"]
        == run.results["transform"]["transformed"]
        == valid - run.results["transform"]["skipped"]
    )
    assert len(pipeline.loaded_ids()) == loaded["inserted"]
