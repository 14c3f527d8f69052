"""Category paths (task: path) on a small catalogue the tests write: answers that are always nodes of the taxonomy,
as deep as the model is sure of, through train / evaluate / predict / serve / audit, and bad paths or taxonomy files
refused in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.base import clone
from typer.testing import CliRunner

from mmgbm.catalogue import in_holdout
from mmgbm.cli import app
from mmgbm.commands.artifact import load_artifact
from mmgbm.commands.audit import audit
from mmgbm.commands.evaluate import evaluate
from mmgbm.commands.predict import predict
from mmgbm.commands.targets import target_values
from mmgbm.config import TargetConfig, load_config
from mmgbm.errors import MmgbmError
from mmgbm.estimator import MMGBMPathClassifier
from mmgbm.stores import extract_text
from mmgbm.taxonomy import PathFormat, read_taxonomy
from mmgbm.workdir import model_dir
from tests.test_estimator import FAST

runner = CliRunner()
# Leaf -> words naming it in a title. Rings end at level 2 (and toe rings below them); the others at level 3.
LEAVES = {
    "Clothing > Women > Dresses": ["dress", "gown"],
    "Clothing > Women > Tops": ["top", "blouse"],
    "Clothing > Men > Shirts": ["shirt", "formal"],
    "Clothing > Men > Jeans": ["jeans", "denim"],
    "Jewellery > Rings": ["ring", "band"],
    "Jewellery > Rings > Toe Rings": ["toe ring", "toe band"],
    "Jewellery > Necklaces > Chains": ["chain", "necklace"],
    "Kitchen > Cookware > Pans": ["pan", "skillet"],
    "Kitchen > Cookware > Kadhais": ["kadhai", "wok"],
}
VAGUE = "Clothing > Women"  # titles that say only this much: which leaf below it is a coin toss
TAXONOMY = """# Google_Product_Taxonomy_Version: test
1 - Clothing
2 - Clothing > Women
3 - Clothing > Women > Dresses
4 - Clothing > Women > Tops
5 - Clothing > Men
6 - Clothing > Men > Shirts
7 - Clothing > Men > Jeans
8 - Clothing > Men > Suits
9 - Jewellery
10 - Jewellery > Rings
17 - Jewellery > Rings > Toe Rings
11 - Jewellery > Necklaces
12 - Jewellery > Necklaces > Chains
13 - Kitchen
14 - Kitchen > Cookware
15 - Kitchen > Cookware > Pans
16 - Kitchen > Cookware > Kadhais
"""
TYPO = "Clothing > Women > Dresess"
HOLDOUT = {"fraction": 0.25, "seed": 0}


def training_id(stem: str) -> str:
    """An id the holdout leaves in the training split."""
    return next(
        f"{stem}{k}"
        for k in range(100)
        if not in_holdout(pd.Series([f"{stem}{k}"]), HOLDOUT["fraction"], HOLDOUT["seed"]).iloc[0]
    )


WRONG_TOP, WRONG_LEAF = training_id("p-wrong-top"), training_id("p-wrong-leaf")  # labels audit must find


def catalogue() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    brands = ["acme", "zed", "kora", "lumo", "vira", "orla"]
    rows = []
    for leaf, words in LEAVES.items():
        gender = {"Women": "women", "Men": "men"}.get(leaf.split(" > ")[1] if leaf.startswith("Clothing") else "", "")
        for i in range(30):
            title = f"{rng.choice(brands)} {gender} {words[i % 2]} {rng.choice(['classic', 'new', 'daily'])}"
            rows.append((f"p{len(rows)}", title, leaf))
    for i in range(60):  # women's clothing whose title names no kind: half dresses, half tops
        rows.append((f"p{len(rows)}", "women clothing", f"{VAGUE} > {'Dresses' if i % 2 else 'Tops'}"))
    rows += [
        (WRONG_TOP, "kora ring classic", "Kitchen > Cookware > Pans"),
        (WRONG_LEAF, "acme women dress daily", "Clothing > Women > Tops"),
        (training_id("p-typo"), "zed women gown new", TYPO),
    ]
    frame = pd.DataFrame(rows, columns=["id", "title", "category"])
    # Flipkart writes its paths as a JSON list holding one path.
    frame.loc[::3, "category"] = frame.loc[::3, "category"].map(lambda path: json.dumps([path]))
    return frame


def given_path(value: str) -> str:
    return json.loads(value)[0] if value.startswith("[") else value


def write_project(folder: Path, target: dict, frame: pd.DataFrame | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (catalogue() if frame is None else frame).to_csv(folder / "products.csv", index=False)
    (folder / "taxonomy.txt").write_text(TAXONOMY)
    raw = {
        "workdir": "work",
        "data": {"splits": {"train": "products.csv"}, "holdout": HOLDOUT, "text_columns": ["title"]},
        "targets": {"category": target},
        "features": {"image": {"enabled": False}, "text": {"min_df": 1, "char_ngram_range": None}},
        "model": {**FAST, "stack_folds": 2},
    }
    path = folder / "mmgbm.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    path = write_project(
        tmp_path_factory.mktemp("paths"), {"column": "category", "task": "path", "taxonomy": "taxonomy.txt"}
    )
    extract_text(load_config(path))
    result = runner.invoke(app, ["train", "--config", str(path), "--target", "category"])
    assert result.exit_code == 0, result.output
    assert "1 with a path not in taxonomy.txt" in result.output  # the typo, left out and counted
    return path


def nodes_of_taxonomy() -> set[str]:
    return {line.split(" - ", 1)[1] for line in TAXONOMY.splitlines() if " - " in line}


def test_every_answer_is_a_taxonomy_node_and_no_level_is_surer_than_its_parent(project: Path):
    answers = predict(load_config(project), ["category"], split="train", probabilities=True)
    assert set(answers["category"]) <= nodes_of_taxonomy()
    levels = answers[[f"category_p_depth{d}" for d in (1, 2, 3)]].to_numpy()
    assert (np.nan_to_num(np.diff(levels, axis=1), nan=0.0) <= 1e-9).all()
    assert np.isnan(levels[answers["category"] == "Jewellery > Rings", 2]).all()  # a path that ends at level 2
    # Rings that are no toe rings stay rings: where the products that end at a node outweigh its children, the
    # answer ends there too.
    given = catalogue().set_index("id")["category"].map(given_path)
    rings = answers["id"].map(given).eq("Jewellery > Rings")
    assert (answers.loc[rings, "category"] == "Jewellery > Rings").mean() >= 0.9


def test_min_confidence_answers_as_deep_as_the_model_is_sure(project: Path):
    cfg = load_config(project)
    frame = catalogue().set_index("id")
    sure = predict(cfg, ["category"], split="test", min_confidence=0.8).set_index("id")
    vague = frame["title"].str.contains("clothing")
    # Titles that say "women clothing" stop at the level they tell; titles that name the kind go to the leaf.
    assert (sure.loc[vague[vague].index.intersection(sure.index), "category"] == VAGUE).mean() >= 0.9
    assert (sure.loc[vague[vague].index.intersection(sure.index), "category_depth"] == 2).mean() >= 0.9
    clear = sure.index[~vague.reindex(sure.index).to_numpy()]
    assert (sure.loc[clear, "category_depth"] >= 2).mean() >= 0.9
    filled = sure["category_depth"] > 0
    assert (sure.loc[filled, "category_depth"] == sure.loc[filled, "category"].str.count(" > ") + 1).all()
    assert (sure.loc[filled, "category_confidence"] >= 0.8).all() and sure.loc[~filled, "category"].isna().all()


def test_evaluate_reports_accuracy_by_depth_hierarchical_f1_calibration_and_coverage(project: Path):
    [result] = evaluate(load_config(project), ["category"])
    path = result.metrics["path"]
    depth = {row["depth"]: row for row in path["depth_accuracy"]}
    assert depth[1]["accuracy"] >= depth[2]["accuracy"] >= depth[3]["accuracy"] > 0.6
    assert depth[3]["rows"] < depth[1]["rows"]  # rings have no level 3
    assert path["full_path_accuracy"] == pytest.approx(result.metrics["fused"]["accuracy"])
    assert 0.6 < path["hierarchical"]["f1"] <= 1
    assert [c["depth"] for c in path["calibration"]] == [1, 2, 3]
    assert [row["precision_goal"] for row in path["coverage"]] == [0.95, 0.98]
    filled = path["coverage"][0]["filled_to_depth"]
    assert filled["1"] >= filled["2"] >= filled["3"] and filled["2"] > 0.5
    assert "accuracy by depth" in result.describe()


def test_serve_answers_the_deepest_sure_node_with_its_depth_as_batch_predict(project: Path):
    from fastapi.testclient import TestClient

    from mmgbm.commands.serve import PredictionService, create_app

    cfg = load_config(project)
    products = [{"id": "n1", "title": "women clothing"}, {"id": "n2", "title": "zed skillet daily"}, {"id": "n3"}]
    pd.DataFrame(products).to_csv(project.parent / "new.csv", index=False)
    batch = predict(cfg, ["category"], input_path=project.parent / "new.csv", min_confidence=0.8)
    with TestClient(create_app(PredictionService(cfg, ["category"]))) as client:
        response = client.post("/predict", params={"min_confidence": 0.8}, json=products)
    assert response.status_code == 200, response.text
    answers = [p["targets"]["category"] for p in response.json()["predictions"]]
    assert [a["label"] for a in answers] == batch["category"].tolist()
    assert [a["label"] for a in answers[:2]] == [VAGUE, "Kitchen > Cookware > Pans"] and answers[1]["depth"] == 3
    assert [a["depth"] for a in answers] == batch["category_depth"].tolist() and answers[0]["depth"] == 2
    assert answers[2]["label"] in nodes_of_taxonomy()  # no title: still a node of the tree, from the others' paths
    assert [level["label"] for level in answers[1]["levels"]] == ["Kitchen", "Cookware", "Pans"]


def test_audit_says_at_which_level_a_given_path_is_wrong(project: Path):
    ranked = audit(load_config(project), "category").ranked.set_index("id")
    assert ranked.loc[WRONG_TOP, "wrong_from_depth"] == 1  # a ring filed under kitchen: wrong from the top
    assert ranked.loc[WRONG_LEAF, "wrong_from_depth"] == 3  # a dress filed under tops: only the leaf
    assert ranked.index.get_loc(WRONG_TOP) < 10


def test_partial_paths_ancestors_reads_a_path_that_stops_above_others_as_known_only_that_far(project: Path):
    # Rings filed at "Jewellery > Rings" while toe rings go on below: read as partial labels they are no class of
    # their own, so the answer for a ring goes on to the path below, and the rings count for the levels above it.
    raw = yaml.safe_load(project.read_text())
    raw["targets"] = {"partial": {**raw["targets"]["category"], "partial_paths": "ancestors"}}
    config = project.parent / "partial.yaml"
    config.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = runner.invoke(app, ["train", "--config", str(config), "--target", "partial"])
    assert result.exit_code == 0, result.output
    cfg = load_config(config)
    model = load_artifact(model_dir(cfg, "partial"), "partial").model
    rings = catalogue()["category"].map(given_path).eq("Jewellery > Rings")
    assert "Jewellery > Rings" not in model.classes_ and 0 < model.partial_products_ <= rings.sum()
    answers = predict(cfg, ["partial"], split="test").set_index("id")
    given = catalogue().set_index("id")["category"].map(given_path).reindex(answers.index)
    assert (answers.loc[given.eq("Jewellery > Rings"), "partial"] == "Jewellery > Rings > Toe Rings").mean() >= 0.9
    # evaluate scores an answer below a partial label as right as far as the label goes
    [result] = evaluate(cfg, ["partial"])
    assert result.metrics["path"]["full_path_accuracy"] > result.metrics["fused"]["accuracy"] + 0.05
    # audit ranks the labels the model learned a class from; a partial label is none
    ranked = audit(cfg, "partial").ranked
    assert len(ranked) == model.class_counts_.sum() and "Jewellery > Rings" not in set(ranked["given_label"])


def test_the_model_loads_alone_with_how_it_reads_paths_and_clones_as_an_estimator(project: Path):
    cfg = load_config(project)
    artifact = load_artifact(model_dir(cfg, "category"), "category")
    assert artifact.target.task == "path"
    assert artifact.target.path["separator"] == " > " and artifact.target.path["taxonomy"].endswith("taxonomy.txt")
    model = artifact.model
    assert isinstance(model, MMGBMPathClassifier) and model.depth_ == 3
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy.separator == " > " and not hasattr(copy, "classes_")


def test_a_path_in_level_columns_or_flipkart_json_reads_the_same(tmp_path: Path):
    frame = catalogue()
    levels = frame["category"].map(given_path).str.split(" > ")
    for d in range(3):
        frame[f"l{d + 1}"] = levels.map(lambda path, d=d: path[d] if d < len(path) else None)
    frame["tree"] = levels.map(lambda path: json.dumps([" >> ".join(path + ["Acme Things"])]))
    columns = target_values(frame, TargetConfig(task="path", columns=["l1", "l2", "l3"]), "t")
    written = target_values(frame, TargetConfig(task="path", column="category"), "t")
    tree = target_values(
        frame, TargetConfig(task="path", column="tree", separator=" >> ", max_depth=3, truncate=True), "t"
    )
    assert columns.y.tolist() == written.y.tolist()
    assert [p.replace(" >> ", " > ") for p in tree.y] == [
        " > ".join((p.split(" > ") + ["Acme Things"])[:3]) for p in written.y
    ]


@pytest.mark.parametrize(
    "values, target, message",
    [
        (["A >> C", "A > B"], {"column": "c"}, "written with '>>' between levels, not the target's separator ' > '"),
        (["A >  > C", "A > B"], {"column": "c"}, "has an empty level 2"),
        (["A > B > C > D", "A > B"], {"column": "c", "max_depth": 3}, "4 levels, deeper than max_depth 3"),
        ([None, "A"], {"columns": ["c", "d"]}, "level 1 is empty but level 2 is not"),
    ],
)
def test_bad_paths_are_one_line_naming_the_product_and_the_fix(values, target, message):
    frame = pd.DataFrame({"id": ["x1", "x2"], "c": values, "d": ["A", None]})
    with pytest.raises(MmgbmError, match=re.escape(message)) as error:
        target_values(frame, TargetConfig(task="path", **target), "products.csv", id_column="id")
    assert "\n" not in str(error.value) and "product 'x1'" in str(error.value)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("google.txt", "1 - A\n2 - A > B\n2 - A > C\n", "line 3: id 2 is also on line 2 (duplicate id)"),
        ("nodes.csv", "id,parent,name\n1,,A\n2,3,B\n3,2,C\n", "the parents form a cycle (2 -> 3 -> 2)"),
        ("paths.csv", "path\nA > B\nA >> C\n", "line 3: path 'A >> C' is written with '>>'"),
    ],
)
def test_bad_taxonomy_files_are_one_line_naming_the_line(tmp_path: Path, name: str, text: str, message: str):
    (tmp_path / name).write_text(text)
    with pytest.raises(MmgbmError, match=re.escape(message)) as error:
        read_taxonomy(tmp_path / name, PathFormat(" > "))
    assert "\n" not in str(error.value)


def test_taxonomy_formats_name_the_same_tree(tmp_path: Path):
    (tmp_path / "google.txt").write_text(TAXONOMY)
    (tmp_path / "plain.txt").write_text("\n".join(sorted(nodes_of_taxonomy())))
    pd.DataFrame({"path": sorted(nodes_of_taxonomy())}).to_csv(tmp_path / "paths.csv", index=False)
    leaves = [p.split(" > ") for p in sorted(nodes_of_taxonomy())]
    pd.DataFrame([(p + [None, None])[:3] for p in leaves], columns=["l1", "l2", "l3"]).to_csv(
        tmp_path / "levels.csv", index=False
    )
    trees = {
        name: read_taxonomy(tmp_path / name, PathFormat(" > ")).nodes
        for name in ("google.txt", "plain.txt", "paths.csv", "levels.csv")
    }
    assert len({frozenset(t) for t in trees.values()}) == 1 and ("Clothing", "Men", "Suits") in trees["plain.txt"]


def test_validate_lists_labels_outside_the_taxonomy_with_the_closest_node(tmp_path: Path):
    path = write_project(tmp_path, {"column": "category", "task": "path", "taxonomy": "taxonomy.txt"})
    result = runner.invoke(app, ["validate", "--config", str(path)])
    assert result.exit_code != 0
    assert (
        f"'{TYPO}' (1 product) is no node of taxonomy.txt; the closest node is 'Clothing > Women > Dresses'"
        in " ".join(result.output.split())
    )


@pytest.mark.parametrize(
    "values, message",
    [
        # Magento writes its category paths with slashes: with the default separator every path would be one level.
        (
            ["Grocery/Spices/Turmeric", "Grocery/Oils", "Home/Kitchen/Pans"],
            "no path is written with the separator ' > ' (every one would be a single level) and 3 of 3 hold '/', "
            "e.g. 'Grocery/Spices/Turmeric'; set the target's separator to '/'",
        ),
        (
            ["Food :: Tea", "Food :: Coffee", "Drinks"],
            "2 of 3 hold '::', e.g. 'Food :: Tea'; set the target's separator to ' :: '",
        ),
        (["Home › Kitchen", "Home › Garden"], "written with '›' between levels, not the target's separator ' > '"),
    ],
)
def test_paths_written_with_another_separator_are_named_not_read_as_one_level(values, message):
    frame = pd.DataFrame({"id": [f"x{i}" for i in range(len(values))], "c": values})
    with pytest.raises(MmgbmError, match=re.escape(message)) as error:
        target_values(frame, TargetConfig(task="path", column="c"), "products.csv", id_column="id")
    assert "\n" not in str(error.value) and "products.csv" in str(error.value)


def test_level_names_holding_a_slash_are_read_as_written():
    frame = pd.DataFrame({"c": ["Clothing > T-Shirts/Tops", "Clothing > Shoes", "Bags/Wallets"]})
    values = target_values(frame, TargetConfig(task="path", column="c"), "products.csv")
    assert values.y.tolist() == ["Clothing > T-Shirts/Tops", "Clothing > Shoes", "Bags/Wallets"]
