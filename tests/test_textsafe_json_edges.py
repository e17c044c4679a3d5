"""Edges of ``auditor.textsafe``, ``auditor.jsonexact`` and ``auditor.progress`` found by mutation
testing: every code point checked (not a sample), exact column widths, where an error says it is,
and the progress line as a terminal shows it."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import orjson
import pytest

from auditor.jsonexact import loads, loads_replacing_lone_surrogates
from auditor.progress import Progress
from auditor.textsafe import display_width, fit, one_line, prose, unambiguous, visible, xml_text
from tests.test_textsafe import _DEFAULT_IGNORABLE  # (Unicode's Default_Ignorable_Code_Point)


def _must_be_escaped(code: int) -> bool:
    """An independent statement: controls, format characters, surrogates, private use, line and
    paragraph separators, every space but the ASCII one, and the other default-ignorable ones."""
    ch = chr(code)
    category = unicodedata.category(ch)
    return (
        category in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")
        or (category == "Zs" and ch != " ")
        or any(low <= code <= high for low, high in _DEFAULT_IGNORABLE)
    )


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def test_every_code_point_that_must_not_be_shown_as_is_is_escaped_in_one_line():
    # A random sample missed single characters dropped from the ranges: U+200A (hair space), U+205F,
    # U+0605 and U+061C (Arabic marks), U+2028 (line separator), U+2066 (an isolate), the low
    # surrogates, U+FFF9, U+110BD, U+180D and U+E0100 (variation selectors, which pass isprintable).
    missed, escaped_but_assigned = [], []
    for code in range(0x110000):
        ch = chr(code)
        shown = one_line(ch)
        if _must_be_escaped(code):
            if shown != _escape(code):
                missed.append(hex(code))
        elif shown != ch and unicodedata.category(ch) != "Cn":  # unassigned ones in escaped ranges
            escaped_but_assigned.append(hex(code))
    assert missed == []
    assert escaped_but_assigned == []


def test_visible_and_unambiguous_escape_the_same_characters_as_one_line():
    for code in [*range(0x00, 0xA1), 0x200A, 0x2028, 0x2029, 0x2066, 0x205F, 0xDC00, 0xE0100, 0x10FFFD]:
        ch = f"a{chr(code)}b"
        assert visible(ch) == (ch if chr(code) in "\t\n" else one_line(ch)), hex(code)
        assert unambiguous(ch) == (one_line(ch) if chr(code) != "\\" else "a\\\\b"), hex(code)


def test_xml_text_escapes_exactly_what_xml_1_0_cannot_carry():
    def xml_char(code: int) -> bool:  # XML 1.0's Char production
        return code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or code > 0xFFFF

    for code in [*range(0x10000), 0x10000, 0x10FFFF]:
        ch = chr(code)
        assert xml_text(ch) == (ch if xml_char(code) else _escape(code)), hex(code)


def test_a_waiver_reason_folded_over_lines_shows_as_one_line_with_single_spaces():
    assert prose("reason:\n  line two\r\n\tend ") == "reason: line two end"
    assert prose("keep\x1b[2Jthis") == "keep\\x1b[2Jthis"


def test_fullwidth_forms_take_two_columns_and_a_name_exactly_the_width_is_not_cut():
    assert display_width("ＡＢＣ") == 6  # East Asian width F (fullwidth), not only W
    assert fit("ＡＢＣ", 5) == "ＡＢ…"
    assert fit("ＡＢＣ", 6) == "ＡＢＣ"
    assert fit("abcde", 5) == "abcde"
    assert fit("abcdef", 5) == "abcd…"
    assert fit("顧客メール", 10) == "顧客メール"
    assert fit("顧客メールx", 10) == "顧客メー… "


def test_integers_orjson_would_round_are_read_exactly():
    # 19 digits below -2**63, and a run of nines (digits at the edge of the digit range)
    assert loads(b"[-9223372036854775809]") == [-9223372036854775809]
    assert loads(b'{"id": 99999999999999999999}') == {"id": 99999999999999999999}


def test_a_lone_surrogate_after_a_number_orjson_refuses_is_reported_where_it_is():
    text = b'{"size": 1e400, "fqn": "a.b.\\udc00c"}'
    with pytest.raises(orjson.JSONDecodeError) as caught:
        loads(text)
    assert caught.value.msg == "str is not valid UTF-8: surrogates not allowed"
    assert caught.value.pos == text.index(b"\\udc00") == 28


def test_text_nested_too_deep_for_the_exact_decoder_is_refused_as_json():
    deep = b"[" * 100_000 + b"12345678901234567890123" + b"]" * 100_000
    with pytest.raises(orjson.JSONDecodeError):
        loads(deep)


@pytest.mark.parametrize(
    "content",
    [
        b'\xef\xbb\xbf{"id": 1}',
        # found by a probe: a long integer (or any 19 digit bytes) sent the page to the standard
        # library's decoder, which takes a byte order mark and UTF-16: JSON there, and not to orjson
        b'\xef\xbb\xbf{"id": 12345678901234567890}',
        '{"n": "\u3030\u3031\u3032\u3033\u3034\u3035\u3036\u3037\u3038\u3039"}'.encode("utf-16-le"),
        '{"id": 12345678901234567890}'.encode("utf-16"),
    ],
    ids=["bom", "bom-long-integer", "utf-16-digit-bytes", "utf-16-long-integer"],
)
def test_a_byte_order_mark_or_utf_16_is_not_json_whichever_decoder_reads_it(content):
    with pytest.raises(orjson.JSONDecodeError):
        loads(content)
    with pytest.raises(orjson.JSONDecodeError):
        loads_replacing_lone_surrogates(content)
    assert loads(b'{"id": 12345678901234567890}') == {"id": 12345678901234567890}  # exact, as before


def test_replacing_lone_surrogates_still_refuses_raw_surrogate_bytes_nan_and_keeps_huge_numbers():
    with pytest.raises(orjson.JSONDecodeError):
        loads_replacing_lone_surrogates(b'{"fqn": "a.b.\xed\xa0\x80c"}')
    with pytest.raises(orjson.JSONDecodeError):
        loads_replacing_lone_surrogates(b'[NaN, "\\ud83d"]')
    assert loads_replacing_lone_surrogates(b'{"size": 1e400, "k": "\\ud83d"}') == {
        "size": "1e400",
        "k": "\ufffd",
    }


def test_a_shorter_progress_line_blanks_what_the_longer_one_left(monkeypatch):
    rates = iter([12345.0, 12345.0, 7.0])
    monkeypatch.setattr(Progress, "rate", lambda self: next(rates))
    stream = io.StringIO()
    progress = Progress(stream=stream, enabled=True, min_interval=3600)
    progress.start(2)
    progress.cluster_failed()  # drawn at once, throttled or not: a partial fetch never looks clean
    progress.close()
    first = "snapshot: clusters 0/2, columns 0, 12,345 columns/s"
    second = "snapshot: clusters 0/2, 1 failed, columns 0, 12,345 columns/s"
    last = "snapshot: clusters 0/2, 1 failed, columns 0, 7 columns/s"
    assert stream.getvalue() == f"\r{first}\r{second}\r{last}{' ' * 5}\n"


def test_column_counts_are_grouped_in_thousands(monkeypatch):
    monkeypatch.setattr(Progress, "rate", lambda self: 0.0)
    stream = io.StringIO()
    progress = Progress(stream=stream, enabled=True, min_interval=3600)
    progress.start(1)
    progress.add_columns(1234567)
    progress.close()
    assert stream.getvalue().split("\r")[-1] == "snapshot: clusters 0/1, columns 1,234,567, 0 columns/s\n"


def test_progress_is_drawn_only_on_a_terminal(tmp_path):
    with open(tmp_path / "stderr.txt", "w") as file:
        progress = Progress(stream=file)
        progress.start(1)
        progress.close()
        assert not progress.enabled
    assert (tmp_path / "stderr.txt").read_text() == ""
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as terminal:
            assert Progress(stream=terminal).enabled
    finally:
        os.close(master)
        os.close(slave)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def _script_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env


def test_a_pool_started_from_another_thread_than_the_main_one_works(tmp_path):
    # signal dispositions can only be changed from the main thread: a library caller's worker thread
    # must still get its pool (the fork server then starts with Ctrl-C as it is)
    script = """
import os, threading
from auditor.snapshot import _init_decoder
from auditor.workers import start_pool

def run():
    futures = []
    pool = start_pool("auditor.snapshot", 1, _init_decoder, lambda p: futures.append(p.submit(os.getpid)))
    print(futures[0].result(timeout=60) != os.getpid(), flush=True)
    pool.shutdown()

if __name__ == "__main__":
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
"""
    (tmp_path / "threaded.py").write_text(script)
    env = _script_env()
    done = subprocess.run(
        [sys.executable, "threaded.py"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "True\n", "")


def test_a_sigterm_from_anyone_ends_a_worker_at_once_once_its_owner_is_gone(tmp_path):
    # The owner killed (kill -9) and a group's SIGTERM (systemctl stop) then reaching its workers:
    # nobody is left to stop them, so they end now, not at the next look of the watch.
    (tmp_path / "slowwatch.py").write_text(
        "import auditor.workers\nauditor.workers.WATCH_SECONDS = 60  # the watch alone would be too late\n"
        "def nothing():\n    pass\n"
    )
    script = """
import os, time
from auditor.workers import start_pool
import slowwatch
if __name__ == "__main__":
    pool = start_pool("slowwatch", 1, slowwatch.nothing, lambda p: p.submit(time.sleep, 0.2).result())
    print(" ".join(str(pid) for pid in pool._processes), flush=True)
    time.sleep(60)
"""
    (tmp_path / "owner.py").write_text(script)
    env = _script_env()
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    owner = subprocess.Popen(  # (its stderr: the semaphores a killed owner leaks, as expected)
        [sys.executable, "owner.py"],
        env=env,
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        workers = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(workers) == 1 and not _gone(workers[0])
        owner.kill()
        owner.wait(timeout=10)
        time.sleep(0.2)
        os.kill(workers[0], signal.SIGTERM)  # from this process: neither the owner nor its group
        deadline = time.monotonic() + 5
        while not _gone(workers[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(workers[0])
    finally:
        owner.kill()
        owner.wait(timeout=10)
        owner.stdout.close()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_marks_without_a_combining_class_take_no_column():
    """Found by a probe: Thai vowel signs (and 812 other nonspacing marks) have combining class 0,
    were counted one column each, and a table holding Thai names came out misaligned."""
    from auditor.textsafe import display_width, fit

    assert display_width("กัน") == 2  # U+0E01 U+0E31 U+0E19: the middle one is a mark
    assert fit("กัน", 4) == "กัน  "
    assert display_width("e\u0301") == 1 and display_width("\u0488x") == 1  # combining, enclosing
    assert display_width("日本") == 4
