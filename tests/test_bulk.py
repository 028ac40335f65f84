"""Bulk runs: a folder or a list file -> JSON lines, resumable after a crash, bad inputs as lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import edgeai
from conftest import CAT, WORDS, cli, make_text_package, make_tiny_package
from edgeai.bulk import list_inputs, run_bulk
from edgeai.errors import InputError


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bulk")
    return {"image": make_tiny_package(root / "img"), "text": make_text_package(root / "txt")}


def photo_folder(folder: Path, n: int, scale: int = 1) -> list[Path]:
    """Real photo (samples/cat.jpg) at mixed sizes and formats, in nested folders, plus bad files."""
    with Image.open(CAT) as im:
        base = im.convert("RGB")
    paths = []
    for i in range(n):
        sub = folder / f"set{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"{i:04d}.{('jpg', 'png', 'webp')[i % 3]}"
        base.resize(((40 + 7 * (i % 23)) * scale, (30 + 5 * (i % 17)) * scale)).save(p)
        paths.append(p)
    (folder / "set0" / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "set1" / "notes.md").write_text("not listed: not an image suffix")
    return paths


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_folder_gives_one_line_per_image_equal_to_predict(pkgs, tmp_path):
    paths = photo_folder(tmp_path / "photos", 40)
    out = tmp_path / "out.jsonl"
    r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out), "--batch-size", "7", "--workers", "2")
    assert r.returncode == 1 and "1 input(s) failed" in r.stderr and "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    lines = read_lines(out)
    assert len(lines) == 41
    pipe = edgeai.load(pkgs["image"])
    by_input = {x["input"]: x for x in lines}
    assert "not an image" in by_input[str(tmp_path / "photos" / "set0" / "broken.jpg")]["error"]
    for p in paths:
        got = by_input[str(p)]
        assert got["variant"] == pipe.variant and got["provider"] == pipe.provider
        want = pipe.predict(str(p), top_k=5)["top_k"]
        assert [t["index"] for t in got["top_k"]] == [t["index"] for t in want]
        np.testing.assert_allclose([t["score"] for t in got["top_k"]], [t["score"] for t in want], rtol=1e-5)


def test_resume_after_sigkill_and_a_torn_line(pkgs, tmp_path):
    photo_folder(tmp_path / "photos", 300, scale=6)
    args = ("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--batch-size", "4", "--workers", "1")
    full = tmp_path / "full.jsonl"
    t = time.perf_counter()
    assert cli(*args, "--out", str(full)).returncode == 1  # the broken file
    took = time.perf_counter() - t
    expected = {x["input"]: x for x in read_lines(full)}

    out = tmp_path / "out.jsonl"
    exe = Path(sys.executable).with_name("edgeai")
    for _ in range(2):  # the second run resumes, then is killed too: each once it has written lines of its own
        before = out.read_text().count("\n") if out.exists() else 0
        proc = subprocess.Popen([str(exe), *args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.perf_counter() + 10 * took + 30  # by the lines written, not a delay: a busy machine starts slower
        while (not out.exists() or out.read_text().count("\n") <= before) and proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    partial = out.read_text().count("\n")
    assert 0 < partial < len(expected), partial
    with open(out, "a") as f:
        f.write('{"input": "' + str(tmp_path))  # a torn last line, as a crash mid-write would leave
    r = cli(*args, "--out", str(out))
    assert f"{len(expected) - partial} new result line(s)" in r.stderr, r.stderr
    lines = read_lines(out)
    assert len(lines) == len(expected) and {x["input"] for x in lines} == set(expected)  # none lost, none twice
    for x in lines:
        assert x.get("top_k") == expected[x["input"]].get("top_k") or np.allclose(
            [t["score"] for t in x["top_k"]], [t["score"] for t in expected[x["input"]]["top_k"]], rtol=1e-5)
    r = cli(*args, "--out", str(out))  # all there; the broken file's error line keeps the exit status 1
    assert r.returncode == 1 and "0 new result line(s)" in r.stderr and f"{len(expected)} already there" in r.stderr
    assert "still holds 1 error line(s) from an earlier run" in r.stderr, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_leaves_whole_lines(pkgs, tmp_path, sig):
    photo_folder(tmp_path / "photos", 300, scale=6)
    out = tmp_path / "out.jsonl"
    exe = Path(sys.executable).with_name("edgeai")
    proc = subprocess.Popen([str(exe), "run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out),
                             "--batch-size", "2", "--workers", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.perf_counter() + 60  # interrupted mid-run, once it has written lines (a busy machine starts slower)
    while not (out.exists() and out.read_text().count("\n")) and proc.poll() is None and time.perf_counter() < deadline:
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    said = ("interrupted", 130) if sig == signal.SIGINT else ("terminated", 143)
    assert proc.returncode == said[1] and said[0] in err and "Traceback" not in err, err
    assert f"the same command resumes {out} where it stopped" in err, err  # what to do next, said (SIGTERM too: review)
    text = out.read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())


def test_ctrl_c_before_any_line_does_not_claim_lines_were_kept(tmp_path, capsys):
    from edgeai.cli.run import _resumable

    out = tmp_path / "out.parquet"
    for lines, said in ((tmp_path / "out.parquet.jsonl", "it stopped before any result was written to"),
                        (out.with_name("x.jsonl"), "the lines written so far are kept")):
        if said.startswith("the lines"):
            lines.write_text('{"input": "a.png"}\n')
        with pytest.raises(KeyboardInterrupt), _resumable(out, lines):
            raise KeyboardInterrupt
        err = capsys.readouterr().err
        assert said in err and str(out) in err, err


def test_text_lines_from_a_list_file_and_a_folder(pkgs, tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("good movie\n\nbad food\ngood movie\n")  # blank lines are skipped; repeats kept
    # a latin-1 line (not UTF-8), a line of ideographic space (blank, skipped)
    (folder / "b.txt").write_bytes(b"caf\xe9 service\n" + "\u3000\n".encode() + b"love it\n")
    items = list_inputs([str(folder)], text=True)
    assert items[:3] == ["good movie", "bad food", "good movie"] and len(items) == 5
    out = tmp_path / "t.jsonl"
    pipe = edgeai.load(pkgs["text"])
    stats = run_bulk(pipe, items, out, batch_size=4)
    assert stats["done"] == 5 and stats["errors"] == 1, stats
    lines = read_lines(out)
    a, b = folder / "a.txt", folder / "b.txt"
    assert [x["input"] for x in lines] == [f"{a}:1", f"{a}:3", f"{a}:4", f"{b}:1", f"{b}:3"]  # where each came from
    assert [x["text"] for x in lines] == items
    assert "not valid UTF-8" in lines[3]["error"] and f"{b}:1" in lines[3]["error"] and "top_k" in lines[4]
    assert lines[0]["top_k"] == pipe.predict("good movie", top_k=3)["top_k"] == lines[2]["top_k"]
    # resuming with repeated texts redoes only the missing repeat
    out.write_text("\n".join(out.read_text().splitlines()[:2]) + "\n")
    stats = run_bulk(pipe, items, out, batch_size=4)
    assert stats["skipped"] == 2 and stats["done"] == 3 and len(read_lines(out)) == 5
    # a list file of texts through the CLI
    (tmp_path / "list.txt").write_text("good day\nawful night\n")
    r = cli("run", "--model", str(pkgs["text"]), str(tmp_path / "list.txt"), "--out", str(tmp_path / "l.jsonl"))
    assert r.returncode == 0, r.stderr
    got = read_lines(tmp_path / "l.jsonl")
    assert [(x["input"], x["text"]) for x in got] == [(f"{tmp_path / 'list.txt'}:1", "good day"), (f"{tmp_path / 'list.txt'}:2", "awful night")]
    # --text: every argument is one text, the file name included
    r = cli("run", "--model", str(pkgs["text"]), "--text", str(tmp_path / "list.txt"), "love it", "--out", str(tmp_path / "lit.jsonl"))
    assert r.returncode == 0, r.stderr
    assert [x["input"] for x in read_lines(tmp_path / "lit.jsonl")] == [str(tmp_path / "list.txt"), "love it"]


def test_a_resume_redoes_the_inputs_changed_since(pkgs, tmp_path):
    """An edited line of a text file, an image file replaced: their old lines are dropped and
    their inputs run again; the other lines stay as they were."""
    (tmp_path / "r.txt").write_text("good movie\nbad food\n")
    out = tmp_path / "t.jsonl"
    args = ("run", "--model", str(pkgs["text"]), str(tmp_path / "r.txt"), "--out", str(out))
    assert cli(*args).returncode == 0
    (tmp_path / "r.txt").write_text("good movie\nawful night\n")
    r = cli(*args)
    assert r.returncode == 0 and "1 new result line(s)" in r.stderr and "1 redone, their input changed since" in r.stderr, r.stderr
    lines = read_lines(out)
    assert [(x["input"], x["text"]) for x in lines] == [(f"{tmp_path / 'r.txt'}:1", "good movie"), (f"{tmp_path / 'r.txt'}:2", "awful night")]
    assert lines[1]["top_k"] == edgeai.load(pkgs["text"]).predict("awful night", top_k=5)["top_k"]

    paths = photo_folder(tmp_path / "photos", 3)
    out = tmp_path / "i.jsonl"
    args = ("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out))
    cli(*args)
    before = {x["input"]: x for x in read_lines(out)}
    assert before[str(paths[0])]["modified"]
    with Image.open(CAT) as im:
        im.convert("L").resize((64, 48)).save(paths[0], "JPEG")  # replaced by another image
    os.utime(paths[0], ns=(os.stat(paths[0]).st_atime_ns, os.stat(paths[0]).st_mtime_ns + 10**9))
    r = cli(*args)
    assert "1 new result line(s)" in r.stderr and "1 redone" in r.stderr, r.stderr
    after = {x["input"]: x for x in read_lines(out)}
    assert len(after) == len(before) and after[str(paths[0])]["modified"] != before[str(paths[0])]["modified"]
    assert after[str(paths[0])]["top_k"] == edgeai.load(pkgs["image"]).predict(str(paths[0]), top_k=5)["top_k"]
    assert all(after[k] == v for k, v in before.items() if k != str(paths[0]))


def test_a_resume_drops_only_the_lines_past_a_text_files_new_end(pkgs, tmp_path):
    """A text file that lost lines: the lines past its new end go (an 11-line file kept 12
    results), since the file can give them again. Nothing else is dropped: another run's literal
    texts and file lines, a deleted image's line, the lines of an unreadable file's neighbours."""
    f = tmp_path / "r.txt"
    f.write_text("good movie\nbad food\nfine day\n")
    other = tmp_path / "other.txt"
    other.write_text("bad movie\n")
    out = tmp_path / "t.jsonl"
    assert cli("run", "--model", str(pkgs["text"]), "bad movie", str(other), "--out", str(out)).returncode == 0
    assert cli("run", "--model", str(pkgs["text"]), str(f), "--out", str(out)).returncode == 0
    f.write_text("good movie\nfine day\n")  # the second line deleted: the third is now line 2
    r = cli("run", "--model", str(pkgs["text"]), str(f), "--out", str(out))
    assert "1 redone, their input changed since; 1 dropped, their input is gone" in r.stderr, r.stderr
    assert [(x["input"], x.get("text")) for x in read_lines(out)] == [
        ("bad movie", None), (f"{other}:1", "bad movie"), (f"{f}:1", "good movie"), (f"{f}:2", "fine day")]
    # a folder with an unreadable file: another run's literal texts stay
    d = tmp_path / "d"
    d.mkdir()
    (d / "a.txt").write_text("fine food\n")
    (d / "bad.txt").write_bytes(b"\x00\x01binary")
    r = cli("run", "--model", str(pkgs["text"]), str(d), "--out", str(out))
    assert "dropped" not in r.stderr and ("bad movie", None) in [(x["input"], x.get("text")) for x in read_lines(out)], r.stderr
    (d / "bad.txt").write_text("good food\n")  # its error line is redone as changed, not gone
    r = cli("run", "--model", str(pkgs["text"]), str(d), "--out", str(out))
    assert r.returncode == 0 and "1 redone, their input changed since" in r.stderr and "dropped" not in r.stderr, r.stderr

    paths = photo_folder(tmp_path / "photos", 6)
    out = tmp_path / "i.jsonl"
    args = ("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out))
    cli(*args)
    os.remove(paths[0])  # a deleted (or archived) image keeps its result: it could not be computed again
    r = cli(*args)
    assert "dropped" not in r.stderr and str(paths[0]) in [x["input"] for x in read_lines(out)], r.stderr

def test_a_list_file_of_image_paths(pkgs, tmp_path):
    paths = photo_folder(tmp_path / "photos", 5)
    lst = tmp_path / "photos" / "list.txt"
    # a byte-order mark, spaces around a path and comment lines are not part of any path
    lst.write_text("\n".join(["\ufeff# the first photos", str(paths[0]), f"  {os.path.relpath(paths[1], lst.parent)}  ", "missing.jpg",
                              "https://example.com/a.jpg"]) + "\n")
    out = tmp_path / "o.jsonl"
    stats = run_bulk(edgeai.load(pkgs["image"]), list_inputs([str(lst)], text=False), out)
    lines = read_lines(out)
    assert stats["errors"] == 2 and "does not exist" in lines[2]["error"] and "top_k" in lines[1] and len(lines) == 4
    # a web address is named as written and said to be one (review: joined to the list's folder, "https:/...")
    assert lines[3]["input"] == "https://example.com/a.jpg" and "is a web address" in lines[3]["error"]
    r = cli("run", "--model", str(pkgs["image"]), str(lst))  # without --out: says what to add
    assert r.returncode == 1 and "is a list of image paths: add --out results.jsonl" in r.stderr, r.stderr
    reviews = tmp_path / "reviews.txt"  # a long text file given to an image model: told from its first lines
    reviews.write_text("a fine film\n" * 200_000)
    r = cli("run", "--model", str(pkgs["image"]), str(reviews))
    assert r.returncode == 1 and "holds text, not image paths" in r.stderr, r.stderr


def test_a_folder_says_what_it_cannot_read_and_passes_over_what_is_not_a_photo(pkgs, tmp_path):
    # an iPhone's .HEIC and a broken link get error lines (once passed over in silence);
    # notes and macOS "._" sidecar files are not inputs
    folder = tmp_path / "photos"
    photo_folder(folder, 2)
    (folder / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "._a.jpg").write_bytes(b"\x00\x05\x16\x07")
    (folder / "notes.md").write_text("holiday")
    items = list_inputs([str(folder)], text=False)
    assert sorted(Path(x).name for x in items) == ["0000.jpg", "0001.png", "IMG_0001.HEIC", "broken.jpg", "gone.jpg"]
    results = {Path(r["input"]).name: r for r in edgeai.load(pkgs["image"]).predict_each(items)}
    assert "which edgeai's Pillow does not decode; convert it to JPEG or PNG" in results["IMG_0001.HEIC"]["error"]
    assert "is a broken symbolic link" in results["gone.jpg"]["error"]


def test_bulk_errors(pkgs, tmp_path):
    photo_folder(tmp_path / "photos", 2)
    (tmp_path / "garbage.jsonl").write_text("this is not json\n")
    cases = [
        (["--out", str(tmp_path)], "is a directory"),
        (["--out", str(tmp_path / "no" / "o.jsonl")], "does not exist"),
        (["--out", str(tmp_path / "garbage.jsonl")], "not an edgeai result"),
        (["--out", str(tmp_path / "r.csv")], "name it .jsonl"),
        (["--out", str(tmp_path / "r.jsonl"), "--json"], "give one of them"),
        (["--batch-size", "4"], "--batch-size is for a bulk run"),
        (["--workers", "2"], "--workers is for a bulk run"),
    ]
    for extra, msg in cases:
        r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), *extra)
        assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, (extra, r.stderr)
    r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"))
    assert r.returncode == 1 and "add --out" in r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "empty"), "--out", str(tmp_path / "e.jsonl"))
    assert r.returncode == 1 and "No images found" in r.stderr
    with pytest.raises(InputError, match="batch-size"):
        run_bulk(edgeai.load(pkgs["image"]), [], tmp_path / "x.jsonl", batch_size=0)
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "gone" / "r.jsonl")  # an --out that cannot be opened
    r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(tmp_path / "dangling.jsonl"))
    assert r.returncode == 1 and "cannot be written: No such file or directory" in r.stderr and "Traceback" not in r.stderr


def test_two_runs_into_one_file_are_refused_not_written_twice(pkgs, tmp_path):
    """Each run would answer every input the file lacks: the second is refused while the first holds the file."""
    import fcntl

    photo_folder(tmp_path / "photos", 2)
    out = tmp_path / "r.jsonl"
    with open(out, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # what a run in progress holds
        r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out))
        assert r.returncode == 1 and f"Another run is writing {out}" in r.stderr and out.read_text() == "", r.stderr
    r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out))
    assert "3 new result line(s)" in r.stderr and len(read_lines(out)) == 3, r.stderr  # two photos, the broken file's error


def test_parquet_output_equals_the_json_lines_and_resumes(pkgs, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    photo_folder(tmp_path / "photos", 12)
    out = tmp_path / "out.parquet"
    r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out), "--batch-size", "5")
    assert r.returncode == 1 and "13 rows" in r.stderr and "Traceback" not in r.stderr, r.stderr
    journal = tmp_path / "out.parquet.jsonl"
    lines = read_lines(journal)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == len(lines) == 13
    for row, line in zip(rows, lines):
        assert {k: v for k, v in row.items() if v is not None} == line  # error rows have no top_k, results no error
    # A second run over more photos answers only the new ones and rewrites the whole table.
    (tmp_path / "photos" / "set2" / "extra.png").write_bytes((tmp_path / "photos" / "set2" / "0002.webp").read_bytes())
    r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out))
    assert "1 new result line(s)" in r.stderr and "14 rows" in r.stderr, r.stderr
    assert pq.read_table(out).num_rows == 14 and not list(tmp_path.glob(".out.parquet.*"))
    journal.unlink()  # edgeai's own table, known by its mark without the journal: rebuilt from this run
    r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out))
    assert "14 rows" in r.stderr and pq.read_table(out).num_rows == 14, r.stderr
    # a Parquet file edgeai did not write is never replaced (review: a user's sales table was)
    import pyarrow as pa

    pq.write_table(pa.table({"customer": [1, 2], "revenue": [10.0, 20.0]}), tmp_path / "sales.parquet")
    (tmp_path / "notes.parquet").write_text("precious")
    for name in ("sales.parquet", "notes.parquet"):
        before = (tmp_path / name).read_bytes()
        r = cli("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(tmp_path / name))
        assert r.returncode == 1 and f"{tmp_path / name} exists and is not edgeai's results" in r.stderr, r.stderr
        assert (tmp_path / name).read_bytes() == before and not (tmp_path / f"{name}.jsonl").exists()


def test_parquet_keeps_undecodable_names_and_refuses_mixed_columns_in_one_sentence(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    from edgeai.journal import write_parquet
    from edgeai.errors import EdgeAIError

    journal = tmp_path / "r.parquet.jsonl"
    bad_name = "photos/caf" + b"\xe9".decode("utf-8", "surrogateescape") + ".jpg"  # a Latin-1 file name
    journal.write_text(json.dumps({"input": bad_name, "error": "not an image"}, ensure_ascii=True) + "\n"
                       + json.dumps({"input": "ok.jpg", "top_k": [{"index": 1, "label": "x", "score": 0.5}]}) + "\n")
    assert write_parquet(journal, tmp_path / "r.parquet") == 2
    assert pq.read_table(tmp_path / "r.parquet").column("input").to_pylist() == ["photos/caf\\xe9.jpg", "ok.jpg"]
    journal.write_text('{"input": "a", "score": 1.0}\n{"input": "b", "score": "high"}\n')
    with pytest.raises(EdgeAIError, match="do not fit one Parquet table"):
        write_parquet(journal, tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()
    # one schema whether or not a row failed (review); embeddings float32 where flat, as they come where nested
    import pyarrow as pa

    journal.write_text('{"input": "a", "embedding": [0.25, -1.5]}\n{"input": "b", "embedding": [0.125, 2.0]}\n')
    write_parquet(journal, tmp_path / "e.parquet")
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.schema.field("error").type == pa.string() and table.column("error").to_pylist() == [None, None]
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.column("embedding").to_pylist()[0] == [0.25, -1.5]
    journal.write_text('{"input": "x", "error": "not text"}\n{"input": "a", "embedding": [0.25, -1.5]}\n')  # failed first
    write_parquet(journal, tmp_path / "f.parquet")
    assert pq.read_table(tmp_path / "f.parquet").schema == table.schema  # the same columns, types and order
    journal.write_text('{"input": "a", "embedding": [0.1, 2.0]}\n')  # not a float32's value: a float64 model's, kept
    write_parquet(journal, tmp_path / "d.parquet")
    assert pq.read_table(tmp_path / "d.parquet").column("embedding").to_pylist() == [[0.1, 2.0]]
    journal.write_text('{"input": "a", "embedding": [[0.25], [1.0]]}\n')
    write_parquet(journal, tmp_path / "t.parquet")
    assert pq.read_table(tmp_path / "t.parquet").column("embedding").to_pylist() == [[[0.25], [1.0]]]


def two_variant_package(root: Path) -> Path:
    """The tiny package plus an "int8" variant whose file differs (another seed): two model ids."""
    from conftest import tiny_classifier
    from edgeai.package import Package

    pkg = make_tiny_package(root)
    tiny_classifier(root.parent / f"{root.name}-other.onnx", seed=1)
    Package.open(pkg).add_variant("int8", root.parent / f"{root.name}-other.onnx", {"made_from": "fp32"})
    return pkg


def test_resuming_into_another_models_file_is_refused(tmp_path):
    pkg = two_variant_package(tmp_path / "pkg")
    photo_folder(tmp_path / "photos", 6)
    out = tmp_path / "results.jsonl"
    run = lambda model, *extra: cli("run", "--model", str(model), str(tmp_path / "photos"), "--out", str(out), *extra)
    assert run(pkg, "--variant", "fp32").returncode == 1  # broken.jpg
    lines = read_lines(out)
    sha = {v: edgeai.load(pkg, variant=v).package.variants[v]["sha256"][:12] for v in ("fp32", "int8")}
    assert len(lines) == 7 and {x["model"] for x in lines} == {f"tiny@{sha['fp32']}"}  # error lines too
    with open(out, "a") as f:
        f.write('{"input": "torn')  # even a torn tail stays as it is when the file is refused
    before = out.read_bytes()

    r = run(pkg, "--variant", "int8")
    assert r.returncode == 1 and r.stderr.count("error:") == 1 and "Traceback" not in r.stderr, r.stderr
    sentence = r.stderr.split("error:")[1]
    for part in (f"tiny@{sha['fp32']} (fp32)", f"tiny@{sha['int8']} (int8)", "--out", "--new-file", "results.tiny-int8.jsonl"):
        assert part in sentence, (part, sentence)
    assert out.read_bytes() == before

    other = make_tiny_package(tmp_path / "other")  # the same weights under another package name
    edit = json.loads((other / "manifest.json").read_text())
    edit["name"] = "other"
    (other / "manifest.json").write_text(json.dumps(edit))
    r = run(other)
    assert r.returncode == 1 and f"other@{sha['fp32']}" in r.stderr and f"tiny@{sha['fp32']}" in r.stderr, r.stderr
    assert out.read_bytes() == before
    with pytest.raises(InputError, match="holds results of"):
        run_bulk(edgeai.load(pkg, variant="int8"), list_inputs([str(tmp_path / "photos")], text=False), out)
    assert out.read_bytes() == before

    r = run(pkg, "--variant", "int8", "--new-file")
    side = tmp_path / "results.tiny-int8.jsonl"
    assert r.returncode == 1 and str(side) in r.stderr and "1 input(s) failed" in r.stderr, r.stderr
    got = read_lines(side)
    assert len(got) == 7 and {x["model"] for x in got} == {f"tiny@{sha['int8']}"}
    assert {x["variant"] for x in got if "error" not in x} == {"int8"} and out.read_bytes() == before
    r = run(pkg, "--variant", "int8", "--new-file")  # the same command again resumes its own file
    assert "0 new result line(s)" in r.stderr and "7 already there" in r.stderr and len(read_lines(side)) == 7

    old = tmp_path / "old.jsonl"  # written before lines said which model made them
    old.write_text("".join(json.dumps({k: v for k, v in x.items() if k != "model"}) + "\n" for x in lines))
    r = cli("run", "--model", str(pkg), str(tmp_path / "photos"), "--out", str(old), "--variant", "fp32")
    assert r.returncode == 1 and "cannot be checked" in r.stderr and "--new-file" in r.stderr and r.stderr.count("error:") == 1


def test_retry_errors_redoes_the_failed_inputs_once(pkgs, tmp_path):
    paths = photo_folder(tmp_path / "photos", 5)
    out = tmp_path / "r.jsonl"
    args = ("run", "--model", str(pkgs["image"]), str(tmp_path / "photos"), "--out", str(out))
    assert cli(*args).returncode == 1
    broken = str(tmp_path / "photos" / "set0" / "broken.jpg")
    assert "error" in {x["input"]: x for x in read_lines(out)}[broken]
    r = cli(*args)  # a plain resume keeps the error line, and says the file is not a success yet
    assert r.returncode == 1 and "0 new result line(s)" in r.stderr and "still holds 1 error line(s)" in r.stderr, r.stderr
    r = cli(*args, "--retry-errors")  # still broken: retried, and an error again
    assert r.returncode == 1 and "1 new result line(s), 1 of them an error" in r.stderr and "1 error line(s) retried" in r.stderr
    (tmp_path / "photos" / "set0" / "broken.jpg").write_bytes(CAT.read_bytes())  # the input is fixed
    os.utime(broken, ns=(os.stat(broken).st_atime_ns, os.stat(broken).st_mtime_ns + 10**9))  # a coarse clock's tick
    r = cli(*args, "--retry-errors")
    assert r.returncode == 0 and "1 new result line(s)" in r.stderr and "1 error line(s) retried" in r.stderr, r.stderr
    lines = read_lines(out)
    assert len(lines) == len(paths) + 1 and len({x["input"] for x in lines}) == len(lines)  # no duplicates
    fixed = {x["input"]: x for x in lines}[broken]
    assert "error" not in fixed and fixed["top_k"] == edgeai.load(pkgs["image"]).predict(broken, top_k=5)["top_k"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "r.jsonl"]  # no temporary file left
    r = cli(*args, "--retry-errors")
    assert r.returncode == 0 and "0 new result line(s)" in r.stderr and len(read_lines(out)) == len(lines)
    r = cli("run", "--model", str(pkgs["image"]), str(CAT), "--retry-errors")
    assert r.returncode == 1 and "--retry-errors is for a bulk run" in r.stderr


def test_a_mistyped_file_name_is_an_error_of_its_own(pkgs, tmp_path):
    """A word that reads as a file name but names none ran as a text with a warning and exit 0,
    so a script saw success and a label of the path (review): it is an error entry now, the
    other inputs still run, and --text runs the words."""
    from edgeai.text_inputs import looks_like_a_missing_file

    assert looks_like_a_missing_file("reviews.txt") and looks_like_a_missing_file("./data/") and looks_like_a_missing_file("/no/such")
    assert not any(looks_like_a_missing_file(t) for t in ("good movie", "and/or", "https://example.com/a.txt", "ok", ""))
    missing = tmp_path / "reviews.txt"
    r = cli("run", "--model", str(pkgs["text"]), str(missing), "good movie", "--json")
    results = json.loads(r.stdout)["results"]
    assert r.returncode == 1 and f"No file named {str(missing)!r}; to run these words as a text, pass --text (edgeai.bulk.list_inputs(..., literal=True) in Python)." in r.stderr
    assert results[0] == {"input": str(missing), "error": f"No file named {str(missing)!r}; to run these words as a text, pass --text (edgeai.bulk.list_inputs(..., literal=True) in Python)."}
    assert "top_k" in results[1] and r.stderr.count("error:") == 1, r.stderr
    r = cli("run", "--model", str(pkgs["text"]), str(missing), "--text", "--json")
    assert r.returncode == 0 and "warning" not in r.stderr and "error" not in r.stderr
    out = tmp_path / "m.jsonl"
    r = cli("run", "--model", str(pkgs["text"]), str(missing), "good movie", "--out", str(out))  # bulk: an error line
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert r.returncode == 1 and [("error" in x) for x in lines] == [True, False], r.stderr


def test_a_run_that_fails_before_its_first_line_leaves_no_file_it_created(tmp_path):
    """(Ray unreachable, say): the --out it opened and locked goes; a file that was there stays."""
    from edgeai.journal import exclusive

    out = tmp_path / "r.jsonl"
    for existed in (False, True):
        with pytest.raises(RuntimeError):
            with exclusive(out):
                raise RuntimeError("could not reach Ray")
        assert out.exists() == existed
        out.write_text("")


def test_an_input_named_twice_is_run_once(tmp_path):
    """`run samples samples/cat.jpg ./samples/cat.jpg --out F` wrote three lines of cat.jpg, two
    with the same "input" (review): each input is listed once, where it is first named."""
    from edgeai.bulk import list_inputs

    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    a, b = str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")
    assert list_inputs([b, str(tmp_path), a, f"{tmp_path}/./a.jpg"], text=False) == [b, a]
    (tmp_path / "t.txt").write_text("same\nsame\n")  # two lines of one text are two inputs: t.txt:1, t.txt:2
    got = list_inputs(["good", str(tmp_path / "t.txt"), "good", f"{tmp_path}/./t.txt"], text=True)
    assert [str(x) for x in got] == ["good", "same", "same", "good"]  # a text typed twice: two samples of one prompt


def test_a_second_standard_input_never_replaces_the_first_ones_results(pkgs, tmp_path):
    """Every line piped in is "<stdin>:N": a second stream's line 1 read as the first's, edited,
    and replaced its result with exit 0 (review). The same stream again resumes; another is refused."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("edgeai")
    out = tmp_path / "batch.jsonl"

    def piped(text: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(exe), "run", "--model", str(pkgs["text"]), "-", "--out", str(out)], input=text,
                              capture_output=True, text=True, timeout=120)

    first = piped("good movie\nbad food\n")
    assert first.returncode == 0 and len(read_lines(out)) == 2, first.stderr
    again = piped("good movie\nbad food\n")
    assert again.returncode == 0 and len(read_lines(out)) == 2, again.stderr
    before = out.read_bytes()
    other = piped("what a day\n")
    assert other.returncode == 1 and "holds the results of another standard input (<stdin>:1 was 'good movie'" in other.stderr
    assert out.read_bytes() == before


def test_a_file_of_another_top_k_is_refused_untouched(pkgs, tmp_path):
    """review: resuming a --top-k 2 file without --top-k appended 3-class lines to it, silently."""
    photo_folder(tmp_path / "photos", 6)
    items = list_inputs([str(tmp_path / "photos")], text=False)
    out = tmp_path / "out.jsonl"
    pipe = edgeai.load(pkgs["image"])
    run_bulk(pipe, items[:3], out, top_k=2)
    before = out.read_bytes()
    for k in (None, 1, 9):  # the package's 3, fewer, and more than its 4 classes
        with pytest.raises(InputError, match="holds results of 2 classes each.*--top-k 2"):
            run_bulk(pipe, items, out, top_k=k)
    assert out.read_bytes() == before
    assert run_bulk(pipe, items, out, top_k=2)["skipped"] == 3  # the same top-k resumes it
    run_bulk(pipe, items, tmp_path / "all.jsonl", top_k=4)
    assert run_bulk(pipe, items, tmp_path / "all.jsonl", top_k=9)["skipped"] == len(items)  # 4 classes either way


def test_a_symlinked_out_file_is_rewritten_where_it_points(pkgs, tmp_path):
    """review: --retry-errors (and a changed input) replaced a symlinked --out with a plain file,
    leaving the file it pointed to without the new lines; so did the Parquet table."""
    photo_folder(tmp_path / "photos", 4)
    items = list_inputs([str(tmp_path / "photos")], text=False)
    pipe = edgeai.load(pkgs["image"])
    (tmp_path / "store").mkdir()
    real, link = tmp_path / "store" / "real.jsonl", tmp_path / "link.jsonl"
    run_bulk(pipe, items, real)
    link.symlink_to(real)
    Image.new("RGB", (9, 9)).save(tmp_path / "photos" / "set0" / "broken.jpg", "JPEG")  # mended
    stats = run_bulk(pipe, items, link, retry_errors=True)
    assert stats["retried"] == 1 and stats["errors"] == 0
    assert link.is_symlink() and not any("error" in x for x in read_lines(real)) and len(read_lines(real)) == len(items)
    pytest.importorskip("pyarrow")
    from edgeai.journal import write_parquet

    table = tmp_path / "store" / "t.parquet"
    write_parquet(real, table)
    (tmp_path / "t.parquet").symlink_to(table)
    assert write_parquet(link, tmp_path / "t.parquet") == len(items) and (tmp_path / "t.parquet").is_symlink()


def test_a_full_disk_is_one_sentence_and_resumes(pkgs, tmp_path):
    """review: a write that failed (no space left, a file-size limit) was a traceback from f.flush()."""
    import resource

    texts = tmp_path / "many.txt"
    texts.write_text("".join(f"{WORDS[i % len(WORDS)]} {WORDS[i % 7]}\n" for i in range(3000)))
    out = tmp_path / "out.jsonl"
    exe = Path(sys.executable).with_name("edgeai")
    r = subprocess.run([str(exe), "run", "--model", str(pkgs["text"]), str(texts), "--out", str(out)], capture_output=True,
                       text=True, timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000)))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert f"error: Writing {out} failed (File too large); the lines written so far are kept" in r.stderr
    r = cli("run", "--model", str(pkgs["text"]), str(texts), "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = read_lines(out)
    assert len(lines) == 3000 and len({x["input"] for x in lines}) == 3000
