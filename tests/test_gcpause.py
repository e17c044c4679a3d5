"""The collector pause used around bulk object building."""

from __future__ import annotations

import gc
import threading

from auditor.gcpause import collector_paused


def test_the_collector_is_paused_inside_and_restored_after_nesting():
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()


def test_an_error_inside_still_restores_the_collector():
    try:
        with collector_paused():
            raise ValueError("boom")
    except ValueError:
        pass
    assert gc.isenabled()


def test_a_collector_disabled_by_the_caller_stays_disabled():
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_pauses_in_threads_end_with_the_last_one():
    inside = threading.Barrier(2)
    release = threading.Event()

    def worker():
        with collector_paused():
            inside.wait()
            release.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    with collector_paused():
        inside.wait()
    assert not gc.isenabled()  # the worker's pause is still open
    release.set()
    thread.join()
    assert gc.isenabled()


def test_a_process_of_throwaway_objects_collects_rarely_and_never_rescans_its_modules():
    """In a process of its own (decoders and the serving sandbox call it): this one stays as is."""
    import subprocess
    import sys

    code = (
        "import gc; from auditor.gcpause import tune_for_throwaway_objects, THROWAWAY_THRESHOLD;"
        "tune_for_throwaway_objects();"
        "print(gc.get_threshold()[0] == THROWAWAY_THRESHOLD, gc.get_freeze_count() > 1000, gc.isenabled())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True"]
    assert gc.get_threshold()[0] != 100_000
