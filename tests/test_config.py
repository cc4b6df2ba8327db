"""common.config: documented keys, typed overrides, clear errors."""
import glob
import os

import pytest
import yaml

from common.config import ConfigError, load_config, parse_overrides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
P2P = os.path.join(REPO, "pix2pix", "default_config.yaml")


def test_overrides_are_typed():
    cfg = load_config(P2P, ["--lr=1e-3", "--netG", "resnet_9blocks", "--flip=false", "--n_epochs=3", "--dataroot=/x"])
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)
    assert cfg.netG == "resnet_9blocks" and cfg.flip is False and cfg.n_epochs == 3 and cfg.dataroot == "/x"


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(P2P, ["--learning_rate=0.1"])
    assert "learning_rate" in str(e.value) and "lambda_L1" in str(e.value) and "valid keys" in str(e.value)


@pytest.mark.parametrize("arg,expect", [("--n_epochs=1.5", "integer"), ("--lr=fast", "number"),
                                        ("--flip=maybe", "true or false"), ("--netG=unet_1000", "choose one of")])
def test_wrong_type_or_choice(arg, expect):
    with pytest.raises(ConfigError, match=expect):
        load_config(P2P, [arg])


def test_bad_argument_shape():
    with pytest.raises(ConfigError, match="--key=value"):
        parse_overrides(["lr=1"])


def test_undocumented_key_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: 2\n---\na: documented\n")
    with pytest.raises(ConfigError, match=r"without help text.*'b'"):
        load_config(str(path))


def test_every_model_config_documents_every_key():
    from common.config import BASE_CONFIG
    with open(BASE_CONFIG) as f:
        base = list(yaml.safe_load_all(f))
    assert set(base[0]) == set(base[1])
    paths = glob.glob(os.path.join(REPO, "*", "default_config.yaml"))
    assert paths
    for path in paths:
        with open(path) as f:
            docs = list(yaml.safe_load_all(f))
        assert set(docs[0]) - set(base[0]) <= set(docs[1]), path  # a base key may take another default only
        assert all(isinstance(v, str) and v.strip() for v in docs[1].values() if v), path
        cfg = load_config(path)
        assert set(cfg) == set(base[0]) | set(docs[0]) and all(cfg.help[k].strip() for k in cfg), path


def test_base_keys_and_known_arguments(tmp_path):
    from common.config import known_arguments
    path = tmp_path / "m.yaml"
    path.write_text("output_dir: outputs/m\nown: 1\n---\nown: documented\n")
    cfg = load_config(str(path))
    assert cfg.output_dir == "outputs/m" and cfg.seed == 0 and cfg.own == 1
    assert "--seed=0" in cfg.usage() and "documented" in cfg.usage()
    assert known_arguments(str(path), ["--own=2", "--other=3", "--num_val=1"]) == ["--own=2", "--num_val=1"]
