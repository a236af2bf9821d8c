"""Seeded synthetic workflows and executions, generated on demand from (seed, workflow, index).

Nothing is stored per row: row ``k`` of a workflow (0 = oldest) is a pure function of the
seed, the workflow and ``k``, so a sandbox can serve a million rows without holding them.
Imports only the standard library.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)
MEAN_GAP_S = 120
BULK_BLOCK = 50
BULK_SIZE = 20
BULK_EVERY = 4
_BULK_PREFIX = "b0000000-0000-4000-8000-"

STATUS_WEIGHTS = (
    ("completed", 72),
    ("failed", 12),
    ("cancelled", 5),
    ("running", 8),
    ("queued", 3),
)
WORKFLOW_NAMES = (
    "Text to Image Generator",
    "Video Upscaler",
    "Product Photo Studio",
    "Voice Over Pipeline",
    "Avatar Animator",
    "Caption Writer",
)


@dataclass(frozen=True)
class Workflow:
    """A sandbox workflow: a UUID (``flow_id``), a slug and a display name."""

    number: int
    id: str
    slug: str
    name: str
    step_results_as_list: bool


def make_workflow(seed: int, number: int) -> Workflow:
    rng = random.Random(f"workflow:{seed}:{number}")
    name = WORKFLOW_NAMES[number % len(WORKFLOW_NAMES)]
    if number >= len(WORKFLOW_NAMES):
        name = f"{name} {number // len(WORKFLOW_NAMES) + 1}"
    slug = name.lower().replace(" ", "-")
    return Workflow(
        number=number,
        id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        slug=slug,
        name=name,
        step_results_as_list=number % 2 == 1,
    )


WORKFLOW_CATEGORIES = ("image", "video", "audio", "text")
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


def workflow_row(seed: int, workflow: Workflow, *, executions: int, status: str) -> dict[str, Any]:
    """The list-workflows row of ``workflow`` (its UUID is ``workflow_id`` there)."""
    rng = random.Random(f"workflow-row:{seed}:{workflow.number}")
    created = EPOCH + timedelta(days=workflow.number) - timedelta(hours=1)
    category = WORKFLOW_CATEGORIES[workflow.number % len(WORKFLOW_CATEGORIES)]
    return {
        "workflow_id": workflow.id,
        "slug": workflow.slug,
        "name": workflow.name,
        "categories": [category],
        "tags": [category, f"team-{rng.randrange(1, 4)}"],
        "status": status,
        "trigger_count": executions,
        "clone_count": rng.randrange(0, 20),
        "is_public": rng.random() < 0.3,
        "production": rng.random() < 0.5,
        "node_based": workflow.number % 2 == 0,
        "created_at": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated_at": (created + timedelta(minutes=rng.randrange(1, 600))).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
    }


def bulk_id_for(workflow: Workflow, index: int) -> str | None:
    """The bulk trigger row ``index`` belongs to, if any (fixed blocks of the history)."""
    block, position = divmod(index, BULK_BLOCK)
    if block % BULK_EVERY != 1 or position >= BULK_SIZE:
        return None
    return f"{_BULK_PREFIX}{(workflow.number << 32) | block:012x}"


def bulk_indices(workflow: Workflow, bulk_id: str, count: int) -> list[int]:
    """Indices (oldest first) of the rows of ``workflow`` started by ``bulk_id``."""
    bulk_id = bulk_id.lower()
    if not bulk_id.startswith(_BULK_PREFIX):
        return []
    packed = int(bulk_id[len(_BULK_PREFIX) :], 16)
    if packed >> 32 != workflow.number:
        return []
    start = (packed & 0xFFFFFFFF) * BULK_BLOCK
    return [k for k in range(start, start + BULK_SIZE) if k < count]


def _row_seed(seed: int, workflow: Workflow, index: int) -> int:
    """A well-mixed 64-bit seed per row (cheaper than seeding from a string)."""
    return _splitmix64(_splitmix64(_splitmix64(seed) ^ workflow.number) ^ index)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def created_at(seed: int, workflow: Workflow, index: int) -> datetime:
    """Strictly increasing with ``index``: newest first means highest index first."""
    jitter = (_row_seed(seed, workflow, index) * 2_654_435_761 % 2**32) / 2**32
    seconds = index * MEAN_GAP_S + jitter * (MEAN_GAP_S - 1)
    return EPOCH + timedelta(days=workflow.number, seconds=seconds)


def make_execution(
    seed: int,
    workflow: Workflow,
    index: int,
    *,
    timestamp_variety: bool = True,
    status: str | None = None,
) -> dict[str, Any]:
    """Row ``index`` of ``workflow``: the same dict for the same arguments, always."""
    rng = random.Random(_row_seed(seed, workflow, index))
    picked = _pick_status(rng)  # drawn even when overridden, so the rest of the row is stable
    status = status or picked
    fmt = _timestamp_formatter(rng, timestamp_variety)
    created = created_at(seed, workflow, index)
    row: dict[str, Any] = {
        "execution_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "flow_id": workflow.id,
        "flow_name": workflow.name,
        "version_id": f"v{1 + index * 3 // 1000 % 4}",
        "status": status,
        "created_at": fmt(created),
    }
    updated = created
    if status != "queued":
        started = created + timedelta(seconds=rng.uniform(0.1, 5))
        row["started_at"] = fmt(started)
        updated = started
        if status in ("completed", "failed", "cancelled"):
            ended = started + timedelta(seconds=rng.lognormvariate(3.5, 1.0))
            row["ended_at"] = fmt(ended)
            updated = ended
        elif rng.random() < 0.5:
            row["ended_at"] = None
    row["updated_at"] = fmt(updated)
    row["api_key"] = f"user-{rng.randrange(100, 1000)}"
    row["inputs"] = {"prompt": f"a picture of thing {index}", "seed": rng.randrange(10**6)}
    row["step_results"] = _step_results(rng, workflow, status)
    if status == "completed":
        row["output"] = f"https://cdn.eachlabs.example/{row['execution_id']}.png"
        if rng.random() < 0.5:
            row["output_json"] = {"width": 1024, "height": 1024, "nsfw": False}
    row["cost"] = (
        round(rng.uniform(0.001, 0.5), 4)
        if rng.random() < 0.5
        else {"amount": round(rng.uniform(0.001, 0.5), 4), "currency": "USD"}
    )
    if rng.random() < 0.01:
        row["deleted_at"] = fmt(updated + timedelta(days=1))
    bulk = bulk_id_for(workflow, index)
    if bulk is not None:
        row["bulk_id"] = bulk
    return row


def _pick_status(rng: random.Random) -> str:
    roll = rng.randrange(sum(w for _, w in STATUS_WEIGHTS))
    for status, weight in STATUS_WEIGHTS:
        if roll < weight:
            return status
        roll -= weight
    raise AssertionError("unreachable")


def _step_results(rng: random.Random, workflow: Workflow, status: str) -> Any:
    steps = [{"step": f"step-{i + 1}", "status": "completed"} for i in range(rng.randrange(1, 4))]
    if status == "failed":
        steps[-1]["status"] = "failed"
    if workflow.step_results_as_list:
        return steps
    return {s["step"]: {"status": s["status"]} for s in steps}


def _timestamp_formatter(rng: random.Random, variety: bool) -> Any:
    """One wire format per row: the forms a real service mixes (see eachlabs-api.md)."""
    choice = rng.randrange(100) if variety else 0
    if choice < 55:
        return lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")
    if choice < 65:
        return lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    if choice < 73:
        return lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if choice < 78:
        return lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "789Z"
    if choice < 84:
        return lambda t: t.astimezone(timezone(timedelta(hours=2))).isoformat()
    if choice < 89:
        return lambda t: t.astimezone(timezone(-timedelta(hours=5, minutes=30))).strftime(
            "%Y-%m-%dT%H:%M:%S.%f%z"
        )
    if choice < 94:
        return lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return lambda t: t.strftime("%Y-%m-%d %H:%M:%SZ")
