"""The evaluators against the official evaluators' outputs (../shared/fixtures/metrics, the official evaluator's recorded outputs (see the Fidelity page); a copy of the
non-Ego4D part lives in tests/fixtures/metrics for a fresh clone) and on hand-made cases."""
import gzip
import json
import pickle

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, shared_path
from unimd.evaluators import (anet_captions_eval, charades_frame_map, charades_frame_scores, charades_localize_map,
                              charades_sta_eval, ego4d_nlq_eval, ego4d_nlq_table, format_anet_captions,
                              format_charades_frame_map, fuse_external_scores, load_external_scores,
                              qvhighlights_brief, qvhighlights_mr_eval, rank_moments)
from unimd.metrics import DetectionEvaluator, average_precision_detection, dedup_gt, format_detection

LOCAL = ROOT/"tests"/"fixtures"/"metrics"
TOL = 1e-6


def _json(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf8") as f: return json.load(f)


def _mr_frame(records):
    return pd.DataFrame([(r["video_id"], r["query_idx"], r["start"], r["end"], r["score"]) for r in records],
                        columns=["video-id", "query", "t-start", "t-end", "score"])


def _tad_frame(records):
    return pd.DataFrame([(r["video_id"], r["start"], r["end"], r["label"], r["score"]) for r in records],
                        columns=["video-id", "t-start", "t-end", "label", "score"])


def _fixture(local: bool, *parts):
    return LOCAL.joinpath(*parts) if local else shared_path("fixtures", "metrics", *parts)


def _avx512_sort() -> bool:
    "numpy's unstable argsort follows the official run's tie order only with the same x86-simd-sort (AVX-512) path."
    from numpy._core._multiarray_umath import __cpu_features__
    return np.__version__.startswith("2.") and bool(__cpu_features__.get("AVX512_SKX"))


# ---------------------------------------------------------------------------------------------------------------
# ActivityNet-style detection mAP (unimd.metrics.DetectionEvaluator) on the three ANETdetection fixtures

def _check_detection(res, expected):
    assert np.allclose(res["mAP"], expected["mAP_per_tiou"], atol=TOL, rtol=0)
    assert abs(res["average_mAP"] - expected["average_mAP"]) < TOL
    assert np.allclose(res["recall"], expected["recall_per_tiou_topk"], atol=TOL, rtol=0)
    # the official table, line by line (its header names the GT file)
    for line in format_detection(res).splitlines(): assert line.strip() in expected["printed"]


def _ego4d_mq_gt():
    ids = _json(shared_path("fixtures", "metrics", "ego4d_mq_tad", "gt_subset_ids.json"))["clip_uids_in_source_order"]
    src = _json(shared_path("data", "ego4d", "mq_clip_annotations_not_filter.json"))["database"]
    return {"database": {uid: src[uid] for uid in ids}}


@pytest.mark.parametrize("case,variant", [("anet13_tad", "fp_labels_in_gt"), ("anet13_tad", "fp_labels_any"),
                                          ("ego4d_mq_tad", "fp_labels_in_gt"), ("ego4d_mq_tad", "fp_labels_any"),
                                          ("charades_tad", None)])
def test_detection_matches_official_anetdetection(case, variant):
    results = _json(_fixture(False, case, "results.json"))
    expected = results[variant] if variant else results
    gt = _ego4d_mq_gt() if case == "ego4d_mq_tad" else _json(_fixture(False, case, "gt_subset.json"))
    pred = _tad_frame(_json(_fixture(False, case, f"pred_{variant}.json" if variant else "pred.json")))
    ev = DetectionEvaluator(gt, expected["split"], tious=expected["tiou_thresholds"], top_k=expected["top_k"])
    assert len(ev.gt) == expected["n_gt_instances_after_dedup"]
    assert sorted(ev.columns) == expected["gt_label_ids_in_column_order"]
    res = ev.evaluate(pred)
    _check_detection(res, expected)
    assert np.allclose(res["ap_per_class"], expected["ap_per_tiou_per_class"], atol=TOL, rtol=0)
    assert np.allclose(res["recall_per_class"], expected["recall_per_tiou_topk_class"], atol=TOL, rtol=0)


def test_detection_local_fixture():
    expected = _json(LOCAL/"anet13_tad"/"expected.json")["fp_labels_any"]
    ev = DetectionEvaluator(_json(LOCAL/"anet13_tad"/"gt_subset.json.gz"), expected["split"],
                            tious=expected["tiou_thresholds"], top_k=expected["top_k"])
    assert len(ev.gt) == expected["n_gt_instances_after_dedup"]
    _check_detection(ev.evaluate(_tad_frame(_json(LOCAL/"anet13_tad"/"pred_fp_labels_any.json.gz"))), expected)


def _anet_validation_gt():
    "ActivityNet-1.3 validation GT from the TSP csv: 'Action' rows, label id = index in the label mapping."
    folder = shared_path("data", "activitynet", "anet13")
    names = _json(folder/"activitynet_v1-3_action_label_mapping.json")
    label_id = {n: i for i, n in enumerate(names)}
    csv = pd.read_csv(folder/"activitynet_v1-3_valid_tsp_groundtruth.csv")
    csv = csv[csv["temporal-region-label"] == "Action"]
    database = {}
    for vid, s, e, label in zip(csv["video-name"], csv["t-start"], csv["t-end"], csv["action-label"]):
        database.setdefault(vid, {"subset": "validation", "annotations": []})["annotations"].append(
            {"segment": [s, e], "label_id": label_id[label]})
    submission = _json(folder/"anet13_val_gt_as_fake_submission.json")["results"]
    pred = pd.DataFrame([(vid, p["segment"][0], p["segment"][1], label_id[p["label"]], p["score"])
                         for vid, preds in submission.items() for p in preds],
                        columns=["video-id", "t-start", "t-end", "label", "score"])
    return {"database": database}, pred


def test_anet_validation_gt_as_submission_scores_100():
    gt, pred = _anet_validation_gt()
    assert len(gt["database"]) == 4926 and len(pred) == 7654
    ev = DetectionEvaluator(gt, "validation", tious=np.linspace(0.5, 0.95, 10))
    # ActionFormer's evaluator drops 24 GT rows (21 duplicates within 1e-3 s, 3 of zero length) ...
    assert len(ev.gt) == 7630
    # ... so the submission, cleaned by the same rule, is exactly the evaluated GT: 100 mAP, 100 recall
    cleaned = dedup_gt(pred[["video-id", "t-start", "t-end", "label"]])
    assert len(cleaned) == 7630
    res = ev.evaluate(cleaned.assign(score=1.0))
    assert res["average_mAP"] == 1.0 and res["mAP"] == [1.0] * 10 and np.array(res["recall"]).min() == 1.0
    # the raw submission keeps the 24 rows, which become false positives
    raw = ev.evaluate(pred)
    assert 0.998 < raw["average_mAP"] < 1.0


# ---------------------------------------------------------------------------------------------------------------
# Charades per-frame mAP

def _charades_frame_case(local: bool):
    folder = _fixture(local, "charades_frame_map")
    expected = _json(folder/"expected.json") if local else _json(folder/"results.json")
    pred = _tad_frame(_json(folder/("pred_segments.json.gz" if local else "pred_segments.json")))
    return folder, expected, pred


@pytest.mark.parametrize("local", [True, False])
def test_charades_frame_scores_are_the_official_matrix(local):
    folder, expected, pred = _charades_frame_case(local)
    csv = pd.read_csv(folder/"gt_subset_Charades_v1_test.csv", dtype={"id": str})
    assert csv["id"].tolist() == expected["video_ids"]
    video_ids, scores = charades_frame_scores(pred, dict(zip(csv["id"], csv["length"])))
    ref = np.load(folder/"frame_scores_from_segments.npz")
    assert video_ids == ref["video_ids"].tolist()
    assert scores.dtype == np.float32 and np.array_equal(scores, ref["frame_scores"])


@pytest.mark.parametrize("local", [True, False])
@pytest.mark.parametrize("tie_break,key", [("stable", "official_but_stable_argsort"), ("official", "official")])
def test_charades_frame_map_from_segments(local, tie_break, key):
    if tie_break == "official" and not _avx512_sort():
        pytest.skip("the official tie order is that of numpy 2.x's AVX-512 argsort (the fixture machine's)")
    folder, expected, pred = _charades_frame_case(local)
    ref = expected["from_segments"][key]
    res = charades_frame_map(pred, folder/"gt_subset_Charades_v1_test.csv", tie_break=tie_break, per_class=True)
    assert abs(res["mAP"] - ref["per_frame_mAP"]) < TOL
    assert np.allclose(res["AP_per_class"], ref["per_class_AP"], atol=TOL, rtol=0)
    assert round(res["WAP"], 6) == ref["per_frame_WAP_printed"]
    assert f"Per-Frame MAP: {ref['per_frame_mAP']:f}" in format_charades_frame_map(res)


@pytest.mark.parametrize("tie_break", ["official", "stable"])
def test_charades_frame_map_direct_scores(tie_break):
    folder = shared_path("fixtures", "metrics", "charades_frame_map")
    ref = _json(folder/"results.json")["direct_frame_scores"]["official"]
    direct = np.load(folder/"frame_scores_direct.npz")
    res = charades_localize_map(direct["video_ids"].tolist(), direct["frame_scores"], folder/"gt_subset_Charades_v1_test.csv",
                                num_classes=157, tie_break=tie_break, per_class=True)
    assert abs(res["mAP"] - ref["per_frame_mAP"]) < TOL
    assert np.allclose(res["AP_per_class"], ref["per_class_AP"], atol=TOL, rtol=0)
    assert round(res["WAP"], 6) == ref["per_frame_WAP_printed"]


def test_charades_frame_map_class_count_and_missing_frames(tmp_path):
    csv = tmp_path/"gt.csv"
    csv.write_text("id,actions,length\n00607,c000 0 10;c002 0 4,10\nB,,10\n")
    pred = pd.DataFrame({"video-id": ["00607"], "t-start": [0.0], "t-end": [10.0], "label": [0], "score": [0.5]})
    # 3 classes, class 1 has no positive frame: NaN, left out of the mean (the official script would print NaN)
    res = charades_frame_map(pred, csv, num_classes=3, tie_break="stable", per_class=True)
    ap = res["AP_per_class"]
    assert ap[0] == 1.0 and np.isnan(ap[1]) and res["mAP"] == (ap[0] + ap[2]) / 2
    # class 2 is positive on 0-based frames 0..10 of 00607 (t = 0, 0.4, ..., 4.0); unpredicted: all frames score 0,
    # the stable rule ranks them in csv/frame order, so they are the first 11 of 50 frames: AP 1
    assert ap[2] == 1.0
    # a video absent from the evaluated set scores -inf (official: frames missing from the submission), below the
    # zeros of evaluated videos: the 25 positives of class 0 now rank 26..50
    only_b = charades_frame_map(pred, csv, num_classes=3, tie_break="stable", durations={"B": 10.0}, per_class=True)
    assert abs(only_b["AP_per_class"][0] - np.mean([i / (25 + i) for i in range(1, 26)])) < 1e-12
    with pytest.raises(ValueError, match="label"):
        charades_frame_map(pred.assign(label=3), csv, num_classes=3)
    with pytest.raises(ValueError, match="actions"):
        charades_frame_map(pred, csv, num_classes=2)
    (tmp_path/"bad.csv").write_text("id,actions,length\nA,c000 1,10\n")
    with pytest.raises(ValueError, match="row 2, field 'actions'"):
        charades_frame_map(pred, tmp_path/"bad.csv", num_classes=3)
    with pytest.raises(ValueError, match="frame_scores"):
        charades_localize_map(["00607"], np.zeros((1, 25, 4), np.float32), csv, num_classes=3)


# ---------------------------------------------------------------------------------------------------------------
# Charades-STA

@pytest.mark.parametrize("local", [True, False])
def test_charades_sta_matches_official(local):
    folder = _fixture(local, "charades_sta_mr")
    gz = ".gz" if local else ""
    expected = _json(folder/"expected.json") if local else _json(folder/"results.json")
    db = _json(folder/f"gt_subset_charades_sta_test.json{gz}")["database"]
    gt = pd.DataFrame([(vid, i, *a["segment"]) for vid, v in db.items() for i, a in enumerate(v["annotations"])],
                      columns=["video-id", "query", "t-start", "t-end"])
    assert len(gt) == expected["n_queries"]
    pred = _mr_frame(_json(folder/f"pred.json{gz}"))
    res = charades_sta_eval(pred, gt)
    keys = {"R@1,IoU=0.5": "1-0.50", "R@1,IoU=0.7": "1-0.70", "R@5,IoU=0.5": "5-0.50", "R@5,IoU=0.7": "5-0.70"}
    assert list(res) == list(keys)
    for ours, theirs in keys.items():
        assert abs(res[ours] - expected["summary"][theirs]) < TOL
    exact = charades_sta_eval(pred, gt, official=False)
    for ours, theirs in keys.items():
        assert exact[ours] == expected["raw_hit_counts"][theirs] / expected["n_queries"]


def test_charades_sta_float32_threshold_and_nan():
    gt = pd.DataFrame({"video-id": ["a"] * 4, "query": [0, 1, 2, 3], "t-start": [0.0, 0.0, 0.0, 3.0],
                       "t-end": [10.0, 10.0, 10.0, 3.0]})
    pred = pd.DataFrame({"video-id": ["a"] * 5, "query": [0, 1, 2, 3, 3], "t-start": [0.0, 0.0, 0.0, 3.0, 2.0],
                         "t-end": [7.0, 6.9999999, 6.9, 3.0, 4.0], "score": [0.9, 0.9, 0.9, 0.9, 0.1]})
    # query 0: float32 IoU 7/10 = float32(0.7) < 0.7 (double), a hit because torch compares with float32(0.7);
    # query 1: IoU 0.69999999 in float64, but the end time is float32 (7.0): a hit; query 2: 0.69, a miss;
    # query 3: a zero-length prediction on a zero-length GT gives IoU NaN, which wins the max: a miss at any k
    assert float(np.float32(7) / np.float32(10)) < 0.7
    res = charades_sta_eval(pred, gt, ks=(1, 5), thresholds=(0.7,), official=False)
    assert res == {"R@1,IoU=0.7": 2 / 4, "R@5,IoU=0.7": 2 / 4}
    assert charades_sta_eval(pred, gt, ks=(1,), thresholds=(0.7,))["R@1,IoU=0.7"] == 2 / (4 + 1e-5)


# ---------------------------------------------------------------------------------------------------------------
# ActivityNet-Captions

def _captions_check(res, expected):
    assert abs(res["mIoU"] - expected["mIOU"]) < TOL
    for k in (1, 5):
        for t in (0.5, 0.7):
            # official R@k are float32 values: equal, not merely close
            assert res[f"R@{k},IoU={t}"] == expected[f"R@{k}IOU{t}"]


def test_anet_captions_local_fixture():
    folder = LOCAL/"anet_captions_mr"
    res = anet_captions_eval(_mr_frame(_json(folder/"pred.json.gz")), _json(folder/"gt_subset_val_2.json.gz"))
    _captions_check(res, _json(folder/"expected.json")["against_gt_subset"])


@pytest.mark.parametrize("case", ["against_gt_subset", "against_full_val_2_json"])
def test_anet_captions_matches_official(case):
    folder = shared_path("fixtures", "metrics", "anet_captions_mr")
    gt = folder/"gt_subset_val_2.json" if case == "against_gt_subset" else shared_path("data", "activitynet", "captions", "val_2.json")
    pred = _mr_frame(_json(folder/"pred.json"))
    expected = _json(folder/"results.json")[case]
    res = anet_captions_eval(pred, gt)
    _captions_check(res, expected["scores"])
    for line in format_anet_captions(res).splitlines(): assert line in expected["printed"]
    # the top-5 moments kept per query are the official conversion's
    stored = _json(folder/"anet_mr_result.json")["results"]
    queries = pd.DataFrame([v["video_id"], v["anno_id"]] for v in stored.values()).set_axis(["video-id", "query"], axis=1)
    segments, count = rank_moments(pred, queries, 5)
    for q, v in enumerate(stored.values()):
        assert segments[q, :count[q]].tolist() == v["timestamp"]


def test_anet_captions_semantics():
    gt = {"v": {"timestamps": [[0, 10], [10, 20]]}, "w": {"timestamps": [[0, 5]]}}
    # six moments for query 0: only the best five are stored, the exact one ranks sixth
    pred = pd.DataFrame({"video-id": ["v"] * 6, "query": [0] * 6, "t-start": [50.0] * 5 + [0.0],
                         "t-end": [60.0] * 5 + [10.0], "score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]})
    res = anet_captions_eval(pred, gt, ks=(1, 5, 10))
    assert res["R@10,IoU=0.5"] == 0.0 and res["mIoU"] == 0.0
    pred.loc[5, "score"] = 0.95
    res = anet_captions_eval(pred, gt, ks=(1,), thresholds=(0.5,))
    # 1 hit among all 3 GT queries (video w was never predicted)
    assert res["R@1,IoU=0.5"] == float(np.float32(1) / np.float32(3)) and abs(res["mIoU"] - 10 / (10 + 1e-8) / 3) < 1e-15
    with pytest.raises(ValueError, match="timestamps"):
        anet_captions_eval(pred, {"v": {"sentences": []}})


# ---------------------------------------------------------------------------------------------------------------
# Ego4D-NLQ (needs ../shared: Ego4D annotations are not redistributed)

def test_ego4d_nlq_matches_official():
    folder = shared_path("fixtures", "metrics", "ego4d_nlq_mr")
    nlq_val = shared_path("data", "ego4d", "nlq_nlq_val.json")
    entries = pd.DataFrame(_json(folder/"queries.json")).rename(columns={"query_idx_in_clip": "query_idx"})
    pred = _mr_frame(_json(folder/"pred.json"))
    expected = _json(folder/"results.json")
    thresholds, ks = expected["thresholds"], expected["topK"]
    res = ego4d_nlq_eval(pred, entries, nlq_val, thresholds, ks)
    for i, t in enumerate(thresholds):
        for j, k in enumerate(ks):
            assert abs(res[f"R@{k},IoU={t}"] - expected["mean_results_thr_by_k"][i][j]) < TOL
    assert abs(res["mIoU"] - expected["mIoU"]) < TOL
    table, display = ego4d_nlq_table(res, thresholds, ks)
    assert table == expected["display_table"]
    assert display.keys() == expected["display_dict_percent"].keys()
    assert all(abs(display[k] - v) < 1e-4 for k, v in expected["display_dict_percent"].items())
    # the top-5 moments kept per entry are the official conversion's
    stored = _json(folder/"mr_eval_results.json")["results"]
    segments, count = rank_moments(pred, pd.DataFrame({"video-id": entries["clip_uid"], "query": entries["query_idx"]}), 5)
    assert [segments[q, :count[q]].tolist() for q in range(len(entries))] == [s["predicted_times"] for s in stored]


def test_ego4d_nlq_semantics():
    nlq_val = {"videos": [{"clips": [{"clip_uid": "c", "annotations": [{"annotation_uid": "u", "language_queries": [
        {"clip_start_sec": 0.0, "clip_end_sec": 10.0}, {"clip_start_sec": 0.0, "clip_end_sec": 10.0}]}]}]}]}
    entries = pd.DataFrame({"clip_uid": ["c", "c"], "query_idx": [0, 1], "annotation_uid": ["u", "u"], "annotation_idx": [0, 1]})
    # IoU exactly 0.5: not a hit at 0.5 (strict >); the second entry has no prediction: a miss, left out of the mIoU
    pred = pd.DataFrame({"video-id": ["c"], "query": [0], "t-start": [0.0], "t-end": [5.0], "score": [1.0]})
    res = ego4d_nlq_eval(pred, entries, nlq_val, thresholds=(0.5, 0.3), ks=(1,))
    assert res == {"R@1,IoU=0.5": 0.0, "R@1,IoU=0.3": 0.5, "mIoU": 0.5}
    with pytest.raises(KeyError, match="annotation_uid='x'"):
        ego4d_nlq_eval(pred, entries.assign(annotation_uid="x"), nlq_val)
    with pytest.raises(IndexError, match="annotation_idx 5"):
        ego4d_nlq_eval(pred, entries.assign(annotation_idx=5), nlq_val)


# ---------------------------------------------------------------------------------------------------------------
# QVHighlights (no official fixture: hand-computed cases)

def test_qvhighlights_hand_computed():
    gt = [{"qid": 10, "vid": "v", "relevant_windows": [[0, 10], [20, 40]]},
          {"qid": 11, "vid": "v", "relevant_windows": [[100, 140]]},
          {"qid": 12, "vid": "w", "relevant_windows": [[0, 20]]}]
    pred = pd.DataFrame({"video-id": ["v"] * 4 + ["w"], "query": [0, 0, 0, 1, 0],
                         "t-start": [20.0, 21.0, 0.0, 100.0, 30.0], "t-end": [40.0, 41.0, 8.0, 120.0, 40.0],
                         "score": [0.9, 0.8, 0.7, 0.6, 0.5]})
    tious = np.round(np.linspace(0.5, 0.95, 10), 2)
    ap0 = np.where(tious <= 0.8, 5 / 6, 0.5)          # hits at ranks 1 and 3, the duplicate at rank 2 a false positive
    ap1 = np.where(tious <= 0.5, 1.0, 0.0)            # tIoU exactly 0.5
    ap2 = np.zeros(10)                                # disjoint
    res = qvhighlights_mr_eval(pred, gt)
    assert res["R1@0.5"] == 2 / 3 and res["R1@0.7"] == 1 / 3
    assert abs(res["mAP"] - np.mean((ap0 + ap1 + ap2) / 3)) < 1e-6
    assert abs(res["mAP@0.5"] - (5 / 6 + 1) / 3) < 1e-6 and abs(res["mAP@0.75"] - 5 / 18) < 1e-6
    # short: window [0, 10] of query 10 only (found at rank 3); middle: [20, 40] and [0, 20]; long: [100, 140]
    assert abs(res["mAP-short"] - np.mean(np.where(tious <= 0.8, 1 / 3, 0.0))) < 1e-6
    assert abs(res["mAP-middle"] - 0.5) < 1e-6 and abs(res["mAP-long"] - ap1.mean()) < 1e-6
    brief = qvhighlights_brief(res)
    assert list(brief) == sorted(brief) and brief["MR-full-R1@0.5"] == 66.67 and brief["MR-full-R1@0.7"] == 33.33


def test_qvhighlights_top_window_choice_and_limits():
    # R1 compares the top-1 with the GT window it overlaps most; only the 10 best predictions count for mAP
    gt = [{"qid": 1, "vid": "v", "relevant_windows": [[0, 4], [10, 20]]}, {"qid": 2, "vid": "v", "relevant_windows": [[0, 2]]}]
    pred = pd.DataFrame({"video-id": ["v"] * 12, "query": [0] + [1] * 11,
                         "t-start": [11.0] + [50.0] * 10 + [0.0], "t-end": [19.0] + [60.0] * 10 + [2.0],
                         "score": [1.0] + [0.9] * 10 + [0.1]})
    res = qvhighlights_mr_eval(pred, gt)
    assert res["R1@0.5"] == 0.5 and res["R1@0.7"] == 0.5   # 8/10 with [10, 20]
    assert res["mAP@0.5"] == 0.5 * 0.5                       # query 1: recall ½ at precision 1; query 2: exact hit is 11th
    assert abs(qvhighlights_mr_eval(pred, gt, max_pred_windows=11)["mAP@0.5"] - (0.5 + 1 / 11) / 2) < 1e-6
    # a query without prediction counts (AP 0, R1 miss)
    assert qvhighlights_mr_eval(pred[pred["query"] == 0], gt)["R1@0.5"] == 0.5
    with pytest.raises(ValueError, match="relevant_windows"):
        qvhighlights_mr_eval(pred, [{"qid": 1, "vid": "v"}])


def test_qvhighlights_matching_agrees_with_detection_ap():
    "The batched matching gives, per query, unimd.metrics.average_precision_detection's AP (float32 counts there)."
    rng = np.random.default_rng(0)
    gt, rows, expected = [], [], []
    tious = np.round(np.linspace(0.5, 0.95, 10), 2)
    for q in range(40):
        s = rng.uniform(0, 100, rng.integers(1, 6)); w = np.stack([s, s + rng.uniform(2, 30, len(s))], 1)
        k = rng.integers(1, 13)
        p0 = w[rng.integers(0, len(w), k)] + rng.normal(0, 3, (k, 2)); p0.sort(1)
        score = rng.permutation(k) / k + 0.01
        gt.append({"qid": q, "vid": f"v{q % 7}", "relevant_windows": w.tolist()})
        rows += [(f"v{q % 7}", q // 7, *p0[i], score[i]) for i in range(k)]
        top = np.argsort(-score)[:10]
        expected.append(average_precision_detection(
            pd.DataFrame({"video-id": 0, "t-start": w[:, 0], "t-end": w[:, 1]}),
            pd.DataFrame({"video-id": 0, "t-start": p0[top, 0], "t-end": p0[top, 1], "score": score[top]}), tious))
    res = qvhighlights_mr_eval(pd.DataFrame(rows, columns=["video-id", "query", "t-start", "t-end", "score"]), gt)
    expected = np.mean(expected, 0)
    assert 0.1 < expected.mean() < 0.9
    assert abs(res["mAP"] - expected.mean()) < 1e-6 and abs(res["mAP@0.5"] - expected[0]) < 1e-6


def test_qvhighlights_real_val_file_ground_truth_as_predictions():
    path = shared_path("data", "qvhighlights", "highlight_val_release.jsonl")
    lines = [json.loads(l) for l in open(path)]
    assert len(lines) == 1550
    lines = lines[:300]  # a prefix keeps the test fast; every line is parsed by the evaluator the same way
    rows, seen = [], {}
    for d in lines:
        q = seen[d["vid"]] = seen.get(d["vid"], -1) + 1
        rows += [(d["vid"], q, s, e, 1.0) for s, e in d["relevant_windows"]]
    pred = pd.DataFrame(rows, columns=["video-id", "query", "t-start", "t-end", "score"])
    res = qvhighlights_mr_eval(pred, lines, max_pred_windows=None)
    assert res["R1@0.5"] == 1.0 and res["mAP"] == 1.0
    # with the official cap of 10 predictions a query with n > 10 windows has AP 10/n
    res = qvhighlights_mr_eval(pred, lines)
    n = np.array([len(d["relevant_windows"]) for d in lines])
    assert (n > 10).any() and abs(res["mAP"] - np.minimum(1, 10 / n).mean()) < 1e-6


# ---------------------------------------------------------------------------------------------------------------
# External-score fusion (ActivityNet)

def test_fuse_external_scores(tmp_path):
    det = [{"video_id": "v_a", "segments": np.array([[0, 1], [2, 3], [4, 5], [6, 7]], np.float32),
            "scores": np.array([0.5, 0.9, 0.4, 0.1], np.float32), "labels": np.zeros(4, np.int64), "duration": 9.0},
           {"video_id": "b", "segments": np.zeros((0, 2), np.float32), "scores": np.zeros(0, np.float32),
            "labels": np.zeros(0, np.int64)}]
    probs = {"a": [0.1, 0.6, 0.3], "v_b": [1.0, 0.0, 0.0]}
    out = fuse_external_scores(det, probs, top_k=2, max_seg=3)
    a = out[0]
    # the 3 best proposals, best first, once per class of the 2 most probable classes
    assert a["segments"].tolist() == [[2, 3], [0, 1], [4, 5]] * 2
    assert a["labels"].tolist() == [1, 1, 1, 2, 2, 2] and a["duration"] == 9.0
    p = np.float32([0.9, 0.5, 0.4]).astype(float)
    assert np.array_equal(a["scores"], np.sqrt(np.concatenate([0.6 * p, 0.3 * p])))
    assert len(out[1]["scores"]) == 0
    # file layouts: {"results": {...}} JSON and a pickle of the plain dict
    (tmp_path/"cls.json").write_text(json.dumps({"results": probs}))
    (tmp_path/"cls.pkl").write_bytes(pickle.dumps(probs))
    assert load_external_scores(tmp_path/"cls.json") == probs == load_external_scores(tmp_path/"cls.pkl")
    assert np.array_equal(fuse_external_scores(det, tmp_path/"cls.json", 2, 3)[0]["scores"], a["scores"])
    with pytest.raises(KeyError, match="'v_c'"):
        fuse_external_scores([{**det[0], "video_id": "v_c"}], probs)


# ---------------------------------------------------------------------------------------------------------------
# Shared ranking and input checks

def test_rank_moments_keeps_row_order_on_ties():
    pred = pd.DataFrame({"video-id": ["a"] * 4, "query": [0] * 4, "t-start": [0.0, 1.0, 2.0, 3.0],
                         "t-end": [1.0, 2.0, 3.0, 4.0], "score": [0.5, 0.7, 0.5, 0.5]})
    segments, count = rank_moments(pred, pd.DataFrame({"video-id": ["a"], "query": [0]}), 3)
    assert count.tolist() == [3] and segments[0, :, 0].tolist() == [1.0, 0.0, 2.0]
    with pytest.raises(ValueError, match="score"):
        rank_moments(pred.drop(columns="score"), pd.DataFrame({"video-id": ["a"], "query": [0]}), 3)
    with pytest.raises(ValueError, match="more than once"):
        rank_moments(pred, pd.DataFrame({"video-id": ["a", "a"], "query": [0, 0]}), 3)
