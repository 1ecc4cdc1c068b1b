"""Tests for gloss_lite.data: reading CSV splits, finding datasets, downloads."""

import functools
import hashlib
import http.server
import logging
import os
import pathlib
import re
import socket
import threading

import pooch
import pytest
import torch

from gloss_lite import benchmark_files, data

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_README = REPO_ROOT.parent / "shared" / "data" / "README.md"
# Read before the autouse fixture below clears the variable for every test.
BENCHMARK_DATA = os.environ.get("GLOSS_LITE_DATA")
REAL_PROJECT_DATA_DIR = data.PROJECT_DATA_DIR
REAL_ROWS = {name: info.get("rows") for name, info in data.BENCHMARKS.items()}


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No test sees the user's settings, the real project data, or the network."""
    for var in ("GLOSS_LITE_DATA", "GLOSS_LITE_DATA_URL", "GLOSS_LITE_CACHE"):
        monkeypatch.delenv(var, raising=False)
    project = tmp_path / "project_data"
    project.mkdir()
    monkeypatch.setattr(data, "PROJECT_DATA_DIR", project)
    return project


def write_dataset(root, name, train, val, test, header="text,label"):
    """Write <root>/<name>/{train,val,test}.csv; each split is a list of CSV rows."""
    folder = pathlib.Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("val", val), ("test", test)):
        (folder / f"{split}.csv").write_text("\n".join([header, *rows]) + "\n")
    return folder


def toy(root, name="toy", text="a"):
    """A small dataset with string labels whose texts start with ``text``."""
    return write_dataset(
        root, name,
        train=[f"{text} good,pos", f"{text} bad,neg", f"{text} fine,pos"],
        val=[f"{text} great,pos"],
        test=[f"{text} awful,neg"],
    )


# ---------------------------------------------------------------------------
# Reading CSVs


def test_int_labels_take_benchmark_class_names(tmp_path):
    write_dataset(tmp_path, "mr", ["good,1", "bad,0", "fine,1"], ["ok,1"], ["meh,0", "yes,1"])
    ds = data.load_dataset("mr", data_dir=tmp_path, verify=False)  # not the published content
    assert ds.class_names == ("negative", "positive")
    assert ds.num_classes == 2
    assert ds.train.texts == ["good", "bad", "fine"]
    assert ds.train.labels.dtype == torch.int64
    assert ds.train.labels.tolist() == [1, 0, 1]
    assert ds.test.labels.tolist() == [0, 1]
    assert ds.val.class_names == ds.class_names


def test_int_labels_of_unknown_dataset_are_named_by_id(tmp_path):
    write_dataset(tmp_path, "ids", ["a,0", "b,2", "c,02", "d,1"], ["d,1"], ["e,2"])
    ds = data.load_dataset("ids", data_dir=tmp_path)
    assert ds.class_names == ("0", "1", "2")
    assert ds.train.labels.tolist() == [0, 2, 2, 1]
    assert ds.val.labels.tolist() == [1]


def test_int_labels_make_only_the_classes_present_in_train(tmp_path):
    write_dataset(tmp_path, "ids", ["a,0", "b,5", "c,5"], ["d,0"], ["e,5"])
    ds = data.load_dataset("ids", data_dir=tmp_path)
    assert ds.class_names == ("0", "5") and ds.num_classes == 2  # no phantom classes 1..4
    assert ds.train.labels.tolist() == [0, 1, 1]
    assert ds.test.labels.tolist() == [1]
    write_dataset(tmp_path, "idcol", ["a,0", "b,2000000"], ["c,0"], ["d,2000000"])
    assert data.load_dataset("idcol", data_dir=tmp_path).class_names == ("0", "2000000")


def test_an_int_label_that_train_lacks_is_an_error(tmp_path):
    folder = write_dataset(tmp_path, "ids", ["a,0", "b,2"], ["c,1"], ["d,2"])
    with pytest.raises(ValueError, match=r"label\(s\) '1' in the val split not seen in train \(ids 0, 2\)") as info:
        data.load_dataset("ids", data_dir=tmp_path)
    assert str(folder / "val.csv") in str(info.value)


def test_string_labels_are_sorted_class_names(tmp_path):
    write_dataset(tmp_path, "topics", ["a,sport", "b,arts", "c,news", "d,arts"], ["e,news"], ["f,sport"])
    ds = data.load_dataset("topics", data_dir=tmp_path)
    assert ds.class_names == ("arts", "news", "sport")
    assert ds.train.labels.tolist() == [2, 0, 1, 0]
    assert ds.val.labels.tolist() == [1]
    assert ds.test.labels.tolist() == [2]


@pytest.mark.parametrize("header", [",text,label", "Unnamed: 0,text,label"])
def test_extra_index_column_is_ignored(tmp_path, header):
    write_dataset(
        tmp_path, "r8", ['0,"wheat, corn",3', "1,oil,1"], ["0,shares,0"], ["0,ship it,6"], header=header
    )
    ds = data.load_dataset("r8", data_dir=tmp_path, verify=False)
    assert ds.train.texts == ["wheat, corn", "oil"]
    assert ds.train.labels.tolist() == [3, 1]
    assert ds.class_names[2] == "earn" and ds.num_classes == 8


def test_read_split_keeps_cells_as_written(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text('label,text,extra\n1,null,x\n0,"two\nlines",y\n')
    texts, labels = data.read_split(path)
    assert texts == ["null", "two\nlines"]
    assert labels == ["1", "0"]


def test_dataset_unpacks_into_three_splits(tmp_path):
    folder = toy(tmp_path)
    ds = data.load_dataset("toy", data_dir=tmp_path)
    train, val, test = ds
    assert (len(train), len(val), len(test)) == (3, 1, 1)
    assert train is ds.train and test is ds.test
    assert ds.name == "toy"
    assert ds.source == folder


def test_name_is_case_insensitive(tmp_path):
    toy(tmp_path, "mr")
    assert data.load_dataset("MR", data_dir=tmp_path, verify=False).name == "mr"


def test_default_dataset_is_read_from_project_data(isolated):
    assert data.DEFAULT_DATASET in data.EMBEDDED_DATASETS
    toy(isolated, data.DEFAULT_DATASET, text="project")
    ds = data.load_dataset()
    assert ds.name == data.DEFAULT_DATASET
    assert ds.source == isolated / data.DEFAULT_DATASET


def test_project_data_dir_is_the_repository_data_folder():
    assert REAL_PROJECT_DATA_DIR == REPO_ROOT / "data"


# ---------------------------------------------------------------------------
# Where datasets are found


def test_source_order(tmp_path, isolated, monkeypatch):
    given, env = tmp_path / "given", tmp_path / "env"
    toy(given, text="given")
    toy(env, text="env")
    toy(isolated, text="project")
    monkeypatch.setenv("GLOSS_LITE_DATA", str(env))

    assert data.load_dataset("toy", data_dir=given).train.texts[0] == "given good"
    assert data.load_dataset("toy").train.texts[0] == "env good"
    monkeypatch.delenv("GLOSS_LITE_DATA")
    assert data.load_dataset("toy").train.texts[0] == "project good"


def test_root_without_the_dataset_is_skipped(tmp_path, isolated):
    (tmp_path / "given" / "toy").mkdir(parents=True)  # a folder, but no CSVs
    toy(isolated, text="project")
    ds = data.load_dataset("toy", data_dir=tmp_path / "given")
    assert ds.source == isolated / "toy"


def test_missing_data_dir_is_an_error(tmp_path, isolated):
    toy(isolated)  # would be found, but a typo must not fall through silently
    with pytest.raises(ValueError, match="data_dir .*not an existing folder"):
        data.load_dataset("toy", data_dir=tmp_path / "typo")


def test_missing_env_folder_is_an_error(tmp_path, isolated, monkeypatch):
    toy(isolated)
    monkeypatch.setenv("GLOSS_LITE_DATA", str(tmp_path / "typo"))
    with pytest.raises(ValueError, match="GLOSS_LITE_DATA .*not an existing folder"):
        data.load_dataset("toy")


def test_unknown_name_lists_names_and_folders(tmp_path, isolated):
    with pytest.raises(ValueError, match="unknown dataset 'nope'") as info:
        data.load_dataset("nope", data_dir=tmp_path)
    message = str(info.value)
    for word in (*data.EMBEDDED_DATASETS, "mr", "r8", "r52", str(tmp_path), str(isolated)):
        assert word in message


# ---------------------------------------------------------------------------
# Bad CSVs


GOOD = (["a,x", "b,y"], ["c,x"], ["d,y"])


@pytest.mark.parametrize(
    "name, splits, header, bad_file, pattern",
    [
        ("toy", GOOD, "words,label", "train.csv", r"missing column\(s\) \['text'\].*found \['words', 'label'\]"),
        ("toy", GOOD, "text,class", "train.csv", r"missing column\(s\) \['label'\].*found \['text', 'class'\]"),
        ("toy", ([], ["c,x"], ["d,y"]), "text,label", "train.csv", "no rows"),
        ("toy", (["a,x", "b,y"], ["c,z"], ["d,y"]), "text,label", "val.csv", r"'z' in the val split not seen in train"),
        ("toy", (["a,x", "b,y"], ["c,x"], ["d,w", "e,v"]), "text,label", "test.csv",
         r"'v', 'w' in the test split not seen"),
        ("toy", (["a,x", ",y"], ["c,x"], ["d,y"]), "text,label", "train.csv", "empty text in row 2"),
        ("toy", (["a,x", "b,y"], ["c,x", "d"], ["d,y"]), "text,label", "val.csv",
         r"row 2 \(line 3\) has 1 field\(s\), the header has 2"),
        ("toy", (["a,x", "b,y"], ["c,x"], ["d,y", "e, "]), "text,label", "test.csv", "empty label in row 2"),
        ("mr", (["a,0", "b,2"], ["c,0"], ["d,1"]), "text,label", "train.csv",
         r"'2' outside the known class list of 'mr'"),
        ("mr", (["a,0", "b,1"], ["c,0"], ["d,-1"]), "text,label", "test.csv", r"'-1' in the test split not seen"),
        ("ids", (["a,0", "b,1"], ["c,x"], ["d,1"]), "text,label", "val.csv", r"'x' in the val split not seen"),
    ],
    ids=[
        "no-text-column", "no-label-column", "no-rows", "unseen-val-label", "unseen-test-labels",
        "empty-text", "missing-label", "blank-label", "benchmark-id-too-big", "negative-id",
        "name-among-ids",
    ],
)
def test_bad_csv_raises_clear_error(tmp_path, name, splits, header, bad_file, pattern):
    folder = write_dataset(tmp_path, name, *splits, header=header)
    with pytest.raises(ValueError, match=pattern) as info:
        data.load_dataset(name, data_dir=tmp_path)
    assert str(folder / bad_file) in str(info.value)


def test_empty_file_raises_clear_error(tmp_path):
    folder = toy(tmp_path)
    (folder / "test.csv").write_text("")
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'test.csv'}: the file is empty")):
        data.load_dataset("toy", data_dir=tmp_path)


def test_an_unquoted_comma_is_an_error_naming_file_row_and_fix(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('text,label\n"quoted, fine",pos\nnot quoted, cut here,neg\n')
    pattern = r"row 2 \(line 3\) has 3 field\(s\), the header has 2 .*must be quoted"
    with pytest.raises(ValueError, match=pattern) as info:
        data.read_split(path)
    assert str(path) in str(info.value)
    path.write_text("text,label\nfine,pos\n")
    assert data.read_split(path) == (["fine"], ["pos"])


def test_an_unquoted_comma_with_an_index_column_is_an_error(tmp_path):
    # pandas would take the first piece as a row index and keep the rest: texts cut silently
    folder = write_dataset(tmp_path, "toy", ["a b,x", "c, d,y"], ["e,x"], ["f,y"])
    with pytest.raises(ValueError, match=r"row 2 \(line 3\) has 3 field") as info:
        data.load_dataset("toy", data_dir=tmp_path)
    assert str(folder / "train.csv") in str(info.value)


def test_an_unclosed_quote_is_an_error_with_the_path(tmp_path):
    path = tmp_path / "val.csv"
    path.write_text('text,label\n"never closed,pos\nnext,neg\n')
    with pytest.raises(ValueError, match=r"unreadable CSV near line \d+ .*closing quote") as info:
        data.read_split(path)
    assert str(path) in str(info.value)


def test_a_file_that_is_not_utf8_is_an_error_with_the_path(tmp_path):
    path = tmp_path / "test.csv"
    path.write_bytes("text,label\ncaf\u00e9 cr\u00e8me,pos\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8 text \(byte 14, on line 2.*save the file as UTF-8") as info:
        data.read_split(path)
    assert str(path) in str(info.value)
    path.write_bytes("\ufefftext,label\ncaf\u00e9,pos\n".encode("utf-8"))  # a byte-order mark is fine
    assert data.read_split(path) == (["caf\u00e9"], ["pos"])


def test_blank_lines_are_skipped_and_rows_still_counted_right(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("text,label\n\na,x\n\n,y\n")
    with pytest.raises(ValueError, match=r"empty text in row 2 \(line 5;"):
        data.read_split(path)


def test_a_repeated_column_is_an_error(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("text,label,text\na,x,b\n")
    with pytest.raises(ValueError, match=r"column\(s\) \['text'\] appear more than once"):
        data.read_split(path)


@pytest.mark.parametrize("missing", ["val", "test", "train"])
def test_a_missing_split_file_is_named_not_an_unknown_dataset(tmp_path, isolated, missing):
    folder = toy(tmp_path)
    toy(isolated)  # another complete copy must not be used silently instead
    (folder / f"{missing}.csv").unlink()
    with pytest.raises(data.DatasetNotFoundError, match=rf"holds .* but not {missing}.csv") as info:
        data.load_dataset("toy", data_dir=tmp_path)
    assert str(folder) in str(info.value) and "unknown dataset" not in str(info.value)


def test_a_benchmark_missing_a_split_is_not_downloaded(tmp_path, monkeypatch):
    folder = write_dataset(tmp_path, "mr", ["a,0", "b,1"], ["c,0"], ["d,1"])
    (folder / "val.csv").unlink()
    monkeypatch.setattr(data, "download_benchmark", lambda *a, **k: pytest.fail("downloaded"))
    with pytest.raises(data.DatasetNotFoundError, match="but not val.csv"):
        data.load_dataset("mr", data_dir=tmp_path)


def test_published_sizes_are_recorded_for_the_benchmarks():
    if not SHARED_README.exists():
        pytest.skip(f"{SHARED_README} not found")
    table = {
        name: {"train": int(train), "val": int(val), "test": int(test)}
        for name, train, val, test in re.findall(
            r"^\| `(\w+)`\s*\|[^|]*\|[^|]*\| (\d+) \| (\d+) \| (\d+) \|$", SHARED_README.read_text(), re.M)
    }
    for name in ("mr", "r8", "r52"):
        assert REAL_ROWS[name] == table[name]


# ---------------------------------------------------------------------------
# Downloads, against a real HTTP server on loopback


def sha256(path):
    return "sha256:" + hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


class Server:
    """A static file server on 127.0.0.1 that records the paths it was asked for."""

    def __init__(self, root):
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def upstream(tmp_path):
    """A fake upstream: MR/{train,val,test}.csv with an unnamed index column, and its registry."""
    root = tmp_path / "upstream"
    folder = write_dataset(
        root, "MR",
        train=['0,"a fine, warm film",1', "1,dull,0", "2,great,1"],
        val=["0,boring,0"],
        test=["0,lovely,1", "1,awful,0"],
        header=",text,label",
    )
    registry = {split: sha256(folder / f"{split}.csv") for split in data.SPLITS}
    server = Server(root)
    yield server, registry
    server.close()


def test_download_fetches_verifies_and_parses(tmp_path, upstream):
    server, registry = upstream
    cache = tmp_path / "cache"
    folder = data.download_benchmark("MR", cache_dir=cache, base_url=server.url, registry=registry)
    assert folder == cache / "MR"
    assert sorted(server.requests) == ["/MR/test.csv", "/MR/train.csv", "/MR/val.csv"]
    assert data.read_split(folder / "train.csv") == (["a fine, warm film", "dull", "great"], ["1", "0", "1"])
    assert sha256(folder / "test.csv") == registry["test"]


def test_benchmark_in_its_upstream_folder_is_found(tmp_path, upstream):
    # a copy of the authors' data/ folder (MR/, R8/, R52/) works as a data_dir
    server, registry = upstream
    ds = data.load_dataset("mr", data_dir=tmp_path / "upstream", verify=False)
    assert ds.source.samefile(tmp_path / "upstream" / "MR")
    assert ds.class_names == ("negative", "positive")
    assert ds.train.labels.tolist() == [1, 0, 1]
    assert server.requests == []


def test_download_is_quiet(tmp_path, upstream):
    server, registry = upstream
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    pooch_logger = pooch.get_logger()  # pooch's logger lives outside the logging tree
    pooch_logger.addHandler(handler)
    try:
        data.download_benchmark("mr", cache_dir=tmp_path / "cache", base_url=server.url, registry=registry)
    finally:
        pooch_logger.removeHandler(handler)
    assert len(server.requests) == 3
    assert records == []


def test_second_download_uses_the_cache(tmp_path, upstream):
    server, registry = upstream
    kwargs = dict(cache_dir=tmp_path / "cache", base_url=server.url, registry=registry)
    data.download_benchmark("mr", **kwargs)
    data.download_benchmark("mr", **kwargs)
    assert len(server.requests) == 3


def test_corrupt_cached_file_is_fetched_again(tmp_path, upstream):
    server, registry = upstream
    kwargs = dict(cache_dir=tmp_path / "cache", base_url=server.url, registry=registry)
    folder = data.download_benchmark("mr", **kwargs)
    (folder / "val.csv").write_text(",text,label\n0,tampered,1\n")
    data.download_benchmark("mr", **kwargs)
    assert server.requests.count("/MR/val.csv") == 2
    assert server.requests.count("/MR/train.csv") == 1
    assert sha256(folder / "val.csv") == registry["val"]


def test_server_sending_other_bytes_is_a_checksum_error(tmp_path, upstream):
    server, registry = upstream
    registry = {**registry, "train": "sha256:" + "0" * 64}
    with pytest.raises(ValueError, match=r"checksum of .*MR/train.csv did not match"):
        data.download_benchmark("mr", cache_dir=tmp_path / "cache", base_url=server.url, registry=registry)
    assert not (tmp_path / "cache" / "MR" / "train.csv").exists()


def test_http_error_is_dataset_not_found(tmp_path, upstream):
    server, _ = upstream  # serves MR only, so R8 is a 404
    with pytest.raises(data.DatasetNotFoundError, match=r"download of 'r8' from .*R8/train.csv into .* failed .*404"):
        data.download_benchmark("r8", cache_dir=tmp_path / "cache", base_url=server.url)


def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_is_dataset_not_found(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/"
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.download_benchmark("mr", cache_dir=tmp_path / "cache", base_url=url)
    assert isinstance(info.value, FileNotFoundError)
    message = str(info.value)
    assert f"from {url}MR/train.csv" in message
    assert "<folder>/mr/train.csv, val.csv, test.csv" in message
    assert "text,label" in message
    assert "GLOSS_LITE_DATA=<folder>" in message


def test_load_dataset_reports_searched_folders_when_download_fails(tmp_path, isolated, monkeypatch):
    monkeypatch.setenv("GLOSS_LITE_DATA_URL", f"http://127.0.0.1:{closed_port()}/")
    monkeypatch.setenv("GLOSS_LITE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(data.DatasetNotFoundError, match="GLOSS_LITE_DATA") as info:
        data.load_dataset("r52", data_dir=tmp_path)
    message = str(info.value)
    assert f"not in {tmp_path}, {isolated};" in message
    assert re.search(r"download of 'r52' from http://127.0.0.1:\d+/R52/train.csv into .* failed", message)


def test_load_dataset_downloads_a_missing_benchmark(tmp_path, isolated, upstream, monkeypatch):
    server, registry = upstream
    monkeypatch.setitem(data.BENCHMARKS["mr"], "sha256", registry)
    monkeypatch.setenv("GLOSS_LITE_DATA_URL", server.url)
    monkeypatch.setenv("GLOSS_LITE_CACHE", str(tmp_path / "cache"))
    toy(isolated, "reviews_sentiment")  # project data holds other datasets, not mr

    train, val, test = ds = data.load_dataset("MR")
    assert ds.source == tmp_path / "cache" / "MR"
    assert train.texts[0] == "a fine, warm film"
    assert test.labels.tolist() == [1, 0]
    assert len(server.requests) == 3


# ---------------------------------------------------------------------------
# The real benchmark data


def test_registry_matches_published_checksums():
    if not SHARED_README.exists():
        pytest.skip(f"{SHARED_README} not found")
    readme = SHARED_README.read_text()
    sums = dict(
        (path, digest) for digest, path in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M)
    )
    sums.update(re.findall(r"^\| `(\S+)` \| `([0-9a-f]{64})` \|$", readme, re.M))  # ohsumed, 20ng table
    ours = {
        f"{info['folder']}/{split}.csv": digest.removeprefix("sha256:")
        for info in data.BENCHMARKS.values()
        for split, digest in info["sha256"].items()
        if digest is not None
    }
    assert len(sums) == 12
    assert ours == sums
    unknown = [f"{info['folder']}/{split}.csv" for info in data.BENCHMARKS.values()
               for split, digest in info["sha256"].items() if digest is None]
    assert unknown == ["ohsumed/test.csv", "20ng/train.csv", "20ng/test.csv"]


def test_class_names_match_the_published_maps():
    if not SHARED_README.exists():
        pytest.skip(f"{SHARED_README} not found")
    readme = " ".join(SHARED_README.read_text().split())  # one line: the maps wrap
    ohsumed = readme[readme.index("(id = code number - 1):"):readme.index(". Texts are title")]
    codes = re.findall(r"(C\d\d) (.+?)(?=, C\d\d |$)", ohsumed.split(":", 1)[1].strip())
    assert len(codes) == 23
    assert data.BENCHMARKS["ohsumed"]["class_names"] == tuple(f"{code} {words}" for code, words in codes)
    assert [name[:3] for name in data.BENCHMARKS["ohsumed"]["class_names"]] == [f"C{i:02d}" for i in range(1, 24)]
    groups = readme[readme.index("newsgroup names in alphabetical order:"):readme.index("Texts are whole posts")]
    ids_and_names = re.findall(r"(\d+) ([a-z.-]+)[,.]", groups)
    assert [int(i) for i, _ in ids_and_names] == list(range(20))
    assert data.BENCHMARKS["20ng"]["class_names"] == tuple(name for _, name in ids_and_names)
    r8 = readme[readme.index("0 acq"):readme.index("7 trade") + len("7 trade")]
    assert data.BENCHMARKS["r8"]["class_names"] == tuple(re.findall(r"\d ([a-z-]+)", r8))


def test_registry_matches_published_fingerprints_and_sizes():
    if not SHARED_README.exists():
        pytest.skip(f"{SHARED_README} not found")
    published = re.findall(r"^([0-9a-f]{64})  (\w+) (train|val|test) \((\d+)", SHARED_README.read_text(), re.M)
    assert len(published) == 6
    for digest, name, split, rows in published:
        assert data.BENCHMARKS[name]["fingerprint"][split] == digest
        assert data.BENCHMARKS[name]["rows"][split] == int(rows)
    for info in data.BENCHMARKS.values():
        assert set(info["fingerprint"]) == set(info["rows"]) == set(data.SPLITS)


@pytest.mark.benchmark_data
@pytest.mark.skipif(not BENCHMARK_DATA, reason="GLOSS_LITE_DATA is not set (point it at the benchmark CSVs)")
@pytest.mark.parametrize(
    "name, sizes, num_classes",
    [("mr", (6397, 711, 3554), 2), ("r8", (4936, 549, 2189), 8), ("r52", (5865, 667, 2568), 52),
     ("ohsumed", (3021, 336, 4043), 23), ("20ng", (10182, 1132, 7532), 20)],
)
def test_benchmark_sizes(monkeypatch, name, sizes, num_classes):
    monkeypatch.setenv("GLOSS_LITE_DATA", BENCHMARK_DATA)
    ds = data.load_dataset(name)  # checks every split's fingerprint
    assert tuple(len(split) for split in ds) == sizes
    assert tuple(data.BENCHMARKS[name]["rows"][split] for split in data.SPLITS) == sizes
    assert ds.num_classes == num_classes
    for split in ds:
        assert split.labels.shape == (len(split),)
        assert 0 <= int(split.labels.min()) and int(split.labels.max()) < num_classes
    assert len(torch.unique(ds.train.labels)) == num_classes
    if name == "r8":
        assert ds.class_names[2] == "earn"
    if name == "ohsumed":  # README: C04 neoplasms is id 3; 8 to 526 train documents a class
        assert ds.class_names[3] == "C04 neoplasms"
        counts = torch.bincount(ds.train.labels)
        assert (int(counts.min()), int(counts.max())) == (8, 526)
    if name == "20ng":
        assert ds.class_names[0] == "alt.atheism" and ds.class_names[19] == "talk.religion.misc"
        assert ds.class_names[11] == "sci.crypt"
        assert max(len(text) for text in ds.train.texts) > 30_000  # README: a few posts are over 30,000
    for split in data.SPLITS:
        texts, labels = data.read_split(pathlib.Path(BENCHMARK_DATA) / name / f"{split}.csv")
        assert benchmark_files.content_fingerprint(texts, labels) == data.BENCHMARKS[name]["fingerprint"][split]


# ---------------------------------------------------------------------------
# Sub-sampling a split


def _split(labels):
    labels = torch.as_tensor(labels)
    return data.Split([f"text {i}" for i in range(len(labels))], labels, ("a", "b", "c"))


def test_sample_is_stratified_reproducible_and_in_file_order():
    split = _split([0] * 60 + [1] * 30 + [2] * 10)
    sample = split.sample(20, seed=3)
    assert len(sample) == 20
    assert torch.bincount(sample.labels, minlength=3).tolist() == [12, 6, 2]
    assert sample.texts == sorted(sample.texts, key=lambda t: int(t.split()[1]))
    assert split.sample(20, seed=3).texts == sample.texts
    assert split.sample(20, seed=4).texts != sample.texts
    for text, label in zip(sample.texts, sample.labels.tolist()):
        assert split.labels[int(text.split()[1])] == label


def test_sample_keeps_a_rare_class_and_hits_the_size_exactly():
    split = _split([0] * 97 + [1] * 2 + [2] * 1)
    for size in (3, 4, 10, 50):
        sample = split.sample(size, seed=0)
        assert len(sample) == size
        assert set(sample.labels.tolist()) == {0, 1, 2}


def test_stratified_sample_on_joint_strata_balances_both_keys():
    topic = torch.arange(120) % 6
    sentiment = (torch.arange(120) // 6) % 2
    chosen = data.stratified_sample(topic * 2 + sentiment, 24, seed=1)
    assert torch.bincount(topic[chosen]).tolist() == [4] * 6
    assert torch.bincount(sentiment[chosen]).tolist() == [12, 12]
    assert torch.equal(chosen, chosen.sort().values) and len(set(chosen.tolist())) == 24


def test_joint_strata_numbers_every_label_combination():
    topic, sentiment = torch.tensor([0, 2, 1, 2, 0]), torch.tensor([1, 0, 1, 1, 1])
    assert data.joint_strata(topic, sentiment).tolist() == [1, 4, 3, 5, 1]  # topic * 2 + sentiment
    assert torch.equal(data.joint_strata(topic), topic)
    with pytest.raises(ValueError, match="same length"):
        data.joint_strata(topic, sentiment[:3])


def test_sample_none_or_large_returns_the_split_and_bad_size_is_refused():
    split = _split([0, 1, 2, 0])
    assert split.sample(None).texts == split.texts and split.sample(10).texts == split.texts
    with pytest.raises(ValueError, match="sample size must be >= 1"):
        split.sample(0)


def test_bad_sample_sizes_seeds_and_names_are_refused(tmp_path):
    split = _split([0, 1, 2, 0])
    for size in (2.5, True, "2"):
        with pytest.raises(ValueError, match="sample size must be an int >= 1 or None"):
            split.sample(size)
    with pytest.raises(ValueError, match="seed must be an int"):
        split.sample(2, seed=0.5)
    for name in (None, "", 3):
        with pytest.raises(ValueError, match="dataset name must be a non-empty string"):
            data.load_dataset(name, data_dir=tmp_path)


# ---------------------------------------------------------------------------
# Content fingerprints: Ohsumed- and 20NG-like files, pinned by bytes or by content


def csv_cell(text):
    return '"' + text.replace('"', '""') + '"'


# (label as written, text): multi-line texts with commas and quotes, as in Ohsumed and 20NG
OHSUMED_LIKE = {
    "train": [("3", "Tumour growth, in mice.\n We report a \"new\" model."), ("9", "Nerve repair.\n A study."),
              ("3", "Breast cancer screening.")],
    "val": [("9", "Migraine, a review.\n")],
    "test": [("13", "Hypertension in adults.\n Results follow."), ("3", "Lymphoma."),
             ("22", "Fever of unknown origin.")],
}


def reference_fingerprint(rows):
    """The published definition, written out: sorted "label<TAB>text" lines, joined by newlines."""
    return hashlib.sha256("\n".join(sorted(f"{label}\t{text}" for label, text in rows)).encode()).hexdigest()


def write_upstream_layout(root, name, splits):
    """Write splits in the upstream layout: an unnamed index column first, then text, label."""
    return write_dataset(
        root, name, header=",text,label",
        **{split: [f"{i},{csv_cell(text)},{label}" for i, (label, text) in enumerate(rows)]
           for split, rows in splits.items()},
    )


@pytest.fixture
def ohsumed_upstream(tmp_path):
    """A fake upstream serving ohsumed/ in the upstream layout; train and val pinned by bytes, test not."""
    folder = write_upstream_layout(tmp_path / "upstream", "ohsumed", OHSUMED_LIKE)
    server = Server(tmp_path / "upstream")
    registry = {"train": sha256(folder / "train.csv"), "val": sha256(folder / "val.csv"), "test": None}
    fingerprints = {split: reference_fingerprint(rows) for split, rows in OHSUMED_LIKE.items()}
    rows = {split: len(split_rows) for split, split_rows in OHSUMED_LIKE.items()}
    yield server, folder, dict(registry=registry, fingerprints=fingerprints, rows=rows)
    server.close()


def test_content_fingerprint_ignores_layout_and_sees_every_row(tmp_path):
    rows = OHSUMED_LIKE["test"]
    plain = write_dataset(tmp_path / "a", "x", [f"{csv_cell(t)},{label}" for label, t in rows], [], [])
    indexed = write_upstream_layout(tmp_path / "b", "x", {"train": rows[::-1], "val": [], "test": []})
    expected = reference_fingerprint(rows)
    assert benchmark_files.content_fingerprint(*data.read_split(plain / "train.csv")) == expected
    assert benchmark_files.content_fingerprint(*data.read_split(indexed / "train.csv")) == expected
    texts, labels = data.read_split(plain / "train.csv")
    assert benchmark_files.content_fingerprint(texts, ["3", *labels[1:]]) != expected  # one label changed
    assert benchmark_files.content_fingerprint(texts[:2], labels[:2]) != expected  # one row missing
    assert benchmark_files.content_fingerprint(texts, labels) == hashlib.sha256(
        b"13\tHypertension in adults.\n Results follow.\n22\tFever of unknown origin.\n3\tLymphoma."
    ).hexdigest()


def test_byte_pinned_download_of_an_ohsumed_layout(tmp_path, ohsumed_upstream):
    server, folder, pins = ohsumed_upstream
    registry = {split: sha256(folder / f"{split}.csv") for split in data.SPLITS}  # every file pinned
    cached = data.download_benchmark("ohsumed", cache_dir=tmp_path / "cache", base_url=server.url,
                                     registry=registry, fingerprints={}, rows=pins["rows"])
    assert cached == tmp_path / "cache" / "ohsumed"
    assert sorted(server.requests) == ["/ohsumed/test.csv", "/ohsumed/train.csv", "/ohsumed/val.csv"]
    texts, labels = data.read_split(cached / "train.csv")
    assert list(zip(labels, texts)) == OHSUMED_LIKE["train"]
    with pytest.raises(ValueError, match=r"checksum of .*ohsumed/test.csv did not match"):
        data.download_benchmark("ohsumed", cache_dir=tmp_path / "other", base_url=server.url,
                                registry={**registry, "test": "sha256:" + "0" * 64})


def test_fingerprint_checked_download_passes_and_loads_with_readable_names(
    tmp_path, isolated, ohsumed_upstream, monkeypatch
):
    server, _, pins = ohsumed_upstream
    for key, value in (("sha256", pins["registry"]), ("fingerprint", pins["fingerprints"]), ("rows", pins["rows"])):
        monkeypatch.setitem(data.BENCHMARKS["ohsumed"], key, value)
    monkeypatch.setenv("GLOSS_LITE_DATA_URL", server.url)
    monkeypatch.setenv("GLOSS_LITE_CACHE", str(tmp_path / "cache"))

    ds = data.load_dataset("ohsumed")
    assert ds.source == tmp_path / "cache" / "ohsumed"
    assert ds.num_classes == 23
    assert ds.class_names[3] == "C04 neoplasms" and ds.class_names[22].startswith("C23 pathological")
    assert ds.test.labels.tolist() == [13, 3, 22]
    assert ds.test.texts[0] == "Hypertension in adults.\n Results follow."
    assert data.load_dataset("ohsumed").test.texts == ds.test.texts  # from the cache
    assert sorted(server.requests) == ["/ohsumed/test.csv", "/ohsumed/train.csv", "/ohsumed/val.csv"]
    cached_test = tmp_path / "cache" / "ohsumed" / "test.csv"
    write_upstream_layout(tmp_path / "cache", "ohsumed", {**OHSUMED_LIKE, "test": OHSUMED_LIKE["train"]})
    with pytest.raises(ValueError, match=r"ohsumed/test.csv: the downloaded file differs from the published split"):
        data.load_dataset("ohsumed")  # pooch does not check an unpinned cached file; the fingerprint does
    assert not cached_test.exists()


def test_download_with_other_content_names_file_and_row_counts(tmp_path, ohsumed_upstream):
    server, folder, pins = ohsumed_upstream
    # the server's test.csv lacks a row of the published split
    write_upstream_layout(folder.parent, "ohsumed", {**OHSUMED_LIKE, "test": OHSUMED_LIKE["test"][:2]})
    kwargs = dict(cache_dir=tmp_path / "cache", base_url=server.url, **pins)
    with pytest.raises(ValueError, match=r"ohsumed/test.csv: the downloaded file differs from the published") as info:
        data.download_benchmark("ohsumed", **kwargs)
    message = str(info.value)
    assert "expected 3 rows, found 2" in message
    assert "GLOSS_LITE_DATA=<folder>" in message and "<folder>/ohsumed/train.csv" in message
    assert pins["fingerprints"]["test"] in message
    assert not (tmp_path / "cache" / "ohsumed" / "test.csv").exists()  # removed, so fetched again
    write_upstream_layout(folder.parent, "ohsumed", OHSUMED_LIKE)  # the server is fixed
    data.download_benchmark("ohsumed", **kwargs)
    assert server.requests.count("/ohsumed/test.csv") == 2


def test_local_copy_with_a_row_missing_is_refused(tmp_path, ohsumed_upstream, monkeypatch):
    _, _, pins = ohsumed_upstream
    monkeypatch.setitem(data.BENCHMARKS["ohsumed"], "fingerprint", pins["fingerprints"])
    monkeypatch.setitem(data.BENCHMARKS["ohsumed"], "rows", pins["rows"])
    local = tmp_path / "local"
    write_upstream_layout(local, "ohsumed", OHSUMED_LIKE)
    assert data.load_dataset("ohsumed", data_dir=local).train.texts[1] == "Nerve repair.\n A study."

    folder = write_upstream_layout(local, "ohsumed", {**OHSUMED_LIKE, "train": OHSUMED_LIKE["train"][1:]})
    with pytest.raises(ValueError, match="this copy differs from the published split") as info:
        data.load_dataset("ohsumed", data_dir=local)
    message = str(info.value)
    assert message.startswith(f"{folder / 'train.csv'}:")
    assert "expected 3 rows, found 2" in message
    assert "GLOSS_LITE_DATA=<folder>" in message and "verify=False" in message
    assert len(data.load_dataset("ohsumed", data_dir=local, verify=False).train) == 2
