"Text encoders: random-weight CLIP tower (shapes, determinism, cache, truncation), official files, MD-Synth."
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

import unimd.text as text_mod
from unimd.data import DataError
from unimd.settings import Settings
from unimd.synth import SIZES, make_mdsynth
from unimd.text import (RANDOM_WEIGHTS, TAD_TEMPLATES, ClipTextEncoder, LookupTextEncoder, MDSynthTextEncoder,
                        MissingClipWeights, TextEncoderError, _encode_trimmed, clip_model_key, format_prompts,
                        load_clip, resolve_clip_weights, text_encoder_for)
from conftest import ROOT


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_random_tower_shapes_norms_and_determinism():
    texts = ["high jump", "a person opens a door", "high jump"]
    e = ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=0, cache_dir=False).encode(texts)
    assert e.shape == (3, 512) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-6) and torch.equal(e[0], e[2])
    text_mod._MODELS.clear()                       # rebuild the tower from the seed: same numbers
    again = ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=0, cache_dir=False).encode(texts)
    assert torch.equal(e, again)
    other = ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=1, cache_dir=False).encode(texts)
    assert float((other[0] * e[0]).sum()) < 0.99
    enc = ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=0, cache_dir=False)
    assert enc.encode([]).shape == (0, 512)
    with pytest.raises(TextEncoderError, match="list of strings"): enc.encode("high jump")


def test_random_init_leaves_global_rng_alone():
    text_mod._MODELS.clear()
    torch.manual_seed(123); expected = torch.rand(3)
    torch.manual_seed(123)
    load_clip("ViT-B-32", RANDOM_WEIGHTS, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_shortened_forward_equals_open_clip():
    enc = ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=0, cache_dir=False)
    ids = enc.tokenizer(["jump", "a person opens a door and walks out", " ".join(["word"] * 90)])
    with torch.no_grad():
        assert torch.allclose(_encode_trimmed(enc.net, ids), enc.net.encode_text(ids), atol=1e-5)


def test_cache_skips_the_tower_and_keys_by_text_model_and_weights(tmp_path):
    enc = ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=0, cache_dir=tmp_path)
    first = enc.encode(["walk", "run"])
    assert enc.tower_batches == 1 and len(enc.cache) == 2
    fresh = ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=0, cache_dir=tmp_path)
    assert torch.equal(fresh.encode(["run", "walk"]), first.flip(0))
    assert fresh._net is None and fresh.tower_batches == 0          # all cached: the tower was not even built
    fresh.encode(["run", "swim"])                                     # only the new text runs the tower
    assert fresh.tower_batches == 1 and len(fresh.cache) == 3
    # the key names model, activation and weights
    k0 = enc.key
    assert ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=1, cache_dir=tmp_path).key != k0
    assert ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=0, quick_gelu=False, cache_dir=tmp_path).key != k0
    assert clip_model_key("ViT-B-16", RANDOM_WEIGHTS) != clip_model_key("ViT-B-32", RANDOM_WEIGHTS)
    a, b = tmp_path/"a.bin", tmp_path/"b.bin"
    a.write_bytes(b"weights one"); b.write_bytes(b"weights two")
    ka, kb = clip_model_key("ViT-B-32", a, cache_dir=tmp_path), clip_model_key("ViT-B-32", b, cache_dir=tmp_path)
    assert ka != kb and ka.endswith("sha256=" + __import__("hashlib").sha256(b"weights one").hexdigest())
    # same model key, other seed's table: another seed never reads seed 0's rows
    other = ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=1, cache_dir=tmp_path)
    assert not torch.equal(other.encode(["walk"])[0], first[0]) and other.tower_batches == 1


def test_truncation_warns_only_for_long_text():
    enc = ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=0, cache_dir=False)
    assert enc.num_tokens("high jump") == 4
    with pytest.warns(UserWarning, match="truncated to 77"):
        e = enc.encode(["short", " ".join(["word"] * 100)])
    assert e.shape == (2, 512)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enc.encode([" ".join(["word"] * 75)])       # 75 + start + end = 77 tokens: fits


def test_text_only_state_dict_loads_non_strictly(tmp_path):
    net = load_clip("ViT-B-32", RANDOM_WEIGHTS, seed=3)
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith("visual.") and k != "logit_scale"}
    path = tmp_path/"text_only.pt"
    torch.save(sd, path)
    texts = ["high jump", "a person opens a door"]
    from_file = ClipTextEncoder(weights=path, cache_dir=False).encode(texts)
    assert torch.allclose(from_file, ClipTextEncoder(weights=RANDOM_WEIGHTS, seed=3, cache_dir=False).encode(texts), atol=1e-6)
    with pytest.raises(TextEncoderError, match="no visual tower"):
        load_clip("ViT-B-32", path, towers=("visual",))
    bad = tmp_path/"bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TextEncoderError, match="not a CLIP weights file"):
        ClipTextEncoder(weights=bad, cache_dir=False).encode(["x"])
    text_mod._MODELS.clear()


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(MissingClipWeights) as e:
        ClipTextEncoder(weights=tmp_path/"nope.safetensors", cache_dir=False)
    msg = str(e.value)
    for part in ("nope.safetensors", "open_clip_model.safetensors", "open_clip_pytorch_model.bin",
                 "timm/vit_base_patch32_clip_224.openai", "[general] clip_weights", "UNIMD_GENERAL_CLIP_WEIGHTS"):
        assert part in msg, part
    s = Settings(ROOT/"settings.ini", overrides={"general.clip_weights": ""}, environ={})
    with pytest.raises(MissingClipWeights, match=r"\[general\] clip_weights is empty"): resolve_clip_weights(settings=s)
    s = Settings(ROOT/"settings.ini", overrides={"general.clip_weights": "random"}, environ={})
    assert resolve_clip_weights(settings=s) == RANDOM_WEIGHTS


def test_prompt_templates():
    assert TAD_TEMPLATES == {"bare": "{}", "paper": "a video of {}"}
    assert format_prompts(["high jump", "Snatch"], "paper") == ["a video of high jump", "a video of Snatch"]
    assert format_prompts(["x"]) == ["x"] and format_prompts(["x"], "clip of {}") == ["clip of x"]
    with pytest.raises(TextEncoderError): format_prompts(["x"], "no placeholder")


def test_lookup_class_matrix_and_sentence_files(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.normal(size=(3, 6)).astype(np.float32)
    np.savez(tmp_path/"rows.npz", features=m)
    np.savez(tmp_path/"cols.npz", features=m.T)                  # Charades stores [D, C]
    names = ["walk", "run", "jump"]
    rows = LookupTextEncoder.from_class_matrix(tmp_path/"rows.npz", names)
    cols = LookupTextEncoder.from_class_matrix(tmp_path/"cols.npz", names)
    unit = m / np.linalg.norm(m, axis=1, keepdims=True)
    assert np.allclose(rows.encode(["jump", "walk"]).numpy(), unit[[2, 0]], atol=1e-6)
    assert torch.equal(rows.encode(names), cols.encode(names)) and rows.dim == 6
    with pytest.raises(DataError, match=r"rows.npz.*\[4, D\] or \[D, 4\]"):
        LookupTextEncoder.from_class_matrix(tmp_path/"rows.npz", names + ["swim"])
    mr = tmp_path/"mr"; mr.mkdir()
    s = rng.normal(size=(2, 6)).astype(np.float32)
    np.savez(mr/"vid1.npz", features=s, queries=np.array(["what did I put in the bin?", "he sits down"]))
    sent = LookupTextEncoder.from_sentence_files(mr)
    assert np.array_equal(sent.encode(["he sits down"]).numpy()[0], s[1])          # MR rows as stored
    assert np.array_equal(sent.encode(["What did I put in the bin"]).numpy()[0], s[0])  # case and final "?" ignored
    both = rows.merge(sent)
    assert both.encode(["run", "he sits down"]).shape == (2, 6)
    with pytest.raises(TextEncoderError, match="closest.*he sits down"): both.encode(["he sits dow"])
    np.savez(mr/"bad.npz", features=s, queries=np.array(["one"]))
    with pytest.raises(DataError, match="bad.npz"): LookupTextEncoder.from_sentence_files(mr)


def test_mdsynth_encoder_reproduces_the_dataset():
    ds = make_mdsynth("tiny", seed=5, split="val")
    enc = text_encoder_for(ds.text_spec)
    assert isinstance(enc, MDSynthTextEncoder) and enc.dim == 32
    assert torch.allclose(enc.encode_classes(ds.class_names), ds.tad_queries, atol=1e-6)
    assert torch.allclose(enc.encode_classes(ds.class_names, "paper"), ds.tad_queries, atol=1e-6)
    quiet = make_mdsynth(replace(SIZES["tiny"], text_noise=0.0), seed=5, split="val")
    qenc = MDSynthTextEncoder(quiet.text_spec["spec"], quiet.text_spec["seed"])
    n = 0
    for v in quiet:
        if v.mr is None: continue
        assert torch.allclose(qenc.encode(v.mr.texts), v.mr.queries, atol=1e-5), v.mr.texts
        n += len(v.mr.texts)
    assert n > 20
    a, b = ds.class_names[:2]
    assert enc.parse(f"{a}, then {b}, then {a}") == ([0, 1, 0], "then") and enc.parse(f"{b} while {a}") == ([1, 0], "while")
    with pytest.raises(TextEncoderError, match="unknown class"): enc.encode(["flying a kite"])
    assert enc.spec == ds.text_spec


def test_encoder_of_a_checkpoint_spec():
    enc = ClipTextEncoder(weights=RANDOM_WEIGHTS, cache_dir=False, template="paper")
    back = text_encoder_for(enc.spec, weights=RANDOM_WEIGHTS, cache_dir=False)
    assert isinstance(back, ClipTextEncoder) and back.key == enc.key and back.template == "paper"
    official = text_encoder_for(dict(kind="official", dim=512), weights=RANDOM_WEIGHTS, cache_dir=False)
    assert isinstance(official, ClipTextEncoder) and official.model_name == "ViT-B-32" and official.template == "bare"
    with pytest.raises(TextEncoderError, match="no text encoder"): text_encoder_for({})
    with pytest.raises(TextEncoderError, match="no text encoder"): text_encoder_for(dict(kind="word2vec", dim=300))


def test_workout_stitch_checkpoints_get_their_text_encoder():
    from unimd.text import text_encoder_for
    from unimd.workout import WorkoutTextEncoder
    enc = WorkoutTextEncoder(["squat", "deadlift"], dim=8, seed=3)
    again = text_encoder_for(enc.spec)
    assert isinstance(again, WorkoutTextEncoder) and torch.equal(again(["squat, then deadlift"]), enc(["squat, then deadlift"]))
