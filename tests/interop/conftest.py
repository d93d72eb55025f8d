"""What the export and import tests share: a label table on disk with a stand-in file per image."""

import pytest


@pytest.fixture
def table_on_disk():
    """``write(folder, text) -> labels.csv``: the table ``text`` written in ``folder``, each image
    it names written as a few bytes (the exports link or copy files, they never read them)."""

    def write(folder, text):
        for line in text.splitlines()[1:]:
            image = folder / line.split(",")[0]
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(b"image")
        (folder / "labels.csv").write_text(text)
        return folder / "labels.csv"

    return write
