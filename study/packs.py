"""Packed studies (``pack: K``): grid points grouped into packs, one Ray trial per pack, and the
pack's events turned back into one logical trial per grid point.

Grouping rule (``pack_groups``): grid points whose trials agree on every config key the trainable cannot
vary inside a pack (its packable axes are declared in ``trainables/__init__.py``: for the
LM lr, weight_decay, schedule parameters, seed, Adam's betas; for vision lr, weight_decay,
momentum, schedule parameters, seed, fine-tune LR and WD) form a group; each group is cut,
in grid order, into ceil(n / K) packs of sizes as equal as possible (18 points at K = 16
make packs of 9 and 9, not 16 and 2, so that the packs take equally long).

Each member is its own trial everywhere a user looks: ``PackedTrials`` wraps the driver's
callbacks (the store writer, the progress line) and calls them as if every member were a
Ray Tune trial of its own. Its trial id is the pack's Ray Tune id with, as the counter, the
one Tune would give its grid point in the unpacked study (``tune_indices``,
``member_trial_id``), its config its own grid point, its
``training_iteration`` its own report count; it starts with the pack, ends when its last
report says ``finished``/``diverged`` (a diverged member ends while the others go on),
and otherwise shares the pack's fate (stopped, failed, cut off by an interruption).

Resources (``pack_resources``): a pack asks for what its members would have held, the spec's
per-trial ``resources`` times its number of members, so that packing never leaves CPUs idle
that the unpacked study would have used (its trial runs that many torch threads,
``trainables.packing.packed_ray_trainable``). Two caps keep it schedulable: GPUs add up to
at most one GPU's worth (a pack trains on one device), and CPUs to at most the most any node
of the cluster has (with the GPUs the pack asks for); a cluster that shows no such node yet
(an autoscaler that has not started its workers) gets one member's resources. The spec's
``pack_resources: {cpu, gpu}`` replaces all of this with what each pack holds.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from ray.tune import Callback

from study.spec import Resources, StudySpec
from trainables.packing import (MEMBERS_KEY, PACK_KEY, decode_members, get_packed, member_trial_id, pack_config,
                                pack_members)
from trainables.session import STATUS_KEY

# Keys of a packed trial's Ray result that every member's result carries too (provenance, time).
_SHARED_KEYS = ("time_total_s", "timestamp", "pid", "hostname", "node_ip", "node_id", "gpu_ids", "cpus", "gpus",
                "date")


def pack_groups(spec: StudySpec) -> list[list[int]]:
    """Grid indices of every pack, in grid order (see the module docstring for the rule)."""
    packable = set(get_packed(spec.trainable).axes)
    groups: dict[tuple, list[int]] = {}
    for index, config in enumerate(spec.trial_configs()):  # cases may set non-packable keys per point
        key = tuple((key, repr(value)) for key, value in sorted(config.items()) if key not in packable)
        groups.setdefault(key, []).append(index)
    packs = []
    for indices in groups.values():
        count = math.ceil(len(indices) / spec.pack)
        base, extra = divmod(len(indices), count)
        start = 0
        for i in range(count):
            size = base + (i < extra)
            packs.append(indices[start:start + size])
            start += size
    return sorted(packs, key=lambda pack: pack[0])


def tune_indices(spec: StudySpec) -> list[int]:
    """For each grid point (in ``spec.grid()`` order), the counter Ray Tune gives it in an unpacked
    study (Tune's own order of a grid: its variant generator's). Members are numbered by it, so a
    packed study's trial ids are the ones the unpacked study would have (up to Tune's prefix)."""
    if spec.uneven:  # its points go to Tune one by one, in grid order (study.search.tune.uneven_points)
        return list(range(spec.num_points))
    from ray import tune
    from ray.tune.search.variant_generator import generate_variants

    space = {**spec.config, **{axis: tune.grid_search(list(values)) for axis, values in spec.axes.items()}}
    order = {}
    for counter, (_, variant) in enumerate(generate_variants({"config": space})):
        order[tuple(repr(variant["config"][axis]) for axis in spec.axes)] = counter
    return [order[tuple(repr(point[axis]) for axis in spec.axes)] for point in spec.grid()]


def pack_param_space(spec: StudySpec) -> dict:
    """Ray Tune's param space of a packed study: a grid over the packs' member lists."""
    from ray import tune

    configs, indices = spec.trial_configs(), tune_indices(spec)
    packs = [pack_config([(indices[i], configs[i]) for i in pack]) for pack in pack_groups(spec)]
    return {PACK_KEY: tune.grid_search(packs)}


@dataclass(frozen=True)
class Node:
    """What one node of a cluster offers: its CPUs and GPUs."""

    cpu: float
    gpu: float = 0.0


def ray_nodes() -> list[Node]:
    """The alive nodes of the Ray cluster this driver is connected to (``ray.nodes()``)."""
    import ray

    return [Node(cpu=float(n["Resources"].get("CPU", 0.0)), gpu=float(n["Resources"].get("GPU", 0.0)))
            for n in ray.nodes() if n.get("Alive")]


def this_machine(spec: StudySpec) -> list[Node]:
    """The node a local launch starts (``study.launch.ensure_ray``: every CPU of this machine, and
    its GPUs, counted only when the spec asks for some)."""
    gpus = 0
    if spec.resources.gpu or (spec.pack_resources is not None and spec.pack_resources.gpu):
        import torch

        gpus = torch.cuda.device_count()
    return [Node(cpu=float(os.cpu_count() or 1), gpu=float(gpus))]


def pack_resources(per_trial: Resources, members: int, nodes: list[Node],
                   explicit: Resources | None = None) -> dict[str, float]:
    """``{"cpu", "gpu"}`` of one pack of ``members`` members on a cluster of ``nodes`` (the rule of
    the module docstring); ``explicit``: the spec's ``pack_resources``, taken as it is."""
    if explicit is not None:
        return {"cpu": explicit.cpu, "gpu": explicit.gpu}
    gpu = per_trial.gpu * members
    if per_trial.gpu:
        gpu = min(gpu, max(per_trial.gpu, 1.0))
    room = max((node.cpu for node in nodes if node.gpu >= gpu), default=0.0)
    cpu = max(per_trial.cpu, min(per_trial.cpu * members, room))
    return {"cpu": round(cpu, 4), "gpu": round(gpu, 4)}  # Ray counts resources in units of 1e-4


class PackResources:
    """``tune.with_resources``' callable: the placement of a packed trial, from its member count."""

    def __init__(self, spec: StudySpec, nodes: list[Node]):
        self.per_trial, self.explicit, self.nodes = spec.resources, spec.pack_resources, list(nodes)

    def resources(self, config: dict) -> dict[str, float]:
        return pack_resources(self.per_trial, len(config[PACK_KEY]), self.nodes, self.explicit)

    def __call__(self, config: dict):
        from ray.tune import PlacementGroupFactory

        wanted = self.resources(config)
        return PlacementGroupFactory([{key.upper(): value for key, value in wanted.items() if value}])


def describe_resources(spec: StudySpec, groups: list[list[int]], nodes: list[Node], where: str) -> list[str]:
    """What each pack holds, a line per pack size (the dry run); ``where`` names ``nodes``."""
    lines = []
    each = spec.resources
    for size in sorted({len(g) for g in groups}, reverse=True):
        got = pack_resources(each, size, nodes, spec.pack_resources)
        held = f"{got['cpu']:g} CPU{'s' if got['cpu'] != 1 else ''}" + (f", {got['gpu']:g} GPU" if got["gpu"] else "")
        why = [f"{size} x resources.cpu {each.cpu:g}" + (f", {size} x resources.gpu {each.gpu:g}" if each.gpu else "")]
        if spec.pack_resources is not None:
            why = ["pack_resources"]
        else:
            if got["gpu"] < each.gpu * size:
                why.append("GPUs capped at one device")
            if got["cpu"] < each.cpu * size:
                room = [n.cpu for n in nodes if n.gpu >= got["gpu"]]
                why.append(f"CPUs capped at the largest node, {where}'s {max(room):g}" if room
                           else f"no node ({where}) holds it yet: one member's CPUs")
        threads = spec.config.get("threads") or max(1, int(got["cpu"]))  # as packed_ray_trainable sets them
        lines.append(f"a pack of {size} holds {held} ({'; '.join(why)}); it runs {threads} torch "
                     f"thread{'s' if threads != 1 else ''}")
    return lines


class MemberTrial:
    """What the driver's callbacks read of a Ray Tune trial, for one member of a pack."""

    def __init__(self, pack, index: int, config: dict):
        self.pack = pack
        self.index = index
        self.trial_id = member_trial_id(pack.trial_id, index)
        self.config = config
        self.status = "PENDING"
        self.last_result: dict[str, Any] = {}
        self.ended = False  # its last report (finished/diverged) or the pack's end reached it
        self.since_start = 0  # reports since the pack (re)started

    # the error of a failed member is the pack's
    @property
    def error_file(self):
        return getattr(self.pack, "error_file", None)

    @property
    def error_msg(self):
        return getattr(self.pack, "error_msg", None)

    def get_error(self):
        return self.pack.get_error()

    def __repr__(self) -> str:
        return f"MemberTrial({self.trial_id} of {self.pack.trial_id})"


class PackedTrials(Callback):
    """Calls ``callbacks`` once per member for every event of a packed Ray Tune trial."""

    def __init__(self, callbacks: list[Callback]):
        self.callbacks = callbacks
        self.members: dict[str, list[MemberTrial]] = {}

    def _members(self, trial) -> list[MemberTrial]:
        members = self.members.get(trial.trial_id)
        if members is None or members[0].pack is not trial:
            old = {m.index: m for m in members or []}
            members = [MemberTrial(trial, index, config) for index, config in pack_members(trial.config)]
            for m in members:  # Tune may hand us a new Trial object for the same trial (restore)
                if m.index in old:
                    m.__dict__.update({k: v for k, v in old[m.index].__dict__.items() if k != "pack"})
            self.members[trial.trial_id] = members
        return members

    def _each(self, event: str, *args, **kwargs) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(*args, **kwargs)

    def on_trial_start(self, iteration, trials, trial, **info):
        for member in self._members(trial):
            if not member.ended:
                member.status, member.since_start = "RUNNING", 0
                self._each("on_trial_start", iteration, trials, member, **info)

    def on_trial_restore(self, iteration, trials, trial, **info):
        for member in self._members(trial):
            member.since_start = 0

    def on_trial_result(self, iteration, trials, trial, result, **info):
        members = self._members(trial)
        shared = {k: result[k] for k in _SHARED_KEYS if k in result}
        for position, report in sorted(decode_members(result).items()):
            member = members[position]
            if member.ended:  # a restored pack repeats what a member did before it ended
                continue
            member.since_start += 1
            # in the order of an unpacked trial's result: its metrics, then Ray Tune's keys
            own = {**report["metrics"], "done": False, "training_iteration": report["iteration"],
                   "trial_id": member.trial_id, **shared, "config": member.config,
                   "iterations_since_restore": member.since_start}
            if report.get("status"):
                own[STATUS_KEY] = report["status"]
            member.last_result = own
            self._each("on_trial_result", iteration, trials, member, own, **info)
            if report.get("status"):
                member.status, member.ended = "TERMINATED", True
                member.last_result = {**own, "done": True}
                self._each("on_trial_complete", iteration, trials, member, **info)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        for member in self._members(trial):
            if not member.ended:
                self._each("on_checkpoint", iteration, trials, member, checkpoint, **info)

    def on_trial_complete(self, iteration, trials, trial, **info):
        # the pack ended before these members did: a stop criterion (or an empty restart) ended it
        for member in self._members(trial):
            if not member.ended:
                member.status, member.ended = "TERMINATED", True
                member.last_result = {**member.last_result, "done": True}
                self._each("on_trial_complete", iteration, trials, member, **info)

    def on_trial_error(self, iteration, trials, trial, **info):
        for member in self._members(trial):
            if not member.ended:
                member.status, member.ended = "ERROR", True
                self._each("on_trial_error", iteration, trials, member, **info)

    def on_step_end(self, iteration, trials, **info):
        self._each("on_step_end", iteration, trials, **info)

    def on_experiment_end(self, trials, **info):
        expanded = []
        for trial in trials:
            last = decode_members(trial.last_result or {})  # what Tune saved of the pack's last report
            for position, member in enumerate(self._members(trial)):
                if not member.ended:  # the pack's state is the member's (cut off, stopped, never run)
                    member.status = trial.status
                    member.last_result = {"done": bool((trial.last_result or {}).get("done"))}
                    status = (last.get(position) or {}).get("status")
                    if status:
                        member.last_result[STATUS_KEY] = status
                expanded.append(member)
        self._each("on_experiment_end", expanded, **info)

    def __getstate__(self):  # Ray pickles callbacks with the tuner: members hold live Trial objects
        state = dict(self.__dict__)
        state["members"] = {}
        return state


__all__ = ["pack_groups", "pack_param_space", "PackedTrials", "MemberTrial", "MEMBERS_KEY", "Node", "ray_nodes",
           "this_machine", "pack_resources", "PackResources", "describe_resources"]
