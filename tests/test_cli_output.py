"""write_output: whole texts and streamed pieces, to stdout or atomically to --output."""

from __future__ import annotations

import pytest

from auditor.cli.common import write_output
from auditor.errors import DeliveryError


def test_pieces_are_written_to_the_file_once_all_are_produced(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("previous")

    def pieces():
        yield "{"
        assert target.read_text() == "previous"  # the old file stays until the last piece
        yield '"a": 1}\n'

    write_output(pieces(), str(target))
    assert target.read_text() == '{"a": 1}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_a_failure_while_producing_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("previous")

    def pieces():
        yield "{"
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        write_output(pieces(), str(target))
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_an_unwritable_target_is_a_delivery_error(tmp_path):
    with pytest.raises(DeliveryError, match="cannot write"):
        write_output(iter(["x"]), str(tmp_path / "missing" / "out.json"))


@pytest.mark.parametrize(
    ("text", "printed"),
    [("a\nb\n", "a\nb\n"), ("no newline", "no newline\n"), ("", "\n"), (iter(["a", "", "b\n"]), "ab\n")],
)
def test_stdout_gets_the_text_with_one_final_newline(text, printed, capsys):
    write_output(text, None)
    assert capsys.readouterr().out == printed
