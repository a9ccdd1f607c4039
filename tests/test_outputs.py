"""Output folders are complete and consistent or not there; readers refuse stale or foreign files."""

import json
import os

import pytest

from spikeforge.outputs import MANIFEST, OutputError, check_output, check_target, output_file, output_folder


def test_a_finished_run_replaces_the_folder_with_a_manifest(tmp_path):
    target = tmp_path / "out" / "run"
    with output_folder(target) as out:
        (out.path / "a.txt").write_text("new")
        assert not target.exists()                          # nothing appears before the run ends
    assert (target / "a.txt").read_text() == "new"
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["status"] == "complete" and set(manifest["files"]) == {"a.txt"}
    assert [p.name for p in target.parent.iterdir()] == ["run"]   # no staging folder left behind


def test_an_interrupted_run_leaves_the_old_output_untouched(tmp_path):
    target = tmp_path / "run"
    with output_folder(target) as out:
        (out.path / "golden0.npz").write_text("old golden")
        (out.path / "observed0.npz").write_text("old observed")
    with pytest.raises(KeyboardInterrupt):
        with output_folder(target) as out:
            (out.path / "golden0.npz").write_text("new golden")
            raise KeyboardInterrupt
    assert (target / "golden0.npz").read_text() == "old golden"
    assert (target / "observed0.npz").read_text() == "old observed"
    assert check_output(target / "golden0.npz")["status"] == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_failed_check_is_marked_in_the_manifest(tmp_path):
    with output_folder(tmp_path / "run") as out:
        (out.path / "observed0.npz").write_text("x")
        out.fail("RTL differs")
    origin = check_output(tmp_path / "run" / "observed0.npz")
    assert origin["status"] == "failed" and origin["reason"] == "RTL differs"


def test_stale_and_modified_files_are_refused(tmp_path):
    with output_folder(tmp_path / "run") as out:
        (out.path / "golden0.npz").write_text("g")
    (tmp_path / "run" / "observed0.npz").write_text("from another run")
    with pytest.raises(OutputError, match="was not written by the run"):
        check_output(tmp_path / "run" / "observed0.npz")
    (tmp_path / "run" / "golden0.npz").write_text("edited")
    with pytest.raises(OutputError, match="changed after the run"):
        check_output(tmp_path / "run" / "golden0.npz")


def test_files_outside_spikeforge_folders_and_foreign_manifests_are_not_judged(tmp_path):
    (tmp_path / "t.npz").write_text("x")
    assert check_output(tmp_path / "t.npz") is None
    (tmp_path / MANIFEST).write_text('{"name": "some web app"}')
    assert check_output(tmp_path / "t.npz") is None


def test_a_folder_of_your_own_files_is_never_replaced(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(OutputError, match="was not written by spikeforge"):
        with output_folder(mine, option="--save"):
            pass
    assert (mine / "thesis.tex").read_text() == "precious"


def test_targets_are_checked_before_any_work(tmp_path):
    (tmp_path / "f").write_text("a file")
    with pytest.raises(OutputError, match="--out .* is a file"):
        check_target(tmp_path / "f", kind="folder", option="--out")
    with pytest.raises(OutputError, match="is a file, so nothing can be created under it"):
        check_target(tmp_path / "f" / "sub", kind="folder", option="--save")
    with pytest.raises(OutputError, match="is a folder"):
        check_target(tmp_path, kind="file", option="-o")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_targets_are_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            check_target(ro / "out", option="--out")
    finally:
        ro.chmod(0o700)


def test_output_file_is_atomic(tmp_path):
    target = tmp_path / "net.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with output_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    with output_file(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["net.json"]


def test_progress_prints_plain_lines_in_a_log():
    import io
    import time

    from rich.console import Console

    from spikeforge.progress import Progress
    buf = io.StringIO()
    with Progress(Console(file=buf, width=200), "job", total=2, interval=0.2, min_gap=0.05) as p:
        p.update("first step")
        time.sleep(0.5)                       # a silent step: heartbeat lines
        p.update("second step", advance=1)
        time.sleep(0.2)
        p.advance()
    text = buf.getvalue()
    assert "job 0/2: first step" in text and "first step (still running)" in text
    assert "second step" in text and "done in" in text
