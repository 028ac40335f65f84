"""The model package: schema, hashes, safe paths, atomic writes."""

from __future__ import annotations

import json
import os

import pytest

from conftest import edit_manifest, make_tiny_package
from edgeai.errors import PackageError
from edgeai.package import Package, load_schema, staging_dir
from edgeai import _schema


def test_tiny_package_opens_and_verifies(tiny_pkg):
    pkg = Package.open(tiny_pkg)
    assert pkg.name == "tiny"
    assert pkg.variant_path("fp32").name == "model.onnx"
    assert pkg.labels == ["red", "green", "blue", "gray"]


@pytest.mark.parametrize("rel", ["../outside.onnx", "/etc/passwd", "sub/../../x.onnx", "C:\\model.onnx"])
def test_paths_that_leave_the_package_are_refused(tiny_pkg, rel):
    edit_manifest(tiny_pkg, lambda m: m["variants"]["fp32"].update(file=rel))
    with pytest.raises(PackageError, match="leaves the package|not a relative path"):
        Package.open(tiny_pkg)


def test_symlink_pointing_out_is_refused(tiny_pkg, tmp_path):
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((tiny_pkg / "model.onnx").read_bytes())
    os.symlink(outside, tiny_pkg / "link.onnx")
    edit_manifest(tiny_pkg, lambda m: m["variants"]["fp32"].update(file="link.onnx"))
    with pytest.raises(PackageError, match="outside the package"):
        Package.open(tiny_pkg)


def test_tampered_model_fails_its_hash(tiny_pkg):
    with open(tiny_pkg / "model.onnx", "ab") as f:
        f.write(b"\0")
    pkg = Package.open(tiny_pkg)
    with pytest.raises(PackageError, match="does not match the sha256"):
        pkg.variant_path("fp32")


def test_a_damaged_variant_names_an_intact_one(tiny_pkg):
    from quantize import quantize

    quantize(tiny_pkg, measure_latency=False)
    pkg = Package.open(tiny_pkg)
    with open(tiny_pkg / pkg.variants["int8"]["file"], "ab") as f:
        f.write(b"\0")
    with pytest.raises(PackageError, match=r"does not match the sha256 .*; the fp32 variant is intact \(--variant fp32"):
        Package.open(tiny_pkg).variant_path("int8")
    Package.open(tiny_pkg).variant_path("fp32")  # intact
    (tiny_pkg / "model.onnx").unlink()  # the fp32 file itself gone: an intact one is named, never the damaged int8 (review)
    others = [v for v in pkg.variants if v not in ("fp32", "int8")]
    with pytest.raises(PackageError, match=rf"missing its file model.onnx{'; the ' + others[0] + ' variant is intact' if others else '.$'}"):
        Package.open(tiny_pkg).variant_path("fp32")


@pytest.mark.parametrize("kind", ["inputs", "outputs"])
def test_a_manifest_naming_what_the_graph_lacks_is_refused_at_load(tiny_pkg, kind):
    """Not ONNX Runtime's ValueError from the first run (a traceback in the CLI)."""
    import edgeai

    edit_manifest(tiny_pkg, lambda m: m[kind][0].update(name="renamed"))
    said = (r"model.onnx needs input 'pixel_values', which the package's manifest does not list" if kind == "inputs"
            else r"manifest lists output 'renamed', which model.onnx does not have \(its outputs: logits\)")
    with pytest.raises(PackageError, match=said):
        edgeai.load(tiny_pkg, provider="cpu")


def test_tampered_labels_fail_their_hash(tiny_pkg):
    (tiny_pkg / "labels.txt").write_text("cat\ndog\nbird\nfish\n")
    with pytest.raises(PackageError, match="labels.txt.*sha256"):
        Package.open(tiny_pkg).labels


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(schema_version=99), "schema_version 99"),
        (lambda m: m.update(surprise=1), "unknown field 'surprise'"),
        (lambda m: m["variants"]["fp32"].update(sha256="abc"), "does not match"),
        (lambda m: m.update(family="Not a family!"), "family"),
        (lambda m: m.pop("inputs"), "missing 'inputs'"),
        (lambda m: m["variants"].update(int2=m["variants"]["fp32"]), "int2"),
    ],
)
def test_invalid_manifests_are_rejected(tiny_pkg, change, message):
    edit_manifest(tiny_pkg, change)
    with pytest.raises(PackageError, match=message):
        Package.open(tiny_pkg)


def test_corrupt_and_oversized_manifests(tiny_pkg):
    (tiny_pkg / "manifest.json").write_text('{"schema_version": 1,')
    with pytest.raises(PackageError, match="not valid JSON"):
        Package.open(tiny_pkg)
    (tiny_pkg / "manifest.json").write_text(" " * (2 << 20))
    with pytest.raises(PackageError, match="far larger"):
        Package.open(tiny_pkg)


def test_not_a_package(tmp_path):
    with pytest.raises(PackageError, match="does not exist"):
        Package.open(tmp_path / "nope")
    with pytest.raises(PackageError, match="no manifest.json"):
        Package.open(tmp_path)


def test_own_validator_agrees_with_jsonschema(tiny_pkg):
    jsonschema = pytest.importorskip("jsonschema")
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    good = json.loads((tiny_pkg / "manifest.json").read_text())
    assert _schema.validate(good, schema) == []
    jsonschema.validate(good, schema)
    for bad in ({**good, "extra": 1}, {**good, "family": "Not a family!"}, {**good, "variants": {}},
                {**good, "inputs": [{"name": "x", "dtype": "float64", "shape": [1]}]}):
        assert _schema.validate(bad, schema)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_staging_dir_keeps_the_old_package_on_failure(tiny_pkg):
    before = (tiny_pkg / "manifest.json").read_bytes()
    with pytest.raises(RuntimeError):
        with staging_dir(tiny_pkg) as tmp:
            (tmp / "half.onnx").write_bytes(b"partial")
            raise RuntimeError("killed half-way")
    assert (tiny_pkg / "manifest.json").read_bytes() == before
    assert not [p for p in tiny_pkg.parent.iterdir() if "edgeai-tmp" in p.name]
    Package.open(tiny_pkg).variant_path("fp32")


def test_staging_dir_replaces_a_package_whole(tiny_pkg):
    from edgeai.errors import PackageError

    with pytest.raises(PackageError, match="holds the package of another model, tiny; give other its own folder"):
        with staging_dir(tiny_pkg, "other"):
            raise AssertionError("refused before the build starts")
    (tiny_pkg / "NOTES.md").write_text("mine")  # what the user put in the package is carried into the new one
    (tiny_pkg / "eval").mkdir()
    (tiny_pkg / "eval" / "a.npy").write_bytes(b"x")
    (tiny_pkg / "model.int8.0123456789ab.onnx").write_bytes(b"stale")  # a killed run's variant file is not
    with staging_dir(tiny_pkg, "tiny") as tmp:
        (tmp / "new.txt").write_text("new")
    assert (tiny_pkg / "new.txt").exists() and not (tiny_pkg / "model.onnx").exists()
    assert sorted(p.name for p in tiny_pkg.iterdir()) == ["NOTES.md", "eval", "new.txt"]
    assert (tiny_pkg / "NOTES.md").read_text() == "mine" and (tiny_pkg / "eval" / "a.npy").is_file()
    assert sorted(p.name for p in tiny_pkg.parent.iterdir()) == ["tiny"]


def test_user_files_survive_a_kill_between_the_swap_and_their_carrying(tiny_pkg):
    import shutil

    from edgeai.atomic import clean_debris

    # the new package is in place; the old one, moved aside by a process that is gone, still holds them
    old = tiny_pkg.parent / ".tiny.edgeai-tmp-old-999999999-abcdef"
    shutil.copytree(tiny_pkg, old)
    (old / "NOTES.md").write_text("mine")
    (tiny_pkg / "new.txt").write_text("new")
    clean_debris(tiny_pkg)
    assert (tiny_pkg / "NOTES.md").read_text() == "mine" and not old.exists()
    Package.open(tiny_pkg).variant_path("fp32")  # the package's own files were the new one's, not the old


def test_a_remembered_hash_is_not_trusted_after_the_file_changes(tmp_path, monkeypatch):
    """Large model files are hashed once (edgeai/_stamps.py); changing the bytes, even with the
    size and mtime put back, is still caught because the ctime moves."""
    import os

    from edgeai import _stamps
    from edgeai.package import _hash_and_scan

    monkeypatch.setenv("EDGEAI_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(_stamps, "MIN_BYTES", 0)
    monkeypatch.setattr(_stamps, "SETTLED_NS", 0)
    f = tmp_path / "model.onnx"
    f.write_bytes(b"a" * 1000)
    calls = []

    def compute(p):
        calls.append(p)
        return _hash_and_scan(p)

    first = _stamps.remembered(f, compute)
    assert _stamps.remembered(f, compute) == first and len(calls) == 1  # remembered
    st = os.stat(f)
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: only the ctime tells
    second = _stamps.remembered(f, compute)
    assert len(calls) == 2 and second != first


def test_a_folder_named_like_a_built_in_says_it_hides_it(tmp_path, monkeypatch):
    import edgeai

    (tmp_path / "cnn").mkdir()  # e.g. a folder of photos
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PackageError, match="cnn is a folder here, not a package, and it hides the built-in cnn: give the built-in as efficientnet-lite0"):
        edgeai.load("cnn")
    (tmp_path / "lstm").mkdir()  # the model's own name: its alias, not the same name again
    with pytest.raises(PackageError, match="hides the built-in lstm: give the built-in as sentiment, or rename it"):
        edgeai.load("lstm")


def test_leftover_files_of_every_variant_are_recognised():
    # the cleanup of files a killed run left must know every variant's file name (int4 was missed)
    from edgeai.atomic import _VARIANT_FILE
    from edgeai.package import VARIANTS

    assert all(_VARIANT_FILE.fullmatch(f"model.{v}.0123456789ab.onnx") for v in VARIANTS if v != "fp32")
    assert _VARIANT_FILE.fullmatch("model.0123456789ab.onnx") and not _VARIANT_FILE.fullmatch("model.int8.onnx")


def test_labels_that_do_not_fit_the_output_and_a_manifest_with_a_bom(tiny_pkg):
    """Review: a labels file cut to fewer lines (its hash updated) ran, with indices as labels for
    the classes it lacked; a manifest saved by Notepad (a UTF-8 byte-order mark) was refused in
    Python's words ("decode using utf-8-sig")."""
    import edgeai
    from edgeai.package import file_entry

    raw = (tiny_pkg / "manifest.json").read_bytes()
    (tiny_pkg / "manifest.json").write_bytes(b"\xef\xbb\xbf" + raw)
    from edgeai.atomic import read_manifest

    assert Package.open(tiny_pkg).name == "tiny" and read_manifest(tiny_pkg)["name"] == "tiny"  # the writers' guards read it too
    from edgeai.atomic import remove_stale_files

    (tiny_pkg / "model.int8.0123456789ab.onnx").write_bytes(b"left by a killed run")  # no manifest names it
    assert remove_stale_files(tiny_pkg) == ["model.int8.0123456789ab.onnx"]  # its cleanup read the BOM as "no package"
    (tiny_pkg / "manifest.json").write_bytes(raw)
    (tiny_pkg / "labels.txt").write_text("red\ngreen\nblue\n")
    edit_manifest(tiny_pkg, lambda m: m["assets"].update({"labels.txt": file_entry(tiny_pkg / "labels.txt")}))
    with pytest.raises(PackageError, match="has 3 labels for the 4 classes of its output 'logits'"):
        edgeai.load(tiny_pkg)


def test_hand_edited_latencies_that_cannot_be_true_are_refused(tiny_pkg):
    """Review: a manifest with a key twice (a latency pasted below the old one) was read with the
    last one winning, silently; a NaN or negative p50 passed the schema and ranked the variants."""
    raw = (tiny_pkg / "manifest.json").read_text()
    (tiny_pkg / "manifest.json").write_text(raw.replace('"name": ', '"name": "other", "name": ', 1))
    with pytest.raises(PackageError, match="names 'name' twice in one object"):
        Package.open(tiny_pkg)
    from edgeai.atomic import read_manifest

    assert read_manifest(tiny_pkg) is None  # the writers' guards read manifests as open does, not the last key
    from edgeai.atomic import check_destination

    with pytest.raises(PackageError, match=r"names 'name' twice in one object.*; refusing to replace .*\(mend the manifest"):
        check_destination(tiny_pkg, "tiny")  # a package, but of which model is unknown: not replaced
    (tiny_pkg / "manifest.json").write_text('{"manifest_version": 3, "name": "my web app"}')  # another tool's
    with pytest.raises(PackageError, match="exists and is not a model package; refusing to replace it"):
        check_destination(tiny_pkg, "tiny")
    (tiny_pkg / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)  # within the size limit
    with pytest.raises(PackageError, match="nests its JSON deeper than a manifest can"):
        Package.open(tiny_pkg)
    (tiny_pkg / "manifest.json").write_text(raw.replace('"name": ', '"n": ' + "1" * 5000 + ', "name": ', 1))
    with pytest.raises(PackageError, match="is not valid JSON .*4300 digits"):  # Python's own limit: was a ValueError traceback
        Package.open(tiny_pkg)
    (tiny_pkg / "manifest.json").write_text(raw)
    for bad, said in (("NaN", "p50_ms is nan, not a finite number"), ("Infinity", "p50_ms is inf, not a finite number"),
                      ("-1.5", "p50_ms must be above 0"), ("0", "p50_ms must be above 0")):
        edit_manifest(tiny_pkg, lambda m: m["variants"]["fp32"].update(latency={"k": {"provider": "CPUExecutionProvider", "p50_ms": 1.0}}))
        text = (tiny_pkg / "manifest.json").read_text().replace('"p50_ms": 1.0', f'"p50_ms": {bad}')
        (tiny_pkg / "manifest.json").write_text(text)
        with pytest.raises(PackageError, match=said):
            Package.open(tiny_pkg)
        (tiny_pkg / "manifest.json").write_text(raw)


def test_a_plain_onnx_file_is_pointed_at_optimize_unless_it_is_not_onnx(tmp_path):
    """Review: a cut-short .onnx given to load was told to run `edgeai optimize`, which then
    said it was not ONNX: the second error is said first."""
    from conftest import tiny_classifier

    import edgeai

    tiny_classifier(tmp_path / "m.onnx")
    with pytest.raises(PackageError, match=r"is a plain ONNX file, not a package: `edgeai optimize .*m\.onnx` wraps it"):
        edgeai.load(tmp_path / "m.onnx")
    pkg = make_tiny_package(tmp_path / "pkg")  # a package's own variant file: wrapping it made a package inside it (review)
    with pytest.raises(PackageError, match=r"model\.onnx is the fp32 variant of the package .*pkg; give the package folder"):
        edgeai.load(pkg / "model.onnx")
    from quantize.wrap import wrap_onnx  # what `edgeai optimize/quantize FILE.onnx` does with it

    with pytest.raises(PackageError, match=r"model\.onnx is the fp32 variant of the package"):
        wrap_onnx(pkg / "model.onnx")
    assert not (pkg / "model").exists()
    (tmp_path / "cut.onnx").write_bytes((tmp_path / "m.onnx").read_bytes()[:-7])
    with pytest.raises(PackageError, match=r"cut\.onnx is not a valid ONNX model: "):
        edgeai.load(tmp_path / "cut.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")  # parses as an empty model; said as an empty image is (review: "ir_version")
    with pytest.raises(PackageError, match=r"empty\.onnx is not a valid ONNX model: it is empty \(0 bytes\)\.$"):
        edgeai.load(tmp_path / "empty.onnx")


def test_cosines_written_before_they_were_clipped_still_open(tmp_path):
    """The schema bounds the agreement figures; a package written before cosines were clipped can
    hold 1.0000000000000002, and the loader reads every older version (review)."""
    from conftest import edit_manifest, make_tiny_package

    pkg = make_tiny_package(tmp_path / "tiny")
    edit_manifest(pkg, lambda m: m["variants"]["fp32"].update(accuracy={"cosine_min": 1.0000000000000002, "cosine_mean": 1.0000000000000002}))
    assert Package.open(pkg).variants["fp32"]["accuracy"]["cosine_min"] > 1
    edit_manifest(pkg, lambda m: m["variants"]["fp32"].update(accuracy={"cosine_min": 5.0}))
    with pytest.raises(PackageError, match="cosine_min is above 1.000001"):
        Package.open(pkg)


def test_a_manifest_that_cannot_be_written_leaves_nothing_half_written(tiny_pkg, monkeypatch):
    """A full disk (or a read-only one) while the manifest is replaced: the old manifest stays,
    no half-written temporary file is left in the package, and the refusal names the package's
    folder, not a temporary file that is gone."""
    import errno

    from edgeai import package
    from edgeai.cli import _refused

    before = (tiny_pkg / "manifest.json").read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(package.os, "fsync", disk_full)
    with pytest.raises(OSError):
        Package.open(tiny_pkg).update(description="a hand-written description")
    monkeypatch.undo()
    assert (tiny_pkg / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tiny_pkg.iterdir()) == ["labels.txt", "manifest.json", "model.onnx"]

    real_open = open

    def read_only(path, *args, **kwargs):
        if "edgeai-tmp" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(package, "open", read_only, raising=False)
    with pytest.raises(OSError) as e:
        Package.open(tiny_pkg).update(description="a hand-written description")
    assert _refused(e.value) == f"{tiny_pkg} cannot be written: Read-only file system."
