"CLIP frame features from raw videos: frame sampling, the official file layout, errors naming the file."
import numpy as np
import pytest
import torch

from unimd.data import DataError
from unimd.text import RANDOM_WEIGHTS
from unimd.video import (CLIP_FEATURE_SPEC, ClipImageEncoder, VideoError, extract_clip_features, load_features,
                         num_steps, probe_video, sampled_frames, save_features, write_test_video)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def levels(path, step=12, **kw):
    "Which source frame each feature step shows (frames of the test video are flat greys of level step·j)."
    return [round(np.asarray(im).mean() / step) for _, im in sampled_frames(path, **kw)]


def test_every_4_frames_at_24_fps_from_a_slower_video(tmp_path):
    v = write_test_video(tmp_path/"v10.mp4", seconds=2.0, fps=10)
    # step i shows time 4i/24 s → source frame ⌊10·i/6⌋; 2 s = 48 frames at 24 fps → 12 steps
    assert levels(v) == [10 * i // 6 for i in range(12)]
    assert num_steps(2.0, 24, 4, 1) == 12 and CLIP_FEATURE_SPEC["fps"] == 24 and CLIP_FEATURE_SPEC["feat_stride"] == 4


def test_faster_video_and_window_centre(tmp_path):
    v = write_test_video(tmp_path/"v30.mp4", seconds=1.0, fps=30, level_step=8)
    assert levels(v, step=8) == [5 * i for i in range(6)]               # frame 4i at 24 fps = source frame 5i
    # 16-frame windows: step i is the window centre, frame 4i + 8 at 24 fps → source ⌊30(4i+8)/24⌋
    assert levels(v, step=8, num_frames=16) == [int(30 * (4 * i + 8) / 24) for i in range(4)]
    assert num_steps(1.0, 24, 4, 16) == 4


def test_extract_save_load_layout(tmp_path):
    v = write_test_video(tmp_path/"clip_a.mp4", seconds=1.0, fps=12)
    enc = ClipImageEncoder(weights=RANDOM_WEIGHTS, seed=0)
    vf = extract_clip_features(v, enc, feat_stride=8, batch_size=2, progress=False)
    assert vf.video_id == "clip_a" and vf.features.shape == (3, 512) and vf.features.dtype == np.float32
    assert np.allclose(vf.timestamps, [0, 8 / 24, 16 / 24]) and vf.duration == pytest.approx(1.0)
    # the tower in one batch gives the batched numbers (batch_size does not change features)
    assert np.allclose(extract_clip_features(v, enc, feat_stride=8, batch_size=8, progress=False).features, vf.features, atol=1e-5)
    f = save_features(vf, tmp_path/"out")
    z = np.load(f)
    assert f.name == "clip_a.npz" and sorted(z.files) == ["duration", "feat_stride", "features", "fps", "model", "num_frames", "timestamps"]
    assert z["features"].shape == (3, 512) and int(z["feat_stride"]) == 8 and str(z["model"]).startswith("ViT-B-32|")
    back = load_features(f)
    assert np.array_equal(back.features, vf.features) and (back.fps, back.feat_stride, back.num_frames) == (24.0, 8, 1)
    s = back.to_sample()
    assert s.feats.shape == (512, 3) and torch.allclose(s.feats.norm(dim=0), torch.ones(3))
    np.save(tmp_path/"bare.npy", vf.features)
    with pytest.raises(DataError, match="bare.npy: no fps, feat_stride, num_frames"): load_features(tmp_path/"bare.npy")
    bare = load_features(tmp_path/"bare.npy", defaults=CLIP_FEATURE_SPEC)
    assert bare.duration == pytest.approx((2 * 4 + 1) / 24) and bare.feat_stride == 4


def test_bad_videos_name_the_file(tmp_path):
    (tmp_path/"empty.mp4").touch()
    (tmp_path/"text.mp4").write_text("hello")
    import av
    for name in ("noframes.avi", "nostream.mp4"):      # headers only: AVI keeps its video stream, MP4 loses it
        with av.open(str(tmp_path/name), "w") as c:
            s = c.add_stream("mpeg4", rate=10); s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
            c.start_encoding()
    for name, what in [("missing.mp4", "no such video file"), ("empty.mp4", "empty file"),
                       ("text.mp4", "not a readable video"), ("noframes.avi", "zero-length video"),
                       ("nostream.mp4", "has no video stream")]:
        with pytest.raises(VideoError, match=what) as e: list(sampled_frames(tmp_path/name))
        assert name in str(e.value)
    with pytest.raises(VideoError, match="missing.mp4"): probe_video(tmp_path/"missing.mp4")
    with pytest.raises(VideoError, match="noframes.avi: zero-length"):
        extract_clip_features(tmp_path/"noframes.avi", ClipImageEncoder(weights=RANDOM_WEIGHTS), progress=False)
    assert issubclass(VideoError, DataError)
