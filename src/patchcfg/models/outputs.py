"""Output groups: the classes split into questions the model answers separately.

A label table often mixes one question with one answer among several (which digit; which land
use) and yes/no attributes (even; has a loop; cloudy). ``finetune.outputs`` lists groups, each
``{name, classes: [...] | N | rest, type: sigmoid | softmax, loss, weight}``; every class belongs
to exactly one group. A number N takes the next N classes, in the table's column order, that no
group names (Musket's ``classes: [4, 4]``); ``rest`` takes what is left after that. Without it the model has one group over every class (``finetune.output``'s
type, the training phase's loss): the plain multi-hot model.

The model's class order is the groups' classes one group after the other, so a group is a slice
of the probability matrix. A softmax group is *resolved* on a row when one of its classes is
present (the others then count as absent) or all but one are absent (the remaining one is the
answer); :mod:`patchcfg.label_groups` resolves the label matrix in numpy.

Pure Python: configs are checked with it before TensorFlow is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from patchcfg.errors import UserError
from patchcfg.label_groups import has_groups

REST = "rest"
#: a softmax group's loss when its ``loss`` is null
SOFTMAX_LOSS = "masked_cce"


@dataclass(frozen=True)
class OutputGroup:
    name: str
    classes: tuple[str, ...]
    type: str  # sigmoid | softmax
    loss: str | None  # None: the phase's loss (sigmoid) or SOFTMAX_LOSS (softmax)
    weight: float
    start: int  # the group's columns in the model's class order: [start, stop)
    stop: int
    stage_loss: bool = False  # the one group of finetune.output: the phase's loss whatever its type

    @property
    def softmax(self) -> bool:
        return self.type == "softmax"

    @property
    def columns(self) -> tuple[int, ...]:
        return tuple(range(self.start, self.stop))

    def loss_expression(self, phase_loss: str) -> str:
        if self.loss:
            return self.loss
        return SOFTMAX_LOSS if self.softmax and not self.stage_loss else phase_loss

    def describe(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "type": self.type}


def group_name(spec: dict, index: int) -> str:
    return spec["name"] if spec.get("name") else f"group_{index}"


def group_problems(outputs: list[dict], classes: list[str] | None) -> list[tuple[tuple, str]]:
    """``(key path under finetune.outputs, message)`` for every problem of the groups: a class in
    two groups, a class the label table lacks (when ``classes`` is given), classes in no group, two
    ``rest`` groups, repeated names, a softmax group of fewer than two classes."""
    problems: list[tuple[tuple, str]] = []
    owner: dict[str, int] = {}
    rest = [i for i, g in enumerate(outputs) if g["classes"] == REST]
    names: dict[str, int] = {}
    for i, group in enumerate(outputs):
        name = group_name(group, i)
        if name == "macro":
            problems.append(((i, "name"), "'macro' is taken by the macro metrics (val_macro_auc); choose another"))
        if name in names:
            problems.append(((i, "name"), f"name '{name}' is also group {names[name]}'s; names must differ"))
        names.setdefault(name, i)
        if not isinstance(group["classes"], list):
            continue
        repeated_here = sorted({c for c in group["classes"] if group["classes"].count(c) > 1})
        if repeated_here:
            problems.append(((i, "classes"), f"{', '.join(repeated_here)} listed twice in this group"))
        for c in dict.fromkeys(group["classes"]):
            if c in owner:
                problems.append(((i, "classes"), f"class '{c}' is already in group {owner[c]} "
                                                 f"('{group_name(outputs[owner[c]], owner[c])}'); "
                                                 "a class belongs to exactly one group"))
            else:
                owner[c] = i
        if classes is not None:
            unknown = [c for c in dict.fromkeys(group["classes"]) if c not in classes]
            if unknown:
                problems.append(((i, "classes"), f"{', '.join(unknown)} not among the classes "
                                                 f"({', '.join(classes)})"))
    for i in rest[1:]:
        problems.append(((i, "classes"), f"only one group may take the rest (group {rest[0]} does)"))
    if classes is not None:
        left = [c for c in classes if c not in owner]
        for i, group in enumerate(outputs):
            if isinstance(group["classes"], int) and not isinstance(group["classes"], bool):
                if group["classes"] > len(left):
                    problems.append(((i, "classes"), f"{group['classes']} classes, but only {len(left)} are left "
                                                     f"for it ({', '.join(left) or 'none'})"))
                    left = []
                    continue
                taken, left = left[:group["classes"]], left[group["classes"]:]
                if group["type"] == "softmax" and len(taken) < 2:
                    problems.append(((i, "type"), "a softmax group needs at least two classes"))
        if rest:
            i = rest[0]
            if not left:
                problems.append(((i, "classes"), "rest: every class is already in another group"))
            elif outputs[i]["type"] == "softmax" and len(left) < 2:
                problems.append(((i, "type"), f"a softmax group needs at least two classes; the rest is {left}"))
        elif left:
            problems.append(((), f"{', '.join(left)} in no group; add them to a group or add a group with "
                                 "classes: rest"))
    for i, group in enumerate(outputs):
        if isinstance(group["classes"], list) and group["type"] == "softmax" and len(set(group["classes"])) < 2:
            problems.append(((i, "type"), "a softmax group needs at least two classes"))
    return problems


def resolve_groups(finetune: dict, classes: list[str]) -> list[OutputGroup]:
    """The groups of ``finetune`` over ``classes`` (the label table's classes in training), in the
    model's class order; :class:`UserError` naming every problem."""
    outputs = finetune["outputs"]
    if not outputs:
        return [OutputGroup("output", tuple(classes), finetune["output"]["type"], None, 1.0, 0, len(classes),
                            stage_loss=True)]
    problems = group_problems(outputs, list(classes))
    if problems:
        raise UserError("; ".join(".".join(map(str, ("finetune.outputs", *path))) + f": {message}"
                              for path, message in problems))
    named = {c for g in outputs if isinstance(g["classes"], list) for c in g["classes"]}
    pool = [c for c in classes if c not in named]  # counted groups take from here, in order, rest the end
    counted = {}
    for i, spec in enumerate(outputs):
        if isinstance(spec["classes"], int):
            counted[i], pool = pool[:spec["classes"]], pool[spec["classes"]:]
    groups, start = [], 0
    for i, spec in enumerate(outputs):
        members = pool if spec["classes"] == REST else counted.get(i) or list(spec["classes"])
        groups.append(OutputGroup(group_name(spec, i), tuple(members), spec["type"], spec["loss"],
                                  float(spec["weight"]), start, start + len(members)))
        start += len(members)
    return groups


def group_classes(groups: list[OutputGroup]) -> list[str]:
    """The model's class order: each group's classes in turn."""
    return [c for g in groups for c in g.classes]


def groups_from_summary(described: list[dict] | None, classes: list[str]) -> list[OutputGroup]:
    """The groups a finetune ``summary.json`` records (``outputs``), or the one sigmoid group."""
    if not described:
        return [OutputGroup("output", tuple(classes), "sigmoid", None, 1.0, 0, len(classes))]
    groups, start = [], 0
    for spec in described:
        n = len(spec["classes"])
        groups.append(OutputGroup(spec["name"], tuple(spec["classes"]), spec["type"], None, 1.0, start, start + n))
        start += n
    return groups


@dataclass(frozen=True)
class ColumnGroup:
    """A group located by column indices (into the label table's class order, say)."""

    name: str
    type: str
    columns: tuple[int, ...]

    @property
    def softmax(self) -> bool:
        return self.type == "softmax"


def groups_over(groups: list[OutputGroup], classes: list[str]) -> list[ColumnGroup]:
    """``groups`` located in another class order ``classes`` (which holds every group's classes)."""
    missing = [c for g in groups for c in g.classes if c not in classes]
    if missing:
        raise UserError(f"the output groups' classes {', '.join(missing)} are not among {', '.join(classes)}")
    return [ColumnGroup(g.name, g.type, tuple(classes.index(c) for c in g.classes)) for g in groups]


def check_groups(groups: list[OutputGroup], width: int) -> None:
    if groups and groups[-1].stop != width:
        raise UserError(f"the output groups cover {groups[-1].stop} classes, the probabilities have {width}")


def located_groups(groups: list[OutputGroup], classes: list[str]) -> list[ColumnGroup]:
    """``groups`` over the columns of ``classes``; the classes no group names form a sigmoid group."""
    located = groups_over(groups, classes)
    others = tuple(i for i in range(len(classes)) if all(i not in g.columns for g in located))
    return located + ([ColumnGroup("others", "sigmoid", others)] if others else [])


def scoring_groups(finetune: dict | None, classes: list[str]) -> bool | list[ColumnGroup]:
    """How the uncertainty scores see the classes of a table under a config's output (the config
    declares it; a scorer trained on every class, such as the quick head, follows it): ``True``
    for one softmax over every class, ``False`` for multi-hot, else the groups over ``classes``."""
    if not finetune:
        return False
    groups = resolve_groups(finetune, finetune["classes"] or classes) if finetune["outputs"] else None
    if has_groups(groups):
        return located_groups(groups, classes)
    return finetune["output"]["type"] == "softmax"
