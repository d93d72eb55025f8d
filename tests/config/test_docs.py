"""Generated schema files: written from the registries, kept in step by a test, rewritten on demand."""

from patchcfg.config import docs
from patchcfg.config.schema import schema_dir


def test_generated_schema_files_are_up_to_date():
    for name, text in docs.generated_schemas().items():
        assert (schema_dir() / name).read_text(encoding="utf-8") == text, (
            f"schemas/{name} is out of date: run `patchcfg schema --update-schemas`")


def test_update_schemas_rewrites_only_what_is_stale(tmp_path):
    for path in schema_dir().glob("*.schema.json"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    assert docs.update_schemas(tmp_path) == []
    (tmp_path / "augmentation.schema.json").write_text("{}\n", encoding="utf-8")
    query = tmp_path / "query.schema.json"
    stale = query.read_text(encoding="utf-8").replace('"pattern": "^(random|', '"pattern": "^(rando|')
    query.write_text(stale, encoding="utf-8")
    assert docs.update_schemas(tmp_path) == ["augmentation.schema.json", "query.schema.json"]
    for name, text in docs.generated_schemas(tmp_path).items():
        assert (tmp_path / name).read_text(encoding="utf-8") == text
