"""Packed trials: grid points that differ only in optimiser hyperparameters, trained as one.

A study with ``pack: K`` trains up to K grid points (the *members* of a pack) in one Ray
trial: K copies of the model in one batched forward/backward pass (``trainables.batched``),
each member with its own learning rate, weight decay, schedule, seed. Everything a user
sees stays per member: the launch expands a pack's reports into one logical trial per
grid point (``study.packs``), so the store of a packed study has the same rows and
columns as the unpacked one.

This module is torch- and Ray-free (the spec validation and the driver import it):

- ``PackedTrainable`` / ``register_packed``: which trainables can run packed, their
  packed entry point ``run(configs, session)``, and the config keys that may differ
  between the members of one pack (``axes``); all other keys must be equal.
- the config of a packed Ray trial (``{"pack": [{"index": i, "config": {...}}, ...]}``,
  ``index`` the number of the member's grid point in the study, the counter of its trial id)
  and the member trial ids;
- the sessions a packed trainable reports through: one report per report point holding
  each reporting member's metrics and, when it ended, its status (``BarePackSession``
  in plain Python, ``RayPackSession`` in a Ray trial, whose result carries the members'
  reports as JSON under ``pack_members``); ``OneMemberSession``: an unpacked trial's session as
  the session of a pack of one, for the trainables' one training loop (``trainables.lm.train``).
"""

from __future__ import annotations

import copy
import ctypes
import ctypes.util
import dataclasses
import functools
import json
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from trainables.registry import ConfigError, Registry, build_config, load_object
from trainables.session import BareSession, OutputSink, RaySession, SharedLog, captured_output

# The one key of a packed Ray trial's config: its members, in grid order.
PACK_KEY = "pack"
# The key of a packed Ray trial's result: JSON {position: {"metrics", "iteration", "status"}}.
MEMBERS_KEY = "pack_members"


@dataclass(frozen=True)
class PackedTrainable:
    """A trainable that can train several configs at once.

    Args:
        name: the registered trainable it packs (``lm``, ``vision``).
        run: ``"module:function"`` of ``run(configs: list[dict], session: PackSession)``.
        axes: the config keys that may differ between the members of one pack.
        refused: ``{key: {value: reason}}``: config values that cannot be packed.
    """

    name: str
    run: str
    axes: tuple[str, ...]
    refused: Mapping[str, Mapping[Any, str]] = field(default_factory=dict)

    def run_function(self) -> Callable[[list[dict], "PackSession"], None]:
        return load_object(self.run)


PACKED = Registry("pack", "trainable {name!r} cannot run packed", "packable")


def register_packed(info: PackedTrainable) -> PackedTrainable:
    return PACKED.add(info)


def get_packed(name: str) -> PackedTrainable:
    return PACKED.find(name)


def pack_problem(name: str, config_class: type, config: Mapping[str, Any], axes: Mapping[str, tuple]) -> ConfigError | None:
    """Why a study of trainable ``name`` cannot be packed, or None (spec validation)."""
    try:
        info = get_packed(name)
    except ConfigError as exc:
        return exc
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    for key, values in info.refused.items():
        used = axes.get(key, (config.get(key, defaults.get(key)),))
        for value in used:
            if value in values:
                where = f"axes.{key}" if key in axes else f"config.{key}"
                return ConfigError(where, f"{value!r} cannot run packed: {values[value]}; run this study without pack")
    return None


def split_configs(name: str, configs: list[dict]) -> tuple[dict, list[dict]]:
    """(the config every member shares, each member's own values of the packable axes).

    Raises ``ValueError`` when members differ in a key that may not vary inside a pack
    (the launch groups grid points so that this cannot happen).
    """
    info = get_packed(name)
    if not configs:
        raise ValueError("a pack needs at least one member")
    keys = set().union(*configs)
    shared = {}
    for key in sorted(keys - set(info.axes)):
        values = [c.get(key) for c in configs]
        if any(v != values[0] for v in values):
            raise ValueError(f"members of one pack differ in {key!r} ({values}); only {', '.join(info.axes)} may")
        shared[key] = values[0]
    return shared, [{k: c[k] for k in info.axes if k in c} for c in configs]


def member_configs(name: str, config_class: type, configs: list[dict]) -> list:
    """Each member's config built (each field and the checks across fields), once the members
    are known to differ only in packable axes and to share nothing that cannot run packed."""
    split_configs(name, configs)
    cfgs = [build_config(config_class, c) for c in configs]
    for key, refused in get_packed(name).refused.items():
        value = getattr(cfgs[0], key)
        if value in refused:
            raise ValueError(f"{key}={value!r} cannot run packed: {refused[value]}")
    return cfgs


# ---------------------------------------------------------------- the config of a packed Ray trial


def pack_config(members: list[tuple[int, dict]]) -> list[dict]:
    """The value of ``PACK_KEY`` for members ``[(grid index, full config), ...]``."""
    return [{"index": index, "config": dict(config)} for index, config in members]


def pack_members(config: Mapping[str, Any]) -> list[tuple[int, dict]]:
    """``[(grid index, full config), ...]`` of a packed Ray trial's config."""
    return [(int(m["index"]), dict(m["config"])) for m in config[PACK_KEY]]


def member_trial_id(pack_trial_id: str, index: int) -> str:
    """A member's trial id: the pack's Ray Tune id with the member's grid index as its counter
    (``a1b2c_00003`` → ``a1b2c_00011`` for grid point 11), the form an unpacked study's ids have."""
    prefix = pack_trial_id.rsplit("_", 1)[0]
    return f"{prefix}_{index:05d}"


# ---------------------------------------------------------------- sessions


class PackSession:
    """What a packed trainable reports through (the packed counterpart of ``trainables.session``).

    ``report(metrics, statuses=..., state=...)``: ``metrics`` maps a member's position in
    the pack to the flat dict it reports at this point; ``statuses`` gives ``finished`` or
    ``diverged`` for the members whose last report this is. Each member counts its own
    reports (its ``training_iteration`` in the store); the counts travel with checkpoints.
    """

    def __init__(self, size: int, restore: dict | None = None):
        self.size = size
        self.member_reports = [0] * size
        self._restore = restore

    def report(self, metrics: Mapping[int, dict], *, statuses: Mapping[int, str] | None = None,
               state: Callable[[], dict] | None = None) -> None:
        statuses = dict(statuses or {})
        unknown = set(statuses) - set(metrics)
        if unknown:
            raise ValueError(f"statuses for members that do not report: {sorted(unknown)}")
        members = {}
        for position, values in metrics.items():
            self.member_reports[position] += 1
            members[position] = {"metrics": dict(values), "iteration": self.member_reports[position],
                                 "status": statuses.get(position)}
        wrapped = (lambda: {"trainable": state(), "member_reports": list(self.member_reports)}) if state else None
        self._send(members, wrapped)

    def restored_state(self) -> dict | None:
        state = self._restored()
        if state is None:
            return None
        self.member_reports = list(state["member_reports"])
        return state["trainable"]

    def should_checkpoint(self, report_index: int, every: int) -> bool:
        return every > 0 and report_index % every == 0

    # subclasses
    def _send(self, members: dict[int, dict], state: Callable[[], dict] | None) -> None:
        raise NotImplementedError

    def _restored(self) -> dict | None:
        return self._restore


class BarePackSession(PackSession):
    """Plain Python: ``members[i]`` is a ``BareSession`` holding member i's reports and status,
    exactly what an unpacked run of that member would have collected."""

    def __init__(self, size: int, restore: dict | None = None):
        super().__init__(size, restore)
        self.members = [BareSession() for _ in range(size)]
        self.states: list[dict] = []

    def _send(self, members, state):
        for position, report in members.items():
            self.members[position].report(report["metrics"], status=report["status"])
        if state is not None:
            self.states.append(copy.deepcopy(state()))


class RayPackSession(PackSession):
    """One ``ray.tune.report`` per report point; the members' reports as JSON (NaN allowed) under
    ``MEMBERS_KEY``, so that Ray Tune keeps one opaque value instead of K x metrics columns."""

    def __init__(self, size: int):
        super().__init__(size)
        self._ray = RaySession()

    def _send(self, members, state):
        self._ray.report({MEMBERS_KEY: json.dumps({str(k): v for k, v in members.items()})}, state=state)

    def _restored(self):
        return self._ray.restored_state()


class OneMemberSession:
    """An unpacked trial's ``Session`` as the ``PackSession`` of a pack of one, for a trainable whose
    one loop trains K members: member 0's report and status go to ``session`` as they are.

    Checkpoints keep the unpacked trial's own layout (the one it had before the loop was shared,
    so that saved states still resume). ``layout``: ``{key in the loop's state: (key in the
    unpacked state, one(value) → the member's value, many(value) → the loop's value)}``; the
    loop's ``active`` is left out (a run of one checkpoints only while its member is active)."""

    def __init__(self, session, *, layout: Mapping[str, tuple[str, Callable[[Any], Any], Callable[[Any], Any]]]):
        self.session, self.layout = session, dict(layout)

    def report(self, metrics: Mapping[int, dict], *, statuses: Mapping[int, str] | None = None,
               state: Callable[[], dict] | None = None) -> None:
        (values,) = metrics.values()
        self.session.report(values, status=(statuses or {}).get(0),
                            state=(lambda: self._unpacked(state())) if state else None)

    def restored_state(self) -> dict | None:
        state = self.session.restored_state()
        return None if state is None else self._packed(state)

    def should_checkpoint(self, report_index: int, every: int) -> bool:
        return self.session.should_checkpoint(report_index, every)

    def _unpacked(self, state: dict) -> dict:
        out = {}
        for key, value in state.items():
            if key in self.layout:
                name, one, _ = self.layout[key]
                out[name] = one(value)
            elif key != "active":
                out[key] = value
        return out

    def _packed(self, state: dict) -> dict:
        back = {name: (key, many) for key, (name, _, many) in self.layout.items()}
        out = {"active": [True]}
        for name, value in state.items():
            key, many = back.get(name, (name, None))
            out[key] = many(value) if many is not None else value
        return out


def decode_members(result: Mapping[str, Any]) -> dict[int, dict]:
    """The members' reports in a packed trial's Ray result: {position: {"metrics", "iteration", "status"}}."""
    raw = result.get(MEMBERS_KEY)
    if not raw:
        return {}
    return {int(k): v for k, v in json.loads(raw).items()}


# ---------------------------------------------------------------- memory


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache
def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the OS (Linux only;
    once per process; returns whether it applied). A pack's activations are K times a trial's:
    blocks of megabytes, which glibc by default maps afresh for every allocation and unmaps when
    freed, so that every step pays for page faults and the zeroing of new pages (measured on one
    thread: the 1-D CNN at K = 16, about 9,000 minor faults per step, 20-40 % of the step; for
    gpt-tiny at K = 16, ``torch.empty(16, 1024, 512).fill_(1)`` (32 MiB) took 43 ms, 3.3 ms
    after this). Every block now comes from the heap (no mmap), which is no longer trimmed: the
    process keeps its peak memory."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


# ---------------------------------------------------------------- the Ray Tune entry point


def packed_ray_trainable(name: str, skip: Callable[[str, dict], Any] | None = None,
                         output: OutputSink | None = None) -> Callable[[dict], None]:
    """The Ray Tune function trainable of packed trainable ``name`` (cf. ``trainables.ray_entry``).

    ``skip(trial_id, config)``: a resumed study's ended trials; a pack whose members have
    all ended returns at once. Members that ended while others did not train again with
    the pack (their repeated reports are not stored). ``output``: what the pack prints is
    kept as each member's log (``trainables.session.SharedLog``).
    """
    info = get_packed(name)

    def trainable(config: dict) -> None:
        members = pack_members(config)
        if skip is not None:
            from ray import tune

            pack_id = tune.get_context().get_trial_id()
            if all(skip(member_trial_id(pack_id, index), member) for index, member in members):
                return
        import torch

        from trainables.ray_entry import _trial_cpus

        if not members[0][1].get("threads"):
            torch.set_num_threads(_trial_cpus())
        keep_freed_memory()
        run = info.run_function()
        if output is None:
            run([member for _, member in members], RayPackSession(len(members)))
            return
        from ray import tune

        pack_id = tune.get_context().get_trial_id()
        shared = SharedLog(output, [member_trial_id(pack_id, index) for index, _ in members])
        with captured_output(shared, pack_id):
            run([member for _, member in members], RayPackSession(len(members)))

    trainable.__name__ = trainable.__qualname__ = f"{name.replace('-', '_')}_packed"
    return trainable
