"""Confusion-matrix scores against hand-computed cases; matching by name."""
import numpy as np
import pytest

from common.metrics import ConfusionMatrix, match_by_name
from common.metrics.segmentation import frame_id


def test_hand_computed_scores_with_ignore():
    cm = ConfusionMatrix(num_classes=3, ignore=255, class_names=("a", "b", "c"))
    label = np.array([[0, 0, 1, 1], [2, 255, 255, 0]])
    pred = np.array([[0, 1, 1, 1], [1, 2, 0, 7]])  # 7: outside the table -> a miss
    cm.update(pred, label)
    # valid pixels: (0,0)ok (0,1)0->1 (1,1)ok (1,1)ok (2,1) (0,miss) -> 3 correct of 6
    r = cm.compute()
    assert r["pixel_acc"] == pytest.approx(3 / 6)
    # class acc: a 1/3, b 2/2, c 0/1
    assert r["mean_class_acc"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    # IoU = TP / (GT + predicted - TP): a 1/(3+1-1), b 2/(2+4-2) (four pixels predicted b), c 0/(1+0-0)
    assert r["mean_iou"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)
    assert "| b | 1.0000 | 0.5000 |" in cm.table()


def test_one_matrix_over_the_set_and_absent_classes():
    cm = ConfusionMatrix(num_classes=4, ignore=255)
    cm.update(np.zeros((2, 2)), np.zeros((2, 2)))            # 4 correct pixels of class 0
    cm.update(np.array([[1, 0]]), np.array([[1, 1]]))        # class 1: 1 of 2
    r = cm.compute()
    assert r["pixel_acc"] == pytest.approx(5 / 6)           # pooled, not the mean of per-image 1.0 and 0.5
    assert r["mean_class_acc"] == pytest.approx((1 + 0.5) / 2)  # classes 2, 3 never occur: skipped
    assert r["mean_iou"] == pytest.approx((4 / 5 + 1 / 2) / 2)


def test_bad_labels_and_sizes():
    cm = ConfusionMatrix(num_classes=19)
    with pytest.raises(ValueError, match=r"f\.png: label ids \[19, 33\] are outside the table 0\.\.18"):
        cm.update(np.zeros((2, 2)), np.array([[0, 19], [33, 255]]), name="f.png")
    with pytest.raises(ValueError, match="differ in size"):
        cm.update(np.zeros((2, 3)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="empty set"):
        cm.compute()


def test_match_by_name_not_position(tmp_path):
    gt = tmp_path / "gtFine" / "val" / "bonn"
    res = tmp_path / "results"
    gt.mkdir(parents=True)
    res.mkdir()
    for frame in ("bonn_000000_000002", "bonn_000000_000010"):
        (gt / f"{frame}_gtFine_labelIds.png").write_bytes(b"x")
        (gt / f"{frame}_gtFine_color.png").write_bytes(b"x")
    # results listed in another order than labels: 10 < 2 in numeric order, and a different suffix
    (res / "bonn_000000_000010_leftImg8bit.png").write_bytes(b"x")
    (res / "bonn_000000_000002_synthesized_image.png").write_bytes(b"x")
    pairs = match_by_name(str(res), str(tmp_path / "gtFine"))
    assert [(k, frame_id(r)) for k, r, _ in pairs] == [("bonn_000000_000002", "bonn_000000_000002"),
                                                        ("bonn_000000_000010", "bonn_000000_000010")]
    assert all(lab.endswith("_gtFine_labelIds.png") for _, _, lab in pairs)
    (res / "bonn_000000_000002_synthesized_image.png").unlink()
    with pytest.raises(ValueError, match=r"1 labels without a result \(e\.g\. \['bonn_000000_000002'\]\)"):
        match_by_name(str(res), str(tmp_path / "gtFine"))
