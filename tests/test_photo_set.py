"""The held-out photo set (edgeai.data.photo_set): the installed photos, the feeds that use them,
the .rcc reader, the installer's refusals, and the 95% intervals beside every agreement figure."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_tiny_package
from edgeai.data import photo_set
from edgeai.data.compare import clustered_interval, compare, mean_interval, wilson_interval
from edgeai.data.rcc import RccError, read_rcc

INSTALL = "python -m edgeai.data.photo_set install"


# -- the installed set -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def installed() -> list[Path]:
    paths = photo_set.held_out_photos()
    assert len(paths) >= photo_set.MIN_PHOTOS, (
        f"the held-out photo set is not installed in {photo_set.default_dir()}: run `{INSTALL}` (the README's set-up does)")
    return paths


def test_the_installed_set_is_the_list_byte_for_byte_and_every_photo_decodes(installed):
    rows = photo_set.read_list()
    assert len(installed) == len(rows) >= 200
    assert photo_set.verify(photo_set.default_dir(), rows) == []
    assert len({r["sha256"] for r in rows}) == len(rows)  # distinct files
    assert {r["license"] for r in rows} and all(r["license"] and r["version"] for r in rows)
    for path, r in zip(installed, rows):
        with Image.open(path) as im:
            assert im.size == (int(r["width"]), int(r["height"])), path
            im.draft("RGB", (64, 64))  # JPEG: decode at a reduced scale (still every byte)
            im.load()


def test_the_held_out_feed_of_a_cnn_package_is_one_view_per_installed_photo(installed, tmp_path):
    from edgeai.data.feeds import held_out_inputs, image_feeds
    from edgeai.package import Package

    pkg = Package.open(make_tiny_package(tmp_path / "tiny"))
    filters = list(warnings.filters)
    name, feeds = held_out_inputs(pkg)
    assert name == photo_set.SET_NAME
    batch = np.concatenate([f["pixel_values"] for f in feeds])
    assert len(batch) == len(installed)
    np.testing.assert_array_equal(batch[:3], image_feeds(pkg, installed[:3])[0]["pixel_values"])
    # decoded on several threads (ImagePreprocessor.each): the same arrays, in order, as one at a time
    from edgeai.errors import InputError
    from edgeai.preprocess import ImagePreprocessor

    pre = ImagePreprocessor(pkg.manifest["preprocess"])
    np.testing.assert_array_equal(np.stack(pre.each(installed[:40])), np.stack([pre(p) for p in installed[:40]]))
    assert warnings.filters == filters  # each thread's catch_warnings left "ignore" behind for the host (review)
    with pytest.raises(InputError, match="gone.jpg' does not exist"):  # one bad file is its own sentence, not a pool's
        pre.each([*installed[:5], tmp_path / "gone.jpg", *installed[5:10]])


def test_a_variant_records_which_set_its_figures_come_from_with_intervals(installed, tmp_path):
    from edgeai.package import Package
    from edgeai.quantize import optimize

    pkg = optimize(make_tiny_package(tmp_path / "tiny"))
    variants = Package.open(pkg.path).variants
    acc = variants["optimized"]["accuracy"]
    # optimize times every variant afterwards and files the figures under its own name
    assert {e["source"] for v in variants.values() for e in v["latency"].values()} == {"optimize"}
    assert acc["held_out"] == photo_set.SET_NAME and acc["samples"] == len(installed)
    lo, hi = acc["top1_agreement_ci95"]
    assert lo <= acc["top1_agreement"] <= hi and hi - lo < 0.05
    r = subprocess.run([str(Path(sys.executable).with_name("edgeai")), "inspect", str(pkg.path)],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert f"optimized vs fp32 on {photo_set.SET_NAME}: top1 agreement {acc['top1_agreement']:.4f} " \
           f"[{lo:.4f}, {hi:.4f}], n={len(installed)}" in r.stdout, r.stdout + r.stderr


def test_without_the_set_the_checks_use_the_wheel_photos_with_crops(tmp_path, monkeypatch):
    from edgeai.data.feeds import held_out_inputs
    from edgeai.data.photos import HELD_OUT, WHEEL_SET_NAME, photos
    from edgeai.package import Package

    monkeypatch.setenv("EDGEAI_PHOTOS", str(tmp_path / "none"))
    assert photo_set.held_out_photos() == []
    name, feeds = held_out_inputs(Package.open(make_tiny_package(tmp_path / "tiny")), per_photo=2)
    assert name == WHEEL_SET_NAME and sum(len(f["pixel_values"]) for f in feeds) == 3 * len(photos(HELD_OUT))


# -- the .rcc reader ---------------------------------------------------------------------------
def make_rcc(files: dict[str, bytes], version: int = 2, compress: tuple[str, ...] = ()) -> bytes:
    """Qt's binary rcc format written by hand: header, data, names, then the tree (breadth first)."""
    tree: dict = {}
    for path, data in files.items():
        *dirs, leaf = path.split("/")
        node = tree
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = data
    data_sec, names_sec, nodes = b"", b"", []  # nodes: (name offset, flags, a, b)
    queue, next_index = [("", tree)], 1
    while queue:
        (name, node), queue = queue[0], queue[1:]
        name_at = len(names_sec)
        names_sec += struct.pack(">HI", len(name), 0) + name.encode("utf-16-be")
        if isinstance(node, dict):
            nodes.append((name_at, 2, len(node), next_index))
            next_index += len(node)
            queue += sorted(node.items())
        else:
            full = next(p for p, d in files.items() if d is node)
            payload = struct.pack(">I", len(node)) + zlib.compress(node) if full in compress else node
            nodes.append((name_at, 1 if full in compress else 0, 0, len(data_sec)))
            data_sec += struct.pack(">I", len(payload)) + payload
    stamp = b"\0" * 8 if version >= 2 else b""
    tree_sec = b"".join(struct.pack(">IHII", n, f, a, b) + stamp if f & 2 else struct.pack(">IHHHI", n, f, 0, 0, b) + stamp
                        for n, f, a, b in nodes)
    header = 24 if version >= 3 else 20
    data_at, names_at = header, header + len(data_sec)
    tree_at = names_at + len(names_sec)
    head = b"qres" + struct.pack(">IIII", version, tree_at, data_at, names_at) + (b"\0\0\0\0" if version >= 3 else b"")
    return head + data_sec + names_sec + tree_sec


FILES = {"gcompris/a/x.webp": b"RIFF-x" * 50, "gcompris/a/b/y.jpg": b"\xff\xd8y" * 300, "top.png": b"\x89PNG top"}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_the_rcc_reader_returns_every_file_of_a_bundle(version):
    blob = make_rcc(FILES, version, compress=("gcompris/a/b/y.jpg",))
    assert read_rcc(blob) == FILES


@pytest.mark.parametrize("damage, sentence", [
    (lambda b: b"PK\3\4" + b[4:], "is not a Qt resource bundle"),
    (lambda b: b[:4] + struct.pack(">I", 9) + b[8:], "of format 9"),
    (lambda b: b[:-30], "is a damaged Qt resource bundle"),
])
def test_the_rcc_reader_refuses_other_and_damaged_files_in_one_sentence(damage, sentence):
    with pytest.raises(RccError, match=sentence):
        read_rcc(damage(make_rcc(FILES)), "x.rcc")


def test_the_rcc_reader_refuses_zstd_entries():
    blob = bytearray(make_rcc({"a.jpg": b"abc"}))
    tree_at = struct.unpack_from(">I", blob, 8)[0]
    struct.pack_into(">H", blob, tree_at + 22 + 4, 4)  # the file node's flags: zstd
    with pytest.raises(RccError, match="zstd"):
        read_rcc(bytes(blob), "z.rcc")


# -- the installer, on .deb files made here ----------------------------------------------------
needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs Debian's dpkg-deb")
PHOTO = Path(__file__).resolve().parents[1] / "samples" / "cat.jpg"


def make_deb(folder: Path, package: str, files: dict[str, bytes]) -> Path:
    root = folder / f"{package}-root"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
                                             "Maintainer: t <t@example.org>\nDescription: test photos\n")
    for path, data in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    deb = folder / f"{package}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", str(root), str(deb)], check=True, capture_output=True)
    shutil.rmtree(root)
    return deb


def write_list(path: Path, rows: list[tuple[str, str, str, bytes]]) -> Path:
    """rows: (file, package, path in package, bytes)."""
    lines = ["\t".join(photo_set.COLUMNS)]
    for file, package, member, data in rows:
        sha = hashlib.sha256(data).hexdigest()
        lines.append("\t".join([file, package, "1.0-1", member, str(len(data)), "1", "1", sha, "CC0-1.0"]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def debs(tmp_path) -> tuple[Path, Path]:
    """A folder of two .deb files (one photo plain, two inside a .rcc bundle) and their list."""
    cat = PHOTO.read_bytes()
    rcc = make_rcc({"res/a.webp": b"webp-a" * 99, "res/b.webp": b"webp-b" * 77}, compress=("res/b.webp",))
    folder = tmp_path / "debs"
    folder.mkdir()
    make_deb(folder, "plain-photos", {"usr/share/p/cat.jpg": cat})
    make_deb(folder, "rcc-photos", {"usr/share/r/x.rcc": rcc})
    listed = write_list(tmp_path / "list.tsv", [
        ("cat.jpg", "plain-photos", "usr/share/p/cat.jpg", cat),
        ("x-a.webp", "rcc-photos", "usr/share/r/x.rcc:res/a.webp", b"webp-a" * 99),
        ("x-b.webp", "rcc-photos", "usr/share/r/x.rcc:res/b.webp", b"webp-b" * 77)])
    return folder, listed


def run_install(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeai.data.photo_set", "install", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


@needs_dpkg
def test_the_installer_copies_the_listed_files_out_and_a_second_run_does_nothing(debs, tmp_path):
    folder, listed = debs
    out = tmp_path / "photos"
    r = run_install("--dir", str(out), "--list", str(listed), "--debs", str(folder))
    assert r.returncode == 0, r.stderr
    assert (out / "plain-photos" / "cat.jpg").read_bytes() == PHOTO.read_bytes()
    assert (out / "rcc-photos" / "x-b.webp").read_bytes() == b"webp-b" * 77
    assert (out / "photos.tsv").read_bytes() == listed.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["debs", "list.tsv", "photos"]  # no work folder left
    assert len(list(folder.glob("*.deb"))) == 2  # given .deb files are the caller's: kept
    assert photo_set.held_out_photos(out, photo_set.read_list(listed)) == [
        out / "plain-photos" / "cat.jpg", out / "rcc-photos" / "x-a.webp", out / "rcc-photos" / "x-b.webp"]
    again = run_install("--dir", str(out), "--list", str(listed), "--debs", str(folder))
    assert again.returncode == 0 and "already installed: 3 photos" in again.stdout and "extracting" not in again.stdout


@needs_dpkg
def test_a_hash_mismatch_installs_nothing_and_says_so(debs, tmp_path):
    folder, listed = debs
    (out := tmp_path / "photos").mkdir()
    (out / "photos.tsv").write_text("an older set")
    tampered = tmp_path / "tampered.tsv"
    tampered.write_text(listed.read_text().replace(hashlib.sha256(b"webp-b" * 77).hexdigest(), "0" * 64))
    r = run_install("--dir", str(out), "--list", str(tampered), "--debs", str(folder))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: usr/share/r/x.rcc:res/b.webp in rcc-photos_1.0-1_all.deb has sha256 ")
    assert "where the list (made from rcc-photos 1.0-1) says 000000000000...; nothing was installed." in r.stderr and len(r.stderr.splitlines()) == 1
    assert [p.read_text() for p in out.iterdir()] == ["an older set"]  # the old set untouched, no debris beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["debs", "list.tsv", "photos", "tampered.tsv"]


@needs_dpkg
@pytest.mark.parametrize("edit, sentence", [
    (lambda t: t.replace("usr/share/p/cat.jpg", "usr/share/p/dog.jpg"), "has no usr/share/p/dog.jpg; the package differs"),
    (lambda t: t.replace("res/a.webp", "res/c.webp"), "has no usr/share/r/x.rcc:res/c.webp; the package differs"),
    (lambda t: t.replace("\tbytes\t", "\tsize\t"), "is not a tab-separated table with the columns file,"),
])
def test_a_list_that_does_not_match_the_packages_is_refused(debs, tmp_path, edit, sentence):
    folder, listed = debs
    listed.write_text(edit(listed.read_text()))
    r = run_install("--dir", str(tmp_path / "photos"), "--list", str(listed), "--debs", str(folder))
    assert r.returncode == 1 and sentence in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert not (tmp_path / "photos").exists()


@needs_dpkg
def test_the_download_goes_through_apt_get_and_its_failures_are_one_sentence(debs, tmp_path):
    folder, listed = debs
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dpkg-deb").symlink_to(shutil.which("dpkg-deb"))
    apt = bin_dir / "apt-get"
    apt.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/apt.log\ncp {folder}/*.deb .\n")
    apt.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = run_install("--dir", str(tmp_path / "a"), "--list", str(listed), env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "apt.log").read_text().split() == ["download", "-qq", "plain-photos", "rcc-photos"]
    assert len(list((tmp_path / "a").rglob("*.webp"))) == 2 and not list(tmp_path.glob(".edgeai-photos-*"))

    apt.write_text("#!/bin/sh\necho 'E: Failed to fetch http://deb.debian.org/x.deb  Temporary failure resolving' >&2\nexit 100\n")
    r = run_install("--dir", str(tmp_path / "b"), "--list", str(listed), env=env)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: apt-get could not download plain-photos, rcc-photos (E: Failed to fetch")
    assert "check the network" in r.stderr and not (tmp_path / "b").exists()

    apt.unlink()  # and no other apt-get on the PATH
    r = run_install("--dir", str(tmp_path / "c"), "--list", str(listed), env={"PATH": f"{bin_dir}:{Path(sys.executable).parent}"})
    assert r.returncode == 1 and "needs Debian's apt-get, which this system lacks" in r.stderr, r.stderr


# -- 95% intervals -----------------------------------------------------------------------------
def test_wilson_intervals_match_known_values():
    assert wilson_interval(99, 100) == pytest.approx([0.945514, 0.998233], abs=1e-6)
    assert wilson_interval(100, 100) == pytest.approx([0.963007, 1.0], abs=1e-6)
    assert wilson_interval(0, 10) == pytest.approx([0.0, 0.277533], abs=1e-6)
    assert wilson_interval(50, 100) == pytest.approx([0.403832, 0.596168], abs=1e-6)
    assert mean_interval(np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx([2.5 - 1.959964 * 1.290994 / 2, 2.5 + 1.959964 * 1.290994 / 2])
    assert mean_interval(np.array([0.999, 1.0, 1.0]), bounds=(-1, 1))[1] == 1.0


def test_compare_puts_the_interval_and_the_sample_count_beside_each_agreement_figure():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((100, 5))
    other = ref.copy()
    other[0] = -other[0]  # one sample's top-1 changes
    figs = compare({"logits": ref}, {"logits": other}, "image-classification")
    assert figs["top1_agreement"] == 0.99 and figs["samples"] == 100
    assert figs["top1_agreement_ci95"] == pytest.approx(wilson_interval(99, 100))
    figs = compare({"emb": ref}, {"emb": ref + 0.1 * rng.standard_normal(ref.shape)}, "text-embedding")
    lo, hi = figs["cosine_mean_ci95"]
    assert lo < figs["cosine_mean"] < hi <= 1.0 and figs["samples"] == 100


def test_token_agreement_counts_texts_not_tokens_in_its_interval():
    # 20 texts of 50 tokens; in two texts every token flips: 0.9 of 1000 tokens, but only 20
    # samples that are independent -- the interval must be far wider than Wilson's over tokens.
    ref = np.zeros((20, 50, 3))
    ref[..., 0] = 1.0
    other = ref.copy()
    other[:2, :, 1] = 2.0
    figs = compare({"logits": ref}, {"logits": other}, "token-classification")
    lo, hi = figs["top1_agreement_ci95"]
    assert figs["top1_agreement"] == 0.9 and figs["samples"] == 1000
    tokens = wilson_interval(900, 1000)
    assert lo < tokens[0] - 0.05 and hi <= 1.0, (lo, hi, tokens)
    assert (lo, hi) == pytest.approx(clustered_interval(np.array([0] * 2 + [50] * 18), np.full(20, 50)))
    # every token agreeing: the interval is Wilson's (the clustered one has no width there)
    figs = compare({"logits": ref}, {"logits": ref.copy()}, "token-classification")
    assert figs["top1_agreement_ci95"] == pytest.approx(wilson_interval(1000, 1000))


def test_the_schema_takes_the_intervals_and_the_set_name_and_nothing_malformed():
    from edgeai._schema import validate
    from edgeai.package import load_schema

    schema = load_schema()
    variant = schema["$defs"]["variant"]["properties"]["accuracy"]
    good = {"top1_agreement": 0.99, "top1_agreement_ci95": [0.95, 1.0], "samples": 355.0, "held_out": "debian-photos-v1"}
    assert validate(good, variant, schema) == []
    assert validate({**good, "top1_agreement_ci95": [0.9, 0.95, 1.0]}, variant, schema)
    assert validate({**good, "cosine_mean_ci95": "0.9-1.0"}, variant, schema)
    assert validate({**good, "samples": "many"}, variant, schema)


@needs_dpkg
def test_a_folder_that_is_not_a_photo_set_is_never_replaced(debs, tmp_path):
    folder, listed = debs
    (mine := tmp_path / "mine").mkdir()
    (mine / "holiday.jpg").write_bytes(b"mine")
    r = run_install("--dir", str(mine), "--list", str(listed), "--debs", str(folder))
    assert r.returncode == 1 and "has no photos.tsv); installing would replace it" in r.stderr, r.stderr
    assert [p.name for p in mine.iterdir()] == ["holiday.jpg"]
    # a file at --dir was moved into the work folder and deleted with it, and the install said it worked
    (notes := tmp_path / "notes.txt").write_text("mine\n")
    r = run_install("--dir", str(notes), "--list", str(listed), "--debs", str(folder))
    assert r.returncode == 1 and f"{notes} is a file, not a folder" in r.stderr, r.stderr
    assert notes.read_text() == "mine\n"
