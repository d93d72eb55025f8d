"""The one writer and the table lock, from Python (the labelling app calls them from threads)."""

from __future__ import annotations

import threading

import pytest

from patchcfg.atomic import atomic_write_text, file_lock
from patchcfg.errors import UserError


def test_file_lock_is_reentrant_in_its_thread_and_makes_other_threads_wait(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("filepath\n")
    entered = threading.Event()

    def other():
        with file_lock(path):
            entered.set()

    with file_lock(path), file_lock(path):  # the same thread may take it again
        thread = threading.Thread(target=other)
        thread.start()
        assert not entered.wait(0.5), "another thread entered while the lock was held"
    thread.join(10)
    assert entered.is_set()


def test_file_lock_times_out_with_a_message(tmp_path):
    path = tmp_path / "labels.csv"
    errors = []

    def other():
        try:
            with file_lock(path, timeout=0.2):
                pass
        except UserError as error:
            errors.append(str(error))

    with file_lock(path):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
    assert errors and "is being written by" in errors[0] and "try again" in errors[0]


def test_writer_refuses_what_is_not_a_regular_file(tmp_path):
    with pytest.raises(UserError, match="not a regular file"):
        atomic_write_text("/dev/null", "x")
