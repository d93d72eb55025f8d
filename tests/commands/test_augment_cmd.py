"""``patchcfg augment``: the preview grid through the real command line."""

import numpy as np
from click.testing import CliRunner
from PIL import Image

from patchcfg.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def write_images(folder, n=5, size=16):
    folder.mkdir()
    for i in range(n):
        Image.fromarray((np.random.default_rng(i).random((size, size, 3)) * 255).astype(np.uint8)).save(
            folder / f"{i}.png")


def test_augment_writes_the_preview(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "imgs")
    config = tmp_path / "c.yaml"
    config.write_text("name: prev\ndata: {images: imgs, imshape: [16, 16]}\naugmentation: {preset: simclr}\n")
    result = invoke("augment", config, "augmentation.jitter=0.5", "--out", "p.png", "--n", 3, "--views", 2)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    with Image.open(tmp_path / "p.png") as grid:
        assert grid.mode == "RGB"
        assert grid.width > 3 * 64 and grid.height > 3 * 64  # 3 columns, 3 rows of upscaled tiles


def test_augment_skips_bad_images_and_reports_config_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "imgs", n=3)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    config = tmp_path / "c.yaml"
    config.write_text("name: prev\ndata: {images: imgs, imshape: [16, 16], on_bad_image: skip}\n")
    result = invoke("augment", config, "--out", "p.png", "--n", 4)
    assert result.exit_code == 0 and (tmp_path / "p.png").is_file()
    assert "broken.png" in result.output
    result = invoke("augment", config, "data.on_bad_image=error", "--out", "q.png", "--n", 4)
    assert result.exit_code == 2 and "broken.png" in result.output and "Traceback" not in result.output
    result = invoke("augment", config, "augmentation.Fliplrr=0.5", "--out", "q.png")
    assert result.exit_code == 2 and "did you mean 'Fliplr'" in result.output
    assert not (tmp_path / "q.png").exists()


def test_augment_help_has_an_example():
    result = invoke("augment", "--help")
    assert result.exit_code == 0 and "patchcfg augment configs/simclr.yaml" in result.output


def test_out_never_writes_over_the_config_or_the_label_table(tmp_path):
    config = tmp_path / "c.yaml"
    labels = tmp_path / "labels.csv"
    labels.write_text("filepath,cat\na.png,1\n")
    config.write_text(f"name: prev\ndata: {{labels: {labels}, imshape: [16, 16]}}\n")
    for out, what in ((config, "config"), (labels, "label table")):
        before = out.read_text()
        result = invoke("augment", config, "--out", out)
        assert result.exit_code == 2 and f"is the {what} this command reads" in result.output
        assert out.read_text() == before


def test_out_over_a_file_that_is_not_a_png_needs_force(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("name: prev\ndata: {images: imgs, imshape: [16, 16]}\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    result = CliRunner().invoke(main, ["augment", str(config), "--out", str(notes)])
    assert result.exit_code == 2 and "already exists and was not written by this command" in result.output
    assert notes.read_text() == "mine\n"
