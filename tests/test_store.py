from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from mmgbm.errors import MmgbmError
from mmgbm.features.store import Copy, FeatureStore, dense_table, sparse_table

FP = {"kind": "image", "backbone": "b0", "weights": "abc", "image_size": 224}


def store(tmp_path: Path, **changes) -> FeatureStore:
    return FeatureStore(tmp_path / "b0", {**FP, **changes})


def test_dense_round_trip_aligns_by_id_not_position(tmp_path: Path):
    s = store(tmp_path)
    s.write_shard(dense_table(["a", "b"], np.array([[1, 2], [3, 4]], dtype=np.float32)))
    s.write_shard(dense_table(["c"], np.array([[5, 6]], dtype=np.float32)))
    out, present = s.read_dense(["c", "zzz", "a"])
    assert present.tolist() == [True, False, True]
    assert out[0].tolist() == [5, 6] and out[2].tolist() == [1, 2]
    assert np.isnan(out[1]).all()


def test_sparse_round_trip_stays_sparse_and_aligned(tmp_path: Path):
    s = FeatureStore(tmp_path / "title", {"kind": "text", "vocab": "v1"})
    matrix = sp.csr_matrix(np.array([[0, 0.5, 0], [0, 0, 0], [0.25, 0, 1]], dtype=np.float32))
    s.write_shard(sparse_table(["a", "b", "c"], matrix))
    table = pq.read_table(s.shards()[0])
    assert table.column_names == ["id", "indices", "values"]
    out, present = s.read_sparse(["c", "new", "a", "b"], n_features=3)
    assert sp.issparse(out) and out.shape == (4, 3)
    assert present.tolist() == [True, False, True, True]
    np.testing.assert_allclose(out.toarray(), [[0.25, 0, 1], [0, 0, 0], [0, 0.5, 0], [0, 0, 0]])


def test_present_ids_make_extraction_incremental(tmp_path: Path):
    s = store(tmp_path)
    assert s.present_ids() == set()
    s.write_shard(dense_table(["a", "b"], np.zeros((2, 3))))
    assert s.present_ids() == {"a", "b"}


def test_shards_made_differently_are_refused_with_the_difference(tmp_path: Path):
    store(tmp_path).write_shard(dense_table(["a"], np.zeros((1, 3))))
    other = store(tmp_path, weights="def")
    for action in (other.present_ids, lambda: other.read_dense(["a"])):
        with pytest.raises(MmgbmError, match=r"weights: stored 'abc' vs now 'def'.*--overwrite"):
            action()


def test_crash_between_shards_keeps_finished_shards_and_no_partial_file(tmp_path: Path, monkeypatch):
    s = store(tmp_path)
    s.write_shard(dense_table(["a"], np.ones((1, 2))))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process is killed while writing the second shard

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        s.write_shard(dense_table(["b"], np.ones((1, 2))))
    monkeypatch.undo()
    assert [p.name for p in s.root.iterdir()] == [s.shards()[0].name]  # no partial shard, no temporary file
    assert s.present_ids() == {"a"}  # a re-run extracts only "b"
    s.write_shard(dense_table(["b"], np.full((1, 2), 2.0)))
    out, present = s.read_dense(["a", "b"])
    assert present.all() and out[1].tolist() == [2.0, 2.0]


def test_a_foreign_file_in_the_store_is_named(tmp_path: Path):
    s = store(tmp_path)
    s.root.mkdir(parents=True)
    (s.root / "part-00000.parquet").write_text("garbage")
    with pytest.raises(MmgbmError, match="part-00000.parquet: unreadable feature shard"):
        s.present_ids()


def test_reading_an_empty_store_says_to_extract_first(tmp_path: Path):
    with pytest.raises(MmgbmError, match="run the extract command first"):
        store(tmp_path).read_dense(["a"])


def test_later_shards_win_for_a_repeated_id(tmp_path: Path):
    s = store(tmp_path)
    s.write_shard(dense_table(["a"], np.zeros((1, 2))))
    s.write_shard(dense_table(["a"], np.ones((1, 2))))
    assert s.read_dense(["a"])[0].tolist() == [[1.0, 1.0]]


def test_compacting_removes_only_shards_whose_every_row_is_newer_elsewhere(tmp_path: Path):
    s = store(tmp_path)
    for ids, value in ((["a", "b"], 1.0), (["a"], 2.0), (["b", "c"], 3.0), (["c"], 4.0)):
        s.write_shard(dense_table(ids, np.full((len(ids), 2), value)))
    kept = s.shards()[1:]
    assert s.compact() == (1, 0) and s.shards() == kept  # the first shard: a and b are both stored again later
    assert s.read_dense(["a", "b", "c"])[0][:, 0].tolist() == [2.0, 3.0, 4.0]
    assert s.compact() == (0, 0)


def test_a_reader_that_listed_a_shard_compacted_meanwhile_reads_the_newer_rows(tmp_path: Path, monkeypatch):
    s = store(tmp_path)
    s.write_shard(dense_table(["a"], np.ones((1, 2))))
    s.write_shard(dense_table(["a"], np.full((1, 2), 2.0)))
    reading, compacting = FeatureStore._read, []

    def compacted_first(self, shard, columns):  # another process compacts between this one's listing and read
        if not compacting:
            compacting.append(shard)
            store(tmp_path).compact()
        return reading(self, shard, columns)

    monkeypatch.setattr(FeatureStore, "_read", compacted_first)
    assert s.read_dense(["a"])[0].tolist() == [[2.0, 2.0]]
    assert s.sources() == {"a": None}


def test_shards_named_for_a_part_by_older_versions_are_read_in_the_order_written(tmp_path: Path):
    s = store(tmp_path)
    for value in (1.0, 2.0):
        s.write_shard(dense_table(["a"], np.full((1, 2), value)))
    first, second = s.shards()
    first.rename(first.with_name(first.name.replace("part-", "part-p2of2-")))  # as `extract-images --part` named them
    second.rename(second.with_name(second.name.replace("part-", "part-p1of2-")))
    assert [p.name.split("-")[1] for p in s.shards()] == ["p2of2", "p1of2"]
    assert s.read_dense(["a"])[0].tolist() == [[2.0, 2.0]]


def test_shards_of_older_stores_are_still_read_and_come_first(tmp_path: Path):
    s = store(tmp_path)
    s.write_shard(dense_table(["a"], np.ones((1, 2))))
    legacy = s.shards()[0].rename(s.root / "part-00000.parquet")
    s.write_shard(dense_table(["a"], np.full((1, 2), 2.0)))
    assert s.shards()[0] == legacy and s.read_dense(["a"])[0].tolist() == [[2.0, 2.0]]


def test_sources_record_what_each_row_was_made_from(tmp_path: Path):
    s = store(tmp_path)
    s.write_shard(dense_table(["a"], np.zeros((1, 2))))  # written without sources
    s.write_shard(dense_table(["b", "c"], np.zeros((2, 2)), sources=["s-b", "s-c"]))
    assert s.sources() == {"a": None, "b": "s-b", "c": "s-c"}
    assert s.read_sources(["c", "zzz", "a"]) == ["s-c", None, None]


# ---- on object storage -------------------------------------------------------------------------------------------


def test_a_store_on_object_storage_reads_and_writes_as_a_folder_does(object_store: str):
    s = FeatureStore(f"{object_store}/b0", FP)
    assert s.shards() == [] and s.present_ids() == set()
    s.write_shard(dense_table(["a", "b"], np.array([[1, 2], [3, 4]]), sources=["s-a", "s-b"]))
    s.write_shard(dense_table(["a"], np.array([[5, 6]])))  # newer: wins
    out, present = s.read_dense(["b", "new", "a"])
    assert present.tolist() == [True, False, True] and out[[0, 2]].tolist() == [[3, 4], [5, 6]]
    assert [str(p).rsplit("/", 1)[0] for p in s.shards()] == [f"{object_store}/b0"] * 2
    assert s.read_sources(["b", "a"]) == ["s-b", None]

    text = FeatureStore(f"{object_store}/title", {"kind": "text"})
    text.write_shard(sparse_table(["x", "y"], sp.csr_matrix(np.array([[0, 0.5], [1, 0]], dtype=np.float32))))
    rows, _ = text.read_sparse(["y", "x"], n_features=2)
    np.testing.assert_allclose(rows.toarray(), [[1, 0], [0, 0.5]])

    with pytest.raises(MmgbmError, match=f"{object_store}/b0/part-.*weights: stored 'abc' vs now 'def'"):
        FeatureStore(f"{object_store}/b0", {**FP, "weights": "def"}).present_ids()
    s.clear()
    assert s.shards() == [] and text.present_ids() == {"x", "y"}


def test_on_object_storage_a_crash_leaves_no_object_and_a_damaged_one_is_set_aside(object_store: str, monkeypatch):
    import fsspec

    s = FeatureStore(f"{object_store}/b0", FP)
    s.write_shard(dense_table(["a"], np.ones((1, 2))))
    with monkeypatch.context() as patched:
        patched.setattr(pq, "write_table", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            s.write_shard(dense_table(["b"], np.ones((1, 2))))
    fs, prefix = fsspec.core.url_to_fs(f"{object_store}/b0")
    assert len(fs.ls(prefix)) == 1 and s.present_ids() == {"a"}  # nothing half-uploaded, nothing left to clean

    fs.pipe_file(f"{prefix}/part-00001.parquet", b"truncated")  # as a foreign or broken upload would leave it
    with pytest.raises(MmgbmError, match=f"{object_store}/b0/part-00001.parquet: unreadable feature shard"):
        s.present_ids()
    assert s.prepare_writing() == {"a": None}  # set aside: the next extraction redoes what it held
    names = {p.rsplit("/", 1)[1] for p in fs.ls(prefix, detail=False)}
    assert "part-00001.parquet.damaged" in names and "part-00001.parquet" not in names


@pytest.mark.parametrize("fails", ["opening", "reading"])
def test_an_object_store_that_cannot_be_reached_stops_the_run_and_sets_nothing_aside(
    object_store: str, monkeypatch, fails: str
):
    from fsspec.implementations.memory import MemoryFile

    s = FeatureStore(f"{object_store}/b0", FP)
    s.write_shard(dense_table(["a"], np.ones((1, 2))))
    later = FeatureStore(f"{object_store}/b0", FP)  # a new run: it has read nothing of the store yet
    reset = lambda *a, **k: (_ for _ in ()).throw(ConnectionError("reset"))  # noqa: E731
    if fails == "opening":
        monkeypatch.setattr(later.folder.fs, "open", reset)
    else:  # the connection drops in the middle of the shard, while the Parquet reader asks for its bytes
        monkeypatch.setattr(MemoryFile, "read", reset)
    with pytest.raises(
        MmgbmError,
        match=r"b0/part-\d+-[0-9a-f]+\.parquet: the object store failed \(ConnectionError: "
        r"reset\); check the `store` URL",
    ):
        later.prepare_writing()
    monkeypatch.undo()
    assert later.quarantined == [] and s.present_ids() == {"a"}  # the shard is where it was, still read


def test_compacting_with_the_ids_to_keep_drops_the_others_and_keeps_the_newest_rows(tmp_path: Path):
    s = store(tmp_path)
    for ids, value in ((["a", "gone", "b"], 1.0), (["b", "c"], 2.0), (["gone"], 3.0)):
        s.write_shard(dense_table(ids, np.full((len(ids), 2), value), [f"{i}@{value}" for i in ids]))
    first, second, _ = s.shards()
    assert s.compact(keep={"a", "b", "c"}) == (2, 1)  # the last shard goes; the first is written again without "gone"
    rewritten, kept = s.shards()
    assert kept == second and rewritten != first and rewritten.name.split("-")[1] == first.name.split("-")[1]
    assert pq.read_table(rewritten).column("id").to_pylist() == ["a"]  # "b" is newer in the second shard
    assert s.sources() == {"a": "a@1.0", "b": "b@2.0", "c": "c@2.0"}
    assert s.read_dense(["a", "b", "gone"])[0][:, 0].tolist()[:2] == [1.0, 2.0]
    assert s.compact(keep={"a", "b", "c"}) == (0, 0)


def test_copies_store_a_row_again_under_another_id_and_source(tmp_path: Path):
    s = store(tmp_path)
    s.write_shard(dense_table(["a", "b"], np.array([[1, 2], [3, 4]], dtype=np.float32), ["a.jpg|1", "b.jpg|1"]))
    s.write_shard(dense_table(["a"], np.array([[5, 6]], dtype=np.float32), ["a.jpg|2"], ["h5"]))
    copies = [Copy("a", "a", "moved/a.jpg|2", "h5"), Copy("a", "c", "c.jpg|1", "h5"), Copy("b", "a2", None, None)]
    assert s.write_copies(copies, shard_size=2) == 2
    out, present = s.read_dense(["a", "c", "a2", "b"])
    assert present.all() and out.tolist() == [[5, 6], [5, 6], [3, 4], [3, 4]]  # the newest row of "a" is copied
    assert s.sources()["a"] == "moved/a.jpg|2" and s.contents() == {"a": "h5", "b": None, "c": "h5", "a2": None}
