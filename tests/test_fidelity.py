"""The Fidelity page (nbs/02_fidelity.ipynb) names every golden-fixture family and only tests that exist; and the
one official figure it checks that no other test does: the tiny official model's parameter counts per submodule."""
import json
import re

import numpy as np
import pytest

from conftest import ROOT, shared_path
from unimd.model import UniMD, count_parameters
from unimd.official import translate_official_config

PAGE = ROOT/"nbs"/"02_fidelity.ipynb"


def page_code() -> str:
    return "\n".join("".join(c["source"]) for c in json.loads(PAGE.read_text())["cells"] if c["cell_type"] == "code")


def test_page_cites_only_existing_tests():
    cited = set(re.findall(r"tests/(test_\w+\.py)::(test_\w+)", page_code()))
    assert len(cited) >= 14
    for f, name in sorted(cited):
        assert re.search(rf"^def {name}\(", (ROOT/"tests"/f).read_text(), re.M), f"the page cites {f}::{name}, which does not exist"


def test_page_covers_every_fixture_family():
    "Each folder of shared/fixtures (and each evaluator case of metrics/) appears in the page's table of checks."
    root = shared_path("fixtures")
    families = {p.name for p in root.iterdir() if p.is_dir() and p.name != "metrics"}
    families |= {p.name for p in (root/"metrics").iterdir() if p.is_dir()}
    assert {"softnms", "official_model", "sampler", "anet13_tad", "charades_frame_map", "ego4d_nlq_mr"} <= families
    claims = page_code().split("CLAIMS = ", 1)[1].split("\nCLAIMS", 1)[0]
    missing = sorted(f for f in families if f not in claims)
    assert not missing, f"fixture families without a check on the Fidelity page: {missing}"


def test_tiny_model_parameter_counts():
    "Our model from the tiny official config has the official model's parameter count in every submodule."
    root = shared_path("fixtures", "official_model")
    official = json.loads((root/"manifest.json").read_text())["param_counts"]
    for name in ("charades_tiny", "ego4d_tiny"):
        cfg, _ = translate_official_config(root/name/f"{name}_fixture.yaml")
        model = UniMD(cfg.model)
        ours = count_parameters(model)
        assert {k: ours[k] for k in ("total", "backbone", "neck", "cls_head", "reg_head")} == \
            {k: official[k] for k in ("total", "backbone", "neck", "cls_head", "reg_head")}
        for sub, n in official["by_submodule"].items():
            assert sum(p.numel() for k, p in model.named_parameters() if k.startswith(sub + ".")) == n, (name, sub)
    # and the state dict holds exactly these tensors
    sd = np.load(root/"state_dict.npz")
    assert sum(v.size for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) == official["total"]
