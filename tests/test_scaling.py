"""The estimator's large-catalogue paths, forced on small data: approximate neighbours, the stacker's bounded
sample, the linear heads' bounded sample and folds run in parallel give the answers of the exact, serial paths (or
close to them)."""

from __future__ import annotations

import pickle
import threading
import time

import numpy as np
import pytest
import scipy.sparse as sp

from mmgbm.commands.artifact import Artifact, TargetInfo, load_artifact, save_artifact
from mmgbm.estimator import MMGBMClassifier, MMGBMRegressor, ProductMatrix
from mmgbm.estimator import classifier, dense_blocks, out_of_fold as out_of_fold_module, stacking
from mmgbm.estimator.heads import linear
from mmgbm.estimator.folds import bounded_rows
from mmgbm.estimator.heads import KnnHead, LinearHead
from mmgbm.estimator.out_of_fold import fit_and_score, out_of_fold
from mmgbm.estimator import neighbours
from mmgbm.estimator import products as products_module
from mmgbm.estimator.neighbours import NeighbourIndex
from mmgbm.estimator.row_view import RowView
from mmgbm.estimator.shortlist import ShortlistSVM
from mmgbm.estimator.top_scores import TopScores
from tests.test_estimator import FAST, products


def clustered_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n // 20, dim))
    return (centres[rng.integers(0, len(centres), n)] + rng.normal(0, 0.3, (n, dim))).astype(np.float32)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def test_approximate_search_finds_the_exact_neighbours_of_dense_and_sparse_rows():
    rows = clustered_rows(3000, 64, seed=0)
    queries = clustered_rows(200, 64, seed=0)[:200]
    sparse = sp.csr_matrix(np.where(rows > 0.8, rows, 0))
    for X, Q in ((rows, queries), (sparse, sp.csr_matrix(np.where(queries > 0.8, queries, 0)))):
        exact = NeighbourIndex(exact_max_rows=10_000).fit(X)
        approximate = NeighbourIndex(exact_max_rows=1000, components=32).fit(X)
        assert exact.exact and not approximate.exact
        truth_sims, truth = exact.search(Q, 10)
        sims, found = approximate.search(Q, 10)
        assert found.shape == (200, 10) and (np.diff(sims, axis=1) <= 1e-6).all()  # best first
        assert recall(found, truth) > 0.6  # a 32-d projection of 64-d rows: most true neighbours found
        if X is rows:  # an indexed product reads its own cell first: its own nearest neighbour, as in exact search
            assert np.array_equal(approximate.search(rows[:500], 1)[1][:, 0], np.arange(500))


def test_exact_search_gives_the_neighbours_a_full_sort_gives_ties_by_row():
    # Large enough for the sampled threshold (rows past 4 x TOP_K_SAMPLE) and, for sparse rows, the dense/sparse
    # split of common and rare terms; duplicate rows make ties, which go to the lower row.
    rows = clustered_rows(4200, 32, seed=1)
    rows[3000:3100] = rows[:100]
    queries = np.vstack([rows[:150], clustered_rows(350, 32, seed=2)])
    cut = np.r_[np.full(16, 0.5), np.full(16, 2.0)]  # half the columns in most rows (common words), half in few
    sparse, sparse_queries = (sp.csr_matrix(np.where(m > cut, m, 0)) for m in (rows, queries))
    for X, Q in ((rows, queries), (sparse, sparse_queries)):
        index = NeighbourIndex(exact_max_rows=10_000).fit(X)
        sims, found = index.search(Q, 20)
        units = neighbours.unit_rows(X)
        full = neighbours.unit_rows(Q) @ units.T
        full = full.toarray() if sp.issparse(full) else full
        order = np.argsort(-full, axis=1, kind="stable")[:, :20]
        assert np.array_equal(found, order)
        assert np.allclose(sims, np.take_along_axis(full, order, axis=1), atol=1e-6)
        if X is rows:  # (cut sparse rows can have more twins)
            assert (found[:100, :2] == np.column_stack([np.arange(100), np.arange(3000, 3100)])).all()


def test_wide_dense_rows_are_searched_exactly_in_their_leading_directions():
    rows = clustered_rows(1200, 300, seed=3)  # 60 clusters in 300 dimensions
    full = NeighbourIndex(exact_max_rows=10_000).fit(rows)
    narrow = NeighbourIndex(exact_max_rows=10_000, dense_dims=64).fit(rows)
    assert full.exact and narrow.exact and narrow.projection_.shape == (300, 64)
    queries = rows[:200] + np.random.default_rng(4).normal(0, 0.1, (200, 300)).astype(np.float32)
    sims, found = narrow.search(queries, 10)
    assert (found[:, 0] == np.arange(200)).all() and (np.diff(sims, axis=1) <= 1e-6).all()
    # Within a cluster the order is noise, which lives outside the leading directions: the neighbours found are
    # those of the whole width's 20 nearest (the product's cluster, ~20 rows), in a fifth of the width.
    nearest_20 = full.search(queries, 20)[1]
    assert np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(found, nearest_20)]) > 0.9


def test_a_model_saved_with_an_hnsw_graph_still_finds_neighbours():
    """Models trained before inverted files stored an HNSW graph's bytes: they must keep predicting."""
    import faiss

    rows = clustered_rows(3000, 64, seed=0)
    index = NeighbourIndex(exact_max_rows=1000, components=32).fit(rows)
    graph = faiss.IndexHNSWFlat(32, 32, faiss.METRIC_INNER_PRODUCT)
    graph.add(index._project(rows))
    old = pickle.loads(pickle.dumps(index))  # as loaded from an artifact: the index's bytes, rebuilt on first use
    old.index_bytes_ = faiss.serialize_index(graph)
    sims, found = old.search(rows[:200], 41)
    assert np.array_equal(found[:, 0], np.arange(200)) and (found >= 0).all() and (np.diff(sims, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("projection_alpha", [None, 1.0], ids=["one index", "projected: two halves"])
def test_a_shared_index_scores_out_of_fold_like_an_index_per_fold(projection_alpha):
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 12, 600)
    # 256 dimensions: enough for a projection that saw a product's label to place it by that label (OOF accuracy
    # 0.74 on the noise labels below when the halves' projections learn from every row).
    rows = (rng.normal(size=(12, 256))[classes] + rng.normal(0, 0.8, (600, 256))).astype(np.float32)
    # Every product listed twice, both copies in one fold: a twin seen out of fold would be a leak.
    X, folds = np.repeat(rows, 2, axis=0), np.repeat(np.arange(600) % 5, 2)
    present = np.ones(len(X), dtype=bool)
    head = KnnHead("multiclass", 12, n_neighbors=5, exact_max_rows=100, projection_alpha=projection_alpha)
    assert head.searches_across_folds(len(X))

    def accuracy(scores, y):
        return float(np.mean(np.nanargmax(np.nan_to_num(scores, nan=-1.0), axis=1) == y))

    noise = np.repeat(rng.integers(0, 12, 600), 2)  # labels the features know nothing of, shared by twins
    fitted, oof = fit_and_score(head, X, noise, folds, present)
    assert accuracy(fitted.predict(X), noise) > 0.85  # in sample, its twin gives every product away
    assert accuracy(oof, noise) < 0.2  # out of fold, chance (1/12): neither the product nor its twin is seen
    y = np.repeat(classes, 2)
    shared = fit_and_score(head, X, y, folds, present)[1]
    exact = KnnHead("multiclass", 12, n_neighbors=5, exact_max_rows=100_000, projection_alpha=projection_alpha)
    per_fold = out_of_fold(exact, X, y, folds, present)
    assert abs(accuracy(shared, y) - accuracy(per_fold, y)) < 0.03 and accuracy(per_fold, y) > 0.8
    price = fit_and_score(KnnHead("regression", exact_max_rows=100), X, y * 10.0, folds, present)[1]
    assert np.isfinite(price).all() and np.mean(np.abs(price[:, 0] - y * 10.0)) < np.mean(np.abs(y * 10.0 - 55))


def test_large_catalogue_paths_predict_as_well_and_survive_the_artifact(tmp_path, monkeypatch):
    X, y = products(n=400)
    small = MMGBMClassifier(**FAST).fit(X[:300], y[:300])
    params = {**FAST, "knn_exact_max_rows": 100, "stack_max_products": 150, "linear_max_products": 120}
    large = MMGBMClassifier(**params).fit(X[:300], y[:300])
    assert not large.heads_["image.knn"].index_.exact
    # Every training product still has an honest prediction: the bounded sample's rows out of fold, the others
    # from the final stacker that never saw them, which predicts them a block of rows at a time.
    assert np.isfinite(large.oof_proba_).all() and large.oof_proba_.shape == (300, 4)
    price = np.where(y[:300] == "watch", 500.0, 20.0)
    regressor_ = MMGBMRegressor(**params).fit(X[:300], price)
    monkeypatch.setattr(stacking, "ROW_BLOCK", 7)
    monkeypatch.setattr(stacking, "PREDICT_ROWS", 7)
    assert np.array_equal(MMGBMClassifier(**params).fit(X[:300], y[:300]).oof_proba_, large.oof_proba_)
    assert np.array_equal(MMGBMRegressor(**params).fit(X[:300], price).stacker_.oof_, regressor_.stacker_.oof_)
    accuracy = [(m.predict(X[300:]) == y[300:]).mean() for m in (small, large)]
    assert accuracy[1] > 0.9 and accuracy[1] >= accuracy[0] - 0.03
    save_artifact(tmp_path / "m", Artifact(TargetInfo("t", "t", "classification"), large, {}, {}, {}))
    loaded = load_artifact(tmp_path / "m", "t").model
    np.testing.assert_allclose(loaded.predict_proba(X[300:]), large.predict_proba(X[300:]), atol=1e-6)


def test_a_large_catalogue_never_copies_its_image_block_whole(monkeypatch):
    """Standardising the image block and taking each fold's rows made two copies of it at the peak of training
    (4.8 GB each at a million photos): above the heads' sample sizes they read it a block of rows at a time."""
    X, y = products(n=400)
    price = np.where(y == "watch", 500.0, 20.0)
    reads, read = [], RowView.__getitem__

    def recorded(view, key):
        rows = read(view, key)
        reads.append(len(rows))
        return rows

    monkeypatch.setattr(RowView, "__getitem__", recorded)
    for module, name in ((out_of_fold_module, "ROW_BLOCK"), (dense_blocks, "ROW_BLOCK"), (neighbours, "KNN_CHUNK")):
        monkeypatch.setattr(module, name, 50)
    monkeypatch.setattr(neighbours, "SVD_MAX_ROWS", 100)
    large = {"knn_exact_max_rows": 100, "linear_max_products": 100, **FAST}
    classifier_, regressor_ = MMGBMClassifier(**large).fit(X, y), MMGBMRegressor(**large).fit(X, price)
    assert (classifier_.predict(X) == y).mean() > 0.9 and np.mean(np.abs(regressor_.predict(X) - price)) < 100
    # Samples of 100 rows and blocks of 50: never a fold's 267 training rows, nor all 400.
    assert reads and max(reads) <= 100
    rows = np.array([5, 0, 399])
    view = RowView(X.dense["image"], transform=lambda r: r * 2).take(np.arange(400)[::-1]).take(rows)
    np.testing.assert_array_equal(view[:], X.dense["image"][399 - rows] * 2)  # a view of a view, transformed
    np.testing.assert_array_equal(np.asarray(view), view[:])


def test_image_blocks_are_held_in_half_the_memory_and_missing_photos_stay_missing(monkeypatch):
    """A million products' B0 embeddings are 4.8 GB in float32: a ProductMatrix holds them as float16, read back in
    blocks of rows; a block float16 cannot hold (values past 65,504) stays exact."""
    monkeypatch.setattr(products_module, "PRESENT_ROWS", 7)  # blocks of rows that do not divide the products
    rng = np.random.default_rng(0)
    photos = rng.normal(0, 3, (50, 16)).astype(np.float32)
    photos[[3, 20, 49]] = np.nan  # products without a photo
    prices = rng.uniform(0, 1e6, (50, 2))
    X = ProductMatrix(np.arange(50).astype(str), dense={"image": photos, "prices": prices})
    assert X.dense["image"].dtype == np.float16 and X.dense["image"].nbytes == photos.nbytes // 2
    np.testing.assert_allclose(X.dense["image"], photos, rtol=2.0**-11)
    assert np.flatnonzero(~X.dense_present("image")).tolist() == [3, 20, 49]
    assert X.dense["prices"].dtype == np.float64 and np.array_equal(X.dense["prices"], prices)
    assert X[10:30].dense["image"].dtype == np.float16  # rows taken stay half the size


def test_a_heads_best_classes_break_ties_at_the_cut_by_the_lowest_class_code():
    """Which of several classes tied at the k-th best score a head keeps must not depend on how a machine
    partitions: the lowest codes, also among hundreds of ties (counted in narrow integers)."""
    nan = np.nan
    scores = np.array([[0.5, 0.9, 0.5, 0.5, nan, 0.1], [nan] * 6, [3, 2, nan, 0, -1, -2]], dtype=np.float32)
    top = TopScores.from_dense(scores, 3)
    assert top.classes.tolist() == [[1, 0, 2], [-1, -1, -1], [0, 1, 3]]
    np.testing.assert_array_equal(top.scores, np.array([[0.9, 0.5, 0.5], [nan] * 3, [3, 2, 0]], dtype=np.float32))
    many = TopScores.from_dense(np.ones((2, 300), dtype=np.float32), 32)
    assert many.classes.tolist() == [list(range(32))] * 2


@pytest.mark.slow  # trains the same model twice, once with parallel folds
def test_folds_in_parallel_give_the_serial_model():
    X, y = products(n=200)
    price = np.where(y == "watch", 500.0, 20.0)
    for make, target in ((MMGBMClassifier, y), (MMGBMRegressor, price)):
        serial = make(**FAST).fit(X, target)
        parallel = make(**FAST, n_jobs=2).fit(X, target)
        # Worker processes get copies of the rows: float32 products may differ in their last bits, which the
        # heads' settled scores absorb (to ~1e-5 at worst: test_cluster.py).
        np.testing.assert_allclose(
            parallel.predict(X) if make is MMGBMRegressor else parallel.predict_proba(X),
            serial.predict(X) if make is MMGBMRegressor else serial.predict_proba(X),
            rtol=1e-4,
            atol=1e-4,
        )
        np.testing.assert_array_equal(parallel.choice_, serial.choice_)


def test_linear_heads_learn_from_a_bounded_sample_that_keeps_rare_classes_whole():
    y = np.repeat([0, 1, 2, 3], [5000, 300, 20, 3])
    rows = bounded_rows(y, 1000, seed=0)
    assert len(rows) == 1000 and len(np.unique(rows)) == 1000
    assert np.bincount(y[rows]).tolist() == [677, 300, 20, 3]  # only the frequent class is thinned
    assert len(bounded_rows(y, 10_000, seed=0)) == len(y)
    rng = np.random.default_rng(0)
    X = sp.csr_matrix(np.eye(4)[y] + 0.3 * rng.random((len(y), 4)) * (rng.random((len(y), 4)) < 0.1))
    head = LinearHead("multiclass", 4, max_rows=200).fit(X, y)
    assert head.model_.classes_.tolist() == [0, 1, 2, 3]  # the 3-product class was learned
    assert (head.predict(X[y == 3]).argmax(axis=1) == 3).all()


def test_linear_svm_fits_in_threads_of_one_process_run_one_at_a_time(monkeypatch):
    """liblinear's generator is process-wide: concurrent fits (a Dask worker's threads) would each get another
    model than their seed gives, so LinearHead runs them one at a time."""
    running, most = [0], [0]

    class Watched(linear.LinearSVC):
        def fit(self, X, y, sample_weight=None):
            running[0] += 1
            most[0] = max(most[0], running[0])
            time.sleep(0.05)  # long enough for the other thread to arrive
            running[0] -= 1
            return super().fit(X, y, sample_weight)

    monkeypatch.setattr(linear, "LinearSVC", Watched)
    X, y = products(n=120)
    fits = [threading.Thread(target=LinearHead("multiclass", 4).fit, args=(X.text["title"], y)) for _ in range(3)]
    for thread in fits:
        thread.start()
    for thread in fits:
        thread.join()
    assert most[0] == 1


def test_row_blocks_leave_the_stacker_and_the_heads_predictions_unchanged(monkeypatch):
    """Ranking classes a block of products at a time bounds memory on large catalogues; it must not change a
    single candidate, feature, probability or label."""
    X, y = products(240)
    params = {"categorical_columns": ("season",), "numeric_columns": ("year",), **FAST}
    whole = MMGBMClassifier(**params).fit(X[:200], y[:200])
    scores, meta = list(whole.head_scores(X[200:]).values()), whole.metadata_.transform(X[200:].meta)
    rows, probabilities = whole.stacker_.candidate_rows(scores, meta), whole.predict_proba(X[200:])
    monkeypatch.setattr(stacking, "ROW_BLOCK", 7)
    monkeypatch.setattr(classifier, "ROW_BLOCK", 7)
    monkeypatch.setattr(out_of_fold_module, "ROW_BLOCK", 7)
    for got, expected in zip(whole.stacker_.candidate_rows(scores, meta), rows):
        assert np.array_equal(got, expected, equal_nan=True)
    blocked = MMGBMClassifier(**params).fit(X[:200], y[:200])
    assert np.array_equal(whole.oof_proba_, blocked.oof_proba_)
    for modality, (candidates, oof) in whole.oof_by_modality_.items():
        assert np.array_equal(candidates, blocked.oof_by_modality_[modality][0])
        assert np.array_equal(oof, blocked.oof_by_modality_[modality][1])
    assert np.array_equal(blocked.predict_proba(X[200:]), probabilities)


def test_exact_search_on_sparse_text_finds_the_true_cosine_neighbours():
    rng = np.random.default_rng(0)
    X = sp.random(500, 300, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    Q = sp.random(40, 300, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    sims, found = NeighbourIndex().fit(X).search(Q, 5)
    dense = lambda m: m.toarray() / np.maximum(np.linalg.norm(m.toarray(), axis=1, keepdims=True), 1e-12)  # noqa: E731
    truth = dense(Q) @ dense(X).T
    np.testing.assert_allclose(sims, -np.sort(-truth, axis=1)[:, :5], atol=1e-6)
    assert (np.take_along_axis(truth, found, axis=1) >= truth.max(axis=1, keepdims=True) - 1e-6)[:, 0].all()


def grouped_titles(n: int, n_classes: int, seed: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Titles of many classes in groups of ten: each names its group, its own class in 70% of titles (a wrong
    class of the group otherwise), and two of 3,000 filler words; rows of unit length, as TF-IDF gives."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    own = np.where(rng.random(n) < 0.7, y, y // 10 * 10 + rng.integers(0, 10, n))
    words = np.column_stack([n_classes + y // 10, own, n_classes + n_classes // 10 + rng.integers(0, 3000, (n, 2))])
    X = sp.csr_matrix(
        (np.ones(words.size, np.float32), (np.repeat(np.arange(n), 4), words.ravel())),
        shape=(n, n_classes + n_classes // 10 + 3000),
    )
    return sp.csr_matrix(X.multiply(1 / np.sqrt(X.multiply(X).sum(axis=1)))), y


def test_a_shortlisted_text_svm_scores_like_one_vs_rest_with_sparse_weights(tmp_path):
    """Above 2 x `shortlist` classes each class's SVM learns only from the products near it: as accurate as
    one-vs-rest, a product scored for its shortlisted classes only, and weights only on the terms those use."""
    X, y = grouped_titles(3000, 150, seed=0)
    Q, truth = grouped_titles(600, 150, seed=1)
    shortlisted = LinearHead("multiclass", 150, shortlist=20).fit(X, y)
    one_vs_rest = LinearHead("multiclass", 150, shortlist=0).fit(X, y)
    assert isinstance(shortlisted.model_, ShortlistSVM) and not isinstance(one_vs_rest.model_, ShortlistSVM)
    scores = shortlisted.predict(Q)
    assert (np.isfinite(scores).sum(axis=1) <= 20).all()
    accuracy = [np.mean(np.nanargmax(h.predict(Q), axis=1) == truth) for h in (shortlisted, one_vs_rest)]
    assert accuracy[0] > 0.6 and accuracy[0] >= accuracy[1] - 0.02
    assert shortlisted.model_.weights_.nnz < 0.25 * one_vs_rest.model_.coef_.size  # a dense classes x terms
    # Through the classifier and its artifact (skops must trust the shortlisted SVM, and only it).
    labels = np.array([f"c{c:03d}" for c in range(150)])
    model = MMGBMClassifier(**FAST, linear_shortlist=20, image_knn_projection=False).fit(
        ProductMatrix(np.arange(3000).astype(str), {"title": X}), labels[y]
    )
    assert isinstance(model.heads_["text.title.linear"].model_, ShortlistSVM)
    test = ProductMatrix(np.arange(600).astype(str), {"title": Q})
    assert np.mean(model.predict(test) == labels[truth]) >= accuracy[0] - 0.02
    save_artifact(tmp_path / "m", Artifact(TargetInfo("t", "t", "classification"), model, {}, {}, {}))
    np.testing.assert_array_equal(
        load_artifact(tmp_path / "m", "t").model.predict_proba(test), model.predict_proba(test)
    )


def test_a_projected_head_whose_products_sit_in_one_half_of_the_folds_is_scored_fold_by_fold():
    # Photos only in the even folds: the odd half has no rows to learn a projection from, so the folds' own heads
    # score the products, as below knn_exact_max_rows, never a head without its projection.
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(400, 16)).astype(np.float32), rng.integers(0, 4, 400)
    folds = np.arange(400) % 5
    present = folds % 2 == 0
    head = KnnHead("multiclass", 4, n_neighbors=5, exact_max_rows=50, projection_alpha=1.0)
    fitted, oof = fit_and_score(head, X, y, folds, present)
    assert fitted.projector_ is not None
    np.testing.assert_array_equal(oof, out_of_fold(head, X, y, folds, present))
