"""routing/tiers.py: tier parsing and order, size classes, queue names and a GPU's strict consumption order."""

from __future__ import annotations

import pytest

from routing.tiers import (
    QUEUE_PREFIX,
    SIZE_CLASSES,
    TIERS,
    NoSizeClass,
    Route,
    SizeClass,
    Tier,
    all_queues,
    classes_fitting,
    parse_tier,
    queue_name,
    queues_for_gpu,
    rank,
    route,
    size_class_for,
    tier_of_queue,
)

pytestmark = pytest.mark.unit

# The contract, written out independently of the module's own constants.
TIER_ORDER = ["critical", "high", "medium", "low", "batch"]
CLASS_BOUNDS = [
    ("8g", 7_680),
    ("16g", 15_360),
    ("24g", 22_528),
    ("40g", 39_936),
    ("80g", 80_896),
    ("141g", 139_264),
]


def _by_name(name: str) -> SizeClass:
    return next(sc for sc in SIZE_CLASSES if sc.name == name)


# --- parse_tier -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("critical", Tier.CRITICAL),
        ("CRITICAL", Tier.CRITICAL),
        ("Critical", Tier.CRITICAL),
        ("high", Tier.HIGH),
        (" High ", Tier.HIGH),
        ("\tmedium\n", Tier.MEDIUM),
        ("LoW", Tier.LOW),
        ("batch", Tier.BATCH),
        ("  BATCH", Tier.BATCH),
    ],
)
def test_parse_tier_accepts_any_case_and_surrounding_whitespace(text: str, expected: Tier) -> None:
    assert parse_tier(text) is expected


@pytest.mark.parametrize("text", ["urgent", "", "   ", "crit", "critical!", "hi gh", "0", "normal"])
def test_parse_tier_rejects_unknown_names_listing_the_valid_ones(text: str) -> None:
    with pytest.raises(ValueError, match="unknown tier") as info:
        parse_tier(text)
    message = str(info.value)
    assert repr(text) in message
    for name in TIER_ORDER:
        assert name in message
    assert "critical, high, medium, low, batch" in message
    assert "\n" not in message


def test_tier_values_are_lowercase_strings_in_priority_order() -> None:
    assert [t.value for t in TIERS] == TIER_ORDER
    assert [str(t) for t in TIERS] == TIER_ORDER


# --- rank ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tier", "expected"), [(Tier(name), i) for i, name in enumerate(TIER_ORDER)])
def test_rank_is_zero_for_most_urgent(tier: Tier, expected: int) -> None:
    assert rank(tier) == expected


@pytest.mark.parametrize(
    ("higher", "lower"),
    [
        (Tier.CRITICAL, Tier.HIGH),
        (Tier.HIGH, Tier.MEDIUM),
        (Tier.MEDIUM, Tier.LOW),
        (Tier.LOW, Tier.BATCH),
        (Tier.CRITICAL, Tier.BATCH),
    ],
)
def test_rank_lower_wins(higher: Tier, lower: Tier) -> None:
    assert rank(higher) < rank(lower)


def test_sorting_by_rank_gives_priority_order() -> None:
    shuffled = [Tier.LOW, Tier.CRITICAL, Tier.BATCH, Tier.MEDIUM, Tier.HIGH]
    assert [t.value for t in sorted(shuffled, key=rank)] == TIER_ORDER


# --- size classes and queue names ---------------------------------------------------------------------------------


def test_size_classes_table_is_pinned_and_ascending() -> None:
    assert [(sc.name, sc.bound_mib) for sc in SIZE_CLASSES] == CLASS_BOUNDS
    bounds = [sc.bound_mib for sc in SIZE_CLASSES]
    assert bounds == sorted(bounds)
    assert len(set(bounds)) == len(bounds)


@pytest.mark.parametrize(
    ("tier", "size_class", "expected"),
    [
        (Tier.CRITICAL, "8g", "yoloq.critical.8g"),
        (Tier.HIGH, "16g", "yoloq.high.16g"),
        (Tier.MEDIUM, "24g", "yoloq.medium.24g"),
        (Tier.LOW, "80g", "yoloq.low.80g"),
        (Tier.BATCH, "141g", "yoloq.batch.141g"),
    ],
)
def test_queue_name(tier: Tier, size_class: str, expected: str) -> None:
    assert QUEUE_PREFIX == "yoloq"
    assert queue_name(tier, _by_name(size_class)) == expected


# --- size_class_for -------------------------------------------------------------------------------------------------


def _boundary_rows() -> list[tuple[int, str]]:
    rows = [(1, "8g")]
    for (name, bound), nxt in zip(CLASS_BOUNDS, [*CLASS_BOUNDS[1:], None], strict=True):
        rows.append((bound - 1, name))
        rows.append((bound, name))  # exactly at the bound: still this class
        if nxt is not None:
            rows.append((bound + 1, nxt[0]))  # one MiB over: the next class
    return rows


@pytest.mark.parametrize(("need", "expected"), _boundary_rows())
def test_size_class_for_boundaries(need: int, expected: str) -> None:
    assert size_class_for(need).name == expected


@pytest.mark.parametrize(("need", "expected"), [(2_727, "8g"), (12_000, "16g"), (17_642, "24g"), (44_572, "80g")])
def test_size_class_for_typical_jobs(need: int, expected: str) -> None:
    assert size_class_for(need).name == expected


@pytest.mark.parametrize("need", [0, -1, -16_384])
def test_size_class_for_rejects_non_positive_need(need: int) -> None:
    with pytest.raises(ValueError, match="positive") as info:
        size_class_for(need)
    assert not isinstance(info.value, NoSizeClass)


@pytest.mark.parametrize("need", [139_265, 200_000, 10**9])
def test_size_class_for_above_largest_class(need: int) -> None:
    with pytest.raises(NoSizeClass) as info:
        size_class_for(need)
    assert isinstance(info.value, ValueError)
    assert str(need) in str(info.value)
    assert "141g" in str(info.value)


# --- route ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "need", "queue", "size_class"),
    [
        (Tier.LOW, 5_000, "yoloq.low.8g", "8g"),
        (Tier.CRITICAL, 7_680, "yoloq.critical.8g", "8g"),
        (Tier.CRITICAL, 7_681, "yoloq.critical.16g", "16g"),
        (Tier.HIGH, 30_000, "yoloq.high.40g", "40g"),
        (Tier.BATCH, 139_264, "yoloq.batch.141g", "141g"),
    ],
)
def test_route(tier: Tier, need: int, queue: str, size_class: str) -> None:
    assert route(tier, need) == Route(tier=tier, size_class=_by_name(size_class), queue=queue)


def test_route_propagates_no_size_class() -> None:
    with pytest.raises(NoSizeClass):
        route(Tier.CRITICAL, 139_265)


def test_route_is_frozen() -> None:
    where = route(Tier.HIGH, 1_000)
    with pytest.raises(AttributeError):
        where.queue = "yoloq.critical.8g"  # type: ignore[misc]


# --- classes_fitting ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("gpu_mib", "expected"),
    [
        (0, ()),
        (4_096, ()),
        (7_679, ()),
        (7_680, ("8g",)),
        (8_192, ("8g",)),
        (15_359, ("8g",)),
        (15_360, ("16g", "8g")),  # a real T4 as NVML reports it
        (16_384, ("16g", "8g")),  # a simulated 16 GB T4: fits 16g, not 24g
        (22_527, ("16g", "8g")),
        (24_576, ("24g", "16g", "8g")),  # L4 / A10 / RTX 4090
        (40_960, ("40g", "24g", "16g", "8g")),  # A100 40 GB
        (81_559, ("80g", "40g", "24g", "16g", "8g")),  # H100 80 GB as NVML reports it
        (81_920, ("80g", "40g", "24g", "16g", "8g")),
        (143_771, ("141g", "80g", "40g", "24g", "16g", "8g")),  # H200
    ],
)
def test_classes_fitting_largest_first(gpu_mib: int, expected: tuple[str, ...]) -> None:
    assert tuple(sc.name for sc in classes_fitting(gpu_mib)) == expected


def test_t4_does_not_fit_24g() -> None:
    names = {sc.name for sc in classes_fitting(16_384)}
    assert "24g" not in names
    assert {"16g", "8g"} <= names


# --- queues_for_gpu -------------------------------------------------------------------------------------------------


def _expected_queues(classes: list[str]) -> tuple[str, ...]:
    return tuple(f"yoloq.{tier}.{sc}" for tier in TIER_ORDER for sc in classes)


@pytest.mark.parametrize(
    ("gpu_mib", "classes"),
    [
        (16_384, ["16g", "8g"]),
        (15_360, ["16g", "8g"]),
        (40_960, ["40g", "24g", "16g", "8g"]),
        (81_920, ["80g", "40g", "24g", "16g", "8g"]),
    ],
)
def test_queues_for_gpu_strict_order(gpu_mib: int, classes: list[str]) -> None:
    assert queues_for_gpu(gpu_mib) == _expected_queues(classes)


def test_queues_for_t4_written_out() -> None:
    assert queues_for_gpu(16_384) == (
        "yoloq.critical.16g",
        "yoloq.critical.8g",
        "yoloq.high.16g",
        "yoloq.high.8g",
        "yoloq.medium.16g",
        "yoloq.medium.8g",
        "yoloq.low.16g",
        "yoloq.low.8g",
        "yoloq.batch.16g",
        "yoloq.batch.8g",
    )


def test_queues_for_gpu_higher_tier_always_before_lower_tier() -> None:
    queues = queues_for_gpu(40_960)
    tiers = [rank(tier_of_queue(q)) for q in queues]
    assert tiers == sorted(tiers)
    # a small critical job comes before a big high job
    assert queues.index("yoloq.critical.8g") < queues.index("yoloq.high.40g")


def test_queues_for_gpu_too_small_for_any_class() -> None:
    assert queues_for_gpu(4_096) == ()


@pytest.mark.parametrize("need", [1, 7_680, 7_681, 15_360, 16_000, 39_936])
def test_a_routed_job_is_consumed_by_every_gpu_that_fits_it(need: int) -> None:
    queue = route(Tier.MEDIUM, need).queue
    for gpu_mib in (15_360, 16_384, 24_576, 40_960, 81_920):
        # a GPU consumes the queue iff the job's whole class bound fits in it
        assert (queue in queues_for_gpu(gpu_mib)) == (size_class_for(need).bound_mib <= gpu_mib)
    assert queue in queues_for_gpu(139_264)
    assert queue not in queues_for_gpu(7_679)


# --- all_queues / tier_of_queue -------------------------------------------------------------------------------------


def test_all_queues() -> None:
    names_desc = [name for name, _ in reversed(CLASS_BOUNDS)]
    queues = all_queues()
    assert queues == _expected_queues(names_desc)
    assert len(queues) == len(TIER_ORDER) * len(CLASS_BOUNDS) == 30
    assert len(set(queues)) == len(queues)
    assert queues[0] == "yoloq.critical.141g"
    assert queues[-1] == "yoloq.batch.8g"
    assert set(queues_for_gpu(16_384)) < set(queues)


@pytest.mark.parametrize("queue", all_queues())
def test_tier_of_queue_round_trip(queue: str) -> None:
    tier = tier_of_queue(queue)
    assert queue.startswith(f"yoloq.{tier.value}.")


@pytest.mark.parametrize(
    ("queue", "expected"),
    [("yoloq.critical.8g", Tier.CRITICAL), ("yoloq.batch.141g", Tier.BATCH), ("yoloq.low.16g", Tier.LOW)],
)
def test_tier_of_queue(queue: str, expected: Tier) -> None:
    assert tier_of_queue(queue) is expected


@pytest.mark.parametrize(
    "queue", ["celery.high.8g", "other.high.8g", "celery", "yoloq", "yoloq.urgent.8g", "YOLOQ.high.8g", ""]
)
def test_tier_of_queue_rejects_non_yoloq_queues(queue: str) -> None:
    with pytest.raises(ValueError):
        tier_of_queue(queue)


def test_tier_of_queue_names_the_foreign_queue() -> None:
    with pytest.raises(ValueError, match=r"not a yoloq queue: 'celery\.high\.8g'"):
        tier_of_queue("celery.high.8g")


def test_a_gang_waits_in_its_tiers_gang_queue_which_no_gpu_consumes() -> None:
    from routing.tiers import device_queue, gang_queue, gang_queues, queues_for_gpu, route

    assert route(Tier.HIGH, 20 * 1024, gpus=2).queue == "yoloq.high.gang" == gang_queue(Tier.HIGH)
    assert route(Tier.HIGH, 20 * 1024, gpus=1).queue == "yoloq.high.24g"
    assert len(gang_queues()) == len(TIERS) and not set(gang_queues()) & set(queues_for_gpu(200_000))
    assert not set(gang_queues()) & set(all_queues())
    assert tier_of_queue(gang_queue(Tier.LOW)) is Tier.LOW
    assert device_queue("h1", 3) == "yoloq-device.h1.3"
    with pytest.raises(ValueError, match="not a yoloq queue"):
        tier_of_queue(device_queue("h1", 3))
