"""rlvjax.config.Config: one frozen value, checked without JAX; round trips through config.gin and config.json; the
cross-field rules; docs/config.md generated from it."""

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import gin
import pytest

from rlvjax import cli, config_docs
from rlvjax.config import GIN_FIELDS, SECTIONS, Config
from rlvjax.rl.config import RLConfig
import forkserver

REPO = Path(__file__).resolve().parents[1]


def unusual() -> Config:
    """A config away from every default: tuples, None, text with quotes and newlines, floats in exponent form."""
    c = Config()
    return dataclasses.replace(
        c, task=dataclasses.replace(c.task, levels=(2, 3), rewards=("math", "mymod:f"), reward_weights=(1.0, 0.5)),
        rl=dataclasses.replace(c.rl, algorithm="dr_grpo", group_size=4, vineppo_max_steps=3),
        verifier=dataclasses.replace(c.verifier, question="Is it \"right\"?\nSay 'Yes' or No.", threshold=0.75),
        optim=dataclasses.replace(c.optim, learning_rate=3e-7), run=dataclasses.replace(c.run, max_to_keep=None),
        mesh=dataclasses.replace(c.mesh, fsdp=2, data=-1))


def test_config_gin_reads_back_to_the_same_value(tmp_path):
    config = unusual()
    path = tmp_path / "config.gin"
    path.write_text(config.to_gin())
    gin.clear_config()
    try:
        cli.parse_gin([str(path)], [])
        assert Config.from_gin() == config
    finally:
        gin.clear_config()


def test_a_macro_whose_one_use_is_overridden_is_not_taken_for_a_misspelt_field(tmp_path):
    """`num_layer = 2` used by `ModelSpec.num_layers = %num_layer`, then `--gin_param ModelSpec.num_layers = 3`: the
    macro is unused once overridden, and its name is close to a field's; refused as a misspelling in review diff26's
    probe. A macro nothing was ever written to use is still refused when it reads as a misspelt field."""
    (tmp_path / "macro.gin").write_text("num_layer = 2\nModelSpec.num_layers = %num_layer\n")
    gin.clear_config()
    try:
        cli.parse_gin([str(tmp_path / "macro.gin")], ["ModelSpec.num_layers = 3"], fields=GIN_FIELDS)
        assert Config.from_gin().model.num_layers == 3
        gin.clear_config()
        with pytest.raises(ValueError, match=r"^gin binding `num_layer = \.\.\.` binds no config field \(gin reads "
                           r"it as a macro that nothing uses\); did you mean num_layers, written as "
                           r"ModelSpec.num_layers\?$"):
            cli.parse_gin([], ["num_layer = 3"], fields=GIN_FIELDS)
    finally:
        gin.clear_config()


def test_numpy_values_are_stored_as_plain_ones_and_read_back(tmp_path):
    """A sweep's np.logspace / np.float64 values: config.gin said `np.float64(1e-06)`, which gin cannot read back."""
    import numpy as np

    c = Config()
    config = dataclasses.replace(c, optim=dataclasses.replace(c.optim, learning_rate=np.logspace(-6, -5, 2)[0]),
                                 rl=dataclasses.replace(c.rl, lambda_verify=np.float64(0.5), group_size=np.int64(4)),
                                 task=dataclasses.replace(c.task, reward_weights=(np.float32(0.5),)))
    assert type(config.optim.learning_rate) is float and type(config.rl.group_size) is int
    assert type(config.task.reward_weights[0]) is float
    assert "np." not in config.to_gin()
    (tmp_path / "config.gin").write_text(config.to_gin())
    gin.clear_config()
    try:
        cli.parse_gin([str(tmp_path / "config.gin")], [])
        assert Config.from_gin() == config
    finally:
        gin.clear_config()


def test_config_json_reads_back_to_the_same_value_and_fills_new_fields():
    config = unusual()
    assert Config.from_dict(config.to_dict()) == config
    old = config.to_dict()
    del old["verifier"], old["task"]["reward_weights"]  # a config written before these existed
    restored = Config.from_dict(old)
    assert restored.verifier == Config().verifier and restored.task.reward_weights is None
    assert restored.rl == config.rl


def test_the_aggregation_follows_the_algorithm_unless_set():
    assert RLConfig(algorithm="dr_grpo").loss_aggregation == "seq_mean_token_sum_norm"
    assert RLConfig(algorithm="grpo").loss_aggregation == "token_mean"
    assert RLConfig(algorithm="rloo").loss_aggregation == "token_mean"
    # Replacing the algorithm alone changes the aggregation with it; an explicit one is kept.
    assert dataclasses.replace(RLConfig(), algorithm="dr_grpo").loss_aggregation == "seq_mean_token_sum_norm"
    explicit = RLConfig(algorithm="dr_grpo", aggregation="token_mean")
    assert explicit.loss_aggregation == "token_mean"
    assert dataclasses.replace(explicit, algorithm="grpo").loss_aggregation == "token_mean"
    with pytest.raises(ValueError, match=r"RLConfig.aggregation='' is unknown; valid names: \['seq_mean_token_mean'"):
        RLConfig(aggregation="")  # not None: an empty gin value is a mistake, not the algorithm's default


def test_cross_section_rules():
    c = Config()
    with pytest.raises(ValueError, match=r"64 rollouts per step \(batch_size 8 x group_size 8\) do not split into "
                                         r"RLConfig.num_minibatches=3; pick a divisor"):
        dataclasses.replace(c, rl=dataclasses.replace(c.rl, num_minibatches=3))
    with pytest.raises(ValueError, match="minibatch of 64 training rows is not a multiple of RLConfig.micro_batch_size=6"):
        dataclasses.replace(c, rl=dataclasses.replace(c.rl, micro_batch_size=6))
    with pytest.raises(ValueError, match="RLConfig.algorithm='vineppo' grades its Monte-Carlo continuations with the "
                                         "built-in math reward"):
        dataclasses.replace(c, rl=dataclasses.replace(c.rl, algorithm="vineppo"),
                            task=dataclasses.replace(c.task, rewards=("mymod:f",)))
    with pytest.raises(ValueError, match=r"TaskSpec.reward_weights=\(2.0,\) would mix scales: leave it None"):
        dataclasses.replace(c, rl=dataclasses.replace(c.rl, algorithm="vineppo"),
                            task=dataclasses.replace(c.task, reward_weights=(2.0,)))
    assert dataclasses.replace(c, rl=dataclasses.replace(c.rl, algorithm="vineppo"),
                               task=dataclasses.replace(c.task, reward_weights=(1.0,))).task.reward_weights == (1.0,)
    with pytest.raises(ValueError, match="Config.rl must be a RLConfig, not a dict"):
        Config(rl={})


def test_the_lambda0_baseline_is_a_replace():
    config = unusual()
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, baseline=True),
                                 warm_start=dataclasses.replace(config.warm_start, num_steps=150))
    base = config.lambda0_baseline("/runs/x/warm_start")
    assert base.rl == dataclasses.replace(config.rl, lambda_verify=0.0)
    assert base.model.hf_dir == "/runs/x/warm_start" and base.warm_start.num_steps == 0
    # No baseline of its own: resuming its workdir directly used to train baseline_lambda0/baseline_lambda0.
    assert not base.run.baseline and dataclasses.replace(config.run, baseline=False) == base.run
    assert dataclasses.replace(base, rl=config.rl, model=config.model, warm_start=config.warm_start,
                               run=config.run) == config
    assert config.lambda0_baseline(None) == dataclasses.replace(config, rl=base.rl, run=base.run)


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_field_refuses_a_wrong_type_in_one_line(name):
    section = SECTIONS[name]
    for field in dataclasses.fields(section):
        with pytest.raises(ValueError, match=rf"^{section.__name__}\.{field.name}=b'x' must be .*, not a bytes; fix "
                                             "the binding's value$"):
            section(**{field.name: b"x"})
        if "int" in str(field.type) and "bool" not in str(field.type):  # True is 1 in Python: top_k = True, greedy
            with pytest.raises(ValueError, match=rf"^{section.__name__}\.{field.name}=True must be .*, not a bool"):
                section(**{field.name: True})
    assert typing.get_type_hints(section)  # every field is annotated


def test_building_and_checking_a_config_starts_no_jax_backend():
    """Safe before jax.distributed.initialize, which must precede the first backend use."""
    code = ("import dataclasses; from rlvjax.config import Config; c = Config(); "
            "Config.from_dict(c.to_dict()); c.to_gin()\n"
            "try:\n    dataclasses.replace(c.rl, algorithm='nope')\nexcept ValueError: pass\n"
            "from jax._src import xla_bridge; print(xla_bridge.backends_are_initialized())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]


def test_docs_config_md_is_generated_from_the_dataclasses():
    assert config_docs.undocumented() == []  # every field has a comment to document it
    assert (REPO / "docs" / "config.md").read_text(encoding="utf-8") == config_docs.render(), \
        "docs/config.md is stale: run python -m rlvjax.config_docs"
    text = config_docs.render()
    for section in SECTIONS.values():
        for field in dataclasses.fields(section):
            assert f"| `{field.name}` |" in text
    assert "| `question` | a str | `'Is this solution correct (Yes/No)?'` | asked after each solution" in text
    # An argument it does not take (a `--check` one might expect) is refused; it used to rewrite the file anyway.
    before = (REPO / "docs" / "config.md").stat().st_mtime_ns
    out = forkserver.run([sys.executable, "-m", "rlvjax.config_docs", "--check"], timeout=300)
    assert out.returncode == 2 and out.stderr.startswith("rlvjax.config_docs: error: unexpected argument '--check'")
    assert (REPO / "docs" / "config.md").stat().st_mtime_ns == before
