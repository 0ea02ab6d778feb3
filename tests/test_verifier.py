"""Verify-prompt tokens, Yes/No ids, labels and scores, on small tokenizers built offline."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from rlvjax.rl import verifier  # noqa: E402

QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["[UNK]", "<|im_start|>", "<|im_end|>"]
WORDS = ("Is this solution correct ( Yes / No )? Answer : Solve 1 + . The answer is $ \\boxed { 2 } }$. user "
         "assistant RLVJAX_SOLUTION_SENTINEL_7f3a").split()


def wrap(tok, chat_template=None):
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|im_end|>",
                                   additional_special_tokens=["<|im_start|>"], chat_template=chat_template)


def word_level(chat_template=None, words=WORDS):
    vocab = {w: i for i, w in enumerate(SPECIALS + list(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return wrap(tok, chat_template)


def byte_level_bpe(chat_template=None, merges=True):
    """GPT-2 style byte-level BPE; merges=False leaves single bytes, so "Yes" is three tokens."""
    if merges:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        corpus = ["Is this solution correct (Yes/No)? Answer: Yes", "Answer: No", "Yes", "No",
                  "user\nSolve 1 + 1.", "assistant\nThe answer is $\\boxed{2}$."] * 50
        tok.train_from_iterator(corpus, trainers.BpeTrainer(
            vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False))
    else:
        alphabet = SPECIALS + sorted(pre_tokenizers.ByteLevel.alphabet())
        tok = Tokenizer(models.BPE({c: i for i, c in enumerate(alphabet)}, [], unk_token="[UNK]"))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return wrap(tok, chat_template)


def tokens(tok, ids):
    return tok.convert_ids_to_tokens(list(ids))


# ---------------------------------------------------------------------------------------------------- prompts


def test_chat_verify_prompt_is_end_of_turn_user_turn_and_assistant_header():
    tok = word_level(QWEN_TEMPLATE)
    ids = verifier.verify_prompt_ids(tok)  # chat auto-detected from the template
    assert tokens(tok, ids) == ["<|im_end|>", "<|im_start|>", "user", "Is", "this", "solution", "correct", "(",
                                "Yes", "/", "No", ")?", "<|im_end|>", "<|im_start|>", "assistant"]
    eot = verifier.end_of_turn_id(tok)
    assert eot == tok.convert_tokens_to_ids("<|im_end|>")
    assert verifier.verify_prompt_ids(tok, after_end_of_turn=True) == ids[1:]


def test_base_verify_prompt_is_plain_text():
    tok = word_level()
    ids = verifier.verify_prompt_ids(tok)
    assert tokens(tok, ids) == ["Is", "this", "solution", "correct", "(", "Yes", "/", "No", ")?", "Answer", ":"]
    assert verifier.verify_prompt_ids(tok, after_end_of_turn=True) == ids
    assert verifier.end_of_turn_id(tok) is None
    # A chat tokenizer can still be asked for the plain-text form.
    assert verifier.verify_prompt_ids(word_level(QWEN_TEMPLATE), chat=False) == ids


def test_byte_level_prompts_decode_to_the_template_text():
    tok = byte_level_bpe(QWEN_TEMPLATE)
    chat_ids = verifier.verify_prompt_ids(tok)
    assert tok.decode(chat_ids) == (
        "<|im_end|>\n<|im_start|>user\nIs this solution correct (Yes/No)?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.decode(verifier.verify_prompt_ids(tok, chat=False)) == verifier.BASE_VERIFY_PROMPT


def test_appending_to_a_stopped_completion_equals_the_rendered_conversation():
    # Sampler view: prompt (with generation header) + solution tokens + the stop token <|im_end|>.
    tok = byte_level_bpe(QWEN_TEMPLATE)
    question, solution = "Solve 1 + 1.", "The answer is $\\boxed{2}$."
    user = [{"role": "user", "content": question}]
    prompt = tok.encode(tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True),
                        add_special_tokens=False)
    completion = tok.encode(solution, add_special_tokens=False) + [verifier.end_of_turn_id(tok)]
    sequence = prompt + completion + verifier.verify_prompt_ids(tok, after_end_of_turn=True)
    rendered = tok.apply_chat_template(
        user + [{"role": "assistant", "content": solution}, {"role": "user", "content": verifier.VERIFY_QUESTION}],
        tokenize=False, add_generation_prompt=True)
    assert sequence == tok.encode(rendered, add_special_tokens=False)
    # A truncated completion (no stop token) takes the full suffix, which starts with the end-of-turn token.
    truncated = tok.encode(solution, add_special_tokens=False)
    assert truncated + verifier.verify_prompt_ids(tok) == completion + verifier.verify_prompt_ids(
        tok, after_end_of_turn=True)


def test_a_custom_verify_question_is_the_rendered_turn_and_one_the_tokenizer_cannot_spell_is_refused():
    tok = byte_level_bpe(QWEN_TEMPLATE)
    question = "Does the final answer follow (Yes/No)?"
    solved = [{"role": "user", "content": "Solve 1 + 1."}, {"role": "assistant", "content": "2"}]
    before = tok.apply_chat_template(solved, tokenize=False)
    asked = tok.apply_chat_template(solved + [{"role": "user", "content": question}], tokenize=False,
                                    add_generation_prompt=True)
    verifier_tokens = verifier.tokens(tok, question)
    # the end of turn, the question, the header
    assert tok.decode(verifier_tokens.suffix) == asked[len(before) - len("<|im_end|>\n"):]
    assert (verifier_tokens.yes_id, verifier_tokens.no_id) == verifier.yes_no_token_ids(tok)
    base = verifier.tokens(byte_level_bpe(), question)
    assert byte_level_bpe().decode(base.suffix) == verifier.base_verify_prompt(question)
    with pytest.raises(ValueError, match=r"the tokenizer cannot encode the verify question 'Est-ce juste \?'"):
        verifier.tokens(word_level(), "Est-ce juste ?")  # a word-level vocabulary without these words


def test_template_that_rewrites_content_is_rejected():
    tok = word_level(QWEN_TEMPLATE.replace("{{ m.content }}", "{{ m.content | upper }}"))
    with pytest.raises(ValueError, match="did not render the assistant message verbatim"):
        verifier.verify_prompt_ids(tok)


# ---------------------------------------------------------------------------------------------------- Yes / No ids


def test_yes_no_ids_word_level():
    tok = word_level(QWEN_TEMPLATE)
    expected = (tok.convert_tokens_to_ids("Yes"), tok.convert_tokens_to_ids("No"))
    assert verifier.yes_no_token_ids(tok) == expected
    assert verifier.yes_no_token_ids(word_level()) == expected


def test_yes_no_ids_follow_the_prompt_spacing():
    tok = byte_level_bpe(QWEN_TEMPLATE)
    # The assistant turn opens with "Yes"; after "Answer:" the answer is " Yes" (byte-level "ĠYes").
    assert tokens(tok, verifier.yes_no_token_ids(tok, chat=True)) == ["Yes", "No"]
    assert tokens(tok, verifier.yes_no_token_ids(tok, chat=False)) == ["\u0120Yes", "\u0120No"]


LLAMA2_TEMPLATE = (  # Llama-2-chat's shape: the assistant's words follow "[/INST]" after a space
    "{% for m in messages %}{% if m.role == 'user' %}{{ '[INST] ' + m.content.strip() + ' [/INST]' }}"
    "{% else %}{{ ' ' + m.content.strip() + ' <|im_end|>' }}{% endif %}{% endfor %}")


def test_yes_no_ids_are_spelled_as_the_template_writes_an_assistant_verdict():
    """A Llama-2-chat or Vicuna-style template writes an assistant turn as " Yes": the ids read "Yes", another
    token than the one the model was tuned to answer with (review, 2026-12-07)."""
    tok = byte_level_bpe(LLAMA2_TEMPLATE)
    conversation = [{"role": "user", "content": "Solve 1 + 1."}, {"role": "assistant", "content": "2"},
                    {"role": "user", "content": verifier.VERIFY_QUESTION}]
    asked = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    answered = tok.apply_chat_template(conversation + [{"role": "assistant", "content": "Yes"}], tokenize=False)
    written = tok.encode(answered, add_special_tokens=False)[len(tok.encode(asked, add_special_tokens=False))]
    yes, no = verifier.yes_no_token_ids(tok, chat=True)
    assert yes == written and tokens(tok, [yes, no]) == ["\u0120Yes", "\u0120No"]
    assert tokens(tok, verifier.yes_no_token_ids(byte_level_bpe(QWEN_TEMPLATE), chat=True)) == ["Yes", "No"]


def test_multi_token_yes_is_an_error():
    tok = byte_level_bpe(QWEN_TEMPLATE, merges=False)
    assert len(tok.encode("Yes", add_special_tokens=False)) == 3
    for chat in (True, False):
        with pytest.raises(ValueError, match="tokenizer lacks a single-token Yes/No.*fix:"):
            verifier.yes_no_token_ids(tok, chat=chat)


def test_unknown_no_is_an_error():
    # "No" is out of vocabulary: it encodes to the single [UNK] token, which must not count as a label.
    tok = word_level(words=[w for w in WORDS if w != "No"])
    assert tok.encode("No", add_special_tokens=False) == [tok.unk_token_id]
    with pytest.raises(ValueError, match="lacks a single-token Yes/No"):
        verifier.yes_no_token_ids(tok)


def test_colliding_yes_no_is_an_error():
    # A normaliser that rewrites "No" to "Yes" makes both words one and the same token.
    tok = word_level()
    tok.backend_tokenizer.normalizer = normalizers.Replace("No", "Yes")
    with pytest.raises(ValueError, match="same token id"):
        verifier.yes_no_token_ids(tok)


# ---------------------------------------------------------------------------------------------------- labels, scores


def test_verify_labels():
    labels = verifier.verify_labels(jnp.array([True, False, True, False]), yes_id=7, no_id=3)
    np.testing.assert_array_equal(labels, [7, 3, 7, 3])
    assert labels.dtype == jnp.int32


def test_verify_scores_by_hand():
    # yes = 0, no = 1. Row 0: p(Yes) = e^2 / (e^2 + e + 1) = 0.6652410; normalised: e^2 / (e^2 + e) = sigmoid(1)
    # = 0.7310586. Row 1: uniform -> 1/3, normalised 1/2.
    logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(verifier.verify_scores(logits, 0, 1), [0.6652410, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(verifier.verify_scores(logits, 0, 1, normalize=True), [0.7310586, 0.5], rtol=1e-6)
    # Log-probs in give the same scores as logits.
    logprobs = logits - jnp.log(jnp.sum(jnp.exp(logits), axis=-1, keepdims=True))
    np.testing.assert_allclose(verifier.verify_scores(logprobs, 0, 1), [0.6652410, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(verifier.verify_scores(logprobs, 0, 1, normalize=True), [0.7310586, 0.5], rtol=1e-6)


def test_verify_scores_are_stable_for_huge_logits():
    logits = jnp.array([[1000.0, 999.0, -1000.0], [-1000.0, -1000.0, 1000.0]])
    np.testing.assert_allclose(verifier.verify_scores(logits, 0, 1), [0.7310586, 0.0], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(verifier.verify_scores(logits, 0, 1, normalize=True), [0.7310586, 0.5], rtol=1e-6)


def test_an_exported_verifier_config_reads_back_and_stays_readable_across_versions(tmp_path, capsys):
    plain = verifier.VerifierConfig(question="Right (Yes/No)?", threshold=0.75)
    labelled = verifier.VerifierConfig(threshold=0.5, label_reward="my_rewards:accuracy")
    for cfg, keys in ((plain, {"question", "threshold"}), (labelled, {"question", "threshold", "label_reward"})):
        directory = tmp_path / str(len(keys))
        directory.mkdir()
        for name, text in verifier.config_files(cfg).items():
            (directory / name).write_text(text)
        # without a label reward, only the two fields an earlier rlvjax's VerifierConfig(**saved) accepts
        assert set(json.loads((directory / verifier.CONFIG_FILE).read_text())) == keys
        assert verifier.load_config(directory) == cfg
    assert verifier.load_config(tmp_path) == verifier.VerifierConfig()  # any HF directory: the default
    # a later version's field: read what this one knows, and say what it left out
    (tmp_path / verifier.CONFIG_FILE).write_text(json.dumps({"question": "Q?", "threshold": 0.25, "calibration": 2}))
    capsys.readouterr()
    assert verifier.load_config(tmp_path) == verifier.VerifierConfig(question="Q?", threshold=0.25)
    assert "ignoring calibration (written by a later rlvjax" in capsys.readouterr().out


def test_the_verify_form_is_the_configs_and_travels_with_an_export(tmp_path, caplog):
    """Whether the question is a chat turn or plain text was the tokenizer's alone: prompts read as plain text by a
    tokenizer with a chat template (a base model's, as Qwen2.5 base ships one) got a verify prompt closing a turn no
    prompt opened, and nothing could choose otherwise (review, 2026-12-07)."""
    import logging

    from rlvjax import experiment

    tok = byte_level_bpe(QWEN_TEMPLATE)
    plain, auto = verifier.VerifierConfig(form="plain"), verifier.VerifierConfig()
    asked = verifier.tokens(tok, plain.question, chat=plain.chat)
    assert tok.decode(asked.suffix) == verifier.base_verify_prompt(plain.question)
    assert tokens(tok, [asked.yes_id, asked.no_id]) == ["\u0120Yes", "\u0120No"]
    assert "<|im_start|>" in tok.decode(verifier.tokens(tok, auto.question, chat=auto.chat).suffix)
    assert verifier.tokens(tok, chat=verifier.VerifierConfig(form="chat").chat) == verifier.tokens(tok)
    for cfg, saved in ((plain, {"question": plain.question, "threshold": 0.5, "form": "plain"}),
                       (auto, {"question": auto.question, "threshold": 0.5})):  # the fields older rlvjax reads
        (tmp_path / verifier.CONFIG_FILE).write_text(verifier.config_files(cfg)[verifier.CONFIG_FILE])
        assert json.loads((tmp_path / verifier.CONFIG_FILE).read_text()) == saved
        assert verifier.load_config(tmp_path) == cfg
    with pytest.raises(ValueError, match=r"^VerifierConfig.form='html': use one of auto, chat, plain$"):
        verifier.VerifierConfig(form="html")
    task = experiment.TaskSpec(name="file", train_file="x.jsonl", prompt_format="as_is")
    with caplog.at_level(logging.WARNING):
        experiment.check_verify_form(task, tok, plain, [{"prompt": "1+1="}])
        assert not caplog.records
        # chat prompts (rendered, their messages kept beside): the chat-turn question is right; it warned on every
        # chat dataset, advising the plain form (review "api", 2026-12-07)
        experiment.check_verify_form(task, tok, auto, [{"prompt": "<|im_start|>user ...", experiment.MESSAGES: []}])
        assert not caplog.records
        experiment.check_verify_form(task, tok, auto, [{"prompt": "1+1="}])
    assert "set VerifierConfig.form = 'plain' to ask it in text" in caplog.text


def test_a_plain_verify_form_works_with_a_single_turn_template_and_chat_needs_a_template():
    """``form = "plain"`` still read the policy's end of turn from [user, assistant, user]: a template that renders
    a single exchange only failed the run's start with a jinja2 error, or with advice to pass chat=False, which it
    had. The end of turn is read from [user, assistant] there. ``form = "chat"`` without a chat template named no
    setting (transformers' generic error). Review 2026-12-07."""
    from rlvjax import policy_tokens

    single = ("{% if messages | length > 2 %}{{ raise_exception('Only one exchange is supported') }}{% endif %}"
              + QWEN_TEMPLATE)
    tok = byte_level_bpe(single)
    plain = verifier.VerifierConfig(form="plain")
    asked = verifier.tokens(tok, plain.question, chat=plain.chat)
    stops = policy_tokens.sampling_tokens(tok, asked).stop_ids
    assert tokens(tok, stops) == ["<|im_end|>"]  # the eos and the end of turn: one token here
    assert verifier.end_of_turn_id(tok) == tok.convert_tokens_to_ids("<|im_end|>")
    assert verifier.end_of_turn_id(byte_level_bpe(QWEN_TEMPLATE)) == verifier.end_of_turn_id(tok)
    rewriting = single.replace("{{ m.content }}", "{{ m.content | upper }}")  # no end of turn to find: said
    with pytest.raises(ValueError, match="did not render the assistant message verbatim, so the token that ends"):
        verifier.end_of_turn_id(byte_level_bpe(rewriting))
    with pytest.raises(ValueError, match=r"^VerifierConfig.form = 'chat' needs a tokenizer with a chat template"):
        verifier.tokens(byte_level_bpe(), chat=verifier.VerifierConfig(form="chat").chat)
