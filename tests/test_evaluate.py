"""The evaluation report against hand-computed values, and the evaluate CLI on a tiny trained run."""

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import gin
import numpy as np
import pytest

from rlvjax import experiment, outputs, run_sampling, testtime, train
from rlvjax.rl import verifier
from rlvjax.pool import summarize
from rlvjax.reports import assemble, compare, report, summary
from rlvjax.rl.diagnostics import calibration_error
from rlvjax.config import Config
from rlvjax.model.hf import save_hf
from conftest import xla_flags
import forkserver

REPO = Path(__file__).resolve().parents[1]


def test_calibration_error_by_hand():
    # bin [0.8, 0.9): p 0.8, 0.8 with correctness 1, 0 -> |0.8 - 0.5| = 0.3, weight 1/2
    # bin [0.2, 0.3): p 0.2, 0.2 with correctness 0, 0 -> |0.2 - 0| = 0.2, weight 1/2
    assert calibration_error(np.array([0.8, 0.8, 0.2, 0.2]), np.array([1, 0, 0, 0])) == pytest.approx(0.25)
    # 0.81 (right) and 0.89 (wrong) share the bin [0.8, 0.9): |0.85 - 0.5| (rounded into two bins it was 0.54)
    assert calibration_error(np.array([0.81, 0.89]), np.array([1, 0])) == pytest.approx(0.35)


def test_both_aurocs_rank_by_the_chosen_score():
    # Sample 0 (right): p(Yes) 0.4, p(No) 0.1 -> normalised 0.8. Sample 1 (wrong): 0.5 / 0.5 -> normalised 0.5.
    pool = {"answers": np.array([["5", "7"]], dtype=object), "correct": np.array([[1, 0]], bool),
            "yes_logp": np.log([[0.4, 0.5]]), "no_logp": np.log([[0.1, 0.5]])}
    for score, auroc in (("normalized", 1.0), ("raw", 0.0)):
        verifier = report(pool, num_subsets=4, conventions=testtime.Conventions(score=score))["verifier"]
        assert verifier["verifier_auroc"] == verifier["within_problem_auroc"] == auroc, score
        assert verifier["verifier_accuracy"] == 1.0  # it said Yes to the right one and not to the wrong one
        # the in-training eval's too (it ranked by the Yes - No margin under either score: review 2026-12-06)
        assert summarize(pool, testtime.Conventions(score=score))["eval/verifier_auroc"] == auroc, score


def test_the_in_training_best_of_k_is_the_reports_best_of_n_at_k():
    # Problem 0: the top score is an unparseable sample; problem 1: a tie between a right and a wrong answer.
    yes = np.log(np.array([[0.9, 0.6, 0.3, 0.2], [0.7, 0.7, 0.1, 0.1]]))
    pool = {"answers": np.array([[None, "5", "7", "7"], ["3", "4", "4", "4"]], dtype=object),
            "correct": np.array([[0, 1, 0, 0], [1, 0, 0, 0]], bool), "yes_logp": yes,
            "no_logp": np.log(1 - np.exp(yes))}
    for conventions, expected in ((testtime.Conventions(), 0.75), (testtime.Conventions(unparseable="rank"), 0.25),
                                  (testtime.Conventions(ties="first"), 1.0)):
        summary_ = summarize(pool, conventions)
        assert summary_["eval/best_of_k"] == expected
        assert summary_["eval/best_of_k"] == report(pool, num_subsets=4, conventions=conventions)[
            "accuracy"]["best_of_n"]["4"]
    assert summary_["eval/pass@1"] == 0.25
    # the verifier's calibration, logged while a run trains (eval.json's alone before; STYLE's day-one diagnostics)
    assert summary_["eval/calibration_error"] == report(pool, num_subsets=4)["verifier"]["calibration_error"] > 0


def test_report_by_hand():
    # Problem 0: answers 5, 5, 7, 7 (5 is right); verifier likes the 7s. Problem 1: all wrong or unparseable.
    yes = np.log(np.array([[0.6, 0.6, 0.9, 0.9], [0.5, 0.5, 0.5, 0.5]]))
    no = np.log(1 - np.exp(yes))
    pool = {"answers": np.array([["5", "5", "7", "7"], ["3", None, None, "4"]], dtype=object),
            "correct": np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool), "yes_logp": yes, "no_logp": no}
    rep = report(pool, levels=[1, 2], num_subsets=2000)
    assert rep["ns"] == [1, 2, 4] and rep["pass@1"] == 0.25
    # pass@2 of problem 0 = 1 - C(2,2)/C(4,2) = 5/6; problem 1 = 0
    assert rep["pass@k"]["2"] == pytest.approx(5 / 12)
    assert rep["pass@k"]["4"] == pytest.approx(0.5)
    # At N = 4: majority is a 2-2 tie (broken at random: 1/2); weighted 1.2 vs 1.8 picks 7; BoN picks a 7.
    assert rep["accuracy"]["majority"]["4"] == pytest.approx(0.25)
    assert rep["accuracy"]["weighted"]["4"] == 0.0 and rep["accuracy"]["best_of_n"]["4"] == 0.0
    assert rep["by_level"]["1"] == {"problems": 1, "pass@1": 0.5, "weighted@4": 0.0}
    assert set(rep["verifier"]) >= {"verifier_accuracy", "verifier_auroc", "calibration_error"}
    # Within problem 0 both right answers score 0.6 < 0.9: AUROC 0; problem 1 has no right sample and is left out.
    assert rep["verifier"]["within_problem_auroc"] == 0.0


def test_the_pass_at_1_interval_resamples_problems():
    """Two problems, one always right and one never: pass@1 is 0.5 and its interval over problems (0, 1); over the
    samples, whose column means are all 0.5, it was (0.5, 0.5)."""
    pool = {"answers": np.array([["5"] * 4, ["3"] * 4], dtype=object), "correct": np.array([[1] * 4, [0] * 4], bool),
            "yes_logp": np.log(np.full((2, 4), 0.5)), "no_logp": np.log(np.full((2, 4), 0.5))}
    rep = report(pool, num_subsets=4)
    assert rep["pass@1"] == 0.5 and tuple(rep["pass@1_ci95"]) == (0.0, 1.0)
    # K = 3: the curves stopped at N = 2 and the summary then failed on N = K (KeyError '3'); refused up front
    with pytest.raises(ValueError, match=r"^K=3: use a power of two >= 2 "):
        report({k: v[:, :3] for k, v in pool.items()}, num_subsets=4)


def test_the_summary_table_puts_each_figure_in_its_column():
    """maj@4 0.61, BoN@4 0.42, wt@4 0.83 land under their own headings (a swap passed every other test)."""
    from rlvjax.reports import summary_table

    figures = {"pass@1": 0.5, "pass@1_ci95": (0.4, 0.6), "num_samples": 4,
               "accuracy": {"majority": {"4": 0.61}, "best_of_n": {"4": 0.42}, "weighted": {"4": 0.83}},
               "verifier": {"verifier_balanced_accuracy": 0.7, "verifier_auroc": 0.8, "within_problem_auroc": 0.9},
               "compute_efficiency_weighted_vs_majority": {"ratio": 2.0, "lower_bound": False}}
    head, row = summary_table({"final": figures}).splitlines()
    at = lambda name, width: float(row[head.index(name) + len(name) - width: head.index(name) + len(name)])  # noqa: E731
    assert (at("maj@4", 8), at("BoN@4", 8), at("wt@4", 8)) == (0.61, 0.42, 0.83)
    assert (at("ver.bal.acc", 12), at("AUROC", 7), at("within", 7)) == (0.7, 0.8, 0.9)
    assert len(row) == len(head) and row.endswith(" 2.00")  # ends under "eff."
    # a bound at K = 1024 stays a field of its own (">=32.00" ran into "within": "0.900>=32.00", review)
    bound = {**figures, "compute_efficiency_weighted_vs_majority": {"ratio": 1024.0, "lower_bound": True}}
    head, row = summary_table({"final": bound}).splitlines()
    assert row.split()[-2:] == ["0.900", ">=1024.00"] and len(row) == len(head)


def test_compare_and_assemble_by_hand():
    # Two problems, K = 4. RL^V: problem 0 answers 5,5,7,7 (5 right) with the verifier on the 5s; problem 1 all 3s,
    # right. Baseline: problem 0 all 7s (wrong); problem 1 answers 3,3,3,4 (3 right).
    def pool(answers, correct, p_yes):
        yes = np.log(np.asarray(p_yes, float))
        return {"answers": np.array(answers, dtype=object), "correct": np.array(correct, bool), "yes_logp": yes,
                "no_logp": np.log(1 - np.exp(yes))}

    rlv = pool([["5", "5", "7", "7"], ["3"] * 4], [[1, 1, 0, 0], [1] * 4], [[0.9, 0.9, 0.2, 0.2], [0.8] * 4])
    base = pool([["7"] * 4, ["3", "3", "3", "4"]], [[0] * 4, [1, 1, 1, 0]], [[0.5] * 4] * 2)
    reports = {"final": report(rlv, num_subsets=4000), "lambda0": report(base, num_subsets=4000)}
    evaluation = assemble({"1.5": reports}, {"1.5": {"final": rlv["correct"], "lambda0": base["correct"]}},
                                   train_temperature=1.5, headline_temperature=1.5)
    assert evaluation["train_temperature"] == evaluation["headline_temperature"] == 1.5
    cmp = evaluation["comparison"]["1.5"]
    # pass@1: RL^V (2/4 + 4/4) / 2 = 0.75, baseline (0 + 3/4) / 2 = 0.375; per-problem differences 0.5 and 0.25.
    assert cmp["pass@1"]["rlv"] == 0.75 and cmp["pass@1"]["lambda0"] == 0.375
    assert cmp["pass@1"]["difference"] == pytest.approx(0.375) and cmp["pass@1"]["difference_ci95"] == (0.25, 0.5)
    # Baseline majority: N = 1 and 2 -> (0 + 3/4) / 2 = 0.375; N = 4 -> (0 + 1) / 2 = 0.5, its best. RL^V's weighted
    # vote at N = 1 is its pass@1, 0.75 >= 0.5: matched at once, 4 samples vs 1 (a lower bound).
    # The rise to N = 4 is problem 1's alone, so it is real (testtime.plateau): the plateau starts at N = 4.
    assert reports["lambda0"]["majority_plateau"] == 4
    eff = cmp["efficiency_vs_lambda0_majority"]
    assert eff["target"] == 0.5 and eff["n_target"] == 4
    assert eff["n_needed"] == 1 and eff["lower_bound"] and eff["ratio"] == 4
    # The target is read where the baseline's plateau starts: at N = 2 it is 0.375; a report without a plateau
    # (written before it was recorded) falls back to the first maximum.
    at_two = compare(reports["final"], {**reports["lambda0"], "majority_plateau": 2}, rlv["correct"], base["correct"])
    eff_two = at_two["efficiency_vs_lambda0_majority"]
    assert eff_two["target"] == pytest.approx(0.375, abs=0.01)  # a Monte-Carlo mean over subsets
    assert (eff_two["n_target"], eff_two["n_needed"], eff_two["lower_bound"], eff_two["ratio"]) == (2, 1, True, 2)
    older = {k: v for k, v in reports["lambda0"].items() if k != "majority_plateau"}
    assert compare(reports["final"], older, rlv["correct"], base["correct"]) == cmp
    # RL^V's weighted vote at N = 4: problem 0 picks 5 (1.8 vs 0.4), problem 1 is right: 1.0; baseline majority 0.5.
    assert cmp["weighted_minus_lambda0_majority"]["4"] == 0.5
    assert cmp["efficiency_same_policy"] == reports["final"]["compute_efficiency_weighted_vs_majority"]
    text = summary(evaluation)
    assert "T = 1.5 (training, headline temperature)" in text
    assert "RL^V - lambda0 pass@1: +0.375 (95% CI +0.250 to +0.500)" in text
    assert "RL^V weighted vote vs lambda0 majority vote: >= 4.00x fewer samples (N = 1 vs 4 for 0.500)" in text
    # The table's eff. column: RL^V's weighted vote matches its own best majority (0.75, at N = 1) at once.
    assert reports["final"]["compute_efficiency_weighted_vs_majority"]["lower_bound"]
    assert next(line for line in text.splitlines() if line.startswith("final")).endswith(" >=1.00")
    # Swapped, the baseline's weighted vote (at most 0.5) never reaches RL^V's majority (0.75): reported as such.
    swapped = compare(reports["lambda0"], reports["final"], base["correct"], rlv["correct"])
    assert swapped["efficiency_vs_lambda0_majority"]["ratio"] is None
    # Raw p(Yes) is recorded when asked for.
    assert report(rlv, conventions=testtime.Conventions(score="raw"))["conventions"]["score"] == "raw"


def test_temperature_keys_are_exact_and_a_model_not_trained_here_has_no_training_temperature():
    from rlvjax.reports import temperature_key

    assert [temperature_key(t) for t in (1.0, 0.7, 2, 0.1234567, 1.0000001)] == ["1", "0.7", "2", "0.1234567",
                                                                                 "1.0000001"]
    rep = report({"answers": np.array([["5", "5"]], dtype=object), "correct": np.ones((1, 2), bool),
                  "yes_logp": np.log(np.full((1, 2), 0.6)), "no_logp": np.log(np.full((1, 2), 0.4))}, num_subsets=4)
    t = 0.1234567  # keyed by 6 digits, it lost its roles (and 1.0000001 shared 1.0's key)
    text = summary(assemble({temperature_key(t): {"m": rep}}, {}, train_temperature=t, headline_temperature=t))
    assert text.startswith("T = 0.1234567 (training, headline temperature)")
    text = summary(assemble({"1": {"m": rep}}, {}, train_temperature=None, headline_temperature=1.0))
    assert text.startswith("T = 1 (eval, headline temperature)")  # evaluate --model_dir



def test_the_end_of_run_report_is_current_only_for_the_same_policies_and_settings(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    from rlvjax import outputs
    from rlvjax.data import sources

    problems = tmp_path / "eval.jsonl"
    problems.write_text('{"prompt": "1+1", "gold": "2"}\n')
    config = Config()  # training temperature 1.0, no other eval temperature
    config = dataclasses.replace(config, task=dataclasses.replace(config.task, eval_file=str(problems)))
    policies = {name: tmp_path / name for name in ("final", "lambda0")}

    def export(name, export_id, step=4):  # what save_hf stamps on the weights
        policies[name].mkdir(exist_ok=True)
        save_file({"w": np.zeros(1, np.float32)}, str(policies[name] / "model.safetensors"),
                  metadata={"rlvjax_export_id": export_id, "rlvjax_step": str(step)})

    export("final", "a")
    export("lambda0", "b")
    assert outputs.exports(policies) == {"final": {"export_id": "a", "step": 4},
                                          "lambda0": {"export_id": "b", "step": 4}}
    rep = {"num_samples": config.run.final_eval_samples, "conventions": dataclasses.asdict(config.conventions)}

    def write(reports, **changes):
        evaluation = {"reports": reports, "policies": outputs.exports(policies),
                      "eval_data": outputs.eval_data_id(config.task), **changes}
        (tmp_path / "eval.json").write_text(json.dumps(evaluation))

    write({"1": {"final": rep, "lambda0": rep}})
    assert outputs.current_report(config, tmp_path, policies)["reports"]["1"]["final"] == rep
    for changed in ({"1": {"final": rep}},  # a policy it does not report
                    {"1": {"final": {**rep, "num_samples": 2}, "lambda0": rep}},  # another pool size
                    {"2": {"final": rep, "lambda0": rep}}):  # another temperature
        write(changed)
        assert outputs.current_report(config, tmp_path, policies) is None, changed
    write({"1": {"final": rep, "lambda0": rep}})
    export("final", "c")  # exported again since (same step, another branch of the run): the report is stale
    assert outputs.current_report(config, tmp_path, policies) is None
    write({"1": {"final": rep, "lambda0": rep}})
    problems.write_text('{"prompt": "2+2", "gold": "4"}\n')  # other problems behind the same path
    assert outputs.current_report(config, tmp_path, policies) is None
    write({"1": {"final": rep, "lambda0": rep}})
    assert outputs.current_report(config, tmp_path, policies) is not None
    # so behind a "~/" path and in a dataset directory re-saved with other problems (each was known by its name
    # alone: a resume on other problems kept the old report)
    # ...by its problems in a dataset directory: not by the caches `datasets` writes there (a finished run was
    # evaluated again for one) nor by its other splits
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    monkeypatch.setenv("HOME", str(tmp_path))
    split = lambda *golds: datasets.Dataset.from_list([{"prompt": f"{g}?", "gold": g} for g in golds])  # noqa: E731
    datasets.DatasetDict({"train": split("1"), "test": split("2", "3")}).save_to_disk(tmp_path / "saved")

    def resave(**splits):  # save_to_disk cannot write over the directory it reads from
        shutil.rmtree(tmp_path / "saved")
        datasets.DatasetDict(splits).save_to_disk(tmp_path / "saved")

    at = lambda eval_file: dataclasses.replace(config.task, eval_file=eval_file)  # noqa: E731
    before = outputs.eval_data_id(at(str(tmp_path / "saved")))
    (tmp_path / "saved" / "test" / "cache-0123456789abcdef.arrow").write_bytes(b"a cache")
    resave(train=split("4"), test=split("2", "3"))
    assert outputs.eval_data_id(at(str(tmp_path / "saved"))) == before
    resave(train=split("4"), test=split("2", "5"))
    assert outputs.eval_data_id(at(str(tmp_path / "saved"))) != before
    before = outputs.eval_data_id(at("~/" + problems.name))  # known by its name alone, edited or not
    problems.write_text('{"prompt": "3+3", "gold": "6"}\n')
    assert outputs.eval_data_id(at("~/" + problems.name)) != before
    assert sources.absolute("~/" + problems.name) == str(problems)  # a config records the file itself
    # the API's in-memory eval rows, by the file the run writes them to: as the CLI's resume of that run reads them
    # (one id for both), and a resume on other rows (written over them) is not reported as these
    rows = ([{"prompt": "1+1", "gold": "2"}], [{"prompt": "1+1", "gold": "2"}])
    (tmp_path / "data").mkdir()
    sources.write_jsonl(tmp_path / "data" / "eval.jsonl", rows[1])
    written = outputs.written_task(config.task, tmp_path, rows)
    write({"1": {"final": rep, "lambda0": rep}}, eval_data=outputs.eval_data_id(written))
    assert outputs.current_report(config, tmp_path, policies, outputs.eval_data_id(written)) is not None
    assert outputs.current_report(dataclasses.replace(config, task=written), tmp_path, policies) is not None
    sources.write_jsonl(tmp_path / "data" / "eval.jsonl", [{"prompt": "2+2", "gold": "4"}])
    assert outputs.current_report(config, tmp_path, policies, outputs.eval_data_id(written)) is None
    write({"1": {"final": rep, "lambda0": rep}})
    save_file({"w": np.zeros(1, np.float32)}, str(policies["final"] / "model.safetensors"))  # not rlvjax's export
    write({"1": {"final": rep, "lambda0": rep}})
    assert outputs.exports(policies)["final"] is None and outputs.current_report(config, tmp_path, policies) is None
    # under a reward of the user's the report records string grouping (the votes' own): a finished run re-evaluated
    # on every resume when the comparison read the config's "math"
    strings = {**rep, "conventions": {**rep["conventions"], "grouping": "string"}}
    export("final", "a")
    write({"1": {"final": strings, "lambda0": strings}})
    assert outputs.current_report(config, tmp_path, policies, grouping="string") is not None
    assert outputs.current_report(config, tmp_path, policies) is None
    (tmp_path / "eval.json").write_text("{not json")
    assert outputs.current_report(config, tmp_path, policies) is None

    # A resume that exports again but writes no report (final_eval_samples = 0): the report of the replaced export
    # moves aside; it stayed, and launch/collect.py and seeds.py took it for the run's
    export("final", "d", step=4)
    write({"1": {"final": rep, "lambda0": rep}})
    outputs.set_aside_stale_report(tmp_path, policies)  # about these very exports: it stays
    assert (tmp_path / "eval.json").exists()
    export("final", "e", step=6)
    outputs.set_aside_stale_report(tmp_path, policies)
    assert not (tmp_path / "eval.json").exists()
    assert json.loads((tmp_path / "checkpoints_set_aside" / "report_of_step_4" / "eval.json").read_text())[
        "policies"]["final"] == {"export_id": "d", "step": 4}


def test_write_report_commits_a_whole_set_of_strict_json(tmp_path, monkeypatch):
    import matplotlib

    from rlvjax import atomic, reports

    monkeypatch.setitem(matplotlib.rcParams, "backend", "svg")  # a backend the user chose, not Agg
    backend = matplotlib.get_backend()

    # Every sample right: the verifier's AUROC has no negatives and is NaN, which eval.json must write as null.
    yes = np.log(np.array([[0.9, 0.6], [0.7, 0.8]]))
    pool = {"answers": np.array([["5", "5"], ["3", "3"]], dtype=object), "texts": np.array([["a", "b"], ["c", "d"]],
            dtype=object), "correct": np.ones((2, 2), bool), "rewards": np.ones((2, 2)), "yes_logp": yes,
            "no_logp": np.log(1 - np.exp(yes)), "lengths": np.full((2, 2), 3), "finished": np.ones((2, 2), bool)}
    records = [{"prompt": "p0", "gold": "5", "id": "a"}, {"prompt": "p1", "gold": "3", "id": "b"}]
    evaluation = assemble({"1": {"m": report(pool, num_subsets=10)}}, {}, train_temperature=1.0,
                          headline_temperature=1.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "compute.png").write_bytes(b"stale")  # from an earlier --strategy run: removed with the new set
    reports.write_report(evaluation, out)
    listing = lambda: sorted(p.name for p in out.iterdir() if p.name != reports.REPORT_LOCK)
    assert listing() == ["eval.json", "scaling.png"]
    (out / "eval_samples.jsonl").write_text("stale\n")  # from an earlier evaluation: not this eval.json's
    reports.write_report(evaluation, out)
    assert listing() == ["eval.json", "scaling.png"]
    reports.write_report(evaluation, out, samples=(pool, records, testtime.Conventions()))

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"eval.json holds {c}"))

    written = strict((out / "eval.json").read_text())
    assert written["reports"]["1"]["m"]["verifier"]["verifier_auroc"] is None
    row = reports.summary(written).splitlines()[2]  # the report read back (a resumed finished run prints it)
    assert row.startswith("m") and row.split()[-3:-1] == ["n/a", "n/a"], row  # AUROC and within-problem AUROC
    import matplotlib  # plotting leaves the user's backend (a notebook's inline one) as it was

    assert matplotlib.get_backend() == backend
    lines = [json.loads(line) for line in (out / "eval_samples.jsonl").open()]
    assert [(r["id"], r["sample"], r["completion"]) for r in lines] == [("a", 0, "a"), ("a", 1, "b"), ("b", 0, "c"),
                                                                       ("b", 1, "d")]
    assert listing() == ["eval.json", "eval_samples.jsonl", "scaling.png"]

    # A failure while writing the next set (here the samples file) leaves the previous set whole and no temporaries.
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(reports, "write_samples", fail)
    pool["texts"][:] = "changed"
    with pytest.raises(OSError, match="disk full"):
        reports.write_report({**evaluation, "seed": 7}, out, samples=(pool, records, testtime.Conventions()))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # and a folder it created for the report is removed again (an empty --out folder was left behind)
    with pytest.raises(OSError, match="disk full"):
        reports.write_report(evaluation, tmp_path / "new" / "out", samples=(pool, records, testtime.Conventions()))
    assert not (tmp_path / "new").exists()
    # What a killed evaluation left staged (nothing reads it; eval_samples.jsonl runs to tens of MB) goes with the
    # next one; a running evaluation's stays.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    here = socket.gethostname()
    left = [out / f".eval_samples.{dead}@{here}-0123456789ab.jsonl", out / f".scaling.{dead}@{here}-0123456789ab.png"]
    running = out / f".eval_samples.{os.getpid()}@{here}-0123456789ab.jsonl"
    recent = out / ".scaling.12@another-host-fedcba987654.png"  # another host's writer, sharing the folder: kept,
    left.append(out / ".scaling.13@another-host-fedcba987654.png")  # until untouched for an hour
    users = out / ".eval.2024-06-01.json"  # a user's own: kept, however old
    hour_ago = time.time() - atomic.STALE_S - 60
    for path in (*left, running, recent, users):
        path.write_text("x")
    for path in (left[-1], users):
        os.utime(path, (hour_ago, hour_ago))
    reports.write_report(evaluation, out)
    assert not any(path.exists() for path in left) and running.exists() and recent.exists() and users.exists()


def test_two_evaluations_writing_one_folder_each_leave_a_whole_set(tmp_path, monkeypatch):
    from rlvjax import reports

    pool = {"answers": np.array([["5", "3"]], dtype=object), "correct": np.array([[True, False]]),
            "yes_logp": np.log(np.array([[0.9, 0.2]])), "no_logp": np.log(np.array([[0.1, 0.8]]))}
    first, second = ({**assemble({"1": {"m": report(pool, num_subsets=4)}}, {}, train_temperature=1.0,
                                 headline_temperature=1.0), "seed": seed} for seed in (1, 2))
    plot = reports.plot_scaling
    calls = []

    def meanwhile(evaluation, path):  # the second evaluation writes its whole set while the first is staging
        plot(evaluation, path)
        calls.append(path)
        if len(calls) == 1:
            reports.write_report(second, tmp_path)

    monkeypatch.setattr(reports, "plot_scaling", meanwhile)
    reports.write_report(first, tmp_path)  # staged under one shared name, the two crashed or mixed their files
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != reports.REPORT_LOCK) == ["eval.json", "scaling.png"]
    assert json.loads((tmp_path / "eval.json").read_text())["seed"] == 1 and len(calls) == 2


def test_two_evaluations_moving_in_at_once_leave_one_whole_set(tmp_path, monkeypatch):
    import threading

    from rlvjax import reports

    pool = {"answers": np.array([["5", "3"]], dtype=object), "texts": np.array([["a", "b"]], dtype=object),
            "correct": np.array([[True, False]]), "rewards": np.array([[1.0, 0.0]]),
            "yes_logp": np.log(np.array([[0.9, 0.2]])), "no_logp": np.log(np.array([[0.1, 0.8]])),
            "lengths": np.array([[3, 4]]), "finished": np.ones((1, 2), bool)}
    other = {**pool, "correct": np.array([[False, True]]), "yes_logp": np.log(np.array([[0.3, 0.6]]))}
    first, second = ({**assemble({"1": {"m": report(p, num_subsets=4)}}, {}, train_temperature=1.0,
                                 headline_temperature=1.0), "seed": seed} for seed, p in ((1, pool), (2, other)))
    plots = tmp_path / "plots"
    plots.mkdir()
    for evaluation in (first, second):
        reports.plot_scaling(evaluation, plots / f"{evaluation['seed']}.png")
    out = tmp_path / "out"
    replace, meanwhile = Path.replace, []

    def replace_then_race(self, target):  # the second evaluation moves its set in after the first's first file
        moved = replace(self, target)
        if not meanwhile and threading.current_thread() is threading.main_thread():
            meanwhile.append(threading.Thread(target=reports.write_report, args=(second, out)))
            meanwhile[0].start()
            meanwhile[0].join(timeout=1.0)
        return moved

    monkeypatch.setattr(Path, "replace", replace_then_race)
    reports.write_report(first, out, samples=(pool, [{"prompt": "p", "gold": "5", "id": "a"}], testtime.Conventions()))
    meanwhile[0].join()
    seed = json.loads((out / "eval.json").read_text())["seed"]  # the files beside eval.json are its own
    assert (out / "scaling.png").read_bytes() == (plots / f"{seed}.png").read_bytes()
    assert (out / "eval_samples.jsonl").exists() == (seed == 1)
    assert sorted(p.name for p in out.iterdir() if p.name != reports.REPORT_LOCK) == (
        ["eval.json", "eval_samples.jsonl", "scaling.png"] if seed == 1 else ["eval.json", "scaling.png"])


def test_the_end_of_run_report_samples_in_the_runs_precision(tmp_path, monkeypatch):
    """A run computing in bfloat16 is reported in bfloat16, as it trained and as its memory plan counts the final
    eval (the report loaded the export in float32: another precision, twice the planned memory)."""
    from rlvjax import evaluate

    spec = experiment.ModelSpec(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1,
                                compute_dtype="bfloat16")
    model, tokenizer = experiment.build_policy(spec)
    save_hf(model, tokenizer, tmp_path / "final")
    config = Config(model=spec, task=experiment.TaskSpec(num_train=16, num_eval=4))
    seen = []

    def record(model, *args, **kwargs):
        seen.append((model.config.dtype, model.config.compute_dtype))
        raise KeyboardInterrupt  # what it was given is all this test needs

    monkeypatch.setattr(evaluate, "evaluate_policy", record)
    with pytest.raises(KeyboardInterrupt):
        evaluate.final_report(config, tmp_path, {"final": tmp_path / "final"})
    assert seen == [("float32", "bfloat16")]


@pytest.mark.slow
def test_evaluate_cli_on_a_trained_run(tmp_path):
    gin.clear_config()
    gin.parse_config_files_and_bindings([str(REPO / "configs" / "digit_smoke.gin")], [
        "WarmStartConfig.num_steps = 150", "RunConfig.num_steps = 4", "RunConfig.eval_every = 0",
        "RunConfig.checkpoint_every = 2", "RunConfig.final_eval_samples = 4", "RunConfig.baseline = True",
        "RunConfig.eval_temperature = 1.0"])
    try:
        config = Config.from_gin()
        train.run_and_report(config, tmp_path)
    finally:
        gin.clear_config()
    # Resumed once more (a sweep's restart): nothing is trained, so nothing is exported or evaluated again.
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "eval.json", tmp_path / "final" / "model.safetensors",
                                                  tmp_path / "baseline_lambda0" / "final" / "model.safetensors")}
    train.run_and_report(config, tmp_path, resume=True)
    assert {p: p.stat().st_mtime_ns for p in written} == written
    end_report = json.loads((tmp_path / "eval.json").read_text())
    # digit_smoke trains at T = 2; evaluated at 1 too, the training temperature stays the headline.
    assert end_report["headline_temperature"] == end_report["train_temperature"] == 2.0
    assert set(end_report["reports"]) == {"1", "2"} and set(end_report["comparison"]) == {"1", "2"}
    assert all(set(reports) == {"warm_start", "final", "lambda0"} for reports in end_report["reports"].values())
    assert (tmp_path / "scaling.png").stat().st_size > 10_000
    for extra, name in [([], "final"), (["--checkpoint", "2"], "step_2")]:
        out = subprocess.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--num_samples",
                              "4", "--compilation_cache", str(tmp_path / "xla"), *extra], capture_output=True,
                             text=True, timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr[-2000:]
        assert list((tmp_path / "xla").glob("jit_rollout_step-*")), "the engine's program is not in --compilation_cache"
        assert "read only" not in out.stderr and "PyTorch was not found" not in out.stderr  # no advice noise
        evaluation = json.loads((tmp_path / "eval" / name / "eval.json").read_text())
        rep = evaluation["reports"]["2"][name]
        model = tmp_path / ("final" if name == "final" else "checkpoints/2")  # what it is about, in the file
        export = None if extra else {"export_id": end_report["policies"]["final"]["export_id"], "step": 4}
        evaluated = {k: v for k, v in evaluation["evaluated"].items() if k != "settings"}  # checked below
        assert evaluated == {"model": str(model), "data": None, "data_split": None, "data_subset": None,
                             "export": export, "model_from_out": os.path.relpath(model, tmp_path / "eval" / name)}
        assert rep["num_problems"] == 64 and rep["ns"] == [1, 2, 4]
        assert rep["grading"] == {"timeouts": 0, "errors": 0}  # comparisons the grader could not decide
        assert set(rep["accuracy"]) == {"majority", "best_of_n", "weighted"}
        assert "report:" in out.stdout
        # The run's training temperature (digit_smoke: 2.0; not its eval_temperature) scatters the samples.
        assert rep["temperature"] == 2.0 and rep["pass@k"]["4"] > rep["pass@1"] + 0.05
        samples = [json.loads(line) for line in (tmp_path / "eval" / name / "eval_samples.jsonl").open()]
        assert len(samples) == 64 * 4 and {s["sample"] for s in samples} == {0, 1, 2, 3}
        assert np.mean([s["correct"] for s in samples]) == pytest.approx(rep["pass@1"])
        assert all(0 <= s["p_yes"] <= 1 and 1 <= s["tokens"] <= 6 for s in samples)
        assert all(s["reward"] == float(s["correct"]) for s in samples)  # the math reward: 1 right, 0 wrong
    # A reward reading trainer_state sees the steps behind what is evaluated (it saw 0 of 0 in every evaluation,
    # review 2026-12-06): 2 of the run's 4 at --checkpoint 2, 0 for the warm start
    (tmp_path / "recorder.py").write_text(
        "import os\n"
        "def graded(completions, trainer_state, **columns):\n"
        "    with open(os.environ['RECORD'], 'a') as f:\n"
        "        f.write(f'{trainer_state.global_step},{trainer_state.max_steps}\\n')\n"
        "    return [0.0] * len(completions)\n")
    for extra, seen in ((["--checkpoint", "2"], "2,4"), (["--policy", "warm_start"], "0,4")):
        record = tmp_path / f"seen_{seen[0]}.txt"
        out = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--num_samples",
                              "2", "--reward", "recorder:graded", "--out", str(tmp_path / f"by_recorder_{seen[0]}"),
                              *extra], timeout=300, cwd=REPO,
                             env={**os.environ, "RECORD": str(record),
                                  "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
        assert out.returncode == 0, out.stderr[-2000:]
        assert set(record.read_text().split()) == {seen}
    # Another K, length (or temperature, seed, strategy...) into the same default --out would replace that report:
    # refused before sampling, by the settings eval.json records
    kept = (tmp_path / "eval" / "final" / "eval.json").read_text()
    settings = json.loads(kept)["evaluated"]["settings"]
    assert (settings["num_samples"], settings["temperature"], settings["max_new_tokens"]) == (4, 2.0, 6)
    assert settings["dtype"] == "float32"  # the run's precision, resolved (it was the flag: null, review)
    final = tmp_path / "eval" / "final"
    for flag, value, was, now in (("--num_samples", "2", "num_samples=4", "num_samples=2"),
                                  ("--max_new_tokens", "1", "max_new_tokens=6", "max_new_tokens=1")):
        other = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--num_samples",
                                "4", flag, value], timeout=300, cwd=REPO)
        assert other.returncode == 2 and other.stderr.strip().endswith(
            f"{final} holds an evaluation with {was} (this one: {now}), which it would replace; pass --out to keep "
            f"both, or remove {final} to replace it"), other.stderr[-2000:]
    assert (final / "eval.json").read_text() == kept
    # The lambda = 0 baseline, a run of its own in the workdir: --policy lambda0 evaluates its final policy as the
    # run's report did (same pool) and names it so; its default --out is its own eval/ (nothing could evaluate it:
    # --policy named no such directory, and --workdir on it refused its own default --out)
    out = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--policy", "lambda0",
                          "--num_samples", "4", "--temperature", "2"], timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    baseline = json.loads((tmp_path / "baseline_lambda0" / "eval" / "lambda0" / "eval.json").read_text())
    assert baseline["evaluated"]["model"] == str(tmp_path / "baseline_lambda0" / "final")
    assert baseline["reports"]["2"]["lambda0"]["pass@1"] == end_report["reports"]["2"]["lambda0"]["pass@1"]
    out = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--policy", "lambda0",
                          "--checkpoint", "2", "--num_samples", "2"], timeout=300,
                         cwd=REPO)  # its own step 2
    assert out.returncode == 0, out.stderr[-2000:]
    step = json.loads((tmp_path / "baseline_lambda0" / "eval" / "lambda0_step_2" / "eval.json").read_text())
    assert step["evaluated"]["model"] == str(tmp_path / "baseline_lambda0" / "checkpoints" / "2")
    assert set(step["reports"]["2"]) == {"lambda0_step_2"}
    # Moved elsewhere (another disk, another machine), the baseline's config still names the old warm_start/: its
    # steps are read with the one beside it (they failed: "no usable tokenizer for this run's model at ...").
    moved = tmp_path.with_name(tmp_path.name + "_moved")
    tmp_path.rename(moved)
    try:
        out = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(moved), "--policy", "lambda0",
                              "--checkpoint", "2", "--num_samples", "2", "--out", str(moved.parent / "moved_eval")],
                             timeout=300, cwd=REPO)
    finally:
        moved.rename(tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    again = json.loads((moved.parent / "moved_eval" / "eval.json").read_text())["reports"]["2"]["lambda0_step_2"]
    assert again["pass@1"] == step["reports"]["2"]["lambda0_step_2"]["pass@1"]
    typo = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--policy", "fina"],
                          timeout=300, cwd=REPO)
    assert typo.returncode == 2 and typo.stderr.strip().endswith(
        f"--policy fina: {tmp_path} holds no exported policy fina/ (it has final, warm_start, lambda0); pass one of "
        "those, or --checkpoint N for a saved step"), typo.stderr[-2000:]
    # Any HF directory: --model_dir with a data file of problems and answers, decoded 8 rows at a time. Without the
    # export's rlvjax_sampling.json (any other model), rendered with the Qwen2.5-Math instruction, the prompts hold
    # letters the arithmetic tokenizer would drop: refused.
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"prompt": s["prompt"], "answer": s["gold"]}) + "\n"
                            for s in samples if s["sample"] == 0))
    model_dir = ["--model_dir", str(tmp_path / "final"), "--data", str(data)]
    trained = (tmp_path / "final" / run_sampling.FILE).read_text()
    (tmp_path / "final" / run_sampling.FILE).unlink()
    wrapped = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", *model_dir, "--out", str(tmp_path / "wrapped")],
                             timeout=300, cwd=REPO)
    (tmp_path / "final" / run_sampling.FILE).write_text(trained)
    assert wrapped.returncode == 2 and "64 --data prompt(s) hold characters the tokenizer cannot encode" in \
        wrapped.stderr and not (tmp_path / "wrapped").exists()
    model_dir.append("--raw_prompts")  # the digit task's prompts, already in the policy's format
    # The stored verify threshold is on the training reward's scale; a directory is graded by the math reward at its
    # own (a +-1 reward's threshold of 0 made every completion correct).
    stored = json.loads((tmp_path / "final" / verifier.CONFIG_FILE).read_text())
    (tmp_path / "final" / verifier.CONFIG_FILE).write_text(json.dumps({**stored, "threshold": 0.0}))
    hf = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", *model_dir, "--num_samples", "4",
                         "--max_new_tokens", "6", "--temperature", "2", "--batch_size", "8", "--out",
                         str(tmp_path / "hf")], timeout=300, cwd=REPO)
    assert hf.returncode == 0, hf.stderr[-2000:]
    assert "memory plan per device" in hf.stdout and "8 sampling rows" in hf.stdout
    # The particle strategy's search holds problems x particles whole rows at once: planned, and refused up front.
    search = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", *model_dir, "--num_samples", "4",
                             "--max_new_tokens", "6", "--strategy", "particle", "--particles", "4,1000000",
                             "--step_delimiter", "=", "--out", str(tmp_path / "search")], timeout=300, cwd=REPO)
    refusal = search.stderr.strip()
    assert search.returncode == 2 and "per device (particles phase)" in refusal and refusal.endswith(
        "lower --particles (the largest now 1000000: 32000000 rows at once) or --max_new_tokens (now 6)"), refusal
    assert "particle rows" in search.stdout and not (tmp_path / "search").exists()
    evaluation = json.loads((tmp_path / "hf" / "eval.json").read_text())
    # an rlvjax export records the temperature its run trained at (rlvjax_sampling.json): T = 2 is that one
    assert evaluation["train_temperature"] == 2.0 and "T = 2 (training, headline temperature)" in hf.stdout
    assert evaluation["evaluated"]["model"] == str(tmp_path / "final") and evaluation["evaluated"]["data"] == str(data)
    rep = evaluation["reports"]["2"]["final"]
    hf_samples = [json.loads(line) for line in (tmp_path / "hf" / "eval_samples.jsonl").open()]
    assert rep["num_problems"] == 64 and len(hf_samples) == 256
    assert np.mean([s["correct"] for s in hf_samples]) == pytest.approx(rep["pass@1"])
    assert rep["pass@1"] < 1 and all(s["reward"] == float(s["correct"]) for s in hf_samples)
    # Three devices (rows split over the data axis, each refilling its own) sample the same pool: the 64 problems
    # are cut into batches of 32 whatever the mesh (batches of 30 on 3 devices drew other keys for problems 30-63).
    two = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", *model_dir, "--num_samples", "4",
                          "--max_new_tokens", "6", "--temperature", "2", "--out", str(tmp_path / "hf2")],
                         timeout=300, cwd=REPO,
                         env={**os.environ, "XLA_FLAGS": xla_flags(3)})
    assert two.returncode == 0, two.stderr[-2000:]
    assert "mesh data=3" in two.stdout
    two_samples = [json.loads(line) for line in (tmp_path / "hf2" / "eval_samples.jsonl").open()]
    assert [(s["prompt"], s["completion"]) for s in two_samples] == [(s["prompt"], s["completion"]) for s in hf_samples]
    np.testing.assert_allclose([s["p_yes"] for s in two_samples], [s["p_yes"] for s in hf_samples], atol=1e-4)
    # A pool that cannot fit is refused by the plan, naming the knob, before anything is compiled or written.
    huge = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", *model_dir, "--num_samples", str(2 ** 30),
                           "--out", str(tmp_path / "huge")], timeout=300, cwd=REPO)
    assert huge.returncode == 2 and "lower --num_samples to" in huge.stderr and not (tmp_path / "huge").exists()
    # --temperature overrides it: near-greedy, the 4 samples of a problem are one answer, so pass@4 = pass@1.
    cold = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--num_samples", "4",
                           "--temperature", "0.01", "--out", str(tmp_path / "cold")], timeout=300, cwd=REPO)
    assert cold.returncode == 0, cold.stderr[-2000:]
    rep = json.loads((tmp_path / "cold" / "eval.json").read_text())["reports"]["0.01"]["final"]
    assert rep["temperature"] == 0.01 and rep["pass@k"]["4"] == pytest.approx(rep["pass@1"], abs=0.02)
    # --strategy adaptive / length price the strategy on the same pool: eval.json's points are the replays of
    # rlvjax.strategies on what eval_samples.jsonl holds, beside the fixed-N curves, and compute.png is drawn.
    from rlvjax.strategies import adaptive, length

    tokenizer = experiment.build_policy(config.model, config.verifier.question)[1]
    verify_suffix = verifier.tokens(tokenizer, config.verifier.question).suffix
    for strategy, extra in (("adaptive", ["--delta", "0.3,0.0", "--min_samples", "1", "--round_size", "1"]),
                            ("length", ["--budgets", "2,4,6", "--threshold", "0.2"])):
        out = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--num_samples",
                              "4", "--strategy", strategy, *extra, "--out", str(tmp_path / strategy)],
                             timeout=300, cwd=REPO)
        assert out.returncode == 0, out.stderr[-2000:]
        assert (tmp_path / strategy / "compute.png").stat().st_size > 10_000 and "fixed-N weighted at N = 4" in out.stdout
        rep = json.loads((tmp_path / strategy / "eval.json").read_text())["reports"]["2"]["final"]
        block = rep["strategy"]
        assert block["fixed"]["weighted"] == [rep["accuracy"]["weighted"][str(n)] for n in (1, 2, 4)]
        rows = [json.loads(line) for line in (tmp_path / strategy / "eval_samples.jsonl").open()]
        grid = lambda key: np.array([[r[key] for r in rows if r["problem"] == i] for i in range(64)])  # noqa: E731
        classes = np.stack([testtime.answer_classes(list(a)) for a in grid("answer")])
        args = classes, grid("score"), grid("correct").astype(float), grid("tokens")
        for point in block["points"]:
            if strategy == "adaptive":  # the mean of its replays in several sample orders, the pool's own first
                rule = adaptive.AdaptiveRule(**point["rule"])
                runs = [r.summary() for r in adaptive.replays(*args, rule, seed=0)]
                assert runs[0] == adaptive.simulate(*args, rule, seed=0).summary() and point["orders"] == len(runs) > 1
                expected = {key: np.mean([r[key] for r in runs]) for key in runs[0]}
                assert point["accuracy_sd_over_orders"] == pytest.approx(np.std([r["accuracy"] for r in runs], ddof=1))
            else:
                rule = length.LengthRule(**{**point["rule"], "budgets": tuple(point["rule"]["budgets"])})
                expected = length.replay(*args, grid("finished"), rule).summary()
            assert point["accuracy"] == pytest.approx(expected["accuracy"])
            assert point["tokens_per_problem"] == pytest.approx(expected["tokens_per_problem"])
            # the verifier's tokens: each pass reads the run's verify prompt after the sample's last token
            assert point["verifier_tokens_per_problem"] == pytest.approx(
                expected["verifier_passes_per_problem"] * (1 + len(verify_suffix)))
        assert len(block["points"]) == (2 if strategy == "adaptive" else 3)  # length: N = 1, 2, 4
    # An --out that cannot be written is refused before any sampling (and nothing is created).
    (tmp_path / "a_file").write_text("x")
    unwritable = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--workdir", str(tmp_path), "--num_samples",
                                 "4", "--out", str(tmp_path / "a_file" / "eval")], timeout=300, cwd=REPO)
    assert unwritable.returncode == 2 and f"{tmp_path / 'a_file'} is a file, not a directory; choose another --out" \
        in unwritable.stderr
    # Going back to step 2 (--checkpoint 2 with num_steps = 2): the final policy and report of step 4 follow its
    # checkpoint aside (they passed for the run's: "already reports these policies", step 4's weights in final/),
    # and the baseline goes back alike. Each export and the report name the step they hold.
    from rlvjax.model.hf import export_stamp

    assert end_report["policies"]["final"]["step"] == 4 and end_report["policies"]["warm_start"]["step"] == 0
    step4 = export_stamp(tmp_path / "final")["rlvjax_export_id"]
    shorter = dataclasses.replace(config, run=dataclasses.replace(config.run, num_steps=2))
    with pytest.raises(ValueError, match=r"RunConfig.num_steps=2 is below step 4, which this resume restores; keep "
                                         r"num_steps >= 4, or go back with --checkpoint 2"):
        train.run_and_report(shorter, tmp_path, resume=True)
    # Evaluations of step 4's final policy and of checkpoint 4 go with them; step 2's and a custom folder stay.
    (tmp_path / "eval" / "step_4").mkdir()
    (tmp_path / "eval" / "step_4" / "eval.json").write_text(json.dumps({"evaluated": {
        "model": str(tmp_path / "checkpoints" / "4")}}))
    (tmp_path / "eval" / "custom").mkdir()
    train.run_and_report(shorter, tmp_path, resume=True, resume_step=2)
    aside = tmp_path / "checkpoints_set_aside" / "outputs_of_step_4"
    assert export_stamp(aside / "final")["rlvjax_export_id"] == step4
    assert sorted(p.name for p in (aside / "eval").iterdir()) == ["final", "step_4"]
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["custom", "step_2"]
    assert json.loads((aside / "eval.json").read_text()) == end_report
    back = json.loads((tmp_path / "eval.json").read_text())
    assert back["policies"]["final"]["step"] == back["policies"]["lambda0"]["step"] == 2
    assert back["policies"]["final"]["export_id"] == export_stamp(tmp_path / "final")["rlvjax_export_id"] != step4
    steps = lambda run: sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())  # noqa: E731
    assert steps(tmp_path) == steps(tmp_path / "baseline_lambda0") == [2]


def test_every_evaluate_flag_is_a_recorded_setting_or_says_what_is_evaluated_and_where():
    """eval.json's ``evaluated.settings`` decide whether a later evaluation may replace an earlier one in a default
    folder: a flag that changes what is sampled or reported and is missing from them lets it (the API's
    ``RLVTrainer.evaluate`` records the same keys, through ``eval_settings``); the strategy's flags are there as the
    rules they make."""
    import inspect

    from rlvjax import eval_flags, eval_out
    from rlvjax.strategies.flags import STRATEGY_FLAGS

    defined = set(re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', inspect.getsource(eval_flags)))
    settings = eval_out.eval_settings(num_samples=2, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=2, seed=0,
                                      strategy="fixed",
                                      conventions=testtime.Conventions(), rules=[])
    strategy = {flag for flags in STRATEGY_FLAGS.values() for flag in flags}
    assert len(defined) > 30 and defined == (set(settings) - {"rules"}) | set(eval_out.NOT_SETTINGS) | strategy


def test_an_older_report_is_compared_with_what_it_ran_with(tmp_path):
    """An eval.json from before top-p and top-k were recorded: a run's own evaluation sampled at the run's (a rerun of
    the same settings was refused as "top_p=1.0"), an export's at 1 and 0; what it recorded is compared as it is."""
    from rlvjax import eval_out

    settings = eval_out.eval_settings(num_samples=4, temperature=1.0, top_p=0.95, top_k=20, max_new_tokens=8, seed=0,
                                      conventions=testtime.Conventions(), strategy="fixed", rules=[])
    older = {k: v for k, v in settings.items() if k not in ("top_p", "top_k")}
    (tmp_path / "eval.json").write_text(json.dumps({"evaluated": {"settings": older}}))
    eval_out.check_same_settings(tmp_path, settings, ran_with={"top_p": 0.95, "top_k": 20})
    with pytest.raises(ValueError, match=r"holds an evaluation with top_p=1.0, top_k=0 \(this one: top_p=0.95, "
                                         r"top_k=20\), which it would replace"):
        eval_out.check_same_settings(tmp_path, settings)  # an export's, sampled at 1 and 0
    (tmp_path / "eval.json").write_text(json.dumps({"evaluated": {"settings": {**settings, "top_k": 5}}}))
    with pytest.raises(ValueError, match=r"with top_k=5 \(this one: top_k=20\)"):
        eval_out.check_same_settings(tmp_path, settings, ran_with={"top_p": 0.95, "top_k": 20})
    # dtype was recorded as the flag (null without --dtype): null is the default precision it resolved to, so the
    # same evaluation with --dtype float32 spelled out is no other evaluation, and a bfloat16 one is
    assert settings["dtype"] == "float32" and eval_out.precision("float32", "bfloat16") == "float32, compute bfloat16"
    (tmp_path / "eval.json").write_text(json.dumps({"evaluated": {"settings": {**settings, "dtype": None}}}))
    eval_out.check_same_settings(tmp_path, settings, ran_with={"dtype": "float32"})
    with pytest.raises(ValueError, match=r"with dtype='float32' \(this one: dtype='bfloat16'\)"):
        eval_out.check_same_settings(tmp_path, {**settings, "dtype": "bfloat16"}, ran_with={"dtype": "float32"})


def test_evaluate_grades_with_the_reward_it_is_given(tmp_path):
    """``--reward``: a model graded by a function of one's own, which reads the rows' columns (``--model_dir`` graded
    with the math reward only, which needs an answer in each row: an export of a run trained on another reward could
    not be evaluated as it was trained)."""
    (tmp_path / "by_column.py").write_text("def judged(prompts, completions, verdict, **columns):\n"
                                           "    return [1.0 if v == 'right' else -1.0 for v in verdict]\n")
    verdicts = ["right", "wrong", "right", "right"]
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1", "verdict": v}) + "\n" for i, v in enumerate(verdicts)))
    model, tokenizer = experiment.build_policy(experiment.ModelSpec(hidden_size=32, intermediate_size=64,
                                                                    num_layers=1, num_heads=2, num_kv_heads=1))
    save_hf(model, tokenizer, tmp_path / "model")
    out = forkserver.run([sys.executable, "-m", "rlvjax.evaluate", "--model_dir", str(tmp_path / "model"), "--data",
                          str(data), "--raw_prompts", "--reward", "by_column:judged", "--num_samples", "2",
                          "--max_new_tokens", "3", "--out", str(tmp_path / "eval")],
                         timeout=300, cwd=REPO, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    evaluation = json.loads((tmp_path / "eval" / "eval.json").read_text())
    rep = next(iter(next(iter(evaluation["reports"].values())).values()))
    assert rep["pass@1"] == 0.75 and rep["pass@k"]["2"] == 0.75  # +1 >= 0.5 on 3 of the 4 rows, -1 on the other
    samples = [json.loads(line) for line in (tmp_path / "eval" / "eval_samples.jsonl").open()]
    assert [(s["correct"], s["reward"]) for s in samples] == [(v == "right", 1.0 if v == "right" else -1.0)
                                                              for v in verdicts for _ in range(2)]
    assert evaluation["evaluated"]["settings"]["reward"] == "by_column:judged"


SLOW_EVALUATION = """
import atexit, os, runpy, signal, sys, time
from rlvjax import reports, testtime
phase = sys.argv.pop(1)
module, name = (testtime, "pool_classes") if phase == "sampling" else (reports, "write_samples")
real = getattr(module, name)
def slow(*args, **kwargs):
    out = real(*args, **kwargs)
    print("reached", flush=True)
    time.sleep(120)
if phase == "finished":  # the notice comes as the process shuts down, its report written
    atexit.register(lambda: (print("reached", flush=True), os.kill(os.getpid(), signal.SIGTERM), time.sleep(5)))
else:
    setattr(module, name, slow)
sys.argv = ["rlvjax.evaluate", *sys.argv[1:]]
runpy.run_module("rlvjax.evaluate", run_name="__main__")
"""


@pytest.mark.parametrize("phase", ["sampling", "writing", "finished"])
def test_a_sigterm_while_evaluate_writes_leaves_nothing_and_says_so(tmp_path, phase):
    """A scheduler's SIGTERM while the pool is sampled and graded: one line, exit 130, at once (raising inside JAX
    segfaulted at exit); while the report is written: the staged files are removed and the folder it made too, one
    line, exit 130, as Ctrl-C. It ended with 143 and no word, and left a hidden partial eval_samples.jsonl and
    scaling.png (review 2026-12-06). Once the report is written: exit 0, saying so (the handler the evaluation put
    back as it ended was the default one: 143, no word, review 2026-12-07)."""
    import signal

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{i}+1", "answer": str(i + 1)}) + "\n" for i in range(2)))
    model, tokenizer = experiment.build_policy(experiment.ModelSpec(hidden_size=32, intermediate_size=64,
                                                                    num_layers=1, num_heads=2, num_kv_heads=1))
    save_hf(model, tokenizer, tmp_path / "model")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_EVALUATION, phase, "--model_dir", str(tmp_path / "model"), "--data",
                             str(data), "--raw_prompts", "--num_samples", "2", "--max_new_tokens", "3", "--out",
                             str(tmp_path / "eval" / "m")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    for line in proc.stdout:  # the memory plan first
        if line.strip() == "reached":
            break
    if phase == "writing":
        assert [p.name for p in (tmp_path / "eval" / "m").iterdir() if p.name.startswith(".eval_samples.")]
    if phase == "finished":
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and err.splitlines()[-1] == ("rlvjax.evaluate: SIGTERM after the command had "
                                                                 "finished; its output is complete"), err[-2000:]
        assert (tmp_path / "eval" / "m" / "eval.json").exists()
        return
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    said = ("rlvjax.evaluate: SIGTERM while it evaluated; nothing was written" if phase == "sampling" else
            "rlvjax.evaluate: interrupted")
    assert [line for line in err.splitlines() if line.startswith("rlvjax.evaluate")] == [said], err[-2000:]
    assert not (tmp_path / "eval").exists()


def test_a_rollback_moves_older_evaluations_of_later_steps_by_their_folder_names(tmp_path):
    """An eval.json written before evaluations named their model (2026-12-05) was never moved by a rollback: after
    ``--resume --checkpoint 2``, its reports on the set-aside step 4 still read as the run's."""
    from rlvjax import outputs

    for name in ("final", "final-math500", "step_4", "step_4-math500", "step_2", "warm_start", "custom", "step_x"):
        (tmp_path / "eval" / name).mkdir(parents=True)
        (tmp_path / "eval" / name / "eval.json").write_text(json.dumps({"reports": {}}))
    moves = lambda final_moves: sorted(p.name for p in (tmp_path / "eval").iterdir()  # noqa: E731
                                       if outputs._evaluates(p, tmp_path, 2, final_moves=final_moves))
    assert moves(True) == ["final", "final-math500", "step_4", "step_4-math500"]
    assert moves(False) == ["step_4", "step_4-math500"]


def test_evaluate_out_never_replaces_a_runs_own_report(tmp_path):
    from rlvjax import eval_out

    run = tmp_path / "lambda_1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.gin").write_text("")
    with pytest.raises(ValueError, match=f"--out {run} is a training run: its eval.json is the run's own end-of-run "
                                         f"report; write elsewhere, e.g. {run / 'eval' / 'custom'}"):
        eval_out.check_out(run)
    with pytest.raises(ValueError, match=f"is inside {run / 'checkpoints'}, which the run in {run} manages"):
        eval_out.check_out(run / "checkpoints" / "x")
    with pytest.raises(ValueError, match=f"--out {run / 'final'} is {run / 'final'}, which the run in {run} manages"):
        eval_out.check_out(run / "final")  # not "inside" itself (review)
    eval_out.check_out(run / "eval" / "other_data")  # where evaluate --workdir writes by default
    eval_out.check_out(tmp_path / "elsewhere")
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.gin"]


def test_a_baseline_finds_the_warm_start_beside_it_where_its_config_names_another(tmp_path):
    """A baseline trained by the 2026-12-02 code named its run's warm start relative to the launch directory, and
    any baseline names it by the absolute path it had before its workdir moved."""
    run = tmp_path / "moved_run"
    (run / "warm_start").mkdir(parents=True)
    baseline = run / outputs.BASELINE
    stored = lambda hf_dir: Config(model=dataclasses.replace(Config().model, hf_dir=hf_dir))  # noqa: E731
    for name in ("runs/grpo/warm_start", str(tmp_path / "gone" / "warm_start")):
        assert outputs.moved_base(baseline, stored(name)).model.hf_dir == str(run / "warm_start")
    (tmp_path / "original" / "warm_start").mkdir(parents=True)  # still there (a copied workdir): kept
    kept = str(tmp_path / "original" / "warm_start")
    assert outputs.moved_base(baseline, stored(kept)).model.hf_dir == kept
    assert outputs.moved_base(run, stored("runs/grpo/warm_start")).model.hf_dir == "runs/grpo/warm_start"  # no baseline
    assert outputs.moved_base(baseline, stored("Qwen/Qwen2.5-Math-1.5B")).model.hf_dir == "Qwen/Qwen2.5-Math-1.5B"


def test_an_evaluation_whose_model_was_replaced_meanwhile_writes_nothing(tmp_path):
    """A training run resumed with --checkpoint N re-exported final/ (or retrained checkpoints/N) while an
    evaluation of it was sampling: its eval.json named the new export, the weights it had not evaluated. Two
    evaluations of different models into one default --out both wrote, the later silently over the other."""
    from rlvjax import eval_out, reports

    model = tmp_path / "final"
    model.mkdir()
    loaded = eval_out.snapshot(model)
    eval_out.check_unchanged(model, loaded)  # still the same folder
    fresh = tmp_path / ".final.new"
    fresh.mkdir()
    model.rename(tmp_path / "aside")  # what a rollback does to the old export, before the new one moves in
    fresh.rename(model)
    with pytest.raises(ValueError, match=re.escape(f"{model} was replaced while it was evaluated (a training run "
                                                   "re-exported it or went back past it); nothing was written: "
                                                   "evaluate it again")):
        eval_out.check_unchanged(model, loaded)
    # gone: an export set aside by a rollback (it wrote the old weights' report as the run's, review 2026-12-06)
    model.rename(tmp_path / "aside_too")
    with pytest.raises(ValueError, match=re.escape(f"{model} was set aside while it was evaluated (a training run "
                                                   "re-exported it or went back past it); nothing was written")):
        eval_out.check_unchanged(model, loaded)
    # a checkpoint step: deleted (a step the run no longer keeps), what was there is what was evaluated; moved to
    # checkpoints_set_aside/ by a rollback (which retrains it), refused
    step = tmp_path / "run" / "checkpoints" / "4"
    step.mkdir(parents=True)
    loaded = eval_out.snapshot(step)
    shutil.rmtree(step)
    eval_out.check_unchanged(step, loaded)
    step.mkdir()
    loaded = eval_out.snapshot(step)
    (tmp_path / "run" / "checkpoints_set_aside").mkdir()
    step.rename(tmp_path / "run" / "checkpoints_set_aside" / "4")
    with pytest.raises(ValueError, match=re.escape(f"{step} was set aside while it was evaluated")):
        eval_out.check_unchanged(step, loaded)
    # The checks run under the folder's report lock, just before the files move in: a refusal writes nothing.
    out = tmp_path / "eval" / "final"
    yes = np.log(np.array([[0.9, 0.2], [0.7, 0.8]]))
    pool = {"answers": np.array([["5", "4"], ["3", "3"]], dtype=object), "correct": np.array([[1, 0], [1, 1]], bool),
            "yes_logp": yes, "no_logp": np.log(1 - np.exp(yes)), "lengths": np.full((2, 2), 3)}
    evaluation = {**assemble({"1": {"m": report(pool, num_subsets=10)}}, {}, train_temperature=1.0,
                             headline_temperature=1.0), "evaluated": {"model": str(tmp_path / "other")}}
    reports.write_report(evaluation, out, check=lambda: None)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="holds the evaluation of another model"):
        reports.write_report({**evaluation, "evaluated": {"model": str(model)}}, out,
                             check=lambda: eval_out.check_same_model(out, model))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staged file left either

    def refuse():
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):  # a refused report into a new folder leaves no folder
        reports.write_report(evaluation, tmp_path / "new" / "final", check=refuse)
    assert not (tmp_path / "new").exists()
