"""Output groups: validation with file:line, the class order."""

import pytest

from patchcfg.config import load_config, with_defaults
from patchcfg.errors import ConfigError, UserError
from patchcfg.models.outputs import group_classes, groups_over, resolve_groups

CLASSES = ["zero", "one", "two", "even", "loop"]


def _finetune(outputs):
    return with_defaults("finetune", {"outputs": outputs})


def test_default_is_one_group_over_every_class_in_table_order():
    groups = resolve_groups(with_defaults("finetune", {}), CLASSES)
    assert len(groups) == 1 and groups[0].type == "sigmoid" and list(groups[0].classes) == CLASSES
    assert groups[0].loss_expression("masked_bce+0.1*dice") == "masked_bce+0.1*dice"
    softmax = resolve_groups(with_defaults("finetune", {"output": {"type": "softmax"}}), CLASSES)
    assert softmax[0].softmax and softmax[0].loss_expression("masked_bce") == "masked_bce"


def test_groups_take_their_classes_and_the_rest_in_order():
    groups = resolve_groups(_finetune([{"name": "attributes", "classes": "rest"},
                                       {"name": "digit", "classes": ["two", "zero", "one"], "type": "softmax"}]),
                            CLASSES)
    assert [(g.name, g.classes, g.start, g.stop) for g in groups] == [
        ("attributes", ("even", "loop"), 0, 2), ("digit", ("two", "zero", "one"), 2, 5)]
    assert group_classes(groups) == ["even", "loop", "two", "zero", "one"]
    assert groups[1].loss_expression("masked_bce") == "masked_cce"  # a softmax group's own loss
    assert groups[0].loss_expression("masked_focal") == "masked_focal"  # a sigmoid group's: the stage's
    located = groups_over(groups, CLASSES)
    assert [g.columns for g in located] == [(3, 4), (2, 0, 1)]


def _write(tmp_path, outputs_yaml: str):
    (tmp_path / "labels.csv").write_text("filepath,validation,zero,one,two,even,loop\na.png,False,1,0,0,1,1\n")
    path = tmp_path / "c.yaml"
    path.write_text(f"name: g\ndata: {{labels: {tmp_path / 'labels.csv'}}}\nfinetune:\n  outputs:\n{outputs_yaml}")
    return path


def test_group_validation_names_file_line_and_key(tmp_path):
    path = _write(tmp_path, "    - {classes: [zero, one, two, one], type: softmax}\n"
                            "    - {classes: [two, even, seven]}\n"
                            "    - {classes: rest}\n"
                            "    - {classes: rest}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    text = "\n".join(error.value.problems)
    assert f"{path}:5: finetune.outputs.0.classes: one listed twice in this group" in text
    assert f"{path}:6: finetune.outputs.1.classes: class 'two' is already in group 0" in text
    assert f"{path}:6: finetune.outputs.1.classes: seven not among the classes" in text
    assert f"{path}:8: finetune.outputs.3.classes: only one group may take the rest" in text


def test_classes_in_no_group_and_one_class_softmax_are_refused(tmp_path):
    path = _write(tmp_path, "    - {classes: [zero], type: softmax}\n    - {classes: [one, two]}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    text = "\n".join(error.value.problems)
    assert "finetune.outputs: even, loop in no group" in text
    assert f"{path}:5: finetune.outputs.0.type: a softmax group needs at least two classes" in text


def test_the_cli_says_it_with_exit_code_2(tmp_path, run_cli):
    path = _write(tmp_path, "    - {classes: [zero, one], type: softmax, name: macro}\n    - {classes: rest}\n")
    result = run_cli("validate", path)
    assert result.returncode == 2, result.stderr
    assert f"{path}:5: finetune.outputs.0.name: 'macro' is taken" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_groups_against_a_table_that_changed_are_refused_at_run_time():
    with pytest.raises(UserError, match="finetune.outputs.0.classes: seven not among the classes"):
        resolve_groups(_finetune([{"classes": ["zero", "seven"], "type": "softmax"}, {"classes": "rest"}]), CLASSES)


def test_a_number_takes_the_next_classes_in_column_order():
    groups = resolve_groups(_finetune([{"classes": 2, "type": "softmax"}, {"classes": ["loop"]},
                                       {"classes": 2}]), CLASSES)
    assert [g.classes for g in groups] == [("zero", "one"), ("loop",), ("two", "even")]
    assert [g.name for g in groups] == ["group_0", "group_1", "group_2"]
    with pytest.raises(UserError, match=r"outputs.1.classes: 4 classes, but only 3 are left for it \(two, even, "
                                        r"loop\)"):
        resolve_groups(_finetune([{"classes": 2}, {"classes": 4}]), CLASSES)
    with pytest.raises(UserError, match="outputs: loop in no group"):
        resolve_groups(_finetune([{"classes": 2}, {"classes": 2}]), CLASSES)


def test_scores_see_the_groups_of_the_config_over_any_table():
    """The quick head (query, labelling app) scores every class of the table; the groups'
    classes are located in it and a class no group names is scored as sigmoid."""
    from patchcfg.models.outputs import scoring_groups

    finetune = _finetune([{"name": "digit", "classes": ["zero", "one", "two"], "type": "softmax"},
                          {"name": "attributes", "classes": ["even", "loop"]}])
    finetune["classes"] = CLASSES  # the model's classes; the table has one more
    located = scoring_groups(finetune, ["even", *CLASSES[:3], "loop", "new"])
    assert [(g.name, g.softmax, g.columns) for g in located] == [
        ("digit", True, (1, 2, 3)), ("attributes", False, (0, 4)), ("others", False, (5,))]
    finetune["outputs"][1]["classes"], finetune["classes"] = "rest", None  # the rest of the table's classes
    assert [g.columns for g in scoring_groups(finetune, ["even", *CLASSES[:3], "loop", "new"])] == [
        (1, 2, 3), (0, 4, 5)]
    assert scoring_groups(with_defaults("finetune", {"output": {"type": "softmax"}}), CLASSES) is True
    assert scoring_groups(with_defaults("finetune", {}), CLASSES) is False and scoring_groups(None, CLASSES) is False
