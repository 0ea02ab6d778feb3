"""The Python API, modelled on TRL's ``GRPOTrainer``: bring your own model, data, reward and verify question.

    trainer = rlvjax.RLVTrainer(model="Qwen/Qwen2.5-Math-1.5B", reward_funcs=my_reward,
                                train_dataset="train.jsonl", eval_dataset="test.jsonl",
                                args=rlvjax.RLVConfig(output_dir="runs/mine"))
    trainer.train()
    report = trainer.evaluate(num_samples=16)
    trainer.save_model("runs/mine/export")

It builds one :class:`rlvjax.config.Config` and runs the same ``train`` as ``python -m rlvjax.train``; the run's
``config.gin`` reproduces it from the command line (reward functions are named by ``module:function``, in-memory
datasets are written to ``OUTPUT_DIR/data/``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from rlvjax.config import Config, check_local, written_values
from rlvjax.data import sources, tasks
from rlvjax.fieldtypes import matches
from rlvjax.rewards import registry
from rlvjax.rl import advantages
from rlvjax.rlv_config import EVAL_FIELDS, FIELDS, RLVConfig


class RLVTrainer:
    """RL^V training of one model as policy and verifier.

    ``model``: an HF directory or hub id (Qwen2 / Qwen3 / Llama / Mistral, safetensors), or None for the built-in tiny
    Qwen2-architecture model with the arithmetic tokenizer (the CPU quickstart). ``reward_funcs``: one function or a
    list, TRL's contract ``f(prompts, completions, **columns) -> list[float]`` (each gets every dataset column), or
    registered names ("math": the last ``\\boxed{}`` against a ``gold`` / ``answer`` / ``solution`` column); None
    (the default): ``config.task.rewards``, "math" unless the config names others. ``train_dataset`` /
    ``eval_dataset``: a file path or datasets id, a ``datasets.Dataset``, or a list of dicts, each row with a
    ``prompt`` (text, or chat messages) and whatever columns the rewards read. Every eval row given is evaluated;
    without ``eval_dataset`` the evals read ``config.task.eval_file`` when it names one (its first
    ``TaskSpec.num_eval`` rows, as the CLI reads it).
    """

    def __init__(self, model: str | None = None, reward_funcs: Callable | str | Sequence[Callable | str] | None = None,
                 train_dataset: Any = None, eval_dataset: Any = None, *, args: RLVConfig | None = None):
        if isinstance(train_dataset, RLVConfig) or isinstance(eval_dataset, RLVConfig):  # TRL's positional order
            raise ValueError("pass args= by keyword: RLVTrainer(model, reward_funcs, train_dataset, eval_dataset, "
                             "args=RLVConfig(...)) (TRL's third positional is args, rlvjax's train_dataset)")
        if args is None:
            raise ValueError("args= is needed: RLVTrainer(..., args=RLVConfig(output_dir='runs/mine')), the run's "
                             "directory at least")
        if not isinstance(args, RLVConfig):
            raise ValueError(f"args must be an rlvjax.RLVConfig, got {type(args).__name__}")
        if reward_funcs is None:  # the config's own (TaskSpec.rewards: "math" unless it names others)
            reward_funcs = list(args.config.task.rewards)
        if not reward_funcs:
            raise ValueError(f"reward_funcs={reward_funcs!r}: pass a reward function, a list of them, or a registered "
                             "name such as 'math'")
        if model is not None and not isinstance(model, (str, os.PathLike)):
            raise ValueError(f"model must be an HF directory or hub id (a str or Path), not a {type(model).__name__}; "
                             "save a loaded model with save_pretrained (or rlvjax.save_hf) and pass its directory")
        model = None if model is None else os.fspath(model)
        single = callable(reward_funcs) or isinstance(reward_funcs, str)
        if not single and not isinstance(reward_funcs, (list, tuple)):
            raise ValueError(f"reward_funcs={reward_funcs!r}: pass a reward function, a registered name such as "
                             "'math', or a list of them")
        funcs = [reward_funcs] if single else list(reward_funcs)
        for f in funcs:
            if not (callable(f) or isinstance(f, str)):
                raise ValueError(f"reward_funcs holds {f!r}, neither a function nor a registered name; pass functions "
                                 "f(prompts, completions, **columns) -> list[float], or names such as 'math'")
        functions = [registry.resolve(f, "reward_funcs") if isinstance(f, str) else f for f in funcs]
        names = [f if isinstance(f, str) else registry.name_of(f) for f in funcs]
        for i, (name, fn) in enumerate(zip(names, functions)):
            if name is None:  # runs here; the written config cannot name it for the command line
                names[i] = f"{getattr(fn, '__module__', None)}:{getattr(fn, '__qualname__', type(fn).__name__)}"
                logging.getLogger(__name__).warning(
                    "reward function %s is not importable from another process (a lambda, a nested function, a bound "
                    "method or one defined in __main__): this run uses it, but its config.gin cannot reproduce the "
                    "run from the command line; define it at the top level of a module",
                    names[i])
        for name in names:
            module = registry.known_only_here(name)  # registered by the user's module, which another process lacks
            if module:
                logging.getLogger(__name__).warning(
                    "reward %r is registered by %s: a new process (train --resume, evaluate --workdir) knows it only "
                    "once %s is imported; name it by 'module:function' for the written config.gin to reproduce the "
                    "run from the command line", name, module, module)
        self.args, self.config = args, args.to_config(model, names)
        module = advantages.known_only_here(self.config.rl.algorithm)
        if module:
            logging.getLogger(__name__).warning(
                "advantage estimator %r is registered by %s: a new process (train --resume, evaluate, export) knows "
                "it only once %s is imported; pass algorithm='module:function' for the written config.gin to "
                "reproduce the run from the command line", self.config.rl.algorithm, module, module)
        self.given_data = train_dataset is not None  # else ``evaluate`` reads the run's own eval problems
        need_gold = "math" in names
        if train_dataset is None and eval_dataset is not None:
            raise ValueError("eval_dataset without train_dataset: the run would train and evaluate on its task's own "
                             "problems; pass train_dataset= too, or drop eval_dataset")
        given_eval = eval_dataset is not None  # all its rows are evaluated; of the config's own file, num_eval
        if train_dataset is not None and eval_dataset is None:  # the config's own eval file, when it names one
            eval_dataset = self.config.task.eval_file
        in_memory = [d for d in (train_dataset, eval_dataset) if d is not None and not isinstance(d, (str, Path))]
        if train_dataset is not None and not in_memory:  # files: the config names them, as the CLI would
            evals = _records(eval_dataset, "eval_dataset", need_gold, self.config.task) if given_eval else None
            self.config = dataclasses.replace(self.config, task=dataclasses.replace(
                self.config.task, name="file", train_file=os.fspath(train_dataset),
                eval_file=None if eval_dataset is None else os.fspath(eval_dataset),
                num_eval=self.config.task.num_eval if evals is None else len(evals)))
            train_dataset = eval_dataset = None
        self.config = self.config.absolute_paths()  # as the CLI records them: read again from other directories
        self.reward = registry.Rewards.of(self.config, functions)
        self.output_dir = Path(args.output_dir).expanduser().absolute()  # as the data paths: fixed here, not per call
        if train_dataset is None:
            if self.config.task.name == "file" and self.config.task.train_file is None:
                raise ValueError("no train_dataset, and the config's task is 'file' without TaskSpec.train_file; "
                                 "pass train_dataset=")
            self.records = None
        else:
            task = self.config.task
            evals = _records(eval_dataset, "eval_dataset", need_gold, task) if eval_dataset is not None else []
            self.records = (_records(train_dataset, "train_dataset", need_gold, task),
                            evals if given_eval else tasks.first_eval_rows(evals, task))

    def train(self, resume: bool = False, resume_step: int | None = None) -> list[dict]:
        """Train (the lambda = 0 baseline too when ``RunConfig.baseline``), then write the end-of-run report
        (``output_dir/eval.json``) when ``RunConfig.final_eval_samples`` asks for one, as the CLI does; returns the
        logged metrics per step. ``resume=True`` continues the run in ``output_dir`` from its latest checkpoint (or
        from ``resume_step``'s, the later ones set aside, as the CLI's ``--checkpoint``), on its own problems when
        this trainer was built without datasets (it put in the built-in task)."""
        from rlvjax import cli, outputs, train

        if resume_step is not None and not resume:
            raise ValueError(f"resume_step={resume_step} chooses the checkpoint to resume from; pass resume=True "
                             "with it")

        config = self.config
        values = written_values(self.output_dir) if resume and not self.given_data else None
        if values is not None:  # built without datasets: the run's own problems (its task), not the built-in task
            stored = outputs.moved_data(self.output_dir, values)
            config = dataclasses.replace(config, task=dataclasses.replace(
                stored.task, rewards=config.task.rewards, reward_weights=config.task.reward_weights))
        try:
            with contextlib.ExitStack() as hold:  # the run stays locked until its report is written
                history, policies = train.train_with_baseline(config, self.output_dir, resume=resume,
                                                              resume_step=resume_step, reward=self.reward,
                                                              records=self.records, hold=hold)
                train.report_run(config, self.output_dir, policies, reward=self.reward, records=self.records)
        except (cli.Preempted, cli.UserCodeFailed) as e:  # what to do next, in the API's words, not the CLI's
            raise type(e)(str(e).replace("--resume", "train(resume=True)")) from None
        return history

    def evaluate(self, num_samples: int = 16, *, temperature: float | None = None, strategy: str = "fixed",
                 rules: list | None = None, out: str | os.PathLike | None = None) -> dict:
        """Sample ``num_samples`` completions per eval problem from the trained policy (``output_dir/final``),
        score each with the verifier, grade them with the reward, all as the run in ``output_dir`` was trained (its
        stored config: a trainer built later needs no datasets or args but its reward functions); writes eval.json,
        scaling.png and eval_samples.jsonl to ``out``, by default ``output_dir/eval/final`` (where
        ``python -m rlvjax.evaluate --workdir`` writes them; the end-of-run report in ``output_dir`` stays) or, for
        eval rows other than the run's own, ``output_dir/eval/final-eval_dataset-HASH``: a default folder holding an
        evaluation with other settings (``eval_out.eval_settings``) is refused, not replaced. Returns what eval.json
        holds: the report (pass@k, majority, best-of-N and verifier-weighted votes) is
        ``["reports"][temperature_key(T)]["final"]``.
        ``strategy`` ("adaptive", "length" or "particle", with ``rules`` from ``rlvjax.strategies``; None:
        ``strategies.report.default_rules``) adds the report's ``strategy`` block and ``compute.png``, as
        ``evaluate --strategy`` does."""
        import jax
        import jax.numpy as jnp

        from rlvjax import cli, eval_out, evaluate, experiment, memory, parallel, preemption, reports, run_sampling
        from rlvjax.rl import verifier
        from rlvjax.model.hf import load_hf
        from rlvjax.strategies import report as strategy_report
        from rlvjax.strategies.policy import Policy

        reports.check_pool_size(num_samples, "num_samples")
        _check_path("out", out, none=True)
        if not matches(temperature, float | None):  # the config sections' own type check
            raise ValueError(f"temperature={temperature!r} must be a number (or None: the run's training "
                             "temperature)")
        from rlvjax.sampling import MIN_TEMPERATURE

        if temperature is not None and not MIN_TEMPERATURE <= temperature < float("inf"):
            raise ValueError(f"temperature={temperature} must be >= {MIN_TEMPERATURE} and finite: votes need distinct "
                             "samples; pass a positive temperature or None (the run's training temperature)")
        if rules and strategy == "fixed":
            raise ValueError("rules= are a test-time strategy's; pass strategy= ('adaptive', 'length' or 'particle') "
                             "with them, or drop rules")
        final = self.output_dir / "final"
        if not final.is_dir():
            raise FileNotFoundError(f"{final} does not exist: train() first (with RunConfig.export_final = True)")
        if out is not None:
            if not str(os.fspath(out)).strip():  # Path("") is the working directory
                raise ValueError("out='' names no folder; pass the directory for eval.json, e.g. "
                                 f"out='{self.output_dir / 'eval' / 'custom'}'")
            out = Path(os.fspath(out)).expanduser()
            check_local(out, "out")
            eval_out.check_out(out, knob="out=")
            eval_out.check_writable(out, knob="out=")
        config = self._trained_config(final)
        spec = config.model  # in the run's precision, as its end-of-run report and the CLI
        weights = eval_out.snapshot(final)  # a resumed run may re-export final/ while it is sampled
        model, tokenizer = load_hf(final, dtype=jnp.dtype(spec.dtype), compute_dtype=spec.compute_dtype)
        # The run's own eval problems (as ``evaluate --workdir`` reads them), unless this trainer was given data:
        # rendered as the run rendered its own (its export's record, as ``evaluate --data`` renders them)
        own = experiment.build_eval_records(config.task, tokenizer)
        prompt_format = run_sampling.load(final).get("prompt_format", self.config.task.prompt_format)
        records = own if not self.given_data else experiment.build_eval_records(
            dataclasses.replace(self.config.task, prompt_format=prompt_format), tokenizer,
            None if self.records is None else self.records[1])
        if not records:
            raise ValueError("no eval problems: pass eval_dataset= (or a task with TaskSpec.eval_file / num_eval)")
        data = None if _problems(records) == _problems(own) else \
            "eval_dataset:" + hashlib.sha256(_problems(records).encode()).hexdigest()[:12]
        experiment.check_encodable(tokenizer, records, "eval_dataset", fix="evaluate problems the run's tokenizer "
                                   "covers, or remove those rows")
        reward = registry.Rewards.of(config, self.reward.functions)  # the run's weights and label
        reward.check_columns(records, "eval_dataset")  # before minutes of sampling, not after
        reward.probe(records)
        rl = config.rl
        verify = verifier.tokens(tokenizer, config.verifier.question, chat=config.verifier.chat)
        experiment.check_positions(model.config, memory.longest_prompt(tokenizer, [r["prompt"] for r in records]),
                                   rl.max_new_tokens, len(verify.suffix),
                                   knob="max_new_tokens", fix="evaluate shorter prompts")
        if strategy != "fixed":
            rules = rules or strategy_report.default_rules(strategy, num_samples=num_samples,
                                                           max_new_tokens=rl.max_new_tokens)
            strategy_report.check_rules(strategy, rules, num_samples=num_samples, max_new_tokens=rl.max_new_tokens,
                                        tokenizer=tokenizer)
        # other problems than the run's own go beside its report on them, not over it (as evaluate --data)
        default = out is None
        out = out or self.output_dir / "eval" / ("final" if data is None else f"final-{data.replace(':', '-')}")
        # as evaluate --workdir records them: a later evaluation into a default folder must match them
        settings = eval_out.eval_settings(num_samples=num_samples, seed=config.run.seed,
                                          temperature=rl.temperature if temperature is None else temperature,
                                          top_p=rl.top_p, top_k=rl.top_k,
                                          max_new_tokens=rl.max_new_tokens, conventions=config.conventions,
                                          strategy=strategy, rules=rules or [],
                                          dtype=eval_out.precision(spec.dtype, spec.compute_dtype))
        # an older evaluation of the run, where it did not record these (or recorded no --dtype)
        ran_with = {"top_p": rl.top_p, "top_k": rl.top_k, "dtype": settings["dtype"]}
        if default:  # before minutes of sampling
            eval_out.check_same_settings(out, settings, knob="out=", ran_with=ran_with)
        mesh = parallel.make_mesh(config.mesh)
        model = parallel.place_model(model, mesh)  # sharded, not whole on device 0 beside its share
        rep, pool = evaluate.evaluate_policy(model, tokenizer, records, rl, mesh, num_samples=num_samples,
                                             seed=config.run.seed, temperature=temperature,
                                             conventions=config.conventions, verify=config.verifier,
                                             reward=reward)
        t = rep["temperature"]
        if strategy != "fixed":
            policy = Policy.build(model, tokenizer, rl, verify=config.verifier, reward=reward,
                                  conventions=config.conventions, temperature=t)
            rep["strategy"] = strategy_report.evaluate(strategy, rules, rep, pool, policy=policy, records=records,
                                                       seed=config.run.seed)
        evaluation = reports.assemble({reports.temperature_key(t): {"final": rep}}, {},
                                       train_temperature=rl.temperature, headline_temperature=t)
        evaluation["evaluated"] = {**eval_out.evaluated(out, final, data), "settings": settings,  # data None: its own
                                   **({"prompt_format": prompt_format} if data is not None else {})}

        def still_current():  # under the folder's report lock, just before the files move in
            eval_out.check_unchanged(final, weights)
            if default:
                eval_out.check_same_settings(out, settings, knob="out=", ran_with=ran_with)

        if jax.process_index() == 0:  # every process evaluated its share; one writes
            # a scheduler's SIGTERM removes the staged files, as Ctrl-C does, and raises where the script is (as in
            # train()); left to the default it ended the process with hidden partial files in the folder
            with preemption.interrupt_on_sigterm(cli.Preempted("SIGTERM while the evaluation's report was written: "
                                                               f"{out} is as it was")):
                reports.write_report(evaluation, out, samples=(pool, records, config.conventions),
                                     check=still_current)
        return reports.as_json(evaluation)

    def _trained_config(self, final: Path) -> Config:
        """The config ``final`` was trained with (stored with the run's checkpoints), which the evaluation follows;
        one line when this trainer's args set an evaluation setting or reward otherwise."""
        from rlvjax import outputs
        from rlvjax.checkpoint import Checkpointer

        # the config the run last accepted (its config.json), else its newest checkpoint's (checkpoints may have
        # been deleted after the export: final/ is all an evaluation needs)
        values = written_values(self.output_dir)
        if values is None and (self.output_dir / "checkpoints").is_dir():
            values = Checkpointer(self.output_dir / "checkpoints", read_only=True).read_config()
        if values is None:
            raise FileNotFoundError(f"{self.output_dir} holds no trained run's config (config.json or checkpoints/); "
                                    "train() first, or point RLVConfig.output_dir at the run")
        stored = outputs.moved_data(self.output_dir, values)
        changed = [(field, getattr(getattr(stored, section), key), getattr(self.args, field))
                   for field, (section, key) in FIELDS.items() if field in EVAL_FIELDS
                   and getattr(self.args, field) is not None
                   and getattr(self.args, field) != getattr(getattr(stored, section), key)]
        if tuple(stored.task.rewards) != tuple(self.config.task.rewards):
            changed.append(("reward_funcs", tuple(stored.task.rewards), tuple(self.config.task.rewards)))
        if changed:  # another trainer's args on this output_dir
            raise ValueError(f"{final} was trained with " + ", ".join(f"{k}={was!r}" for k, was, _ in changed)
                             + ", these args give " + ", ".join(f"{k}={now!r}" for k, _, now in changed)
                             + "; evaluate with the run's own args (or leave those out)")
        return stored

    def save_model(self, output_dir, *, overwrite: bool = False, dtype: str | None = None) -> None:
        """The trained policy as an HF directory (safetensors, config, tokenizer, its verify question): a copy of
        ``output_dir/final`` that appears whole or not at all, its weights in ``dtype`` ("bfloat16", "float32"; None:
        as trained, the run's ``ModelSpec.dtype``: an f32 run of a bf16 checkpoint saves twice its size). Refuses the
        run's own directory and what it manages, and a non-empty directory unless ``overwrite``."""
        import shutil

        import jax

        from rlvjax import atomic, parallel
        from rlvjax.export import check_out
        from rlvjax.model.hf import check_floating

        _check_path("output_dir", output_dir)
        if dtype is not None:  # before anything is written
            check_floating("save_model", dtype=dtype)
        final = self.output_dir / "final"
        if not final.is_dir():
            raise FileNotFoundError(f"{final} does not exist: train() first (with RunConfig.export_final = True)")
        out = Path(output_dir).expanduser()  # as save_hf and export take it ("~/x" made a ./~/x)
        if out.resolve() == final.resolve():
            return
        failed = None
        if jax.process_index() == 0:  # one copy: every process of a multi-host job copying the same folder collided
            try:
                check_out(out, self.output_dir, overwrite, flag="save_model: output_dir",
                          overwrite_hint="pass overwrite=True")
                tmp = atomic.staging_dir(out)
                try:
                    if dtype is None:
                        shutil.copytree(final, tmp, dirs_exist_ok=True)
                    else:
                        _save_as(final, tmp, dtype)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
                atomic.replace_dir(tmp, out, overwrite=overwrite)
            except Exception as e:  # raised on every process below, so that none waits for the others
                failed = e
        if parallel.primary_says(failed is not None):
            raise failed or RuntimeError(f"save_model({out}) failed on process 0; its error says why")


def _save_as(final: Path, out: Path, dtype: str) -> None:
    """``final``'s policy into the empty folder ``out``, its weights (and config.json's dtype) in ``dtype``, every
    other file of it as it is (the verify question, how it sampled, generation_config.json)."""
    import shutil

    import jax

    from rlvjax.model.hf import export_stamp, load_hf, save_hf

    with jax.default_device(jax.devices("cpu")[0]):  # on the host, as an export reads a checkpoint: not a second
        model, tokenizer = load_hf(final)  # copy of the model beside the accelerator's
    stamp = {k: v for k, v in export_stamp(final).items() if k not in ("format", "rlvjax_export_id")}  # its step
    save_hf(model, tokenizer, out, stamp=stamp, dtype=dtype)
    for path in final.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name not in ("config.json",
                                                                                  "model.safetensors.index.json"):
            shutil.copy2(path, out / path.name)


def _problems(records: list[dict]) -> str:
    """Records as canonical text (as the run's data/*.jsonl holds them: numpy values as numbers), to tell the run's
    own eval problems from others."""
    return json.dumps(records, sort_keys=True, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))


def _records(dataset, name: str, need_gold: bool, task) -> list[dict]:
    """Raw records of a path / datasets id (the eval's from ``TaskSpec.eval_split``, as the file task reads them), a
    ``datasets.Dataset`` or a list of dicts; rows without a usable gold answer as ``TaskSpec.on_bad_gold`` says."""
    if isinstance(dataset, (str, Path)):
        which = {"split": task.eval_split, "split_knob": "TaskSpec.eval_split", "name": task.eval_subset,
                 "name_knob": "TaskSpec.eval_subset"} if name == "eval_dataset" else {
                     "name": task.train_subset, "name_knob": "TaskSpec.train_subset", "split_knob": None}
        return sources.load_records(dataset, on_bad_gold=task.on_bad_gold, require_gold=need_gold, **which)[0]
    if isinstance(dataset, (list, tuple)) or type(dataset).__name__ == "Dataset":
        return sources.from_rows(list(dataset), source=name, on_bad_gold=task.on_bad_gold,
                                 require_gold=need_gold)[0]
    kind = type(dataset).__name__
    hint = {"IterableDataset": "; read it into a list first, e.g. list(dataset.take(n))",
            "DataFrame": "; pass df.to_dict('records')"}.get(kind, "")
    if kind == "DatasetDict":  # the split to pass is the user's to name: the train one for eval_dataset was wrong
        hint = f"; pass one of its splits, {name}=dataset[SPLIT] with SPLIT one of {', '.join(map(repr, dataset))}"
    raise ValueError(f"{name} must be a file path or datasets id, a datasets.Dataset or a list of dicts, got "
                     f"{kind}{hint}")


def _check_path(name: str, value, *, none: bool = False) -> None:
    """A folder argument that is a path (str or os.PathLike; ``none``: or None), or a one-line error naming it (a
    bare TypeError from os.fspath named neither)."""
    if not (isinstance(value, (str, os.PathLike)) or none and value is None):
        raise ValueError(f"{name}={value!r} must be a directory's path (str or pathlib.Path)"
                         + (" or None" if none else ""))
