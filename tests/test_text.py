"""extract-text: cleaning, the vectorizer, sparse shards aligned by id, no leakage, incremental and stale runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg  # noqa: F401  (sp.linalg.norm)
from typer.testing import CliRunner

from mmgbm.cli import app
from mmgbm.config import load_config, validate_config
from mmgbm.errors import MmgbmError
from mmgbm.features.store import FeatureStore, sparse_table
from mmgbm.features.text import VECTORIZER_FILE
from mmgbm.features.text_cleaning import clean_text, join_columns
from mmgbm.features.text_vectorizer import TextVectorizer
from mmgbm.stores import extract_text, load_products, text_field
from mmgbm.workdir import text_field_dir

TRAIN = pd.DataFrame(
    {
        "pid": ["p1", "p2", "p3", "p4", "p5"],
        "title": ["Red Cotton Shirt", "Blue Denim Jeans", "Red Silk Dress", "Blue Cotton Shirt", None],
        "description": ["<p>Soft&nbsp;<b>cotton</b> shirt</p>", None, "Silk &amp; lace", "", "<br/>"],
    }
)
TEST = pd.DataFrame({"pid": ["t1", "t2"], "title": ["Red zebraprint Shirt", ""], "description": [None, "shirt"]})


@pytest.fixture
def text_config(tmp_path: Path, write_config):
    TRAIN.to_csv(tmp_path / "train.csv", index=False)
    TEST.to_csv(tmp_path / "test.csv", index=False)

    def make(**text_settings) -> Path:
        return write_config(
            {
                "workdir": "work",
                "data": {
                    "id_column": "pid",
                    "splits": {"train": "train.csv", "test": "test.csv"},
                    "text_columns": ["title"],
                },
                "features": {"image": {"enabled": False}, "text": {"min_df": 1, **text_settings}},
            }
        )

    return make


def read_text(cfg, ids: list[str]) -> dict[str, sp.csr_matrix]:
    """Per text field, the stored vectors of `ids` as training and prediction read them."""
    return load_products(cfg, pd.DataFrame({"pid": ids}))[0].text


def stored(cfg, field: str = "text") -> FeatureStore:
    return text_field(cfg, field).fitted().store


# ---- cleaning -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<p>Soft&nbsp;<b>cotton</b></p>\n<ul><li>slim</li></ul>", "Soft cotton slim"),
        ("&lt;b&gt;Bold&lt;/b&gt; &amp;amp; more", "Bold & more"),
        ("<script>var x = 1;</script>Shirt<!-- hidden -->", "Shirt"),
        ("Size < 5 years, fits <3", "Size < 5 years, fits <3"),
        ("ＸＬ ｓｈｉｒｔ ﬁt\u00a0cafe\u0301", "XL shirt fit café"),
        (None, ""),
        (float("nan"), ""),
        ("", ""),
    ],
)
def test_clean_text_strips_html_and_normalises_unicode(raw, clean):
    assert clean_text(raw) == clean


def test_clean_text_can_keep_markup():
    assert clean_text("<b>x</b>", strip_html=False) == "<b>x</b>"


def test_join_columns_skips_missing_values():
    assert join_columns(TRAIN, ["title", "description"])[1] == "Blue Denim Jeans"
    assert join_columns(TRAIN, ["title"])[4] == ""


# ---- the vectorizer -------------------------------------------------------------------------------------------
def test_vectorizer_learns_only_from_fit_and_gives_empty_rows_for_empty_text():
    vec = TextVectorizer(min_df=1).fit(["red shirt", "blue <b>shirt</b>"])
    assert {"red", "shirt", "red shirt", "blue shirt"} <= set(vec.get_feature_names_out())
    assert "b" not in vec.vocabulary_  # the tag went before tokenising
    before = (vec.fingerprint_, dict(vec.vocabulary_))
    out = vec.transform(["green shirt", "", None, "zebra"])
    assert (vec.fingerprint_, vec.vocabulary_) == before  # transforming learns nothing
    assert isinstance(out, sp.csr_matrix) and out.dtype == np.float32 and out.shape == (4, vec.n_columns_)
    assert out.getnnz(axis=1)[1:3].tolist() == [0, 0]
    assert np.allclose(sp.linalg.norm(out[0]), 1.0)  # words and character n-grams together: one unit row
    words_only = TextVectorizer(min_df=1, char_ngram_range=None).fit(["red shirt", "blue shirt"])
    assert words_only.transform(["green shirt", "", None, "zebra"]).getnnz(axis=1).tolist() == [1, 0, 0, 0]


def test_character_ngrams_match_spellings_the_words_never_saw():
    docs = ["Nike Men Tshirt", "Puma Women Shoes"]
    with_chars = TextVectorizer(min_df=1).fit(docs)
    words_only = TextVectorizer(min_df=1, char_ngram_range=None).fit(docs)
    query = ["Adidas T-Shirts"]  # no word of it was seen in training
    assert words_only.transform(query).nnz == 0
    similarity = (with_chars.transform(query) @ with_chars.transform(docs).T).toarray()[0]
    assert similarity[0] > 0.2 and similarity[0] > 3 * similarity[1]  # the tshirt, not the shoes


def test_a_stored_vectorizer_transforms_exactly_as_the_fitted_one():
    docs = ["red shirt", "blue <b>shirt</b>", "Tshirt XL", ""]
    for fitted in (TextVectorizer(min_df=1).fit(docs), TextVectorizer(min_df=1, char_ngram_range=None).fit(docs)):
        restored = TextVectorizer.from_data(json.loads(json.dumps(fitted.to_data())))
        assert restored.fingerprint_ == fitted.fingerprint_
        assert (restored.transform(docs + ["T-shirts"]) != fitted.transform(docs + ["T-shirts"])).nnz == 0


def test_fingerprint_follows_params_and_data():
    docs = ["red shirt", "blue shirt", "red dress"]
    base = TextVectorizer(min_df=1).fit(docs).fingerprint_
    assert TextVectorizer(min_df=1).fit(docs).fingerprint_ == base
    assert TextVectorizer(min_df=1, sublinear_tf=False).fit(docs).fingerprint_ != base
    assert TextVectorizer(min_df=1, char_ngram_range=(3, 5)).fit(docs).fingerprint_ != base
    assert TextVectorizer(min_df=1).fit(docs + ["red shirt"]).fingerprint_ != base


# ---- extract_text and the store -------------------------------------------------------------------------------
def test_round_trip_matches_the_vectorizer_and_aligns_by_id(text_config):
    cfg = load_config(text_config())
    summary = extract_text(cfg)
    assert "fitted on 5 train products" in summary.describe()
    assert summary.fields[0].new == 7 and summary.fields[0].empty == 2  # p5 (missing) and t2 ("")

    ids = ["t1", "nope", "p3", "p1", "also-missing", "t2"]
    products, fingerprints = load_products(cfg, pd.DataFrame({"pid": ids}))
    matrix = products.text["text"]
    vec = text_field(cfg, "text").load_vectorizer()
    assert matrix.dtype == np.float32 and matrix.shape == (6, vec.n_columns_)
    assert products.text_present("text").tolist() == [True, False, True, True, False, False]  # t2's text is ""
    expected = vec.transform(["Red zebraprint Shirt", "", "Red Silk Dress", "Red Cotton Shirt", "", ""])
    assert abs(matrix - expected).max() < 1e-6
    assert fingerprints == {"text/text": stored(cfg).fingerprint}  # what a trained model records and checks

    # On disk: one (indices, values) list pair per product, no dense columns.
    shard = stored(cfg).shards()[0]
    table = pq.read_table(shard)
    assert table.column_names == ["id", "indices", "values", "source"]
    assert sorted(table.column("id").to_pylist()) == ["p1", "p2", "p3", "p4", "p5", "t1", "t2"]


def test_vectorizer_is_fitted_on_train_only(text_config):
    cfg = load_config(text_config())
    extract_text(cfg)
    vec = text_field(cfg, "text").load_vectorizer()
    assert "zebraprint" not in vec.vocabulary_ and "cotton" in vec.vocabulary_  # test-only words stay out
    matrix = read_text(cfg, ["t1"])["text"]  # "Red zebraprint Shirt", a test product
    words = {name for name in vec.get_feature_names_out()[matrix.indices] if not name.startswith("chars:")}
    assert words == {"red", "shirt"}


def test_products_not_in_the_store_are_vectorised_on_the_fly_without_writing(text_config):
    cfg = load_config(text_config())
    extract_text(cfg)
    shards = stored(cfg).shards()
    new = pd.DataFrame({"pid": ["new", "p1"], "title": ["Blue <b>Silk</b> Shirt", "Red Cotton Shirt"]})
    products, _ = load_products(cfg, new)  # a new --input table
    vec = text_field(cfg, "text").load_vectorizer()
    assert abs(products.text["text"] - vec.transform(["Blue Silk Shirt", "Red Cotton Shirt"])).max() < 1e-6
    assert products.words["text"].tolist() == new["title"].tolist()  # the text itself, which mention heads read
    assert stored(cfg).shards() == shards and "new" not in stored(cfg).present_ids()


def test_several_fields_each_with_its_own_vectorizer(text_config):
    fields = {"title": ["title"], "desc": ["description"], "all": ["title", "description"]}
    cfg = load_config(text_config(fields=fields))
    extract_text(cfg)
    feats = read_text(cfg, ["p1", "p2"])
    assert set(feats) == {"title", "desc", "all"}
    desc = text_field(cfg, "desc").load_vectorizer().vocabulary_
    assert {"soft", "cotton", "lace"} <= set(desc) and not {"p", "b", "nbsp", "amp"} & set(desc)
    desc_words = feats["desc"][:, : len(desc)]  # word columns come first, character n-grams after them
    assert desc_words.getnnz(axis=1).tolist() == [5, 0] and feats["desc"][1].nnz == 0  # p2 has no description
    joined = text_field(cfg, "all").load_vectorizer().vocabulary_
    assert "denim" in joined and "lace" in joined


def test_rerun_is_incremental_and_reuses_the_vectorizer(text_config, tmp_path):
    path = text_config()
    extract_text(load_config(path))
    fingerprint = text_field(load_config(path), "text").load_vectorizer().fingerprint_

    again = extract_text(load_config(path)).fields[0]
    assert (again.fitted_on, again.new, again.already_stored, again.shards) == (None, 0, 7, 0)

    grown = pd.concat([TEST, pd.DataFrame({"pid": ["t3"], "title": ["Blue Silk Shirt"], "description": [""]})])
    grown.to_csv(tmp_path / "test.csv", index=False)
    cfg = load_config(path)
    more = extract_text(cfg).fields[0]
    assert (more.fitted_on, more.new, more.already_stored) == (None, 1, 7)
    assert text_field(cfg, "text").load_vectorizer().fingerprint_ == fingerprint
    assert read_text(cfg, ["t3"])["text"].nnz > 0


def test_changed_settings_are_refused_until_overwrite_refits(text_config):
    extract_text(load_config(text_config()))
    changed = load_config(text_config(ngram_range=[1, 1]))
    for call in (lambda: extract_text(changed), lambda: read_text(changed, ["p1"])):
        with pytest.raises(MmgbmError, match=r"ngram_range: fitted with \[1, 2\], config asks \[1, 1\].*--overwrite"):
            call()

    summary = extract_text(changed, overwrite=True).fields[0]
    assert summary.fitted_on == 5 and summary.new == 7 and summary.already_stored == 0
    assert len(stored(changed).shards()) == 1  # the shards of the old vocabulary are gone
    assert all(" " not in term for term in text_field(changed, "text").load_vectorizer().vocabulary_)


def test_shards_of_another_vectorizer_are_refused(text_config):
    cfg = load_config(text_config())
    extract_text(cfg)
    store = stored(cfg)
    other = TextVectorizer(min_df=1).fit(["other words entirely"])
    FeatureStore(store.root, {**store.fingerprint, "vectorizer": other.fingerprint_}).write_shard(
        sparse_table(["x"], other.transform(["other"]))
    )
    with pytest.raises(MmgbmError, match=r"part-\d+-\w+.parquet was made differently.*vectorizer.*--overwrite"):
        read_text(cfg, ["p1"])


def test_missing_or_broken_vectorizer_is_a_clear_error(text_config):
    cfg = load_config(text_config())
    with pytest.raises(MmgbmError, match="no fitted vectorizer for text field 'text'.*mmgbm extract-text"):
        read_text(cfg, ["p1"])
    extract_text(cfg)
    text_field_dir(cfg, "text").address(VECTORIZER_FILE).write_text("garbage")
    with pytest.raises(MmgbmError, match="unreadable vectorizer"):
        text_field(cfg, "text").load_vectorizer()


def test_disabled_text_is_a_no_op(text_config):
    cfg = load_config(text_config(enabled=False))
    assert "disabled" in extract_text(cfg).describe()
    with pytest.raises(MmgbmError, match="no features enabled"):
        read_text(cfg, ["p1"])


def test_unfittable_vocabulary_is_a_user_error(text_config):
    with pytest.raises(MmgbmError, match="cannot fit TF-IDF on 5 train products"):
        extract_text(load_config(text_config(min_df=50)))


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"token_pattern": "("}, "not a valid regular expression"),
        ({"token_pattern": r"(\w)(\w)"}, "at most one capturing group"),
        ({"ngram_range": [2, 1]}, "min_n <= max_n"),
        ({"min_df": 1.5}, "fraction of documents"),
        ({"fields": {"a/b": ["title"]}}, "folder name"),
        ({"fields": {"t": []}}, "at least one text column"),
    ],
)
def test_bad_text_settings_are_refused(setting, message):
    raw = {"data": {"splits": {"train": "x.csv"}}, "features": {"text": setting}}
    with pytest.raises(MmgbmError, match=message):
        validate_config(raw)


# ---- the command line -----------------------------------------------------------------------------------------
def test_cli_extract_text(text_config):
    path = text_config()
    result = CliRunner().invoke(app, ["extract-text", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "fitted on 5 train products" in result.output and "7 new products" in result.output

    stale = subprocess.run(
        [sys.executable, "-m", "mmgbm", "extract-text", "-c", str(path), "--features.text.min_df", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stale.returncode == 1 and "Traceback" not in stale.stderr
    assert "min_df: fitted with 1, config asks 2" in stale.stderr.replace("\n", "")


def test_bench_script_reports_throughput_and_memory(tmp_path):
    words = ["red", "blue", "cotton", "silk", "shirt", "dress", "jeans", "socks"]
    names = [f"{words[i % 8]} {words[(i * 3) % 8]} {words[(i * 5 + 1) % 8]}" for i in range(40)]
    data = tmp_path / "names.csv"
    pd.DataFrame({"uniq_id": [f"u{i}" for i in range(40)], "product_name": names}).to_csv(data, index=False)
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_text.py"
    out = subprocess.run(
        [sys.executable, str(script), "--data", str(data), "--rows", "100"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "repeated (100): transform" in out.stdout and "docs/s" in out.stdout and "peak RSS" in out.stdout
    assert "100 new products" in out.stdout


def test_products_in_no_split_leave_the_text_store_unless_told_to_keep_them(text_config, tmp_path):
    path = text_config(shard_size=3)
    assert CliRunner().invoke(app, ["extract-text", "--config", str(path)]).exit_code == 0
    TEST.iloc[:1].to_csv(tmp_path / "test.csv", index=False)  # t2 left the feed
    kept = CliRunner().invoke(app, ["extract-text", "--config", str(path), "--no-prune"])
    assert kept.exit_code == 0 and "pruned" not in kept.output, kept.output
    cfg = load_config(path)
    store = text_field(cfg, "text").fitted().store
    assert len(store.present_ids()) == 7

    pruned = CliRunner().invoke(app, ["extract-text", "--config", str(path)])  # features.prune is on by default
    said = " ".join(pruned.output.split())  # as printed, wrapped to the terminal
    assert pruned.exit_code == 0 and "1 products no longer in any split pruned" in said, said
    assert store.present_ids() == {"p1", "p2", "p3", "p4", "p5", "t1"} and "0 new products" in said
    assert all(read_text(load_config(path), ["p1", "t1"])["text"].getnnz(axis=1))


def test_a_feed_that_lost_many_of_its_products_prunes_none_until_told(text_config, tmp_path):
    """A feed cut short overnight must not empty the store: past features.max_prune nothing is pruned, with a note."""
    path = text_config()
    assert CliRunner().invoke(app, ["extract-text", "--config", str(path)]).exit_code == 0
    TRAIN.iloc[:2].to_csv(tmp_path / "train.csv", index=False)  # 3 of the 7 products left the feed
    held = CliRunner().invoke(app, ["extract-text", "--config", str(path)])
    said = " ".join(held.output.split())
    assert held.exit_code == 0 and "none pruned, as that is more than features.max_prune (20%)" in said, said
    store = text_field(load_config(path), "text").fitted().store
    assert len(store.present_ids()) == 7
    pruned = CliRunner().invoke(app, ["extract-text", "--config", str(path), "--features.max_prune", "1"])
    assert "3 products no longer in any split pruned" in " ".join(pruned.output.split()), pruned.output
    assert len(store.present_ids()) == 4
