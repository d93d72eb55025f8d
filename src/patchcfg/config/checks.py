"""What a run would find, found before it: loss expressions and the label table.

Both are checked with the code the stages use (the loss grammar and registry, the label-table
reader), before TensorFlow is imported, so ``patchcfg validate`` says what ``patchcfg run`` would.
"""

from __future__ import annotations

from patchcfg.errors import ConfigError, LabelTableError


def stages_needing_rows() -> list[str]:
    """Stages that train or rank on the label table's rows (``needs_labels``): they need a table with rows."""
    from patchcfg.stages import STAGES, stage_names

    return [name for name in stage_names() if STAGES[name].needs_labels is not None]


def _where(locations: dict, path: tuple, default: tuple[str, int]) -> str:
    for end in range(len(path), -1, -1):
        if path[:end] in locations:
            file, line = locations[path[:end]]
            return f"{file}:{line}" if line else str(file)
    return f"{default[0]}:{default[1]}"


def loss_problems(config: dict, locations: dict, default: tuple[str, int]) -> list[str]:
    """Every loss expression of the config that could not run, as ``file:line: key: message``."""
    from patchcfg.losses import check_loss

    finetune = config.get("finetune")
    if not isinstance(finetune, dict):
        return []
    expressions = [(("finetune", "loss"), finetune.get("loss"))]
    for i, stage in enumerate(finetune.get("stages") or []):
        if isinstance(stage, dict):
            expressions.append((("finetune", "stages", i, "loss"), stage.get("loss")))
    for i, group in enumerate(finetune.get("outputs") or []):
        if isinstance(group, dict):
            expressions.append((("finetune", "outputs", i, "loss"), group.get("loss")))
    problems = []
    for path, text in expressions:
        if not isinstance(text, str):
            continue
        try:
            check_loss(text)
        except ConfigError as error:
            dotted = ".".join(map(str, path))
            problems.extend(f"{_where(locations, path, default)}: {dotted}: {p}" for p in error.problems)
    return problems


def _table_classes(config: dict) -> list[str] | None:
    """The classes fine-tuning trains on, from the label table's header line (None: unreadable)."""
    import csv

    from patchcfg.label_table import RESERVED

    labels = (config.get("data") or {}).get("labels")
    if not labels:
        return None
    try:
        with open(labels, encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if header is None:
        return None
    chosen = config["finetune"].get("classes")
    return list(chosen) if chosen else [c for c in header if c not in RESERVED]


def output_problems(config: dict, locations: dict, default: tuple[str, int]) -> list[str]:
    """The output groups (``finetune.outputs``): a class in two groups, twice ``rest``, a softmax
    group of one class, and, when the label table can be read, classes it lacks or none names."""
    from patchcfg.models.outputs import group_problems

    finetune = config.get("finetune")
    if not isinstance(finetune, dict) or not finetune.get("outputs"):
        return []
    problems = []
    for path, message in group_problems(finetune["outputs"], _table_classes(config)):
        full = ("finetune", "outputs", *path)
        problems.append(f"{_where(locations, full, default)}: {'.'.join(map(str, full))}: {message}")
    return problems


def label_table_problems(config: dict, stages=None) -> list[str]:
    """The label table named by ``data.labels``, read as the stages read it; a stage of ``stages``
    (default: those the config declares) that trains on rows also needs it to have rows."""
    from patchcfg.label_table import read_label_table

    labels = (config.get("data") or {}).get("labels")
    needing = stages_needing_rows()
    stages = [s for s in (stages or [k for k in needing if config.get(k)]) if s in needing]
    if not labels:
        return [f"{stage} needs a label table: set data.labels in the config or pass --labels labels.csv"
                for stage in stages[:1]]
    try:
        table = read_label_table(labels)
    except LabelTableError as error:
        return [f"data.labels: {error}"]
    if stages and len(table) == 0:
        return [f"data.labels: {labels}: the table has no rows (only its header line); {stages[0]} needs "
                "images: add rows (e.g. `patchcfg init IMAGES --out TABLE`)"]
    return []


#: the config sections that describe a backbone
BACKBONE_SECTIONS = (("backbone",), ("distill", "student"))


def backbone_problems(config: dict, locations: dict, default: tuple[str, int]) -> list[str]:
    """Backbone sections whose keys cannot work together (a preset without ``name: keras_hub``, a
    token pooling on a CNN), and KerasHub presets read from their files: a missing folder, an image
    size the preset cannot take (not a multiple of its patch size), a pooling its model cannot give.
    A frozen encoder (``trainable: false``) cannot be pretrained."""
    from patchcfg.errors import UserError
    from patchcfg.models.presets import spec_problems
    from patchcfg.models.registry import KERAS_HUB, normalize_spec

    problems = []
    for path in BACKBONE_SECTIONS:
        spec: object = config
        for key in path:
            spec = spec.get(key) if isinstance(spec, dict) else None
        if not isinstance(spec, dict):
            continue
        dotted = ".".join(path)
        try:
            normalized = normalize_spec(spec)
        except UserError as error:
            message = str(error).removeprefix("backbone.")
            key = message.split(":", 1)[0] if message.split(":", 1)[0] in spec else None
            where = _where(locations, path + ((key,) if key else ()), default)
            problems.append(f"{where}: {dotted}.{message}" if key else f"{where}: {dotted}: {message}")
            continue
        if normalized["name"].lower() == KERAS_HUB:
            for key, message in spec_problems(normalized, (config.get("data") or {}).get("channels")):
                problems.append(f"{_where(locations, path + (key,), default)}: {dotted}.{key}: {message}")
    backbone = config.get("backbone")
    if config.get("pretrain") and isinstance(backbone, dict) and backbone.get("trainable") is False:
        problems.append(f"{_where(locations, ('backbone', 'trainable'), default)}: backbone.trainable: "
                        "false freezes the encoder, and pretraining trains nothing else: set "
                        "trainable: true, or remove the pretrain section to use the encoder as it is")
    return problems
